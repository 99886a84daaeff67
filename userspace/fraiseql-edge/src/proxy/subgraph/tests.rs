//! Endpoint selection and health checks against real HTTP/1.1 servers on
//! loopback.

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
};

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use tokio::net::TcpListener;

use super::*;
use crate::config::{HealthConfig, SubgraphConfig};

#[derive(Default)]
struct Server {
    /// Delay before answering, in milliseconds (changeable while running).
    delay_ms: AtomicU64,
    accepted: AtomicUsize,
    closed: AtomicUsize,
}

async fn server() -> (String, Arc<Server>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/graphql", listener.local_addr().unwrap());
    let state = Arc::new(Server::default());
    let s = Arc::clone(&state);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            s.accepted.fetch_add(1, Ordering::SeqCst);
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let s2 = Arc::clone(&s);
                let svc = hyper::service::service_fn(move |_req| {
                    let s = Arc::clone(&s2);
                    async move {
                        let d = s.delay_ms.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(d)).await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            br#"{"data":{"__typename":"Query"}}"#,
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                s.closed.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (url, state)
}

fn subgraph(urls: &[&str], pool: PoolConfig, health: HealthConfig) -> Arc<Subgraph> {
    let endpoints = urls.iter().map(|u| u.parse().unwrap()).collect();
    let mut cfg = SubgraphConfig::new("sg", endpoints);
    (cfg.pool, cfg.health) = (pool, health);
    Subgraph::new(cfg, 100)
}

#[tokio::test]
async fn health_checks_do_not_queue_behind_a_saturated_pool() {
    let (url, _) = server().await;
    let pool = PoolConfig {
        min_idle: 0,
        max: 1,
        acquire_timeout_ms: 2_000,
        ..PoolConfig::default()
    };
    let sg = subgraph(&[&url], pool, HealthConfig::default());
    // All the traffic pool has, checked out and held.
    let _busy = sg.endpoints[0].pool.get().await.unwrap();
    assert!(
        sg.check(0).await,
        "the check waited for a traffic connection"
    );
}

#[tokio::test]
async fn a_check_that_times_out_discards_its_connection() {
    let (url, srv) = server().await;
    let health = HealthConfig {
        timeout_ms: 200,
        ..HealthConfig::default()
    };
    let sg = subgraph(&[&url], PoolConfig::default(), health);
    assert!(sg.check(0).await);
    assert!(sg.check(0).await);
    assert_eq!(
        srv.accepted.load(Ordering::SeqCst),
        1,
        "a good check keeps its connection"
    );
    srv.delay_ms.store(1_000, Ordering::SeqCst);
    assert!(!sg.check(0).await);
    srv.delay_ms.store(0, Ordering::SeqCst);
    assert!(sg.check(0).await);
    assert_eq!(
        srv.accepted.load(Ordering::SeqCst),
        2,
        "the connection of the timed-out check was not reused"
    );
}

#[tokio::test]
async fn selection_is_round_robin_over_healthy_endpoints_then_panic() {
    let urls = [
        "http://127.0.0.1:1/g",
        "http://127.0.0.1:2/g",
        "http://127.0.0.1:3/g",
    ];
    let health = HealthConfig {
        unhealthy_after: 1,
        ..HealthConfig::default()
    };
    let sg = subgraph(&urls, PoolConfig::default(), health);
    let m = ProxyMetrics::new(&Registry::new()).unwrap();
    let picks: Vec<usize> = (0..6).map(|_| sg.pick(&[]).unwrap().index).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    assert_eq!(sg.pick(&[0, 1]).map(|p| p.index), Some(2));
    sg.record_passive(1, false, &m);
    for _ in 0..6 {
        let p = sg.pick(&[]).unwrap();
        assert!(p.index != 1 && !p.panic);
    }
    assert_eq!(
        sg.pick(&[0, 2]),
        None,
        "healthy ones tried: no panic while one is up"
    );
    sg.record_passive(0, false, &m);
    sg.record_passive(2, false, &m);
    assert!(sg.in_panic());
    let p = sg.pick(&[0]).unwrap();
    assert!(p.panic && p.index != 0);
    // A passive success does not bring an endpoint back; a check does.
    sg.record_passive(0, true, &m);
    assert!(sg.in_panic());
    sg.record_check(0, true, &m);
    sg.record_check(0, true, &m);
    assert!(!sg.in_panic());
    assert_eq!(
        sg.pick(&[]),
        Some(Pick {
            index: 0,
            panic: false
        })
    );
}
