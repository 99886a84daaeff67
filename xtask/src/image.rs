//! TODO(image)

use anyhow::Result;

pub fn image() -> Result<()> {
    anyhow::bail!("not written yet")
}
