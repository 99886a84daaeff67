//! Test servers in the root namespace, bound to a [`crate::netns::NetNs`]'s
//! host-side address: what they receive is what the XDP program let through.

use std::{
    collections::HashMap,
    io::{ErrorKind, Read},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use nix::sys::socket::{setsockopt, sockopt};

/// How often server threads look at their stop flag.
const POLL: Duration = Duration::from_millis(50);

type Counts = Arc<Mutex<HashMap<IpAddr, u64>>>;

fn get(counts: &Counts, addr: IpAddr) -> u64 {
    counts
        .lock()
        .expect("counts lock")
        .get(&addr)
        .copied()
        .unwrap_or(0)
}

/// Counts UDP datagrams per source address on one or more local addresses.
pub struct UdpCounter {
    counts: Counts,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl UdpCounter {
    /// Binds every address in `addrs` and starts counting.
    pub fn bind(addrs: &[SocketAddr]) -> Self {
        let counts = Counts::default();
        let stop = Arc::new(AtomicBool::new(false));
        let threads = addrs
            .iter()
            .map(|addr| {
                let socket =
                    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("binding UDP {addr}: {e}"));
                // Root may exceed rmem_max: a slow reader must not lose datagrams.
                setsockopt(&socket, sockopt::RcvBufForce, &(8 << 20)).expect("SO_RCVBUFFORCE");
                socket.set_read_timeout(Some(POLL)).expect("read timeout");
                let (counts, stop) = (counts.clone(), stop.clone());
                std::thread::spawn(move || {
                    let mut buf = [0u8; 2048];
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok((_, from)) = socket.recv_from(&mut buf) {
                            *counts
                                .lock()
                                .expect("counts lock")
                                .entry(from.ip())
                                .or_default() += 1;
                        }
                    }
                })
            })
            .collect();
        Self {
            counts,
            stop,
            threads,
        }
    }

    /// Datagrams received from `addr` so far.
    pub fn received(&self, addr: IpAddr) -> u64 {
        get(&self.counts, addr)
    }
}

impl Drop for UdpCounter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Accepts TCP connections and holds them until the client closes: on EOF
/// the server closes its side too, so the server socket reaches TCP_CLOSE.
pub struct TcpHolder {
    accepted: Counts,
    open: Counts,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl TcpHolder {
    /// Listens on `addr`.
    pub fn bind(addr: SocketAddr) -> Self {
        let listener =
            TcpListener::bind(addr).unwrap_or_else(|e| panic!("listening on {addr}: {e}"));
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let accepted = Counts::default();
        let open = Counts::default();
        let stop = Arc::new(AtomicBool::new(false));
        let acceptor = {
            let (accepted, open, stop) = (accepted.clone(), open.clone(), stop.clone());
            std::thread::spawn(move || accept_loop(&listener, &accepted, &open, &stop))
        };
        Self {
            accepted,
            open,
            stop,
            acceptor: Some(acceptor),
        }
    }

    /// Connections accepted from `addr` so far.
    pub fn accepted(&self, addr: IpAddr) -> u64 {
        get(&self.accepted, addr)
    }

    /// Connections from `addr` the server still holds open.
    pub fn open(&self, addr: IpAddr) -> u64 {
        get(&self.open, addr)
    }
}

fn accept_loop(listener: &TcpListener, accepted: &Counts, open: &Counts, stop: &Arc<AtomicBool>) {
    let mut handlers = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((stream, peer)) => {
                let ip = peer.ip();
                *accepted.lock().expect("lock").entry(ip).or_default() += 1;
                *open.lock().expect("lock").entry(ip).or_default() += 1;
                let (open, stop) = (open.clone(), stop.clone());
                handlers.push(std::thread::spawn(move || {
                    hold(stream, &stop);
                    *open.lock().expect("lock").entry(ip).or_default() -= 1;
                }));
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(_) => std::thread::sleep(POLL),
        }
    }
    for h in handlers {
        let _ = h.join();
    }
}

/// Reads until EOF, an error or the stop flag; dropping the stream closes it.
fn hold(mut stream: TcpStream, stop: &AtomicBool) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(POLL));
    let mut buf = [0u8; 1024];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

impl Drop for TcpHolder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}
