//! The demo's GraphQL subgraph: `demo-subgraph` on loopback, behind the edge.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

/// Where the subgraph listens (loopback only: clients go through the edge).
pub const LISTEN: &str = "127.0.0.1:14001";
const ADMIN: &str = "127.0.0.1:15001";

/// The running subgraph; killed on drop.
pub struct Subgraph(Child);

impl Subgraph {
    /// Starts it and waits for its ready line.
    pub fn start(binary: &Path) -> Result<Self> {
        let mut child = Command::new(binary)
            .args([
                "--listen",
                LISTEN,
                "--admin-listen",
                ADMIN,
                "--name",
                "users",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("subgraph stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let first = lines.next().and_then(Result::ok);
            let _ = tx.send(first);
            for _ in lines {} // keep the pipe drained
        });
        let subgraph = Subgraph(child);
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Some(line)) if line.contains("listening on") => {
                println!("demo: {line}");
                Ok(subgraph)
            }
            other => bail!("demo-subgraph did not start (got {other:?})"),
        }
    }
}

impl Drop for Subgraph {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
