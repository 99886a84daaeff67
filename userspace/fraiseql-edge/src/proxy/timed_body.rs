//! Deadlines on a streamed upstream response body: a body that sends
//! nothing for `idle` while the client waits for it (a subgraph stalled
//! mid-body), or that is still running at the request's deadline, ends
//! with an error. The server then aborts the client's response (a reset or
//! a truncated body, never a hang) and dropping the upstream body closes
//! its connection and frees the pool slot.
//!
//! The idle clock runs only while the upstream is the one being waited
//! for: time the client takes to read (its socket full, the body not
//! polled) is not counted against the upstream; a client that stops
//! reading is cut off by the listener's write timeout instead.

use std::{
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::error::BoxError;

/// Which deadline a body missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BodyTimeout {
    /// Nothing arrived from the upstream for the idle timeout.
    #[error("upstream response body stalled")]
    Idle,
    /// The request's overall deadline passed mid-body.
    #[error("request deadline passed while streaming the response")]
    Deadline,
}

impl BodyTimeout {
    /// Metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Deadline => "deadline",
        }
    }
}

/// Called once when a deadline is missed (metrics, passive health).
pub type OnTimeout = Box<dyn FnOnce(BodyTimeout) + Send + Sync>;

/// A body with an idle timeout and an absolute deadline.
pub struct TimedBody<B> {
    inner: B,
    idle: Duration,
    /// Created on the first wait: a body that is ready when polled (the
    /// common case) costs no timer at all.
    idle_timer: Option<Pin<Box<Sleep>>>,
    /// The idle timer is armed (the last poll found nothing).
    waiting: bool,
    deadline: Instant,
    deadline_timer: Option<Pin<Box<Sleep>>>,
    on_timeout: Option<OnTimeout>,
    done: bool,
}

impl<B> TimedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, idle: Duration, deadline: Instant, on_timeout: OnTimeout) -> Self {
        Self {
            inner,
            idle,
            idle_timer: None,
            waiting: false,
            deadline,
            deadline_timer: None,
            on_timeout: Some(on_timeout),
            done: false,
        }
    }

    fn fail(&mut self, why: BodyTimeout) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        if let Some(f) = self.on_timeout.take() {
            f(why);
        }
        Poll::Ready(Some(Err(Box::new(why))))
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .deadline_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.as_mut().poll(cx).is_ready() {
                    return this.fail(BodyTimeout::Deadline);
                }
                let at = Instant::now() + this.idle;
                let idle = this
                    .idle_timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if !this.waiting {
                    this.waiting = true;
                    idle.as_mut().reset(at);
                }
                if idle.as_mut().poll(cx).is_ready() {
                    return this.fail(BodyTimeout::Idle);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use http_body_util::{BodyExt as _, Full};

    use super::*;

    /// Sends `chunks` frames `gap` apart, then (if `stall`) never ends.
    struct Paced {
        chunks: usize,
        gap: Duration,
        next: Pin<Box<Sleep>>,
        stall: bool,
    }

    impl Body for Paced {
        type Data = Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            if self.chunks == 0 {
                return if self.stall {
                    Poll::Pending
                } else {
                    Poll::Ready(None)
                };
            }
            if self.next.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.chunks -= 1;
            let at = Instant::now() + self.gap;
            self.next.as_mut().reset(at);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"x")))))
        }
    }

    fn paced(chunks: usize, gap: Duration, stall: bool) -> Paced {
        Paced {
            chunks,
            gap,
            next: Box::pin(tokio::time::sleep(gap)),
            stall,
        }
    }

    fn recorder() -> (OnTimeout, Arc<Mutex<Vec<BodyTimeout>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        (Box::new(move |t| s.lock().unwrap().push(t)), seen)
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_but_live_body_completes() {
        let (cb, seen) = recorder();
        let far = Instant::now() + Duration::from_secs(3600);
        let body = TimedBody::new(
            paced(10, Duration::from_secs(4), false),
            Duration::from_secs(5),
            far,
            cb,
        );
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_ends_in_an_error_after_the_idle_timeout() {
        let (cb, seen) = recorder();
        let far = Instant::now() + Duration::from_secs(3600);
        let body = TimedBody::new(
            paced(2, Duration::from_millis(10), true),
            Duration::from_secs(5),
            far,
            cb,
        );
        let t0 = Instant::now();
        let err = body.collect().await.expect_err("stalled");
        assert_eq!(err.to_string(), BodyTimeout::Idle.to_string());
        assert_eq!(*seen.lock().unwrap(), [BodyTimeout::Idle]);
        assert!(t0.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_bounds_a_body_that_never_idles() {
        let (cb, seen) = recorder();
        let deadline = Instant::now() + Duration::from_secs(20);
        let body = TimedBody::new(
            paced(1000, Duration::from_secs(1), false),
            Duration::from_secs(5),
            deadline,
            cb,
        );
        assert!(body.collect().await.is_err());
        assert_eq!(*seen.lock().unwrap(), [BodyTimeout::Deadline]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_complete_body_ignores_later_deadlines() {
        let (cb, seen) = recorder();
        let body = TimedBody::new(
            Full::new(Bytes::from_static(b"done")),
            Duration::from_millis(1),
            Instant::now(),
            cb,
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "done");
        assert!(seen.lock().unwrap().is_empty());
    }
}
