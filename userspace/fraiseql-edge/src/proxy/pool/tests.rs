//! Pool tests against a real HTTP/1.1 server on loopback that counts its
//! connections.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::Poll,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use super::*;

#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A server answering "ok" after `delay`.
async fn server(delay: Duration) -> (String, Arc<Counts>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    (addr, serve(listener, delay))
}

/// Answers "ok" after `delay` on every connection `listener` accepts.
fn serve(listener: TcpListener, delay: Duration) -> Arc<Counts> {
    let counts = Arc::new(Counts::default());
    let c = Arc::clone(&counts);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            c.accepted.fetch_add(1, Ordering::SeqCst);
            c.open.fetch_add(1, Ordering::SeqCst);
            let c = Arc::clone(&c);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| async move {
                    tokio::time::sleep(delay).await;
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                c.open.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    counts
}

/// A listener with a full accept queue: a connect to it hangs (the kernel
/// drops its SYN, the client retries about a second later) until the
/// listener is served. Returns the address, the listener and the connection
/// filling the queue.
async fn stalling_listener() -> (String, TcpListener, tokio::net::TcpStream) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let filler = tokio::net::TcpStream::connect(&addr).await.unwrap();
    (addr, listener, filler)
}

/// A pool whose connects may stall for a few seconds.
fn patient_cfg(min_idle: u32, max: u32) -> PoolConfig {
    PoolConfig {
        connect_timeout_ms: 20_000,
        acquire_timeout_ms: 20_000,
        ..cfg(min_idle, max)
    }
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

fn cfg(min_idle: u32, max: u32) -> PoolConfig {
    PoolConfig {
        min_idle,
        max,
        acquire_timeout_ms: 300,
        ..PoolConfig::default()
    }
}

fn request() -> http::Request<UpstreamBody> {
    http::Request::post("/graphql")
        .header("host", "test")
        .body(Full::new(Bytes::from_static(b"{}")))
        .unwrap()
}

/// Sends one request on a checked-out connection and reads the answer.
async fn exchange(pool: &Pool) {
    let mut conn = pool.get().await.unwrap();
    let resp = conn.send(request()).await.unwrap();
    let body = PooledBody::new(resp.into_body(), conn);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
}

/// Polls `fut` once from this task, before any task it woke gets to run.
async fn poll_once<F: Future + Unpin>(fut: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *fut).poll(cx))).await
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    for _ in 0..200 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn maintain_opens_exactly_min_idle_and_reuses_them() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(4, 10));
    pool.maintain().await;
    eventually("4 connections", || counts.open.load(Ordering::SeqCst) == 4).await;
    assert_eq!(pool.stats().idle, 4);
    for _ in 0..20 {
        let mut conn = pool.get().await.unwrap();
        let resp = conn.send(request()).await.unwrap();
        let body = PooledBody::new(resp.into_body(), conn);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
    }
    pool.maintain().await;
    assert_eq!(
        counts.accepted.load(Ordering::SeqCst),
        4,
        "no new connection was needed"
    );
}

#[tokio::test]
async fn max_is_never_exceeded_and_waiters_time_out() {
    let (addr, counts) = server(Duration::from_millis(500)).await;
    let pool = Pool::new(addr, cfg(0, 3));
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(pool.get().await.unwrap());
    }
    assert!(matches!(pool.get().await, Err(PoolError::Timeout)));
    assert_eq!(pool.stats().busy, 3);
    // A release wakes a waiter, which gets that same connection.
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    held.pop();
    waiter.await.unwrap().unwrap();
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn connect_failure_is_reported_at_once() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let pool = Pool::new(addr, cfg(0, 2));
    let started = std::time::Instant::now();
    assert!(matches!(pool.get().await, Err(PoolError::Connect { .. })));
    // Refused, not queued until the acquire timeout. (Loose bound: this is
    // a correctness check of which path was taken, not a benchmark.)
    assert!(started.elapsed() < Duration::from_millis(300));
}

#[tokio::test]
async fn eject_closes_idle_connections_and_restore_refills() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(3, 5));
    pool.maintain().await;
    eventually("3 open", || counts.open.load(Ordering::SeqCst) == 3).await;
    pool.eject();
    assert!(matches!(pool.get().await, Err(PoolError::Ejected)));
    eventually("all closed", || counts.open.load(Ordering::SeqCst) == 0).await;
    pool.maintain().await;
    assert_eq!(
        counts.open.load(Ordering::SeqCst),
        0,
        "an ejected pool does not refill"
    );
    pool.restore();
    pool.maintain().await;
    eventually("refilled", || counts.open.load(Ordering::SeqCst) == 3).await;
}

#[tokio::test]
async fn a_response_dropped_half_read_closes_its_connection() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(0, 2));
    let mut conn = pool.get().await.unwrap();
    let resp = conn.send(request()).await.unwrap();
    drop(PooledBody::new(resp.into_body(), conn));
    assert_eq!(pool.stats().idle, 0);
    eventually("closed", || counts.open.load(Ordering::SeqCst) == 0).await;
}

#[tokio::test]
async fn waiters_are_served_in_arrival_order() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(
        addr,
        PoolConfig {
            acquire_timeout_ms: 10_000,
            ..cfg(0, 1)
        },
    );
    let held = pool.get().await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let take = |id: u32| {
        let pool = pool.clone();
        let order = Arc::clone(&order);
        async move {
            let conn = pool.get().await.unwrap();
            order.lock().unwrap().push(id);
            tokio::time::sleep(Duration::from_millis(5)).await;
            drop(conn);
        }
    };
    let mut tasks = Vec::new();
    for id in 1..=4 {
        tasks.push(tokio::spawn(take(id)));
        // The runtime is single-threaded: the waiter queues up before the
        // sleep ends.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    // A newcomer checking out at the very moment of the release, before the
    // woken waiter runs, must still queue behind the four.
    let mut newcomer = Box::pin(take(5));
    assert!(poll_once(&mut newcomer).await.is_pending());
    tasks.push(tokio::spawn(newcomer));
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [1, 2, 3, 4, 5]);
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_waiter_that_gives_up_loses_no_connection() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(
        addr,
        PoolConfig {
            acquire_timeout_ms: 10_000,
            ..cfg(0, 1)
        },
    );
    let held = pool.get().await.unwrap();
    let waiter = |pool: &Pool| {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    // Gives up while queued: skipped.
    let quitter = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(20)).await;
    quitter.abort();
    assert!(quitter.await.unwrap_err().is_cancelled());
    // Gives up after the connection was handed to it but before it ran: the
    // connection goes back to the pool.
    let late = waiter(&pool);
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(held);
    late.abort();
    assert!(late.await.unwrap_err().is_cancelled());
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.busy), (1, 0));
    exchange(&pool).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_clients_hold_at_most_one_connection_each_plus_min_idle() {
    const CLIENTS: usize = 20;
    const MIN_IDLE: u32 = 2;
    let bound = CLIENTS + MIN_IDLE as usize;
    let (addr, counts) = server(Duration::from_millis(2)).await;
    let pool = Pool::new(
        addr,
        PoolConfig {
            acquire_timeout_ms: 10_000,
            ..cfg(MIN_IDLE, 100)
        },
    );
    pool.maintain().await;
    let peak = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (peak, counts) = (Arc::clone(&peak), Arc::clone(&counts));
        tokio::spawn(async move {
            loop {
                peak.fetch_max(counts.open.load(Ordering::SeqCst), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    };
    let maintainer = {
        let pool = pool.clone();
        tokio::spawn(async move {
            loop {
                pool.maintain().await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    for _round in 0..10 {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..20 {
                        exchange(&pool).await;
                    }
                })
            })
            .collect();
        for c in clients {
            c.await.unwrap();
        }
    }
    sampler.abort();
    maintainer.abort();
    let opened = pool.stats().opened;
    assert!(
        opened <= bound as u64,
        "{opened} connections opened for {CLIENTS} clients"
    );
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= bound, "{peak} connections open at once");
}

#[tokio::test]
async fn a_connection_just_opened_by_maintain_is_used() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(1, 4));
    pool.maintain().await;
    // Straight away: the connection's task has not run yet, so hyper does
    // not report it ready; it is usable all the same.
    exchange(&pool).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 1);
    assert_eq!(pool.stats().opened, 1);
}

/// Ejects (and, if `restore`, restores) the pool while `maintain` is
/// connecting, then lets the connect complete.
async fn refill_across_eject(restore: bool) {
    let (addr, listener, filler) = stalling_listener().await;
    let pool = Pool::new(addr, patient_cfg(1, 4));
    let refill = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.maintain().await })
    };
    eventually("the connect under way", || pool.stats().busy == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!refill.is_finished(), "the connect stalls");
    pool.eject();
    if restore {
        pool.restore();
    }
    let counts = serve(listener, Duration::ZERO);
    drop(filler);
    within("the refill", refill).await.unwrap();
    assert_eq!(pool.stats().opened, 1, "the connect completed");
    let stats = pool.stats();
    assert_eq!((stats.idle, stats.busy), (0, 0), "and was closed");
    eventually("closed upstream", || {
        counts.accepted.load(Ordering::SeqCst) == 2 && counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
    if restore {
        pool.maintain().await;
        assert_eq!(pool.stats().idle, 1, "a restored pool refills afresh");
    }
}

#[tokio::test]
async fn a_refill_completing_after_eject_is_closed() {
    refill_across_eject(false).await;
}

#[tokio::test]
async fn a_refill_started_before_an_eject_and_restore_is_closed() {
    refill_across_eject(true).await;
}

#[tokio::test]
async fn a_checkout_connecting_across_an_eject_fails() {
    let (addr, listener, filler) = stalling_listener().await;
    let pool = Pool::new(addr, patient_cfg(0, 4));
    let checkout = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    eventually("the connect under way", || pool.stats().busy == 1).await;
    pool.eject();
    let counts = serve(listener, Duration::ZERO);
    drop(filler);
    let got = within("the checkout", checkout).await.unwrap();
    assert!(matches!(got, Err(PoolError::Ejected)), "{got:?}");
    assert_eq!(pool.stats().opened, 1, "the connect completed");
    assert_eq!(pool.stats().busy, 0);
    eventually("closed upstream", || {
        counts.accepted.load(Ordering::SeqCst) == 2 && counts.open.load(Ordering::SeqCst) == 0
    })
    .await;
}

#[tokio::test]
async fn a_connection_busy_across_an_eject_and_restore_closes_on_release() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(0, 4));
    let conn = pool.get().await.unwrap();
    pool.eject();
    pool.restore();
    drop(conn);
    assert_eq!(pool.stats().idle, 0);
    eventually("closed", || counts.open.load(Ordering::SeqCst) == 0).await;
}

#[test]
fn lifetime_jitter_takes_off_at_most_a_tenth() {
    let max = Duration::from_secs(1_800);
    assert_eq!(lifetime::jittered(max, 0), max);
    let shortest = lifetime::jittered(max, u64::MAX);
    assert!(
        shortest > max * 9 / 10 && shortest < max * 91 / 100,
        "{shortest:?}"
    );
    let half = lifetime::jittered(max, u64::MAX / 2);
    assert!(half > max * 94 / 100 && half < max * 96 / 100, "{half:?}");
    // Whole-second and sub-second maxima, and one beyond the clock.
    assert!(lifetime::jittered(Duration::from_secs(1), u64::MAX) >= Duration::from_millis(900));
    assert!(lifetime::jittered(Duration::MAX, u64::MAX) >= Duration::MAX / 10 * 9);
}

#[test]
fn lifetime_jitter_spreads_over_the_tenth() {
    let max = Duration::from_secs(1_800);
    let jitter = lifetime::Jitter::default();
    let mut lifetimes: Vec<_> = (0..1_000).map(|_| jitter.lifetime(max)).collect();
    assert!(lifetimes.iter().all(|l| *l > max * 9 / 10 && *l <= max));
    lifetimes.sort();
    lifetimes.dedup();
    assert!(lifetimes.len() > 990, "{} distinct", lifetimes.len());
    // Both ends of the range are reached (each misses with odds of 0.8^1000).
    assert!(lifetimes[0] < max * 92 / 100, "{:?}", lifetimes[0]);
    assert!(lifetimes[lifetimes.len() - 1] > max * 98 / 100);
    // Another pool draws differently.
    let other = lifetime::Jitter::default();
    assert_ne!(
        (0..10).map(|_| other.draw()).collect::<Vec<_>>(),
        (0..10).map(|_| jitter.draw()).collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn connections_opened_together_expire_apart() {
    let (addr, _counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(10, 10));
    let before = Instant::now();
    pool.maintain().await;
    let after = Instant::now();
    let max = Duration::from_secs(pool.shared.cfg.max_lifetime_secs);
    let mut expiries: Vec<_> = {
        let st = pool.shared.state();
        st.idle.iter().map(|c| c.expires.unwrap()).collect()
    };
    assert_eq!(expiries.len(), 10);
    assert!(
        expiries
            .iter()
            .all(|at| *at > before + max * 9 / 10 && *at <= after + max),
        "max_lifetime stays the upper bound"
    );
    expiries.sort();
    // Without jitter they would all fall within the time it took to open them.
    let spread = expiries[9] - expiries[0];
    assert!(spread > after - before, "expiries spread over {spread:?}");
}

#[tokio::test]
async fn a_checkout_while_ejected_connects_and_closes_on_release() {
    let (addr, counts) = server(Duration::ZERO).await;
    let pool = Pool::new(addr, cfg(2, 4));
    pool.maintain().await;
    pool.eject();
    eventually("idle closed", || counts.open.load(Ordering::SeqCst) == 0).await;
    assert!(matches!(pool.get().await, Err(PoolError::Ejected)));
    for _ in 0..3 {
        let mut conn = pool.get_while_ejected().await.unwrap();
        let resp = conn.send(request()).await.unwrap();
        let body = PooledBody::new(resp.into_body(), conn);
        assert_eq!(body.collect().await.unwrap().to_bytes(), "ok");
        let stats = pool.stats();
        assert_eq!((stats.idle, stats.busy), (0, 0), "not kept while ejected");
    }
    pool.maintain().await;
    assert_eq!(pool.stats().idle, 0, "no refill while ejected");
    eventually("all closed", || counts.open.load(Ordering::SeqCst) == 0).await;
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2 + 3);
    pool.restore();
    exchange(&pool).await;
    assert_eq!(pool.stats().idle, 1, "kept again once restored");
}

#[tokio::test]
async fn an_eject_fails_ordinary_waiters_but_not_those_allowed_while_ejected() {
    let (addr, _counts) = server(Duration::ZERO).await;
    let pool = Pool::new(
        addr,
        PoolConfig {
            acquire_timeout_ms: 10_000,
            ..cfg(0, 1)
        },
    );
    let held = pool.get().await.unwrap();
    let ordinary = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.get().await.map(|_| ()) })
    };
    let panicking = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut conn = pool.get_while_ejected().await.map_err(|e| e.to_string())?;
            conn.send(request()).await.map_err(|e| format!("{e:?}"))?;
            Ok::<_, String>(())
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    pool.eject();
    let got = within("the ordinary waiter", ordinary).await.unwrap();
    assert!(matches!(got, Err(PoolError::Ejected)), "{got:?}");
    assert!(!panicking.is_finished());
    // The release closes the connection (ejected); its slot goes to the
    // waiter allowed while ejected, which connects afresh.
    drop(held);
    within("the panic waiter", panicking)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(pool.stats().opened, 2);
}

/// A server that answers "ok" but closes each connection 100 ms after it
/// was accepted, idle or not; with its count of accepted connections.
async fn closing_server() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let a = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            a.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc);
                let _ = tokio::time::timeout(Duration::from_millis(100), conn).await;
            });
        }
    });
    (addr, accepted)
}

/// An idle connection is driven by nobody; a close the server sent while it
/// sat idle must be noticed at checkout, not by the next request failing.
#[tokio::test]
async fn an_idle_connection_the_server_closed_is_not_handed_out() {
    let (addr, accepted) = closing_server().await;
    let pool = Pool::new(addr, cfg(0, 4));
    exchange(&pool).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    for _ in 0..3 {
        exchange(&pool).await; // would fail on the closed connection
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        2,
        "one reconnect, then reuse"
    );
}

/// A request on a connection that served one before, and that the peer
/// has closed since, comes back unsent as `Stale` (not the endpoint's
/// failure: the caller retries on a fresh connection).
#[tokio::test]
async fn a_request_on_a_connection_closed_since_its_last_use_comes_back_stale() {
    let (addr, _) = closing_server().await;
    let pool = Pool::new(addr, cfg(0, 1));
    let mut conn = pool.get().await.unwrap();
    let resp = conn.send(request()).await.unwrap();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), "ok");
    tokio::time::sleep(Duration::from_millis(400)).await; // the server closed it
    match conn.send(request()).await {
        Err(SendError::Stale(req)) => assert_eq!(req.uri(), "/graphql"),
        other => panic!("expected the request back as stale, got {other:?}"),
    }
    // A fresh connection's first request is never `Stale`.
    drop(conn);
    exchange(&pool).await;
}
