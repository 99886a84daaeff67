//! The demo's bpffs pin directory. The daemon leaves its programs attached
//! and pinned when it stops (by design), so the demo detaches them with
//! `fraiseql-edge kernel detach` and removes the directory, at the start (a
//! crashed run's leftovers) and at the end.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::{say, warn};
use crate::cmd;

pub struct PinDir {
    path: PathBuf,
    /// The daemon binary, whose `kernel detach` removes the pins properly.
    daemon: Option<PathBuf>,
}

impl PinDir {
    pub fn claim(path: &str, daemon: Option<PathBuf>) -> Result<Self> {
        let pins = PinDir {
            path: PathBuf::from(path),
            daemon,
        };
        if pins.path.exists() {
            say(format_args!("removing {path} left by an earlier run"));
            pins.remove()?;
        }
        Ok(pins)
    }

    fn remove(&self) -> Result<()> {
        if let Some(daemon) = &self.daemon {
            let mut detach = Command::new(daemon);
            detach
                .args(["kernel", "detach", "--pin-path"])
                .arg(&self.path);
            // Removing the directory below unpins everything anyway.
            match cmd::output(&mut detach) {
                Ok(out) => say(format_args!("{}: {}", cmd::describe(&detach), out.trim())),
                Err(e) => warn(&e),
            }
        }
        remove_dir(&self.path)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.path.exists() {
            say(format_args!("removing {}", self.path.display()));
            if let Err(e) = self.remove() {
                warn(&e);
            }
        }
    }
}

fn remove_dir(path: &Path) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}
