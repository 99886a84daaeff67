//! The daemon under demonstration, `fraiseql-edge run --require-ebpf
//! --config FILE` (a demo of the kernel layer must not quietly fall back to
//! user space), as a child process that is always stopped (SIGTERM) when the
//! demo ends.

use std::fs::{self, File};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::kernel::Kernel;
use crate::cmd;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Daemon {
    /// The daemon's CLI for reading and changing its maps.
    pub kernel: Kernel,
    child: Child,
    description: String,
    log: PathBuf,
    pid_file: PathBuf,
    stopped: bool,
}

/// The files of the demo's daemon, in `target/demo/`.
pub const CONFIG: &str = "config.toml";
const LOG: &str = "daemon.log";
const PID: &str = "daemon.pid";

impl Daemon {
    /// Starts the daemon on `dir/config.toml` with its output going to
    /// `dir/daemon.log`, in a process group of its own so a Ctrl-C reaches
    /// only the demo, which then stops it. Its pid goes to `dir/daemon.pid`
    /// for [`stop_leftover`].
    pub fn start(kernel: Kernel, dir: &Path) -> Result<Self> {
        let log = dir.join(LOG);
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let mut command = Command::new(&kernel.binary);
        command
            .args(["run", "--require-ebpf", "--config"])
            .arg(dir.join(CONFIG))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let description = cmd::describe(&command);
        println!("demo: starting `{description}` (log: {})", log.display());
        let child = command
            .spawn()
            .with_context(|| format!("could not start `{description}`"))?;
        let pid_file = dir.join(PID);
        let daemon = Daemon {
            kernel,
            child,
            description,
            log,
            pid_file,
            stopped: false,
        };
        fs::write(&daemon.pid_file, daemon.child.id().to_string())
            .with_context(|| format!("writing {}", daemon.pid_file.display()))?;
        Ok(daemon)
    }

    /// Waits until `kernel stats` answers (the maps are pinned) and an XDP
    /// program sits on `interface`, so no early packet goes uncounted.
    pub fn wait_ready(&mut self, interface: &str, interrupted: &AtomicBool) -> Result<()> {
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let attempt = self.kernel.stats().and_then(|_| xdp_attached(interface));
            if attempt.is_ok() {
                return Ok(());
            }
            if interrupted.load(Ordering::SeqCst) {
                bail!("interrupted");
            }
            if start.elapsed() > READY_TIMEOUT {
                let e = attempt.unwrap_err();
                bail!(
                    "the daemon was not ready after {READY_TIMEOUT:?}: {e:#}\n{}",
                    self.log_tail()
                );
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Fails if the daemon has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling the daemon")? {
            self.stopped = true;
            let _ = fs::remove_file(&self.pid_file);
            bail!(
                "`{}` exited unexpectedly: {status}\n{}",
                self.description,
                self.log_tail()
            );
        }
        Ok(())
    }

    /// SIGTERM, then up to [`STOP_TIMEOUT`] for it to exit (SIGKILL after);
    /// anything but a clean exit is an error.
    pub fn stop(&mut self) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.stopped = true;
        let _ = fs::remove_file(&self.pid_file);
        super::say(format_args!("stopping the daemon (SIGTERM)"));
        let pid = Pid::from_raw(i32::try_from(self.child.id()).context("pid out of range")?);
        kill(pid, Signal::SIGTERM).context("sending SIGTERM to the daemon")?;
        let status = self.wait_for_exit()?;
        if !status.success() {
            bail!(
                "`{}` ended with {status} after SIGTERM\n{}",
                self.description,
                self.log_tail()
            );
        }
        Ok(())
    }

    fn wait_for_exit(&mut self) -> Result<ExitStatus> {
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().context("waiting for the daemon")? {
                return Ok(status);
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.child.kill().context("killing the daemon")?;
        self.child.wait().context("waiting for the killed daemon")?;
        bail!("the daemon did not exit within {STOP_TIMEOUT:?} of SIGTERM and was killed")
    }

    /// The last lines of the daemon's log, for error messages.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        format!("--- last lines of {} ---\n{tail}", self.log.display())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            super::warn(&e);
        }
    }
}

/// Ok once `ip link` shows an XDP program (any mode) on `interface`.
fn xdp_attached(interface: &str) -> Result<()> {
    let out = cmd::output(Command::new("ip").args(["link", "show", "dev", interface]))?;
    if out.contains("xdp") {
        Ok(())
    } else {
        bail!("no XDP program on {interface} yet")
    }
}

/// Stops a daemon that a killed demo run left behind: the pid in
/// `dir/daemon.pid`, and only while that pid still runs
/// `… run … --config dir/config.toml` (a reused pid is left alone).
pub fn stop_leftover(dir: &Path) -> Result<()> {
    let pid_file = dir.join(PID);
    let Ok(text) = fs::read_to_string(&pid_file) else {
        return Ok(());
    };
    fs::remove_file(&pid_file).with_context(|| format!("removing {}", pid_file.display()))?;
    let Ok(pid) = text.trim().parse::<i32>() else {
        return Ok(());
    };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    if !runs_config(&cmdline, &dir.join(CONFIG)) {
        return Ok(());
    }
    println!("demo: stopping the daemon (pid {pid}) left by an earlier run");
    let pid = Pid::from_raw(pid);
    kill(pid, Signal::SIGTERM).context("sending SIGTERM to the old daemon")?;
    let deadline = Instant::now() + STOP_TIMEOUT;
    while kill(pid, None).is_ok() {
        if Instant::now() > deadline {
            kill(pid, Signal::SIGKILL).context("killing the old daemon")?;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// True when a NUL-separated `/proc/PID/cmdline` is `… run … --config CONFIG`.
fn runs_config(cmdline: &[u8], config: &Path) -> bool {
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    let has_run = args.contains(&b"run".as_slice());
    let config = config.as_os_str().as_bytes();
    has_run
        && args
            .windows(2)
            .any(|w| w[0] == b"--config" && w[1] == config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_demo_daemon() {
        let config = Path::new("/w/target/demo/config.toml");
        let ours = b"/w/target/release/fraiseql-edge\0run\0--require-ebpf\0--config\0/w/target/demo/config.toml\0";
        assert!(runs_config(ours, config));
        let other = b"/usr/bin/sleep\0sixty\0";
        assert!(!runs_config(other, config));
        assert!(!runs_config(b"", config));
    }
}
