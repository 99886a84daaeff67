//! The `edgectl` binary as a child process, pointed at a daemon's control
//! socket (or TCP listener) with a token file, and the `[control]` section
//! and token files that such a daemon needs.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
};

use crate::{
    control::{socket_section, token_files},
    daemon::workspace_bin,
};

/// The `edgectl` binary, built on first use like the daemon's (see
/// [`crate::daemon`]); `EDGECTL_BIN` points at a prebuilt one instead.
pub fn edgectl_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| workspace_bin("edgectl", "EDGECTL_BIN"))
}

/// A temporary directory for the control socket (and for token files the
/// daemon does not know); the daemon's tokens are the shared ones of
/// [`crate::control::token_files`].
pub struct ControlFiles {
    dir: tempfile::TempDir,
}

impl ControlFiles {
    /// A fresh directory.
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    /// Where the daemon listens.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("control.sock")
    }

    /// The admin token file.
    pub fn admin_token(&self) -> PathBuf {
        token_files().admin.clone()
    }

    /// The read-only token file.
    pub fn read_token(&self) -> PathBuf {
        token_files().read.clone()
    }

    /// A path in the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The daemon's `[control]` section: the socket, the shared token
    /// files, and a TCP listener on an ephemeral loopback port
    /// ([`crate::subgraphs::Edge::control`] is its address).
    pub fn section(&self) -> String {
        socket_section(&self.socket()) + "listen = \"127.0.0.1:0\"\n"
    }
}

impl Default for ControlFiles {
    fn default() -> Self {
        Self::new()
    }
}

/// One finished `edgectl` run.
#[derive(Debug)]
pub struct Run {
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr.
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(out: Output) -> Self {
        Self {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// `edgectl` with fixed connection and token options.
#[derive(Clone, Debug)]
pub struct Edgectl {
    options: Vec<OsString>,
}

impl Edgectl {
    /// Talks to the unix socket `socket` with the token in `token_file`.
    pub fn socket(socket: &Path, token_file: &Path) -> Self {
        Self {
            options: vec![
                "--socket".into(),
                socket.into(),
                "--token-file".into(),
                token_file.into(),
            ],
        }
    }

    /// No connection or token options at all.
    pub fn bare() -> Self {
        Self {
            options: Vec::new(),
        }
    }

    /// Adds global options (`--addr …`, `--token …`, `--timeout …`).
    pub fn with(mut self, options: &[&str]) -> Self {
        self.options.extend(options.iter().map(OsString::from));
        self
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(edgectl_bin());
        for var in [
            "FRAISEQL_EDGE_SOCKET",
            "FRAISEQL_EDGE_ADDR",
            "FRAISEQL_EDGE_TOKEN",
            "FRAISEQL_EDGE_TOKEN_FILE",
        ] {
            cmd.env_remove(var);
        }
        cmd.args(&self.options).args(args).stdin(Stdio::null());
        cmd
    }

    /// Runs `edgectl <options> <args>` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        self.command(args)
            .output()
            .unwrap_or_else(|e| panic!("running edgectl {args:?}: {e}"))
            .into()
    }

    /// Runs it and asserts exit code 0; stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert_eq!(run.code, 0, "edgectl {args:?} failed: {run:?}");
        assert!(
            run.stderr.is_empty(),
            "edgectl {args:?} wrote to stderr: {run:?}"
        );
        run.stdout
    }

    /// Runs it with `--json`, asserts exit code 0, parses stdout.
    #[track_caller]
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let stdout = self.ok(&all);
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("edgectl {all:?}: not one JSON document ({e}):\n{stdout}"))
    }

    /// Runs it and asserts it fails with `code` and one `edgectl: ` line on
    /// stderr that contains `needle`; the run.
    #[track_caller]
    pub fn fails(&self, args: &[&str], code: i32, needle: &str) -> Run {
        let run = self.run(args);
        assert_eq!(run.code, code, "edgectl {args:?}: exit code; {run:?}");
        assert!(
            run.stderr.starts_with("edgectl: ") && run.stderr.lines().count() == 1,
            "edgectl {args:?}: not one `edgectl: ` line on stderr: {run:?}"
        );
        assert!(
            run.stderr.contains(needle),
            "edgectl {args:?}: stderr lacks {needle:?}: {run:?}"
        );
        run
    }

    /// Starts `edgectl <options> <args>` with stdout piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        self.command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning edgectl {args:?}: {e}"))
    }
}
