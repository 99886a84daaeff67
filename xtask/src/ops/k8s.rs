//! TODO(k8s)

use anyhow::Result;

use crate::setup::Report;

pub fn ensure_tools(_report: Report) -> Result<()> {
    Ok(())
}

pub fn check() -> Result<()> {
    anyhow::bail!("not written yet")
}

pub fn generate() -> Result<()> {
    Ok(())
}
