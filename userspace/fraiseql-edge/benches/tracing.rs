//! What tracing adds to a request, in ns/op: the trace context (parse the
//! client's `traceparent` or make new ids), the `request` span with its
//! fields, the phase spans and the `traceparent` sent upstream — without a
//! subscriber, and under the daemon's (text logs at `info`, written to a
//! sink, with the idle OTLP layer).
//! `cargo bench -p fraiseql-edge --bench tracing`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fraiseql_edge::telemetry::{Tracer, TracingConfig, set_traceparent};
use http::{HeaderMap, HeaderValue};
use tracing::field::Empty;
use tracing_subscriber::{Layer as _, layer::SubscriberExt as _};

fn one_request(tracer: &Tracer, headers: &HeaderMap) -> HeaderMap {
    let (span, trace) = tracer.start(headers, || {
        tracing::info_span!(
            "request",
            otel.kind = "server",
            route = "/users/graphql",
            client = %"192.0.2.1",
            subgraph = Empty,
            graphql.operation.name = Empty,
            graphql.operation.type = Empty,
            status = Empty,
            otel.status_code = Empty,
            trace_id = Empty,
        )
    });
    let mut out = HeaderMap::new();
    span.in_scope(|| {
        for phase in ["accept", "identify", "rate_limit", "graphql", "respond"] {
            let _phase = tracing::debug_span!("phase", phase).entered();
        }
        let _try = tracing::debug_span!("upstream_try", attempt = 0).entered();
        trace.rewrite(&mut out);
        set_traceparent(&mut out, &trace);
    });
    span.record("subgraph", "users");
    span.record("status", 200u16);
    out
}

fn bench(c: &mut Criterion) {
    let tracer = Tracer::new(&TracingConfig::default());
    let mut with_parent = HeaderMap::new();
    with_parent.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let none = HeaderMap::new();
    c.bench_function("request trace, no subscriber, client parent", |b| {
        b.iter(|| black_box(one_request(&tracer, &with_parent)))
    });
    c.bench_function("request trace, no subscriber, new trace", |b| {
        b.iter(|| black_box(one_request(&tracer, &none)))
    });
    let daemon = tracing::Dispatch::new(
        tracing_subscriber::registry()
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::sink)
                    .with_filter(tracing_subscriber::EnvFilter::new("info")),
            )
            .with(fraiseql_edge::telemetry::otlp::layer()),
    );
    tracing::dispatcher::with_default(&daemon, || {
        c.bench_function("request trace, daemon subscriber, client parent", |b| {
            b.iter(|| black_box(one_request(&tracer, &with_parent)))
        });
        c.bench_function("request trace, daemon subscriber, new trace", |b| {
            b.iter(|| black_box(one_request(&tracer, &none)))
        });
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
