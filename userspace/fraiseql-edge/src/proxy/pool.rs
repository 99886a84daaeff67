//! HTTP/1.1 connection pool of one endpoint, on hyper's connection API.
//!
//! Why not bb8/deadpool: a request must learn *at once* that a connection
//! could not be made (to fail over before anything is sent), and an ejected
//! endpoint must lose every connection; the generic pools only report a
//! checkout timeout and keep their idle set. This pool is small:
//!
//! * `max` slots; every live connection (idle or busy) and every connect in
//!   progress holds one, so `max` is never exceeded;
//! * an idle stack (LIFO keeps the hottest connections warm); a checkout takes
//!   an idle connection, else opens one if a slot is free, else queues until
//!   `acquire_timeout`;
//! * waiters are served strictly in arrival order ([`queue`]): a released
//!   connection is handed straight to the oldest waiter, a freed slot lets
//!   the oldest waiter open a connection, and a newcomer never goes ahead of
//!   a waiter. So `n` concurrent clients hold at most `n` connections, plus
//!   the maintainer's `min_idle`;
//! * a maintainer (driven by [`Pool::maintain`]) keeps `min_idle` connections
//!   open, closes idle ones above `min_idle` after `idle_timeout` and any at
//!   the end of its lifetime: `max_lifetime` less a random jitter of up to a
//!   tenth, drawn per connection ([`lifetime`]), so connections opened
//!   together are not all replaced together;
//! * [`Pool::eject`] drops every idle connection, fails the waiters and makes
//!   busy ones close on release; [`Pool::restore`] lets the maintainer refill.
//!   Each eject starts a new epoch: a connection is pooled only in the epoch
//!   its connect started in, so a connect that completes after an eject (even
//!   one followed by a restore) is closed, and a [`Pool::get`] connecting
//!   across one fails with [`PoolError::Ejected`];
//! * [`Pool::get_while_ejected`] checks out regardless of ejection (panic
//!   routing); while the pool is ejected its connections close on release.
//!
//! A connection is handed back by dropping its [`Pooled`] guard. The guard
//! travels with the response body ([`PooledBody`]), so a connection returns
//! to the pool only once its response has been read to the end; one dropped
//! half-way is closed instead of being reused with unread bytes.
//!
//! A connection has no task of its own: its hyper state machine is driven
//! by the request using it — while the request is sent and while the
//! response body is read — so a request's client socket and upstream socket
//! are served by one task on one worker, without a channel hop to a
//! connection task elsewhere.
//! An idle connection is polled once, without a waker, when it is taken
//! from the idle set, so a close that arrived meanwhile is seen there.

use std::{
    collections::VecDeque,
    pin::Pin,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    task::Context,
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use self::{
    lifetime::Jitter,
    queue::{Grant, Slot, Waiters, Waiting},
};
use crate::config::PoolConfig;

mod lifetime;
mod pooled;
mod queue;

pub use self::pooled::{Pooled, PooledBody, SendError};

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

/// The connection's I/O state machine. It is driven by whichever task is
/// waiting on the connection — the request's own task while it sends and
/// while its response body streams — never by a task of its own: a request
/// and both of its sockets stay on one worker thread, with no hand-off
/// through a channel to a connection task on another worker.
type Driver = Pin<Box<hyper::client::conn::http1::Connection<TokioIo<TcpStream>, UpstreamBody>>>;

struct Conn {
    sender: SendRequest<UpstreamBody>,
    /// `None` once the connection has ended.
    driver: Option<Driver>,
    /// When it is replaced; `None` if `max_lifetime` is beyond the clock.
    expires: Option<Instant>,
    last_used: Instant,
    /// Requests sent on it so far.
    uses: u64,
    /// [`State::epoch`] when the connect started.
    epoch: u64,
    _slot: Slot,
}

impl Conn {
    /// Lets the connection do its I/O (write a queued request, read an
    /// answer or the peer's close) on behalf of the task in `cx`.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(d) = self.driver.as_mut()
            && d.as_mut().poll(cx).is_ready()
        {
            self.driver = None;
        }
    }

    /// Worth keeping: not closed by the peer and not expired. An idle
    /// connection is driven by nobody, so a close that arrived while it sat
    /// idle is read here first (without a waker: whoever uses it next
    /// drives it with theirs). (Not `is_ready`: a connection not driven
    /// since its handshake or its last response is not "ready" yet, but
    /// perfectly usable; [`Pooled::send`] drives it until it is.)
    fn reusable(&mut self) -> bool {
        self.drive(&mut Context::from_waker(std::task::Waker::noop()));
        self.driver.is_some()
            && !self.sender.is_closed()
            && self.expires.is_none_or(|at| Instant::now() < at)
    }
}

/// Everything behind the pool's one lock. No [`Conn`] or [`Slot`] may be
/// dropped while it is held (see [`queue`]).
#[derive(Default)]
struct State {
    /// Oldest-used first.
    idle: VecDeque<Conn>,
    waiters: Waiters,
    /// Slots taken: live connections plus connects in progress. Never above
    /// `max`.
    live: u32,
    ejected: bool,
    /// Bumped by every eject: a connection from an earlier epoch is never
    /// pooled, even if the pool was restored in the meantime.
    epoch: u64,
}

struct Shared {
    addr: String,
    cfg: PoolConfig,
    state: Mutex<State>,
    opened: AtomicU64,
    jitter: Jitter,
}

impl Shared {
    fn max_lifetime(&self) -> Duration {
        Duration::from_secs(self.cfg.max_lifetime_secs)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives a connection back: to the oldest waiter, else to the idle set;
    /// closes it instead if it must not be reused.
    fn release(&self, mut conn: Conn) {
        let unclaimed = {
            let mut st = self.state();
            if st.ejected || conn.epoch != st.epoch || !conn.reusable() {
                Some(Grant::Conn(conn))
            } else {
                conn.last_used = Instant::now();
                match st.waiters.hand_over(Grant::Conn(conn)) {
                    Some(Grant::Conn(conn)) => {
                        st.idle.push_back(conn);
                        None
                    }
                    other => other,
                }
            }
        };
        // Closing it frees its slot for the oldest waiter.
        drop(unclaimed);
    }

    /// A checkout's first look: an idle connection, else a free slot, else a
    /// place at the back of the queue. Nobody is served ahead of a waiter.
    /// Also returns the epoch a new connection must belong to.
    fn first_look(self: &Arc<Self>, while_ejected: bool) -> Result<(Turn, u64), PoolError> {
        let mut stale = Vec::new();
        let turn = {
            let mut st = self.state();
            if st.ejected && !while_ejected {
                return Err(PoolError::Ejected);
            }
            let mut turn = None;
            if st.waiters.is_empty() {
                // LIFO: the most recently used connection is the warmest.
                while let Some(mut conn) = st.idle.pop_back() {
                    if conn.reusable() {
                        turn = Some(Turn::Now(Grant::Conn(conn)));
                        break;
                    }
                    stale.push(conn);
                }
                if turn.is_none() && st.live < self.cfg.max {
                    st.live += 1;
                    turn = Some(Turn::Now(Grant::Slot(Slot::counted(self))));
                }
            }
            let turn = turn.unwrap_or_else(|| {
                Turn::Queued(Waiting::join(self, &mut st.waiters, while_ejected))
            });
            (turn, st.epoch)
        };
        drop(stale);
        Ok(turn)
    }

    /// Lets a checkout keep the connection it opened, unless the pool was
    /// ejected while it was connecting.
    fn admit(&self, conn: Conn) -> Result<Conn, PoolError> {
        let current = {
            let st = self.state();
            !st.ejected && st.epoch == conn.epoch
        };
        if current {
            Ok(conn)
        } else {
            Err(PoolError::Ejected) // `conn` closes here, outside the lock
        }
    }

    /// Opens a connection in `slot`, for `epoch`.
    async fn connect(&self, slot: Slot, epoch: u64) -> Result<Conn, PoolError> {
        let addr = &self.addr;
        let err = |reason: String| PoolError::Connect {
            addr: addr.clone(),
            reason,
        };
        let timeout = Duration::from_millis(self.cfg.connect_timeout_ms);
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr.as_str()))
            .await
            .map_err(|_| err(format!("timed out after {timeout:?}")))?
            .map_err(|e| err(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| err(e.to_string()))?;
        self.opened.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        Ok(Conn {
            sender,
            driver: Some(Box::pin(connection)),
            expires: now.checked_add(self.jitter.lifetime(self.max_lifetime())),
            last_used: now,
            uses: 0,
            epoch,
            _slot: slot,
        })
    }
}

/// Where a checkout stands after its first look.
enum Turn {
    Now(Grant),
    Queued(Waiting),
}

/// The pool. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

/// Numbers for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    /// Idle connections.
    pub idle: u32,
    /// Busy connections (checked out, or being opened).
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
                cfg,
                state: Mutex::new(State::default()),
                opened: AtomicU64::new(0),
                jitter: Jitter::default(),
            }),
        }
    }

    /// Checks out a connection (see the module docs for the order); refused
    /// while the pool is ejected.
    pub async fn get(&self) -> Result<Pooled, PoolError> {
        self.checkout(false).await
    }

    /// Checks out a connection even while the pool is ejected: for panic
    /// routing, when every endpoint of a subgraph is ejected and traffic goes
    /// to all of them anyway. Waits in the same queue as [`Self::get`], but an
    /// eject does not fail it, nor one during its connect. While the pool is
    /// ejected the connection is closed on release, never kept idle.
    pub async fn get_while_ejected(&self) -> Result<Pooled, PoolError> {
        self.checkout(true).await
    }

    async fn checkout(&self, while_ejected: bool) -> Result<Pooled, PoolError> {
        let deadline =
            tokio::time::Instant::now() + Duration::from_millis(self.shared.cfg.acquire_timeout_ms);
        let (turn, epoch) = self.shared.first_look(while_ejected)?;
        let grant = match turn {
            Turn::Now(grant) => grant,
            Turn::Queued(waiting) => waiting.wait(deadline).await?,
        };
        let conn = match grant {
            Grant::Conn(conn) => conn,
            Grant::Slot(slot) => {
                let conn = self.shared.connect(slot, epoch).await?;
                if while_ejected {
                    conn
                } else {
                    self.shared.admit(conn)?
                }
            }
        };
        Ok(Pooled::new(conn, Arc::clone(&self.shared)))
    }

    /// One maintenance pass: drop broken and expired idle connections and
    /// top the idle set up to `min_idle` (unless ejected). Call it regularly.
    pub async fn maintain(&self) {
        let cfg = &self.shared.cfg;
        let idle_timeout = Duration::from_secs(cfg.idle_timeout_secs);
        let stale = {
            let mut st = self.shared.state();
            let mut stale = VecDeque::new();
            for mut conn in std::mem::take(&mut st.idle) {
                if conn.reusable() {
                    st.idle.push_back(conn);
                } else {
                    stale.push_back(conn);
                }
            }
            // Oldest-used first; keep min_idle regardless of idleness.
            while st.idle.len() > cfg.min_idle as usize
                && st
                    .idle
                    .front()
                    .is_some_and(|c| c.last_used.elapsed() >= idle_timeout)
            {
                stale.extend(st.idle.pop_front());
            }
            stale
        };
        drop(stale);
        // Bounded: a peer that closes every new connection at once must not
        // keep this pass reconnecting.
        for _ in 0..cfg.min_idle {
            let (slot, epoch) = {
                let mut st = self.shared.state();
                // With waiters queued there is nothing idle and no free slot.
                if st.ejected || st.idle.len() >= cfg.min_idle as usize || st.live >= cfg.max {
                    break;
                }
                st.live += 1;
                (Slot::counted(&self.shared), st.epoch)
            };
            match self.shared.connect(slot, epoch).await {
                // Closed instead if the pool was ejected meanwhile.
                Ok(conn) => self.shared.release(conn),
                Err(e) => {
                    tracing::debug!(endpoint = %self.shared.addr, error = %e, "pool refill failed");
                    break;
                }
            }
        }
    }

    /// Drops every idle connection, fails the waiters and refuses checkouts
    /// until [`Self::restore`] (except [`Self::get_while_ejected`]); busy
    /// connections close on release.
    pub fn eject(&self) {
        let (idle, waiters) = {
            let mut st = self.shared.state();
            st.ejected = true;
            st.epoch = st.epoch.wrapping_add(1);
            (std::mem::take(&mut st.idle), st.waiters.eject())
        };
        drop(waiters);
        drop(idle);
    }

    /// Accepts checkouts again; the next [`Self::maintain`] refills.
    pub fn restore(&self) {
        self.shared.state().ejected = false;
    }

    /// Whether the pool is ejected.
    pub fn is_ejected(&self) -> bool {
        self.shared.state().ejected
    }

    /// Current numbers.
    pub fn stats(&self) -> PoolStats {
        let (idle, live) = {
            let st = self.shared.state();
            (st.idle.len() as u32, st.live)
        };
        PoolStats {
            idle,
            busy: live.saturating_sub(idle),
            max: self.shared.cfg.max,
            opened: self.shared.opened.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests;
