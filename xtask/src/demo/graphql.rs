//! GraphQL clients inside the namespace: keep-alive HTTP/1.1 connections from
//! a given source address to the edge, sending a query at a steady pace and
//! counting answered (HTTP 200 with `data`) and failed requests. A failed or
//! timed-out request drops the connection and the next one reconnects.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockType, SockaddrIn, bind, connect, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeVal;

const QUERY: &str = r#"{"query":"{ user(id: \"1\") { id name email } }"}"#;
const TIMEOUT: Duration = Duration::from_secs(1);

/// One GraphQL client.
pub struct GqlClient {
    pub addr: Ipv4Addr,
    /// Requests per second.
    pub rate: u64,
    pub note: &'static str,
}

/// Answered and failed requests per client.
pub struct GqlCounters {
    pub ok: Vec<AtomicU64>,
    pub failed: Vec<AtomicU64>,
}

pub struct GqlTraffic {
    pub counters: Arc<GqlCounters>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Result<()>>>,
}

impl GqlTraffic {
    /// Starts one thread per client, each inside the namespace at `netns`.
    pub fn start(clients: &[GqlClient], server: SocketAddrV4, netns: &str) -> Result<Self> {
        let n = clients.len();
        let counters = Arc::new(GqlCounters {
            ok: (0..n).map(|_| AtomicU64::new(0)).collect(),
            failed: (0..n).map(|_| AtomicU64::new(0)).collect(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let mut workers = Vec::new();
        for (index, c) in clients.iter().enumerate() {
            let (counters, stop, netns) =
                (Arc::clone(&counters), Arc::clone(&stop), netns.to_owned());
            let (addr, rate) = (c.addr, c.rate);
            workers.push(
                thread::Builder::new()
                    .name(format!("graphql-{addr}"))
                    .spawn(move || {
                        let handle =
                            File::open(&netns).with_context(|| format!("opening {netns}"))?;
                        setns(handle, CloneFlags::CLONE_NEWNET).context("joining the namespace")?;
                        run(addr, rate, server, &counters, index, &stop);
                        Ok(())
                    })
                    .context("starting a GraphQL client")?,
            );
        }
        Ok(Self {
            counters,
            stop,
            workers,
        })
    }

    /// Fails if a client thread ended on its own.
    pub fn check(&mut self) -> Result<()> {
        if self.workers.iter().any(JoinHandle::is_finished) {
            bail!("a GraphQL client stopped early");
        }
        Ok(())
    }

    /// Stops the clients.
    pub fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            w.join().map_err(|_| anyhow!("GraphQL client panicked"))??;
        }
        Ok(())
    }
}

impl Drop for GqlTraffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn run(from: Ipv4Addr, rate: u64, to: SocketAddrV4, c: &GqlCounters, i: usize, stop: &AtomicBool) {
    let gap = Duration::from_secs_f64(1.0 / rate.max(1) as f64);
    let mut conn: Option<BufReader<TcpStream>> = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let ok = (|| -> Result<()> {
            if conn.is_none() {
                conn = Some(BufReader::new(connect_from(from, to)?));
            }
            let stream = conn.as_mut().expect("connected");
            request(stream)
        })()
        .is_ok();
        if ok {
            c.ok[i].fetch_add(1, Ordering::Relaxed);
        } else {
            c.failed[i].fetch_add(1, Ordering::Relaxed);
            conn = None;
        }
        next += gap;
        let now = Instant::now();
        if next > now {
            thread::sleep(next - now);
        } else {
            next = now;
        }
    }
}

fn connect_from(from: Ipv4Addr, to: SocketAddrV4) -> Result<TcpStream> {
    let fd: OwnedFd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let timeout = TimeVal::new(TIMEOUT.as_secs() as _, 0);
    // SO_SNDTIMEO also bounds connect(2) on Linux.
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    setsockopt(&fd, sockopt::ReceiveTimeout, &timeout)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::from(SocketAddrV4::new(from, 0)),
    )?;
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to))?;
    let stream = TcpStream::from(fd);
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// One POST on a keep-alive connection; Ok when the edge answered 200 with data.
fn request(stream: &mut BufReader<TcpStream>) -> Result<()> {
    let req = format!(
        "POST /graphql HTTP/1.1\r\nHost: edge\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{QUERY}",
        QUERY.len()
    );
    stream.get_mut().write_all(req.as_bytes())?;
    let mut status = String::new();
    stream.read_line(&mut status)?;
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line)? == 0 {
            bail!("connection closed");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':')
            && k.eq_ignore_ascii_case("content-length")
        {
            length = v.trim().parse()?;
        }
    }
    let mut body = vec![0; length];
    stream.read_exact(&mut body)?;
    if status.split_whitespace().nth(1) == Some("200") && body.starts_with(b"{\"data\"") {
        Ok(())
    } else {
        bail!("unexpected answer: {}", status.trim())
    }
}
