//! Per-request costs of the data path's building blocks, in ns/op:
//! pool checkout + return (idle connection available), endpoint selection.
//! `cargo bench -p fraiseql-edge --bench data_path`

use std::{convert::Infallible, hint::black_box};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use fraiseql_edge::{
    config::{Config, PoolConfig},
    proxy::{pool::Pool, subgraph::Subgraph},
};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A loopback HTTP/1.1 server, so the pool holds real connections.
async fn server() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"ok"))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

fn pool(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let pool = rt.block_on(async {
        let addr = server().await;
        let pool = Pool::new(
            addr,
            PoolConfig {
                min_idle: 4,
                ..PoolConfig::default()
            },
        );
        pool.maintain().await;
        pool
    });
    c.bench_function("pool checkout+return (idle available)", |b| {
        b.to_async(&rt).iter(|| async {
            let conn = pool.get().await.expect("connection");
            drop(black_box(conn));
        })
    });
}

fn selection(c: &mut Criterion) {
    let cfg = Config::from_toml(
        "[kernel]\nenabled = false\n[proxy]\n[[subgraphs]]\nname = \"users\"\n\
         endpoints = [\"http://127.0.0.1:1/graphql\", \"http://127.0.0.1:2/graphql\", \"http://127.0.0.1:3/graphql\"]\n",
    )
    .expect("config");
    let sg = Subgraph::new(cfg.subgraphs[0].clone(), 100);
    c.bench_function("endpoint selection (3 healthy)", |b| {
        b.iter(|| black_box(sg.pick(black_box(&[]))))
    });
    c.bench_function("endpoint selection (failover, 1 tried)", |b| {
        b.iter(|| black_box(sg.pick(black_box(&[0]))))
    });
}

criterion_group!(benches, pool, selection);
criterion_main!(benches);
