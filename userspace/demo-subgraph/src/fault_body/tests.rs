use std::{future::poll_fn, pin::Pin, time::Duration};

use axum::{
    body::{Body, Bytes},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use http_body::Body as _;

use super::{FaultBody, SLOW_CHUNK, apply};
use crate::faults::{FaultControl, Faults, FaultsPatch};

/// The next piece of `body`, `None` at its end.
async fn next<B>(body: &mut B) -> Option<Bytes>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let frame = poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.unwrap().into_data().unwrap())
}

async fn pieces<B>(body: &mut B) -> Vec<Bytes>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Debug,
{
    let mut pieces = Vec::new();
    while let Some(piece) = next(body).await {
        pieces.push(piece);
    }
    pieces
}

fn lengths(pieces: &[Bytes]) -> Vec<usize> {
    pieces.iter().map(Bytes::len).collect()
}

fn no_stall() -> Option<std::future::Pending<()>> {
    None
}

fn bytes(n: u8) -> Bytes {
    (0..n).collect::<Vec<u8>>().into()
}

#[tokio::test]
async fn slow_bodies_go_in_small_pieces_with_the_full_length_announced() {
    let mut body = FaultBody::new(bytes(100), Duration::from_millis(1), no_stall());
    assert_eq!(body.size_hint().exact(), Some(100));
    let pieces = pieces(&mut body).await;
    assert_eq!(lengths(&pieces), [16, 16, 16, 16, 16, 16, 4]);
    assert_eq!(pieces.concat(), bytes(100));
    assert!(body.is_end_stream());
    assert_eq!(body.size_hint().exact(), Some(0));
}

#[tokio::test]
async fn without_a_pause_or_stall_the_body_goes_in_one_piece() {
    let mut body = FaultBody::new(bytes(100), Duration::ZERO, no_stall());
    assert_eq!(lengths(&pieces(&mut body).await), [100]);
}

#[tokio::test]
async fn stalled_bodies_send_half_then_wait_for_the_release() {
    let control = FaultControl::new(
        Faults {
            stall_body: true,
            ..Faults::default()
        },
        Default::default(),
    )
    .unwrap();
    let mut body = FaultBody::new(
        Bytes::from_static(b"0123456789"),
        Duration::ZERO,
        Some(control.body_released()),
    );
    assert_eq!(body.size_hint().exact(), Some(10));
    assert_eq!(next(&mut body).await.unwrap(), "01234");
    assert_eq!(body.size_hint().exact(), Some(5));
    let stalled = tokio::time::timeout(Duration::from_millis(50), next(&mut body)).await;
    assert!(stalled.is_err(), "the rest was sent while stalled");

    control
        .update(FaultsPatch {
            stall_body: Some(false),
            ..FaultsPatch::default()
        })
        .unwrap();
    assert_eq!(next(&mut body).await.unwrap(), "56789");
    assert_eq!(next(&mut body).await, None);
}

#[tokio::test]
async fn a_slow_stalled_body_stops_half_way_between_pieces() {
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let mut body = FaultBody::new(
        bytes(40),
        Duration::from_millis(1),
        Some(async move {
            let _ = released.await;
        }),
    );
    assert_eq!(next(&mut body).await.unwrap().len(), SLOW_CHUNK);
    assert_eq!(next(&mut body).await.unwrap().len(), 4, "cut at the half");
    let stalled = tokio::time::timeout(Duration::from_millis(50), next(&mut body)).await;
    assert!(stalled.is_err(), "the rest was sent while stalled");
    release.send(()).unwrap();
    assert_eq!(lengths(&pieces(&mut body).await), [16, 4]);
}

#[tokio::test]
async fn bodies_too_short_to_halve_are_sent_whole() {
    let stall = Some(std::future::pending::<()>());
    let mut body = FaultBody::new(Bytes::from_static(b"x"), Duration::ZERO, stall);
    assert_eq!(lengths(&pieces(&mut body).await), [1]);
    let mut body = FaultBody::new(Bytes::new(), Duration::ZERO, Some(std::future::pending()));
    assert_eq!(next(&mut body).await, None);
}

fn json_response(body: &'static str) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

#[tokio::test]
async fn apply_keeps_status_headers_and_length() {
    let text = r#"{"errors":[{"message":"injected fault"}]}"#;
    let control = FaultControl::new(Faults::default(), Default::default()).unwrap();
    let mut untouched = apply(&control, json_response(text)).await.into_body();
    assert_eq!(lengths(&pieces(&mut untouched).await), [text.len()]);

    control
        .update(FaultsPatch {
            slow_body_ms: Some(1),
            ..FaultsPatch::default()
        })
        .unwrap();
    let slowed = apply(&control, json_response(text)).await;
    assert_eq!(slowed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        slowed.headers()[header::CONTENT_TYPE],
        "application/json",
        "headers are kept"
    );
    let mut body: Body = slowed.into_body();
    assert_eq!(body.size_hint().exact(), Some(text.len() as u64));
    let pieces = pieces(&mut body).await;
    assert_eq!(pieces.len(), text.len().div_ceil(SLOW_CHUNK));
    assert_eq!(pieces.concat(), text.as_bytes());
}
