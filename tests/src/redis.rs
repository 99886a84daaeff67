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
    /// The TLS port, when started with [`Redis::start_tls`].
    tls_port: Option<u16>,
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
            tls_port: None,
        };
        redis.restart();
        Some(redis)
    }

    /// As [`Redis::start`], also listening with TLS on a port of its own
    /// ([`Redis::tls_url`]), with a certificate for 127.0.0.1 from a CA
    /// made for it ([`Redis::ca_file`]); [`Redis::other_ca_file`] is a CA
    /// that did not sign it. The certificates come from `openssl`.
    pub fn start_tls() -> Option<Self> {
        let mut redis = Self::start()?;
        redis.kill();
        let dir = redis.dir.path();
        make_ca(dir, "ca");
        make_ca(dir, "other-ca");
        new_key_and_request(
            dir,
            &[
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .expect("writing server.ext");
        openssl(
            dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
        );
        redis.tls_port = Some(free_port().port());
        redis.restart();
        Some(redis)
    }

    /// `rediss://127.0.0.1:PORT` (only after [`Redis::start_tls`]).
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("started with start_tls")
        )
    }

    /// The CA that signed the server's certificate (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A CA that did not.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.path().join("other-ca.pem")
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
            .args(self.tls_args())
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

    fn tls_args(&self) -> Vec<String> {
        let Some(port) = self.tls_port else {
            return Vec::new();
        };
        let file = |name: &str| self.dir.path().join(name).display().to_string();
        vec![
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            file("server.pem"),
            "--tls-key-file".into(),
            file("server.key"),
            "--tls-ca-cert-file".into(),
            file("ca.pem"),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
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

/// A self-signed CA, `<name>.pem` and `<name>.key` in `dir`.
fn make_ca(dir: &std::path::Path, name: &str) {
    let (pem, key) = (format!("{name}.pem"), format!("{name}.key"));
    new_key_and_request(
        dir,
        &[
            "-x509",
            "-keyout",
            &key,
            "-out",
            &pem,
            "-days",
            "2",
            "-subj",
            &format!("/CN=fraiseql-edge test {name}"),
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
}

/// `openssl req` with a new P-256 key (unencrypted) and `args`.
fn new_key_and_request(dir: &std::path::Path, args: &[&str]) {
    let mut all = vec![
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    all.extend_from_slice(args);
    openssl(dir, &all);
}

/// Runs `openssl` in `dir`; panics with its output if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("running openssl (cargo xtask setup installs it)");
    assert!(
        out.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
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
