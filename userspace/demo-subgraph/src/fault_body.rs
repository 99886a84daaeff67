//! The body faults: how a GraphQL response body leaves the subgraph while
//! `slow_body_ms` or `stall_body` is set.
//!
//! The response head always goes out at once with the full `Content-Length`
//! (the body's exact size hint, which hyper turns into the header), so what a
//! client meets is a well-formed response whose body trickles or stops:
//!
//! - `slow_body_ms`: the body is sent in [`SLOW_CHUNK`]-byte pieces, the first
//!   at once and each next one `slow_body_ms` after the previous, so the whole
//!   body takes `(ceil(len / 16) - 1) * slow_body_ms`.
//! - `stall_body`: the first half of the body (`len / 2` bytes, at least one)
//!   is sent, then nothing while the fault is set; the connection stays open.
//!   Once it is lifted, the rest is sent (paced by `slow_body_ms` if that was
//!   set too) and the response completes. Refusing drops the connection
//!   instead. A body of fewer than two bytes cannot stop half-way and is sent
//!   whole (GraphQL bodies never are that short).
//!
//! The faults are read once, when the response is ready: changing
//! `slow_body_ms` does not re-pace a body already being sent, and setting
//! `stall_body` does not stop one. Lifting `stall_body` does release the bodies
//! it stalled.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll, ready},
    time::Duration,
};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body::{Frame, SizeHint};

use crate::faults::FaultControl;

/// Size of the pieces a slow body is sent in.
pub const SLOW_CHUNK: usize = 16;

/// Returns `response` with its body sent as the body faults in force say, or
/// unchanged when none is set.
pub async fn apply(faults: &FaultControl, response: Response) -> Response {
    let current = faults.current();
    if !current.stall_body && current.slow_body_ms == 0 {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // Every body on the GraphQL port is already in memory: this does not wait.
    let bytes = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(error = %e, "cannot read a response body to slow it down");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    // hyper writes the length from the body's exact size hint.
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = FaultBody::new(
        bytes,
        Duration::from_millis(current.slow_body_ms),
        current.stall_body.then(|| faults.body_released()),
    );
    Response::from_parts(parts, Body::new(body))
}

type Gate = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A body sent in pieces, with a pause between them and possibly a stall
/// half-way.
pub struct FaultBody {
    /// What is still to be sent.
    rest: Bytes,
    /// Largest piece sent at once.
    chunk: usize,
    /// Pause after each piece but the last.
    pause: Duration,
    /// Bytes sent so far.
    sent: usize,
    /// Where the body stops, and what lets it go on.
    stall: Option<(usize, Gate)>,
    /// What the next piece waits for.
    gate: Option<Gate>,
}

impl FaultBody {
    /// `pause` zero sends the body in one piece (bar the stall); `stall` stops
    /// it half-way until the future resolves.
    fn new(
        body: Bytes,
        pause: Duration,
        stall: Option<impl Future<Output = ()> + Send + 'static>,
    ) -> Self {
        let stall_at = (body.len() / 2).max(1);
        Self {
            chunk: if pause.is_zero() {
                usize::MAX
            } else {
                SLOW_CHUNK
            },
            pause,
            sent: 0,
            stall: stall
                .filter(|_| stall_at < body.len())
                .map(|released| (stall_at, Box::pin(released) as Gate)),
            gate: None,
            rest: body,
        }
    }
}

impl http_body::Body for FaultBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if let Some(gate) = &mut this.gate {
                ready!(gate.as_mut().poll(cx));
                this.gate = None;
            }
            if this.rest.is_empty() {
                return Poll::Ready(None);
            }
            let mut n = this.chunk.min(this.rest.len());
            if let Some((at, _)) = &this.stall {
                if this.sent == *at {
                    this.gate = this.stall.take().map(|(_, released)| released);
                    continue;
                }
                n = n.min(*at - this.sent);
            }
            let piece = this.rest.split_to(n);
            this.sent += n;
            if !this.pause.is_zero() && !this.rest.is_empty() {
                this.gate = Some(Box::pin(tokio::time::sleep(this.pause)));
            }
            return Poll::Ready(Some(Ok(Frame::data(piece))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(u64::try_from(self.rest.len()).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests;
