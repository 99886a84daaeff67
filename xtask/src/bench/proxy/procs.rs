//! The benchmark's child processes: each in a process group of its own (a
//! Ctrl-C reaches only xtask, which then stops them in order), killed by the
//! kernel if xtask itself dies (`setpriv --pdeathsig KILL`), and stopped
//! (SIGTERM, then SIGKILL) when its guard drops — on success, error or
//! interrupt alike.

use std::collections::VecDeque;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cmd;

const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const TAIL_LINES: usize = 30;

/// Set by SIGINT/SIGTERM; every wait loop polls it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handler (once per process).
pub fn watch_signals() -> Result<()> {
    ctrlc::set_handler(|| {
        eprintln!("bench: interrupted, stopping the benchmark's processes");
        INTERRUPTED.store(true, Ordering::SeqCst);
    })
    .context("installing the SIGINT/SIGTERM handler")
}

/// Fails once a SIGINT/SIGTERM has arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// A running child whose stdout and stderr lines are collected.
pub struct Proc {
    name: String,
    description: String,
    child: Child,
    lines: Receiver<String>,
    tail: Arc<Mutex<VecDeque<String>>>,
    exited: Option<ExitStatus>,
}

impl Proc {
    /// Starts `program args…` as `name`.
    pub fn spawn<I, S>(name: &str, program: impl AsRef<OsStr>, args: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut command = if which::which("setpriv").is_ok() {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--"]).arg(program.as_ref());
            c
        } else {
            Command::new(program.as_ref())
        };
        command
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let description = cmd::describe(&command);
        let mut child = command
            .spawn()
            .with_context(|| format!("could not start {name}: `{description}`"))?;
        let (tx, lines) = mpsc::channel();
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let stdout = child.stdout.take().context("child stdout")?;
        let stderr = child.stderr.take().context("child stderr")?;
        drain(stdout, tx.clone(), Arc::clone(&tail));
        drain(stderr, tx, Arc::clone(&tail));
        Ok(Proc {
            name: name.to_owned(),
            description,
            child,
            lines,
            tail,
            exited: None,
        })
    }

    pub fn describe(&self) -> &str {
        &self.description
    }

    /// Waits up to `timeout` for an output line `wanted` accepts and returns it.
    pub fn wait_for_line(
        &mut self,
        wanted: impl Fn(&str) -> bool,
        timeout: Duration,
    ) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            check_interrupted()?;
            self.check_alive()?;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!(
                    "{} printed no ready line within {timeout:?}\n{}",
                    self.name,
                    self.tail()
                );
            }
            match self
                .lines
                .recv_timeout(left.min(Duration::from_millis(100)))
            {
                Ok(line) if wanted(&line) => return Ok(line),
                Ok(_) | Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    /// Waits up to `timeout` for the child to exit and returns its status
    /// with everything it printed (stdout and stderr, interleaved by line).
    pub fn wait_output(&mut self, timeout: Duration) -> Result<(ExitStatus, Vec<String>)> {
        let deadline = Instant::now() + timeout;
        let mut out = Vec::new();
        loop {
            check_interrupted()?;
            out.extend(self.lines.try_iter());
            if let Some(status) = self.child.try_wait().context("polling a child")? {
                self.exited = Some(status);
                // The pipes close with the process; collect what is left.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    out.push(line);
                }
                return Ok((status, out));
            }
            if Instant::now() > deadline {
                bail!("{} did not finish within {timeout:?}", self.name);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM (collect the rest with [`Proc::wait_output`]).
    pub fn signal_term(&self) {
        if let Ok(raw) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        }
    }

    /// Fails if the child has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("polling a child")? {
            self.exited = Some(status);
            bail!(
                "{} (`{}`) exited unexpectedly: {status}\n{}",
                self.name,
                self.description,
                self.tail()
            );
        }
        Ok(())
    }

    /// The last lines the child printed, for error messages.
    pub fn tail(&self) -> String {
        let tail = self.tail.lock().map(|t| t.clone()).unwrap_or_default();
        let lines: Vec<String> = tail.into_iter().collect();
        format!("--- last output of {} ---\n{}", self.name, lines.join("\n"))
    }

    fn stop(&mut self) {
        if self.exited.is_some() {
            return;
        }
        let Ok(raw) = i32::try_from(self.child.id()) else {
            return;
        };
        let _ = kill(Pid::from_raw(raw), Signal::SIGTERM);
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.exited = Some(status);
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        warn(&format!(
            "{} ignored SIGTERM for {STOP_TIMEOUT:?} and was killed",
            self.name
        ));
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads `from` line by line into the channel and the shared tail.
fn drain(from: impl Read + Send + 'static, tx: Sender<String>, tail: Arc<Mutex<VecDeque<String>>>) {
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut t) = tail.lock() {
                if t.len() == TAIL_LINES {
                    t.pop_front();
                }
                t.push_back(line.clone());
            }
            // The receiver may be gone during teardown; keep draining.
            let _ = tx.send(line);
        }
    });
}

/// A line on stderr during cleanup; a closed stderr must not panic.
fn warn(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "bench: {line}");
}
