//! The demo's traffic: paced UDP floods from client addresses inside the
//! namespace, and a receiver in the root namespace counting what arrives.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use nix::sched::{CloneFlags, setns};
use nix::sys::socket::{setsockopt, sockopt};

/// One flooding client.
pub struct Client {
    pub addr: Ipv4Addr,
    /// Packets per second it sends.
    pub rate: u64,
    pub note: &'static str,
}

/// Packets sent and received per client (same order as the clients).
pub struct Counters {
    pub sent: Vec<AtomicU64>,
    pub received: Vec<AtomicU64>,
    /// Datagrams from addresses that are none of the clients.
    pub received_other: AtomicU64,
}

impl Counters {
    fn new(n: usize) -> Self {
        Counters {
            sent: (0..n).map(|_| AtomicU64::new(0)).collect(),
            received: (0..n).map(|_| AtomicU64::new(0)).collect(),
            received_other: AtomicU64::new(0),
        }
    }
}

type Worker = JoinHandle<Result<()>>;

pub struct Traffic {
    pub counters: Arc<Counters>,
    stop_senders: Arc<AtomicBool>,
    stop_receiver: Arc<AtomicBool>,
    senders: Vec<Worker>,
    receiver: Option<Worker>,
}

/// 64 bytes of UDP payload.
const PAYLOAD: &[u8; 64] = b"fraiseql-edge demo datagram, 64 bytes of UDP payload, padding...";

impl Traffic {
    /// Binds the receiver on `server` in this (root) namespace and one socket
    /// per client inside `netns`, then starts sending.
    pub fn start(clients: &[Client], server: SocketAddr, netns: &str) -> Result<Self> {
        let addrs: Vec<Ipv4Addr> = clients.iter().map(|c| c.addr).collect();
        let counters = Arc::new(Counters::new(clients.len()));
        let stop_receiver = Arc::new(AtomicBool::new(false));
        let receiver = bind_receiver(server)?;
        let receiver = spawn_receiver(receiver, addrs.clone(), &counters, &stop_receiver)?;
        let mut traffic = Traffic {
            counters,
            stop_senders: Arc::new(AtomicBool::new(false)),
            stop_receiver,
            senders: Vec::new(),
            receiver: Some(receiver),
        };
        let sockets = sockets_in_netns(netns, addrs)?;
        for (i, (socket, client)) in sockets.into_iter().zip(clients).enumerate() {
            let sender = Sender {
                socket,
                to: server,
                rate: client.rate,
                stop: Arc::clone(&traffic.stop_senders),
                counters: Arc::clone(&traffic.counters),
                index: i,
            };
            let worker = thread::Builder::new()
                .name(format!("send-{}", client.addr))
                .spawn(move || sender.run())
                .context("starting a sender thread")?;
            traffic.senders.push(worker);
        }
        Ok(traffic)
    }

    /// Fails if a sender or the receiver stopped on its own (an error).
    pub fn check(&mut self) -> Result<()> {
        if let Some(i) = self.senders.iter().position(|w| w.is_finished()) {
            join(self.senders.remove(i)).context("a sender stopped")?;
            bail!("a sender stopped early");
        }
        if self.receiver.as_ref().is_some_and(|w| w.is_finished()) {
            join(self.receiver.take().expect("checked")).context("the receiver stopped")?;
            bail!("the receiver stopped early");
        }
        Ok(())
    }

    /// Stops the senders, gives the receiver a moment to drain its queue,
    /// stops it, and reports the first error any of them had.
    pub fn finish(mut self) -> Result<()> {
        self.stop_senders.store(true, Ordering::SeqCst);
        let mut result = Ok(());
        for worker in self.senders.drain(..) {
            result = result.and(join(worker).context("sender"));
        }
        thread::sleep(Duration::from_millis(300));
        self.stop_receiver.store(true, Ordering::SeqCst);
        if let Some(worker) = self.receiver.take() {
            result = result.and(join(worker).context("receiver"));
        }
        result
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop_senders.store(true, Ordering::SeqCst);
        self.stop_receiver.store(true, Ordering::SeqCst);
    }
}

fn join(worker: Worker) -> Result<()> {
    worker
        .join()
        .map_err(|_| anyhow!("traffic thread panicked"))?
}

fn bind_receiver(server: SocketAddr) -> Result<UdpSocket> {
    let socket =
        UdpSocket::bind(server).with_context(|| format!("binding the receiver to {server}"))?;
    // A deep queue so the receiver's own drops do not blur the kernel's.
    let size = 8 << 20;
    if setsockopt(&socket, sockopt::RcvBufForce, &size).is_err() {
        setsockopt(&socket, sockopt::RcvBuf, &size).context("setting SO_RCVBUF")?;
    }
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .context("setting the receiver's timeout")?;
    Ok(socket)
}

fn spawn_receiver(
    socket: UdpSocket,
    clients: Vec<Ipv4Addr>,
    counters: &Arc<Counters>,
    stop: &Arc<AtomicBool>,
) -> Result<Worker> {
    let counters = Arc::clone(counters);
    let stop = Arc::clone(stop);
    thread::Builder::new()
        .name("receiver".to_owned())
        .spawn(move || receive(&socket, &clients, &counters, &stop))
        .context("starting the receiver thread")
}

fn receive(
    socket: &UdpSocket,
    clients: &[Ipv4Addr],
    counters: &Counters,
    stop: &AtomicBool,
) -> Result<()> {
    let mut buf = [0u8; 2048];
    while !stop.load(Ordering::Relaxed) {
        match socket.recv_from(&mut buf) {
            Ok((_, from)) => count(from.ip(), clients, counters),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e).context("receiving datagrams"),
        }
    }
    Ok(())
}

fn count(from: IpAddr, clients: &[Ipv4Addr], counters: &Counters) {
    let index = match from.to_canonical() {
        IpAddr::V4(v4) => clients.iter().position(|c| *c == v4),
        IpAddr::V6(_) => None,
    };
    match index {
        Some(i) => counters.received[i].fetch_add(1, Ordering::Relaxed),
        None => counters.received_other.fetch_add(1, Ordering::Relaxed),
    };
}

/// Creates one UDP socket per address inside the namespace at `/run/netns/…`:
/// a thread joins the namespace, and the sockets it makes stay in it.
fn sockets_in_netns(netns: &str, addrs: Vec<Ipv4Addr>) -> Result<Vec<UdpSocket>> {
    let netns = netns.to_owned();
    let worker = thread::spawn(move || -> Result<Vec<UdpSocket>> {
        let handle = File::open(&netns).with_context(|| format!("opening {netns}"))?;
        setns(handle, CloneFlags::CLONE_NEWNET).with_context(|| format!("joining {netns}"))?;
        addrs
            .into_iter()
            .map(|a| {
                UdpSocket::bind((a, 0)).with_context(|| format!("binding a client socket to {a}"))
            })
            .collect()
    });
    worker
        .join()
        .map_err(|_| anyhow!("the namespace thread panicked"))?
}

/// One client's paced flood.
struct Sender {
    socket: UdpSocket,
    to: SocketAddr,
    rate: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    index: usize,
}

impl Sender {
    fn run(self) -> Result<()> {
        let start = Instant::now();
        // Most a stall may be made up for at once: a tenth of a second.
        let max_behind = (self.rate / 10).max(1);
        let mut scheduled: u64 = 0;
        while !self.stop.load(Ordering::Relaxed) {
            let due = (start.elapsed().as_secs_f64() * self.rate as f64) as u64;
            scheduled = scheduled.max(due.saturating_sub(max_behind));
            while scheduled < due {
                self.send_one()?;
                scheduled += 1;
            }
            thread::sleep(Duration::from_millis(2));
        }
        Ok(())
    }

    fn send_one(&self) -> Result<()> {
        match self.socket.send_to(PAYLOAD, self.to) {
            Ok(_) => {
                self.counters.sent[self.index].fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            // A full queue: the packet is not sent, and not counted.
            Err(e) if is_transient(&e) => Ok(()),
            Err(e) => Err(e).with_context(|| format!("sending to {}", self.to)),
        }
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::WouldBlock | ErrorKind::Interrupted | ErrorKind::ConnectionRefused
    ) || e.raw_os_error() == Some(nix::libc::ENOBUFS)
}
