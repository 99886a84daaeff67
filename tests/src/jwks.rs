//! A JWKS document served over plain HTTP from the test process, as an
//! identity provider would: the edge's `jwks_url` key source fetches it.
//!
//! The document can be swapped ([`JwksServer::serve`]), the server stopped
//! ([`JwksServer::stop`]: connections are refused) and started again on the
//! same port ([`JwksServer::start`]), and every request it answers is
//! counted ([`JwksServer::fetches`]). One thread accepts; each connection
//! gets one answer and is closed.

use std::{
    io::{BufRead, BufReader, ErrorKind, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How often the accept loop looks at its stop flag.
const POLL: Duration = Duration::from_millis(10);
/// The path the document is served at (any path gets it).
const PATH: &str = "/.well-known/jwks.json";

#[derive(Default)]
struct Shared {
    document: Mutex<String>,
    fetches: AtomicUsize,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
}

/// A JWKS server on 127.0.0.1; stopped when dropped.
pub struct JwksServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    running: Option<Running>,
}

impl JwksServer {
    /// Serves `document` on a free port of 127.0.0.1.
    pub fn bind(document: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding the JWKS server");
        let shared = Arc::new(Shared::default());
        *shared.document.lock().expect("document lock") = document;
        let mut server = Self {
            addr: listener.local_addr().expect("JWKS server address"),
            shared,
            running: None,
        };
        server.run(listener);
        server
    }

    /// `http://127.0.0.1:PORT/.well-known/jwks.json`.
    pub fn url(&self) -> String {
        format!("http://{}{PATH}", self.addr)
    }

    /// Requests answered since the server was bound.
    pub fn fetches(&self) -> usize {
        self.shared.fetches.load(Ordering::SeqCst)
    }

    /// Serves `document` from the next request on.
    pub fn serve(&self, document: String) {
        *self.shared.document.lock().expect("document lock") = document;
    }

    /// Closes the listening socket: connections are refused until
    /// [`Self::start`]. Returns once the socket is closed.
    pub fn stop(&mut self) {
        if let Some(running) = self.running.take() {
            running.stop.store(true, Ordering::SeqCst);
            running.thread.join().expect("JWKS server thread");
        }
    }

    /// Listens again on the same port (retried for a few seconds should
    /// the port still be held).
    pub fn start(&mut self) {
        if self.running.is_some() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("JWKS server: rebinding {} ({e}), retrying", self.addr);
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => panic!("JWKS server: rebinding {}: {e}", self.addr),
            }
        };
        self.run(listener);
    }

    fn run(&mut self, listener: TcpListener) {
        listener
            .set_nonblocking(true)
            .expect("non-blocking JWKS listener");
        let stop = Arc::new(AtomicBool::new(false));
        let (flag, shared) = (stop.clone(), self.shared.clone());
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let shared = shared.clone();
                        std::thread::spawn(move || answer(stream, &shared));
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                    Err(e) => eprintln!("JWKS server: accept: {e}"),
                }
            }
        });
        self.running = Some(Running { stop, thread });
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads one request head and answers it with the current document.
fn answer(stream: TcpStream, shared: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) if line == "\r\n" || line == "\n" => break,
            Ok(_) => {}
        }
    }
    shared.fetches.fetch_add(1, Ordering::SeqCst);
    let body = shared.document.lock().expect("document lock").clone();
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut stream = &stream;
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body.as_bytes());
    let _ = stream.flush();
}
