//! The accept phase over in-memory requests: no sockets.

use std::{
    convert::Infallible,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{Method, Request};
use http_body::Frame;
use http_body_util::Full;

use super::*;

const LIMITS: AcceptLimits = AcceptLimits {
    max_body: 64,
    body_timeout: Duration::from_secs(10),
};

fn post(ct: Option<&str>, body: &'static str) -> Request<Full<Bytes>> {
    let mut b = Request::builder().method(Method::POST).uri("/g");
    if let Some(ct) = ct {
        b = b.header("content-type", ct);
    }
    b.body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn get(qs: &str) -> Request<Full<Bytes>> {
    Request::get(format!("/g?{qs}"))
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn code(req: Request<Full<Bytes>>) -> &'static str {
    match accept(LIMITS, req).await {
        Ok(_) => "OK",
        Err(e) => e.status_and_code().1,
    }
}

#[tokio::test]
async fn content_types() {
    let q = r#"{"query":"{ a }"}"#;
    assert_eq!(code(post(Some("application/json"), q)).await, "OK");
    assert_eq!(
        code(post(Some("Application/JSON; charset=utf-8"), q)).await,
        "OK"
    );
    for ct in [
        Some("application/graphql-response+json"),
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        None,
    ] {
        assert_eq!(code(post(ct, q)).await, "UNSUPPORTED_MEDIA_TYPE", "{ct:?}");
    }
}

#[tokio::test]
async fn post_keeps_the_body_for_the_graphql_phase() {
    let req = post(Some("application/json"), r#"{"query":"mutation { m }"}"#);
    let a = accept(LIMITS, req).await.unwrap();
    assert!(a.query.is_none());
    assert_eq!(&a.body[..], br#"{"query":"mutation { m }"}"#);
    let big = r#"{"query":"{ aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa }"}"#;
    assert_eq!(
        code(post(Some("application/json"), big)).await,
        "PAYLOAD_TOO_LARGE"
    );
}

#[tokio::test]
async fn get_keeps_the_query_string_and_other_methods_are_refused() {
    let a = accept(LIMITS, get("query=%7B%20a%20%7D")).await.unwrap();
    assert_eq!(a.query.as_deref(), Some("query=%7B%20a%20%7D"));
    assert!(a.body.is_empty());
    let put = Request::put("/g").body(Full::new(Bytes::new())).unwrap();
    assert_eq!(code(put).await, "METHOD_NOT_ALLOWED");
}

#[tokio::test(start_paused = true)]
async fn a_body_that_never_ends_times_out() {
    let req = Request::post("/g")
        .header("content-type", "application/json")
        .body(Stalled { sent: false })
        .unwrap();
    let err = accept(LIMITS, req).await.err().expect("refused");
    assert_eq!(err.status_and_code().1, "REQUEST_TIMEOUT");
}

/// One byte, then nothing: a client trickling (or stalling) its body.
struct Stalled {
    sent: bool,
}

impl Body for Stalled {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent {
            return Poll::Pending;
        }
        self.sent = true;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"{")))))
    }
}
