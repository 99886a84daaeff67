//! A real Redis server (Debian's `redis-server`, installed by
//! `cargo xtask setup`) for the cluster-mode tests: each `Redis` is its own
//! server on 127.0.0.1 and a free port, without persistence, killed on
//! drop. It can be killed and started again on the same port, as an
//! operator's Redis fails and comes back.

use std::{
    net::{SocketAddr, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::{free_port, wait::eventually, which};

/// A Redis server, killed on drop.
pub struct Redis {
    child: Option<Child>,
    addr: SocketAddr,
    dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Redis {
    /// Starts a server. Returns `None` (after printing why) when there is
    /// no `redis-server` outside CI; under `CI=true` that is a failure,
    /// since setup installs it.
    pub fn start() -> Option<Self> {
        let Some(bin) = which("redis-server") else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("redis-server is needed (cargo xtask setup installs Debian's redis-server)");
            }
            eprintln!("SKIP: no redis-server binary; run `cargo xtask setup`");
            return None;
        };
        let mut redis = Redis {
            child: None,
            addr: free_port(),
            dir: tempfile::tempdir().expect("temp dir"),
            bin,
        };
        redis.restart();
        Some(redis)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Kills the server (SIGKILL: what a crash looks like to its clients)
    /// and waits until its port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let closed = eventually(Duration::from_secs(10), || {
            TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err()
        });
        assert!(closed, "redis still listens on {} after kill", self.addr);
    }

    /// Starts the server (again) on the same port, empty, and waits until
    /// it answers `PING`.
    pub fn restart(&mut self) {
        self.kill();
        let log = self.dir.path().join("redis.log");
        let child = Command::new(&self.bin)
            .args(["--bind", "127.0.0.1"])
            .args(["--port", &self.addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let up = eventually(Duration::from_secs(20), || {
            self.command(&["PING"]).is_ok_and(|r| r == "+PONG")
        });
        assert!(
            up,
            "redis-server never answered on {}:\n{}",
            self.addr,
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Sends one command (RESP, bulk strings) and returns the first line of
    /// the reply (`+PONG`, `:1`, `$5`, `-ERR …`).
    pub fn command(&self, args: &[&str]) -> std::io::Result<String> {
        use std::io::{BufRead, BufReader, Write};
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req += &format!("${}\r\n{a}\r\n", a.len());
        }
        stream.write_all(req.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_answers_dies_and_comes_back_empty_on_its_port() {
        let Some(mut redis) = Redis::start() else {
            return;
        };
        assert_eq!(redis.command(&["SET", "k", "v"]).unwrap(), "+OK");
        assert_eq!(redis.command(&["EXISTS", "k"]).unwrap(), ":1");
        let addr = redis.addr();
        redis.kill();
        assert!(redis.command(&["PING"]).is_err(), "a killed server answers");
        redis.restart();
        assert_eq!(redis.addr(), addr, "the same port after a restart");
        assert_eq!(
            redis.command(&["EXISTS", "k"]).unwrap(),
            ":0",
            "no persistence: a restarted server is empty"
        );
        assert_eq!(redis.url(), format!("redis://{addr}"));
    }
}
