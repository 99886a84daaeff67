//! The `fraiseql-edge` binary as a child process: its configuration file,
//! start-up (`ready` on stderr), SIGKILL/SIGTERM, and its captured log.
//!
//! # Which binary
//!
//! `CARGO_BIN_EXE_*` only exists for tests of the package that owns the
//! binary, and `cargo test -p fraiseql-edge-tests` does not build other
//! packages' binaries. So the first call of [`daemon_bin`] in a test process
//! runs `cargo build -p fraiseql-edge --bin fraiseql-edge` with the profile
//! and target directory of the running test executable
//! (`<target>/<profile>/deps/e2e-…`) and uses `<target>/<profile>/fraiseql-edge`.
//! When the binary is up to date this costs one no-op cargo run; when the
//! daemon's sources changed it is rebuilt, so tests never run a stale binary.
//! `FRAISEQL_EDGE_BIN=/path/to/fraiseql-edge` skips the build (packaged runs).

use std::{
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{Arc, Mutex, OnceLock},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};

/// How long a daemon may take to log `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The daemon binary, built on first use (see the module docs).
pub fn daemon_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("fraiseql-edge", "FRAISEQL_EDGE_BIN"))
}

/// A binary of the workspace package `name` (binary of the same name),
/// built once per test process with the running test's profile and target
/// directory so it is never stale; `override_var` names an environment
/// variable that points at a prebuilt binary instead.
pub fn workspace_bin(name: &str, override_var: &str) -> PathBuf {
    if let Some(bin) = std::env::var_os(override_var) {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().expect("path of the test executable");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable lives in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("<target>/<profile>");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(other) => other,
    };
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the workspace");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "--quiet", "-p", name, "--bin", name])
        .args(["--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .status()
        .unwrap_or_else(|e| panic!("running cargo to build {name}: {e}"));
    assert!(status.success(), "building the {name} binary failed");
    let bin = profile_dir.join(name);
    assert!(bin.exists(), "{} missing after the build", bin.display());
    bin
}

/// Runs the binary with `args` to completion (`check-config`, `kernel …`).
pub fn run_cli(args: &[&str]) -> Output {
    Command::new(daemon_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("running fraiseql-edge")
}

/// A CIDR override in the daemon's configuration.
#[derive(Clone, Debug)]
pub struct Override {
    /// The network.
    pub cidr: String,
    /// `allow`, `deny` or `limit`.
    pub action: &'static str,
    /// `limit` only: packets per second and burst.
    pub rate_burst: Option<(u64, u64)>,
    /// `limit` only: live connections.
    pub max_conns: Option<u32>,
}

impl Override {
    /// Bypass every limit.
    pub fn allow(cidr: impl Into<String>) -> Self {
        Self {
            cidr: cidr.into(),
            action: "allow",
            rate_burst: None,
            max_conns: None,
        }
    }

    /// Drop everything to protected ports.
    pub fn deny(cidr: impl Into<String>) -> Self {
        Self {
            cidr: cidr.into(),
            action: "deny",
            rate_burst: None,
            max_conns: None,
        }
    }

    /// Own packet-rate limit.
    pub fn limit(cidr: impl Into<String>, rate: u64, burst: u64) -> Self {
        Self {
            cidr: cidr.into(),
            action: "limit",
            rate_burst: Some((rate, burst)),
            max_conns: None,
        }
    }

    /// A `limit` override's own connection cap.
    pub fn with_max_conns(mut self, max_conns: u32) -> Self {
        assert_eq!(self.action, "limit", "max_conns only applies to `limit`");
        self.max_conns = Some(max_conns);
        self
    }
}

/// The `[kernel]` section the tests vary; rendered to TOML by [`Self::to_toml`].
#[derive(Clone, Debug)]
pub struct EdgeConfig {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    /// Protected ports.
    pub protected_ports: Vec<u16>,
    /// Packets per second per client (0: no rate limit).
    pub rate: u64,
    /// Bucket size.
    pub burst: u64,
    /// Live connections per client (0: no cap).
    pub max_conns: u32,
    /// Pin directory.
    pub pin_path: PathBuf,
    /// CIDR overrides.
    pub overrides: Vec<Override>,
}

impl EdgeConfig {
    /// Attach to `interface`, protect `ports`, pin under `pin_path`; no
    /// rate limit and no connection cap until the test sets them.
    pub fn new(interface: &str, ports: &[u16], pin_path: &Path) -> Self {
        Self {
            interfaces: vec![interface.to_string()],
            protected_ports: ports.to_vec(),
            rate: 0,
            burst: 1,
            max_conns: 0,
            pin_path: pin_path.to_path_buf(),
            overrides: Vec::new(),
        }
    }

    /// The configuration file's text.
    pub fn to_toml(&self) -> String {
        let mut s = format!(
            "[kernel]\ninterfaces = {:?}\nprotected_ports = {:?}\nrate = {}\nburst = {}\n\
             max_conns = {}\nxdp_mode = \"auto\"\npin_path = {:?}\n",
            self.interfaces,
            self.protected_ports,
            self.rate,
            self.burst,
            self.max_conns,
            self.pin_path.to_str().expect("UTF-8 pin path"),
        );
        for o in &self.overrides {
            s += &format!(
                "\n[[kernel.overrides]]\ncidr = {:?}\naction = {:?}\n",
                o.cidr, o.action
            );
            if let Some((rate, burst)) = o.rate_burst {
                s += &format!("rate = {rate}\nburst = {burst}\n");
            }
            if let Some(max_conns) = o.max_conns {
                s += &format!("max_conns = {max_conns}\n");
            }
        }
        s
    }
}

/// A running (or exited) daemon. Dropping it SIGKILLs it.
pub struct Daemon {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    config: PathBuf,
    _dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `fraiseql-edge run` with `cfg` and waits for `ready`.
    pub fn start(cfg: &EdgeConfig) -> Self {
        let mut d = Self::spawn(&cfg.to_toml(), &[]);
        d.wait_ready();
        d
    }

    /// Starts `fraiseql-edge run --config <file with toml> <args>` without waiting.
    pub fn spawn(toml: &str, args: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("fraiseql-edge.toml");
        std::fs::write(&config, toml).expect("writing the config");
        let mut child = Command::new(daemon_bin())
            .arg("run")
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning fraiseql-edge");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(String::new()));
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().expect("log lock");
                    log.push_str(&line);
                    log.push('\n');
                }
            })
        };
        Self {
            child,
            log,
            reader: Some(reader),
            config,
            _dir: dir,
        }
    }

    /// The configuration file it runs with (rewrite it, then reload).
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().expect("log lock").clone()
    }

    /// Waits until a stderr line contains `needle`; false after `timeout`
    /// or when the daemon exited without writing it.
    pub fn wait_for_log(&mut self, needle: &str, timeout: Duration) -> bool {
        self.wait_for_line(|l| l.contains(needle), timeout)
    }

    /// Waits until a stderr line satisfies `matches`; false after `timeout`
    /// or when the daemon exited without writing one.
    pub fn wait_for_line(&mut self, matches: impl Fn(&str) -> bool, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if self.log().lines().any(&matches) {
                return true;
            }
            if self.exited() || Instant::now() >= deadline {
                self.join_reader();
                return self.log().lines().any(&matches);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until a JSON log record (`--log-json`: one object per line)
    /// satisfies `matches`; lines that are not JSON are skipped.
    pub fn wait_for_record(
        &mut self,
        matches: impl Fn(&serde_json::Value) -> bool,
        timeout: Duration,
    ) -> bool {
        self.wait_for_line(|l| record(l).is_some_and(|r| matches(&r)), timeout)
    }

    /// Waits for the `ready` log line (text or JSON); panics with the
    /// daemon's stderr if it exits first or takes longer than [`READY_TIMEOUT`].
    pub fn wait_ready(&mut self) {
        let ready = |l: &str| {
            l.contains(": ready") || record(l).is_some_and(|r| r["fields"]["message"] == "ready")
        };
        if self.wait_for_line(ready, READY_TIMEOUT) {
            return;
        }
        let status = self.child.try_wait().ok().flatten();
        panic!(
            "fraiseql-edge did not log `ready` (exit status: {status:?}); stderr:\n{}",
            self.log()
        );
    }

    fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    fn join_reader(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_)))
            && let Some(r) = self.reader.take()
        {
            let _ = r.join();
        }
    }

    /// Waits up to `timeout` for the process to exit; all of stderr is in
    /// [`Self::log`] afterwards.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                self.join_reader();
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no clean-up code runs in the daemon.
    pub fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
        self.wait_exit(Duration::from_secs(10))
            .expect("daemon still running after SIGKILL");
    }

    /// SIGTERM, then waits for the exit (panics after 10 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(Signal::SIGTERM);
        match self.wait_exit(Duration::from_secs(10)) {
            Some(status) => status,
            None => panic!("daemon ignored SIGTERM for 10 s; stderr:\n{}", self.log()),
        }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).expect("pid fits i32"));
        let _ = kill(pid, signal);
    }
}

/// One `--log-json` line, parsed (`None` for a text line).
fn record(line: &str) -> Option<serde_json::Value> {
    serde_json::from_str(line).ok()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}
