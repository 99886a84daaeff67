//! The GraphQL listener: accepts connections, bounds the time a client may
//! take, and drains on shutdown.
//!
//! * **Headers**: a client gets `proxy.header_read_timeout_ms` to send a
//!   request's headers (hyper's header-read timer; it also closes a
//!   keep-alive connection idle that long). A slowloris client trickling
//!   header lines is cut off at that deadline, whatever its pace.
//! * **Body**: the accept phase bounds the body read
//!   (`proxy.body_read_timeout_ms`, 408).
//! * **Response**: a write that makes no progress for
//!   `proxy.client_write_timeout_ms` (a client that stopped reading) fails
//!   and closes the connection, which drops the upstream body and frees its
//!   pool slot; the upstream side of the body is bounded by
//!   [`super::timed_body`].
//! * **HTTP/2** (prior knowledge, no TLS): keep-alive pings every header
//!   timeout, a client that does not answer one within it is dropped; at
//!   most 100 concurrent streams per connection. The header deadline is an
//!   HTTP/1 mechanism: an HTTP/2 client's streams are bounded by the body
//!   and upstream deadlines instead.
//! * **Shutdown**: when `stop` flips, the listener closes (no new
//!   connections), idle keep-alive connections close, and requests in
//!   flight get up to `proxy.drain_timeout_ms` to finish.

use std::{convert::Infallible, pin::Pin, sync::Arc, time::Duration};

use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto, graceful::GracefulShutdown},
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};
use tokio_io_timeout::TimeoutStream;

use super::Proxy;

/// Time limits of the listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerLimits {
    /// `proxy.header_read_timeout_ms`.
    pub header_read: Duration,
    /// `proxy.client_write_timeout_ms`.
    pub write: Duration,
    /// `proxy.drain_timeout_ms`.
    pub drain: Duration,
}

type ClientIo = TokioIo<Pin<Box<TimeoutStream<TcpStream>>>>;

/// Serves `proxy` on `listener` until `stop` turns true (or its sender is
/// dropped), then drains; returns once every connection is closed or the
/// drain deadline passed.
pub async fn serve(
    proxy: Arc<Proxy>,
    listener: TcpListener,
    limits: ListenerLimits,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read);
    // HTTP/2 (prior knowledge): a client that stops answering pings is
    // dropped, and one connection carries at most 100 requests at a time.
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(limits.header_read))
        .keep_alive_timeout(limits.header_read)
        .max_concurrent_streams(100);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(x) => x,
                Err(e) => {
                    // Out of descriptors or a dying socket: back off, never spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut stop) => break,
        };
        // Degraded mode: the connection cap and block list at accept time.
        let guard = match &proxy.limiter {
            Some(limiter) => match limiter.admit_connection(peer.ip()) {
                Ok(guard) => Some(guard),
                Err(refusal) => {
                    tracing::debug!(client = %peer.ip(), %refusal, "connection refused");
                    continue;
                }
            },
            None => None,
        };
        let _ = stream.set_nodelay(true);
        let mut io = TimeoutStream::new(stream);
        io.set_write_timeout(Some(limits.write));
        let io: ClientIo = TokioIo::new(Box::pin(io));
        let proxy = Arc::clone(&proxy);
        let service = hyper::service::service_fn(move |req: http::Request<Incoming>| {
            let proxy = Arc::clone(&proxy);
            async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
        });
        let conn = builder.serve_connection(io, service).into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _guard = guard;
            let _ = conn.await;
        });
    }
    drop(listener);
    let open = graceful.count();
    tracing::info!(
        connections = open,
        drain_timeout_ms = limits.drain.as_millis() as u64,
        "draining: new connections refused, in-flight requests finishing"
    );
    match tokio::time::timeout(limits.drain, graceful.shutdown()).await {
        Ok(()) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain deadline passed with requests still in flight"),
    }
}

/// Resolves when `stop` is (or becomes) true, or its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
