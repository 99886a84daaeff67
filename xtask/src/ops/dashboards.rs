//! TODO(dashboards)

use anyhow::Result;

pub fn generate() -> Result<()> {
    Ok(())
}

pub fn check() -> Result<()> {
    anyhow::bail!("not written yet")
}
