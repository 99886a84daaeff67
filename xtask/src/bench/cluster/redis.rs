//! The benchmark's own `redis-server` (Debian's, installed by `cargo xtask
//! setup`): loopback, a free port, no persistence, stopped with its guard.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::super::proxy::procs::{Proc, check_interrupted};
use super::super::proxy::targets::free_port;

/// A running server.
pub struct Redis {
    pub addr: SocketAddr,
    proc: Proc,
}

impl Redis {
    /// Starts one (its files in `dir`) and waits until it answers `PING`.
    pub fn start(dir: &Path) -> Result<Self> {
        let binary = which::which("redis-server")
            .context("redis-server is not installed: run `cargo xtask setup` as root (or apt-get install redis-server)")?;
        let addr = free_port()?;
        let port = addr.port().to_string();
        let dir = dir.to_str().context("the bench directory is not UTF-8")?;
        let args = [
            "--bind",
            "127.0.0.1",
            "--port",
            &port,
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            dir,
        ];
        let proc = Proc::spawn("redis-server", binary, args)?;
        println!("bench: starting `{}`", proc.describe());
        let mut redis = Self { addr, proc };
        let deadline = Instant::now() + Duration::from_secs(20);
        while redis.command(&["PING"]).ok().as_deref() != Some("+PONG") {
            check_interrupted()?;
            redis.proc.check_alive()?;
            if Instant::now() > deadline {
                bail!(
                    "redis-server never answered on {addr}\n{}",
                    redis.proc.tail()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        println!("bench: redis-server ready on {addr}");
        Ok(redis)
    }

    /// Forgets every key (every identity's state).
    pub fn flush(&mut self) -> Result<()> {
        self.proc.check_alive()?;
        let answer = self.command(&["FLUSHALL"])?;
        if answer != "+OK" {
            bail!("FLUSHALL answered {answer}");
        }
        Ok(())
    }

    /// Fails if the server has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        self.proc.check_alive()
    }

    /// Sends one command and returns the first line of the reply.
    fn command(&self, args: &[&str]) -> Result<String> {
        let mut stream = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let mut request = format!("*{}\r\n", args.len());
        for a in args {
            request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        stream.write_all(request.as_bytes())?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_owned())
    }
}
