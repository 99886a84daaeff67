//! The accept loops: our own, so that connections can be counted and the
//! GraphQL port can be closed and re-opened on demand (`refuse`).
//!
//! Each accepted connection is served by hyper (HTTP/1.1, or HTTP/2 with prior
//! knowledge) in its own task, which holds a `connections_open` guard until the
//! connection ends. Refusing aborts the accept task (dropping the listening
//! socket, so new connects get ECONNREFUSED) and then bumps a generation
//! number every connection task watches, so the open connections are dropped
//! too. Re-opening binds the same address again with `SO_REUSEADDR`.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    sync::{Mutex, watch},
    task::JoinHandle,
};
use tracing::Instrument;

use crate::{faults::FaultControl, stats::Stats};

/// How long re-binding the GraphQL port keeps retrying while the address is
/// still in use (a lingering socket of the previous listener).
const REBIND_ATTEMPTS: u32 = 50;
const REBIND_PAUSE: Duration = Duration::from_millis(100);
/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The GraphQL port: a listener that can be closed and re-opened, and the
/// connections it accepted.
pub struct GraphqlServer {
    addr: SocketAddr,
    router: Router,
    stats: Arc<Stats>,
    /// Bumped to drop every open connection.
    close_connections: watch::Sender<u64>,
    /// The running accept loop; `None` while refusing.
    accept_task: Mutex<Option<JoinHandle<()>>>,
}

impl GraphqlServer {
    /// Binds `addr` (port 0 picks a free port) and starts accepting.
    pub async fn start(
        addr: SocketAddr,
        router: Router,
        stats: Arc<Stats>,
    ) -> io::Result<Arc<Self>> {
        let listener = bind(addr)?;
        let server = Arc::new(Self {
            addr: listener.local_addr()?,
            router,
            stats,
            close_connections: watch::Sender::new(0),
            accept_task: Mutex::new(None),
        });
        *server.accept_task.lock().await = Some(server.spawn_accept_loop(listener));
        Ok(server)
    }

    /// The address actually bound (also after a refuse / re-open cycle).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Makes the listener match the `refuse` fault now in force. Reads the
    /// fault under the lock, so concurrent updates converge on the latest one.
    pub async fn apply(&self, faults: &FaultControl) -> io::Result<()> {
        let mut task = self.accept_task.lock().await;
        let refuse = faults.current().refuse;
        match (refuse, task.take()) {
            (true, Some(accepting)) => {
                accepting.abort();
                // Wait for the task to drop the listening socket.
                let _ = accepting.await;
                self.close_connections
                    .send_modify(|g| *g = g.wrapping_add(1));
                tracing::info!(addr = %self.addr, "refusing: listener and connections closed");
            }
            (false, None) => {
                let listener = bind_with_retry(self.addr).await?;
                *task = Some(self.spawn_accept_loop(listener));
                tracing::info!(addr = %self.addr, "accepting again");
            }
            (_, unchanged) => *task = unchanged,
        }
        Ok(())
    }

    fn spawn_accept_loop(&self, listener: TcpListener) -> JoinHandle<()> {
        let router = self.router.clone();
        let stats = self.stats.clone();
        let close = self.close_connections.subscribe();
        tokio::spawn(
            async move {
                loop {
                    match listener.accept().await {
                        Ok((stream, peer)) => {
                            tracing::trace!(%peer, "connection accepted");
                            tokio::spawn(
                                serve_counted(stream, router.clone(), stats.clone(), close.clone())
                                    .in_current_span(),
                            );
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                        }
                    }
                }
            }
            .in_current_span(),
        )
    }
}

/// Serves one GraphQL connection, counted, until it ends or refusing drops it.
async fn serve_counted(
    stream: TcpStream,
    router: Router,
    stats: Arc<Stats>,
    mut close: watch::Receiver<u64>,
) {
    let _open = stats.connection_accepted();
    tokio::select! {
        () = serve_connection(stream, router) => {}
        // Also taken if the sender is gone: the server is shutting down.
        _ = close.changed() => tracing::trace!("connection dropped: refusing"),
    }
}

/// Serves HTTP on one connection until the client or the protocol ends it.
pub async fn serve_connection(stream: TcpStream, router: Router) {
    // Small GraphQL responses must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(router);
    let builder = auto::Builder::new(TokioExecutor::new());
    if let Err(e) = builder
        .serve_connection(TokioIo::new(stream), service)
        .await
    {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Accepts on `listener` forever, serving `router` on each connection (uncounted:
/// for the admin port).
pub async fn serve_plain(listener: TcpListener, router: Router) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve_connection(stream, router.clone()).in_current_span());
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Binds a listener with `SO_REUSEADDR`, so the address can be bound again
/// while connections of a previous listener linger in TIME_WAIT.
pub fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn bind_with_retry(addr: SocketAddr) -> io::Result<TcpListener> {
    let mut attempt = 1;
    loop {
        match bind(addr) {
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && attempt < REBIND_ATTEMPTS => {
                attempt += 1;
                tokio::time::sleep(REBIND_PAUSE).await;
            }
            result => return result,
        }
    }
}
