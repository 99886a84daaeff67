//! TODO(alerts)

use anyhow::Result;

pub fn check() -> Result<()> {
    anyhow::bail!("not written yet")
}
