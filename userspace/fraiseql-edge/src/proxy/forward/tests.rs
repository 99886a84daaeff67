//! `forward` against real HTTP/1.1 upstreams on loopback (in-process hyper
//! servers with a chosen behaviour), no mocks.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::{io::AsyncReadExt as _, net::TcpListener};

use super::*;
use crate::config::{PoolConfig, SubgraphConfig, TimeoutConfig};

#[derive(Clone, Copy)]
enum Behaviour {
    /// 200 `{"data":…}` after a delay.
    Answer(Duration),
    /// Reads the request, then closes the connection without answering.
    Hangup,
    /// Answers with this status.
    Status(u16),
}

/// An upstream on loopback; returns its URL and a request counter.
async fn upstream(b: Behaviour) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicUsize::new(0));
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                if let Behaviour::Hangup = b {
                    let mut buf = [0u8; 4096];
                    if stream.read(&mut buf).await.unwrap_or(0) > 0 {
                        s.fetch_add(1, Ordering::SeqCst);
                    }
                    return; // dropped: the client sees the connection close
                }
                let svc = hyper::service::service_fn(move |_req| {
                    let s = Arc::clone(&s);
                    async move {
                        s.fetch_add(1, Ordering::SeqCst);
                        let (delay, status) = match b {
                            Behaviour::Answer(d) => (d, 200),
                            Behaviour::Status(code) => (Duration::ZERO, code),
                            Behaviour::Hangup => unreachable!(),
                        };
                        tokio::time::sleep(delay).await;
                        let mut resp = http::Response::new(Full::new(Bytes::from_static(
                            br#"{"data":{"a":1}}"#,
                        )));
                        *resp.status_mut() = StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (url, seen)
}

fn subgraph(urls: &[&str], pool: PoolConfig, timeouts: TimeoutConfig) -> Arc<Subgraph> {
    let endpoints = urls.iter().map(|u| u.parse().unwrap()).collect();
    let mut cfg = SubgraphConfig::new("sg", endpoints);
    cfg.health.unhealthy_after = 1;
    (cfg.pool, cfg.timeouts) = (pool, timeouts);
    Subgraph::new(cfg, 100)
}

/// Endpoint 0 hangs up on every request, endpoint 1 answers; with the
/// request counters of each.
async fn bad_then_good() -> (Arc<Subgraph>, Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let (bad, bad_seen) = upstream(Behaviour::Hangup).await;
    let (good, good_seen) = upstream(Behaviour::Answer(Duration::ZERO)).await;
    let pool = PoolConfig {
        min_idle: 0,
        ..PoolConfig::default()
    };
    let sg = subgraph(&[&bad, &good], pool, TimeoutConfig::default());
    (sg, bad_seen, good_seen)
}

fn query(kind: OperationKind) -> Outgoing {
    Outgoing {
        method: Method::POST,
        query: None,
        headers: HeaderMap::new(),
        body: Bytes::from_static(br#"{"query":"{ a }"}"#),
        kind,
        trace: None,
    }
}

fn metrics() -> ProxyMetrics {
    ProxyMetrics::new(&Registry::new()).unwrap()
}

fn far() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

async fn status(r: Result<Forwarded, ProxyError>) -> Result<u16, &'static str> {
    match r {
        Ok(f) => {
            let s = f.response.status().as_u16();
            f.response.into_body().collect().await.unwrap();
            Ok(s)
        }
        Err(e) => Err(e.status_and_code().1),
    }
}

#[tokio::test]
async fn waiting_for_a_connection_is_saturation_not_a_failure() {
    let (url, _) = upstream(Behaviour::Answer(Duration::from_millis(400))).await;
    let pool = PoolConfig {
        min_idle: 0,
        max: 1,
        acquire_timeout_ms: 50,
        ..PoolConfig::default()
    };
    let sg = subgraph(&[&url], pool, TimeoutConfig::default());
    let m = metrics();
    let results = futures_join((0..4).map(|_| {
        let (sg, m) = (Arc::clone(&sg), m.clone());
        async move { status(forward(&sg, query(OperationKind::Query), &m, far()).await).await }
    }))
    .await;
    assert_eq!(
        results.iter().filter(|r| **r == Ok(200)).count(),
        1,
        "{results:?}"
    );
    assert!(
        results
            .iter()
            .all(|r| *r == Ok(200) || *r == Err("UPSTREAM_SATURATED")),
        "{results:?}"
    );
    assert!(
        sg.endpoints[0].is_healthy(),
        "saturation ejected the endpoint"
    );
    assert_eq!(sg.breaker.state(), crate::breaker::State::Closed);
}

#[tokio::test]
async fn the_per_try_clock_starts_with_a_connection_in_hand() {
    // Two requests, one connection: the second waits ~300 ms for it, then
    // takes 300 ms. Counted from the start, that is past the 450 ms try.
    let (url, _) = upstream(Behaviour::Answer(Duration::from_millis(300))).await;
    let pool = PoolConfig {
        min_idle: 0,
        max: 1,
        acquire_timeout_ms: 400,
        ..PoolConfig::default()
    };
    let timeouts = TimeoutConfig {
        per_try_ms: 450,
        ..TimeoutConfig::default()
    };
    let sg = subgraph(&[&url], pool, timeouts);
    let m = metrics();
    let results = futures_join((0..2).map(|_| {
        let (sg, m) = (Arc::clone(&sg), m.clone());
        async move { status(forward(&sg, query(OperationKind::Query), &m, far()).await).await }
    }))
    .await;
    assert_eq!(results, [Ok(200), Ok(200)]);
    assert!(sg.endpoints[0].is_healthy());
}

#[tokio::test]
async fn a_failover_records_the_first_endpoints_failure() {
    let (sg, bad_seen, good_seen) = bad_then_good().await;
    let m = metrics();
    // Round-robin: within two requests, one starts on the bad endpoint.
    for _ in 0..2 {
        let r = status(forward(&sg, query(OperationKind::Query), &m, far()).await).await;
        assert_eq!(r, Ok(200));
    }
    assert_eq!(bad_seen.load(Ordering::SeqCst), 1);
    assert_eq!(good_seen.load(Ordering::SeqCst), 2);
    assert!(
        !sg.endpoints[0].is_healthy(),
        "the broken exchange counts against the endpoint (unhealthy_after = 1)"
    );
    assert_eq!(
        m.failovers.with_label_values(&["sg", "unavailable"]).get(),
        1
    );
}

#[tokio::test]
async fn a_mutation_that_may_have_run_is_not_retried() {
    let (sg, bad_seen, good_seen) = bad_then_good().await;
    let m = metrics();
    let mut outcomes = Vec::new();
    for _ in 0..2 {
        outcomes.push(status(forward(&sg, query(OperationKind::Mutation), &m, far()).await).await);
    }
    assert!(
        outcomes.contains(&Err("UPSTREAM_UNAVAILABLE")),
        "{outcomes:?}"
    );
    assert_eq!(
        bad_seen.load(Ordering::SeqCst) + good_seen.load(Ordering::SeqCst),
        2
    );
}

#[tokio::test]
async fn nothing_is_tried_or_spent_past_the_deadline() {
    let (url, seen) = upstream(Behaviour::Answer(Duration::ZERO)).await;
    let sg = subgraph(&[&url], PoolConfig::default(), TimeoutConfig::default());
    let m = metrics();
    let r = forward(&sg, query(OperationKind::Query), &m, Instant::now()).await;
    assert_eq!(status(r).await, Err("UPSTREAM_TIMEOUT"));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    assert_eq!(m.failovers.with_label_values(&["sg", "timeout"]).get(), 0);
    assert_eq!(sg.breaker.state(), crate::breaker::State::Closed);
}

#[tokio::test]
async fn a_try_cut_by_the_deadline_spends_no_retry_token() {
    let (a, a_seen) = upstream(Behaviour::Answer(Duration::from_secs(2))).await;
    let (b, b_seen) = upstream(Behaviour::Answer(Duration::ZERO)).await;
    let timeouts = TimeoutConfig {
        per_try_ms: 1_000,
        ..TimeoutConfig::default()
    };
    let sg = subgraph(&[&a, &b], PoolConfig::default(), timeouts);
    let m = metrics();
    let left = sg.retries_left();
    // The first try (endpoint a) runs into the deadline, not its own
    // per-try timeout: no time is left for a second one.
    let deadline = Instant::now() + Duration::from_millis(300);
    let r = forward(&sg, query(OperationKind::Query), &m, deadline).await;
    assert_eq!(status(r).await, Err("UPSTREAM_TIMEOUT"));
    assert_eq!(
        (a_seen.load(Ordering::SeqCst), b_seen.load(Ordering::SeqCst)),
        (1, 0)
    );
    assert_eq!(
        sg.retries_left(),
        left,
        "a retry token was spent past the deadline"
    );
    assert!(
        sg.endpoints[0].is_healthy(),
        "the deadline is not the endpoint's failure"
    );
}

#[tokio::test]
async fn gateway_errors_count_against_the_endpoint_and_pass_through() {
    let (url, _) = upstream(Behaviour::Status(503)).await;
    let sg = subgraph(&[&url], PoolConfig::default(), TimeoutConfig::default());
    let m = metrics();
    let r = forward(&sg, query(OperationKind::Query), &m, far()).await;
    assert_eq!(status(r).await, Ok(503));
    assert!(!sg.endpoints[0].is_healthy());
}

#[tokio::test]
async fn in_panic_mode_every_endpoint_gets_traffic() {
    let (a, a_seen) = upstream(Behaviour::Answer(Duration::ZERO)).await;
    let (b, b_seen) = upstream(Behaviour::Answer(Duration::ZERO)).await;
    let sg = subgraph(&[&a, &b], PoolConfig::default(), TimeoutConfig::default());
    let m = metrics();
    for i in 0..2 {
        sg.record_passive(i, false, &m);
    }
    assert!(sg.in_panic());
    for _ in 0..4 {
        let r = forward(&sg, query(OperationKind::Query), &m, far()).await;
        assert_eq!(status(r).await, Ok(200));
    }
    assert_eq!(a_seen.load(Ordering::SeqCst), 2);
    assert_eq!(b_seen.load(Ordering::SeqCst), 2);
    assert_eq!(m.panic_requests.with_label_values(&["sg"]).get(), 4);

    // With panic mode off, an all-ejected subgraph refuses.
    let mut cfg = sg.cfg.clone();
    cfg.health.panic_mode = false;
    let strict = Subgraph::new(cfg, 100);
    for i in 0..2 {
        strict.record_passive(i, false, &m);
    }
    let r = forward(&strict, query(OperationKind::Query), &m, far()).await;
    assert_eq!(status(r).await, Err("NO_HEALTHY_UPSTREAM"));
}

/// Runs futures concurrently on this task and collects their outputs in order.
async fn futures_join<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut outs: Vec<Option<F::Output>> = handles.iter().map(|_| None).collect();
    let mut handles: Vec<Option<_>> = handles.into_iter().map(Some).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (h, out) in handles.iter_mut().zip(outs.iter_mut()) {
            if let Some(f) = h {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        *out = Some(v);
                        *h = None;
                    }
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    outs.into_iter().map(|o| o.expect("finished")).collect()
}
