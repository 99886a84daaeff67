//! A checked-out connection, and the response body that carries it back.

use std::{
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Instant,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::{Conn, Shared, UpstreamBody};

/// A checked-out connection; dropping it returns the connection to the pool.
pub struct Pooled {
    conn: Option<Conn>,
    shared: Arc<Shared>,
    /// Set when the connection must not be reused (response not fully read).
    discard: bool,
}

impl Pooled {
    pub(super) fn new(conn: Conn, shared: Arc<Shared>) -> Self {
        Self {
            conn: Some(conn),
            shared,
            discard: false,
        }
    }

    /// Sends a request; the error says whether it certainly was not sent.
    /// The connection's I/O runs in the calling task (see `Driver`).
    pub async fn send(
        &mut self,
        req: http::Request<UpstreamBody>,
    ) -> Result<http::Response<Incoming>, SendError> {
        let conn = self.conn.as_mut().expect("connection present until drop");
        conn.last_used = Instant::now();
        let reused = conn.uses > 0;
        conn.uses += 1;
        let ready = std::future::poll_fn(|cx| {
            conn.drive(cx);
            conn.sender.poll_ready(cx)
        })
        .await;
        if let Err(e) = ready {
            self.discard = true;
            return Err(if reused {
                SendError::Stale(Box::new(req))
            } else {
                SendError::NotSent(e.to_string())
            });
        }
        let mut response = std::pin::pin!(conn.sender.try_send_request(req));
        let answered = std::future::poll_fn(|cx| {
            if let Poll::Ready(r) = response.as_mut().poll(cx) {
                return Poll::Ready(r);
            }
            conn.drive(cx);
            response.as_mut().poll(cx)
        })
        .await;
        match answered {
            Ok(resp) => Ok(resp),
            Err(mut e) => {
                self.discard = true;
                let unsent = e.take_message();
                let reason = e.into_error().to_string();
                Err(match unsent {
                    Some(req) if reused => SendError::Stale(Box::new(req)),
                    Some(_) => SendError::NotSent(reason),
                    None => SendError::Sent(reason),
                })
            }
        }
    }

    /// Drives the connection's I/O for the task in `cx`.
    fn drive(&mut self, cx: &mut Context<'_>) {
        if let Some(conn) = self.conn.as_mut() {
            conn.drive(cx);
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
    /// A connection that had served requests turned out closed before this
    /// one was written (the peer closed it while it sat idle): nothing was
    /// sent and the endpoint is not at fault. The request comes back for a
    /// try on a fresh connection.
    Stale(Box<http::Request<UpstreamBody>>),
    /// Certainly not sent: safe to try another endpoint.
    NotSent(String),
    /// The request may have reached the upstream.
    Sent(String),
}

impl Drop for Pooled {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        if self.discard {
            return; // closing frees the slot for the oldest waiter
        }
        self.shared.release(conn);
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
        let mut polled = Pin::new(&mut self.inner).poll_frame(cx);
        if polled.is_pending() {
            // Nothing buffered: let the connection read on, in this task,
            // then look again.
            if let Some(conn) = self.conn.as_mut() {
                conn.drive(cx);
            }
            polled = Pin::new(&mut self.inner).poll_frame(cx);
        }
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
