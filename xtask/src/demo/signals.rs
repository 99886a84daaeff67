//! Ctrl-C and SIGTERM during the demo: turned into a flag the main loop
//! polls, so the demo always cleans up after itself.
//!
//! A handler (not a blocked mask waited on with `sigwait`) on purpose: the
//! signal mask is inherited by child processes, and the daemon must still be
//! stoppable with SIGTERM.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};

/// Installs the handler; returns the flag it sets.
pub fn watch() -> Result<Arc<AtomicBool>> {
    let flag = Arc::new(AtomicBool::new(false));
    let raised = Arc::clone(&flag);
    ctrlc::set_handler(move || {
        eprintln!("demo: interrupted, stopping and cleaning up");
        raised.store(true, Ordering::SeqCst);
    })
    .context("installing the SIGINT/SIGTERM handler")?;
    Ok(flag)
}
