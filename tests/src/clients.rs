//! Client traffic from inside a [`NetNs`]: paced UDP floods from a chosen
//! source address and TCP connects with a timeout.
//!
//! Sockets are created on a thread inside the namespace and then used from
//! ordinary threads: a socket belongs to the namespace it was created in.

use std::{
    io,
    net::{IpAddr, SocketAddr, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::netns::NetNs;

/// What a flood did.
#[derive(Clone, Copy, Debug)]
pub struct FloodReport {
    /// Datagrams the kernel accepted for sending.
    pub sent: u64,
    /// Sends that failed (e.g. `ENOBUFS`).
    pub errors: u64,
    /// Time from the first to the last send.
    pub duration: Duration,
}

/// A UDP flood running on its own thread until [`Flood::stop`].
pub struct Flood {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<JoinHandle<FloodReport>>,
}

impl Flood {
    /// Starts sending datagrams from `src` (an address of `ns`) to `dst` at
    /// `pps` packets per second. After a stall (a busy machine) the pacing
    /// restarts instead of catching up with one large burst.
    pub fn start(ns: &NetNs, src: IpAddr, dst: SocketAddr, pps: u64) -> Self {
        assert!(pps > 0, "pps must be positive");
        let socket = ns
            .run(|| UdpSocket::bind(SocketAddr::new(src, 0)))
            .unwrap_or_else(|e| panic!("binding a UDP socket to {src} in {}: {e}", ns.name()));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let handle = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || send_paced(&socket, dst, pps, &stop, &sent))
        };
        Self {
            stop,
            sent,
            handle: Some(handle),
        }
    }

    /// Datagrams sent so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the flood and reports.
    pub fn stop(mut self) -> FloodReport {
        self.stop.store(true, Ordering::Relaxed);
        self.handle
            .take()
            .expect("joined once")
            .join()
            .expect("flood thread panicked")
    }
}

impl Drop for Flood {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Floods for `duration` and reports.
pub fn flood_for(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    pps: u64,
    duration: Duration,
) -> FloodReport {
    let flood = Flood::start(ns, src, dst, pps);
    std::thread::sleep(duration);
    flood.stop()
}

fn send_paced(
    socket: &UdpSocket,
    dst: SocketAddr,
    pps: u64,
    stop: &AtomicBool,
    sent: &AtomicU64,
) -> FloodReport {
    let interval = Duration::from_secs_f64(1.0 / pps as f64);
    let max_lag = Duration::from_millis(50);
    let mut payload = [0u8; 32];
    let (mut ok, mut errors) = (0u64, 0u64);
    let mut first = None;
    let mut last = Instant::now();
    let mut due = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > max_lag {
            due = now;
        }
        payload[..8].copy_from_slice(&ok.to_be_bytes());
        match socket.send_to(&payload, dst) {
            Ok(_) => {
                ok += 1;
                sent.store(ok, Ordering::Relaxed);
                last = Instant::now();
                first.get_or_insert(last);
            }
            Err(_) => errors += 1,
        }
        due += interval;
    }
    FloodReport {
        sent: ok,
        errors,
        duration: first.map_or(Duration::ZERO, |f| last - f),
    }
}

/// Opens a TCP connection from `src` (an address of `ns`) to `dst`, giving
/// up after `timeout` (`ErrorKind::TimedOut`). The socket is closed when the
/// returned stream is dropped.
pub fn tcp_connect(
    ns: &NetNs,
    src: IpAddr,
    dst: SocketAddr,
    timeout: Duration,
) -> io::Result<TcpStream> {
    ns.run(|| {
        let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
        socket.connect_timeout(&dst.into(), timeout)?;
        Ok(socket.into())
    })
}
