//! HTTP/1.1 connection pool of one endpoint, on hyper's connection API.
//!
//! Why not bb8/deadpool: a request must learn *at once* that a connection
//! could not be made (to fail over before anything is sent), and an ejected
//! endpoint must lose every connection; the generic pools only report a
//! checkout timeout and keep their idle set. This pool is small:
//!
//! * a semaphore of `max` slots; every live connection (idle or busy) holds
//!   one, so `max` is never exceeded;
//! * an idle stack (LIFO keeps the hottest connections warm); a checkout takes
//!   an idle connection, else opens one if a slot is free, else waits for a
//!   release or a free slot until `acquire_timeout`;
//! * a maintainer (driven by [`Pool::maintain`]) keeps `min_idle` connections
//!   open, closes idle ones above `min_idle` after `idle_timeout` and any after
//!   `max_lifetime`;
//! * [`Pool::eject`] drops every idle connection and makes busy ones close on
//!   release; [`Pool::restore`] lets the maintainer refill.
//!
//! A connection is handed back by dropping its [`Pooled`] guard. The guard
//! travels with the response body ([`PooledBody`]), so a connection returns
//! to the pool only once its response has been read to the end; one dropped
//! half-way is closed instead of being reused with unread bytes.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::{body::Incoming, client::conn::http1::SendRequest};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpStream,
    sync::{Notify, OwnedSemaphorePermit, Semaphore},
};

use crate::config::PoolConfig;

/// Request body type sent upstream: bodies are buffered (bounded by
/// `proxy.max_body_bytes`) so a request can be replayed on failover.
pub type UpstreamBody = Full<Bytes>;

/// Why no connection could be had.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// All `max` connections stayed busy for `acquire_timeout`.
    #[error("no connection free within the acquire timeout")]
    Timeout,
    /// A new connection could not be made (nothing was sent).
    #[error("connect to {addr}: {reason}")]
    Connect {
        /// host:port.
        addr: String,
        /// Cause.
        reason: String,
    },
    /// The endpoint is ejected.
    #[error("endpoint ejected")]
    Ejected,
}

struct Conn {
    sender: SendRequest<UpstreamBody>,
    created: Instant,
    last_used: Instant,
    _slot: Slot,
}

/// A semaphore permit that wakes waiters when the connection holding it closes.
struct Slot {
    _permit: OwnedSemaphorePermit,
    notify: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.notify.notify_one();
    }
}

struct Shared {
    addr: String,
    cfg: PoolConfig,
    slots: Arc<Semaphore>,
    idle: Mutex<VecDeque<Conn>>,
    notify: Arc<Notify>,
    ejected: AtomicBool,
    opened: AtomicU64,
}

/// The pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

/// A checked-out connection; dropping it returns the connection to the pool.
pub struct Pooled {
    conn: Option<Conn>,
    shared: Arc<Shared>,
    /// Set when the connection must not be reused (response not fully read).
    discard: bool,
}

/// Numbers for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle connections.
    pub idle: u32,
    /// Busy connections (checked out).
    pub busy: u32,
    /// The configured maximum.
    pub max: u32,
    /// Connections opened since start.
    pub opened: u64,
}

impl Pool {
    /// A pool for `addr` (`host:port`); no connection is made until
    /// [`Pool::maintain`] or a checkout.
    pub fn new(addr: String, cfg: PoolConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                addr,
                slots: Arc::new(Semaphore::new(cfg.max as usize)),
                cfg,
                idle: Mutex::new(VecDeque::new()),
                notify: Arc::new(Notify::new()),
                ejected: AtomicBool::new(false),
                opened: AtomicU64::new(0),
            }),
        }
    }

    fn idle(&self) -> std::sync::MutexGuard<'_, VecDeque<Conn>> {
        self.shared.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checks out a connection (see the module docs for the order).
    pub async fn get(&self) -> Result<Pooled, PoolError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.shared.cfg.acquire_timeout_ms);
        loop {
            if self.shared.ejected.load(Ordering::Acquire) {
                return Err(PoolError::Ejected);
            }
            // Register for a wake-up before looking, so a release between the
            // look and the wait is not missed.
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(conn) = self.take_idle() {
                return Ok(self.pooled(conn));
            }
            if let Ok(permit) = Arc::clone(&self.shared.slots).try_acquire_owned() {
                let conn = self.connect(permit).await?;
                return Ok(self.pooled(conn));
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(PoolError::Timeout);
            }
        }
    }

    fn pooled(&self, conn: Conn) -> Pooled {
        Pooled {
            conn: Some(conn),
            shared: Arc::clone(&self.shared),
            discard: false,
        }
    }

    /// Pops a usable idle connection, dropping closed or expired ones. (Not
    /// `is_ready`: a connection whose task has not run since its handshake or
    /// its last response is not "ready" yet, but perfectly usable;
    /// [`Pooled::send`] waits for it.)
    fn take_idle(&self) -> Option<Conn> {
        let max_lifetime = Duration::from_secs(self.shared.cfg.max_lifetime_secs);
        let mut idle = self.idle();
        while let Some(conn) = idle.pop_back() {
            if !conn.sender.is_closed() && conn.created.elapsed() < max_lifetime {
                return Some(conn);
            }
        }
        None
    }

    async fn connect(&self, permit: OwnedSemaphorePermit) -> Result<Conn, PoolError> {
        let slot = Slot {
            _permit: permit,
            notify: Arc::clone(&self.shared.notify),
        };
        let addr = &self.shared.addr;
        let err = |reason: String| PoolError::Connect {
            addr: addr.clone(),
            reason,
        };
        let timeout = Duration::from_millis(self.shared.cfg.connect_timeout_ms);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| err(format!("timed out after {timeout:?}")))?
            .map_err(|e| err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        tokio::spawn(async move {
            // Ends when the peer closes or every sender is dropped.
            let _ = connection.await;
        });
        self.shared.opened.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        Ok(Conn {
            sender,
            created: now,
            last_used: now,
            _slot: slot,
        })
    }

    /// One maintenance pass: drop broken and expired idle connections and
    /// top the idle set up to `min_idle` (unless ejected). Call it regularly.
    pub async fn maintain(&self) {
        let cfg = &self.shared.cfg;
        let idle_timeout = Duration::from_secs(cfg.idle_timeout_secs);
        let max_lifetime = Duration::from_secs(cfg.max_lifetime_secs);
        {
            let mut idle = self.idle();
            idle.retain(|c| !c.sender.is_closed() && c.created.elapsed() < max_lifetime);
            // Oldest-used first; keep min_idle regardless of idleness.
            while idle.len() > cfg.min_idle as usize
                && idle
                    .front()
                    .is_some_and(|c| c.last_used.elapsed() >= idle_timeout)
            {
                idle.pop_front();
            }
        }
        while !self.shared.ejected.load(Ordering::Acquire)
            && self.idle().len() < cfg.min_idle as usize
        {
            let Ok(permit) = Arc::clone(&self.shared.slots).try_acquire_owned() else {
                break;
            };
            match self.connect(permit).await {
                Ok(conn) => {
                    self.idle().push_front(conn);
                    self.shared.notify.notify_one();
                }
                Err(e) => {
                    tracing::debug!(endpoint = %self.shared.addr, error = %e, "pool refill failed");
                    break;
                }
            }
        }
    }

    /// Drops every idle connection and refuses checkouts until [`Self::restore`].
    pub fn eject(&self) {
        self.shared.ejected.store(true, Ordering::Release);
        self.idle().clear();
        self.shared.notify.notify_waiters();
    }

    /// Accepts checkouts again; the next [`Self::maintain`] refills.
    pub fn restore(&self) {
        self.shared.ejected.store(false, Ordering::Release);
    }

    /// Whether the pool is ejected.
    pub fn is_ejected(&self) -> bool {
        self.shared.ejected.load(Ordering::Acquire)
    }

    /// Current numbers.
    pub fn stats(&self) -> PoolStats {
        let max = self.shared.cfg.max;
        let idle = self.idle().len() as u32;
        let live = max - self.shared.slots.available_permits() as u32;
        PoolStats {
            idle,
            busy: live.saturating_sub(idle),
            max,
            opened: self.shared.opened.load(Ordering::Relaxed),
        }
    }
}

impl Pooled {
    /// Sends a request; the error says whether it certainly was not sent.
    pub async fn send(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let conn = self.conn.as_mut().expect("connection present until drop");
        conn.last_used = Instant::now();
        if let Err(e) = conn.sender.ready().await {
            self.discard = true;
            return Err(SendError::NotSent(e.to_string()));
        }
        match conn.sender.try_send_request(req).await {
            Ok(resp) => Ok(resp),
            Err(mut e) => {
                self.discard = true;
                let not_sent = e.take_message().is_some();
                let reason = e.into_error().to_string();
                Err(if not_sent {
                    SendError::NotSent(reason)
                } else {
                    SendError::Sent(reason)
                })
            }
        }
    }

    /// Marks the connection as not reusable.
    pub fn discard(&mut self) {
        self.discard = true;
    }

    /// Lifts [`Self::discard`]: the exchange reached a clean state.
    pub fn keep(&mut self) {
        self.discard = false;
    }
}

/// A failed send.
#[derive(Debug)]
pub enum SendError {
    /// Certainly not sent: safe to try another endpoint.
    NotSent(String),
    /// The request may have reached the upstream.
    Sent(String),
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let max_lifetime = Duration::from_secs(self.shared.cfg.max_lifetime_secs);
        if self.discard
            || self.shared.ejected.load(Ordering::Acquire)
            || conn.sender.is_closed()
            || conn.created.elapsed() >= max_lifetime
        {
            return; // the slot's drop wakes a waiter
        }
        conn.last_used = Instant::now();
        self.shared
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(conn);
        self.shared.notify.notify_one();
    }
}

/// A response body that keeps its connection checked out until the body has
/// been read to the end (then the connection goes back to the pool).
pub struct PooledBody {
    inner: Incoming,
    conn: Option<Pooled>,
}

impl PooledBody {
    /// Wraps `inner`, holding `conn` until it ends.
    pub fn new(inner: Incoming, conn: Pooled) -> Self {
        Self {
            inner,
            conn: Some(conn),
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.as_mut() {
            // Dropped before the end: unread bytes make the connection unusable.
            conn.discard();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => {
                self.conn = None; // complete: back to the pool
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(c) = self.conn.as_mut() {
                    c.discard();
                }
            }
            _ => {
                if self.inner.is_end_stream() {
                    self.conn = None;
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests;
