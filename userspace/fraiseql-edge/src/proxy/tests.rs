//! The phases through [`Proxy::handle`] with in-memory requests (no client
//! socket) against a real upstream on loopback that echoes what it got.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use prometheus::Registry;
use serde_json::Value;
use tokio::net::TcpListener;

use super::*;
use crate::config::Config;

/// Answers `{"data":{"path":…,"xff":[…],"realIp":[…],"forwarded":[…]}}`.
async fn echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let all = |name: &str| -> Vec<String> {
                            req.headers()
                                .get_all(name)
                                .iter()
                                .map(|v| v.to_str().unwrap_or("?").to_string())
                                .collect()
                        };
                        let body = serde_json::json!({"data": {
                            "path": req.uri().path(),
                            "xff": all("x-forwarded-for"),
                            "realIp": all("x-real-ip"),
                            "forwarded": all("forwarded"),
                            "idempotencyKey": all("idempotency-key"),
                            "contentType": all("content-type"),
                        }});
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(
                            body.to_string(),
                        ))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn proxy(extra: &str) -> Arc<Proxy> {
    let up = echo().await;
    let toml = format!(
        "[kernel]\nenabled = false\n[proxy]\n{extra}\n\
         [[subgraphs]]\nname = \"users\"\nendpoints = [\"http://{up}/graphql\"]\n\
         [[subgraphs]]\nname = \"api\"\nroute = \"/api/\"\nendpoints = [\"http://{up}/graphql\"]\n"
    );
    let cfg = Config::from_toml(&toml).unwrap();
    let m = ProxyMetrics::new(&Registry::new()).unwrap();
    Proxy::new(ProxyParts {
        cfg: cfg.proxy.as_ref().unwrap(),
        subgraphs: &cfg.subgraphs,
        rate_limit: &cfg.rate_limit,
        metrics: m,
        limiter: None,
        blocks: None,
        auth: None,
        graphql: &cfg.graphql,
        persisted: crate::graphql::persisted::PersistedQueries::new(&cfg.persisted_queries)
            .unwrap(),
        authorization: &cfg.authorization,
        tracing: &cfg.tracing,
        slow_queries: &cfg.slow_queries,
    })
}

async fn call(p: &Proxy, peer: &str, path: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut b = Request::post(path).header("content-type", "application/json");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let req = b
        .body(Full::new(Bytes::from_static(br#"{"query":"{ a }"}"#)))
        .unwrap();
    let resp = p.handle(req, peer.parse().unwrap()).await;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn spoofed_forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let p = proxy("trusted_proxies = [\"10.0.0.0/8\"]").await;
    let spoof = [
        ("x-forwarded-for", "1.1.1.1"),
        ("x-real-ip", "2.2.2.2"),
        ("forwarded", "for=3.3.3.3"),
    ];
    let (status, v) = call(&p, "198.51.100.7:5000", "/users/graphql", &spoof).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["xff"], serde_json::json!(["198.51.100.7"]));
    assert_eq!(v["data"]["realIp"], serde_json::json!(["198.51.100.7"]));
    assert_eq!(v["data"]["forwarded"], serde_json::json!([]));

    // The same headers from a trusted proxy: the rightmost untrusted wins.
    let via = [("x-forwarded-for", "1.1.1.1, 203.0.113.5")];
    let (_, v) = call(&p, "10.0.0.9:5000", "/users/graphql", &via).await;
    assert_eq!(
        v["data"]["xff"],
        serde_json::json!(["203.0.113.5, 10.0.0.9"])
    );
    assert_eq!(v["data"]["realIp"], serde_json::json!(["203.0.113.5"]));
}

#[tokio::test]
async fn a_route_ending_in_a_slash_is_a_prefix() {
    let p = proxy("").await;
    let (status, v) = call(&p, "192.0.2.1:1", "/api/anything/below", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(v["data"]["path"], "/graphql");
    let (status, v) = call(&p, "192.0.2.1:1", "/apix", &[]).await;
    assert_eq!(status, 404);
    assert_eq!(v["errors"][0]["extensions"]["code"], "NOT_FOUND");
}

/// The listener speaks HTTP/2 with prior knowledge as well as HTTP/1.1,
/// and drains on `stop`.
#[tokio::test]
async fn the_listener_serves_h2c_and_drains_on_stop() {
    let p = proxy("").await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let served = tokio::spawn(serve(
        Arc::clone(&p),
        listener,
        p.listener_limits(),
        stopped,
    ));

    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let req = Request::post(format!("http://{addr}/users/graphql"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"query":"{ a }"}"#)))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["path"], "/graphql");

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("drained")
        .unwrap();
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[test]
fn the_graphql_response_media_type_is_the_default_unless_json_alone_is_asked() {
    let with = |accept: &[&str]| {
        let mut h = http::HeaderMap::new();
        for a in accept {
            h.append(header::ACCEPT, http::HeaderValue::from_str(a).unwrap());
        }
        wants_graphql_response(&h)
    };
    assert!(with(&[]));
    assert!(with(&["*/*"]));
    assert!(with(&["application/graphql-response+json"]));
    assert!(with(&[
        "application/json;q=0.9, application/graphql-response+json"
    ]));
    assert!(with(&[
        "application/json",
        "Application/GraphQL-Response+JSON"
    ]));
    assert!(!with(&["application/json"]));
    assert!(!with(&["application/json; charset=utf-8, */*;q=0.1"]));
}

#[tokio::test]
async fn send_goes_through_the_data_path_with_the_given_headers() {
    let p = proxy("").await;
    let mut headers = http::HeaderMap::new();
    headers.insert("idempotency-key", "saga-1:0".parse().unwrap());
    let deadline = Instant::now() + std::time::Duration::from_secs(5);
    let (status, body) = p
        .send(
            "users",
            Bytes::from_static(br#"{"query":"mutation { a }"}"#),
            headers,
            deadline,
        )
        .await
        .unwrap();
    assert_eq!(status, http::StatusCode::OK);
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["data"]["path"], "/graphql");
    assert_eq!(v["data"]["idempotencyKey"], serde_json::json!(["saga-1:0"]));
    assert_eq!(
        v["data"]["contentType"],
        serde_json::json!(["application/json"])
    );
    let err = p
        .send("nope", Bytes::new(), http::HeaderMap::new(), deadline)
        .await
        .unwrap_err();
    assert!(matches!(err, ProxyError::NotFound(_)), "{err}");
}
