use http::{HeaderMap, HeaderValue};

use super::*;

const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn start(cfg: &TracingConfig, h: &HeaderMap) -> RequestTrace {
    Tracer::new(cfg).start(h, tracing::Span::none).1
}

#[test]
fn a_valid_client_parent_is_continued_with_its_tracestate() {
    let h = headers(&[("traceparent", CLIENT), ("tracestate", "vendor=abc")]);
    let t = start(&TracingConfig::default(), &h);
    assert_eq!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_ne!(
        t.span_id.to_string(),
        "00f067aa0ba902b7",
        "the edge's own span"
    );
    assert!(t.sampled);
    assert_eq!(t.tracestate, [HeaderValue::from_static("vendor=abc")]);

    let sent = t.traceparent();
    let parsed = TraceParent::parse(sent.to_str().unwrap()).unwrap();
    assert_eq!(parsed.trace_id, t.trace_id);
    assert_eq!(parsed.parent_id, t.span_id);
    assert!(parsed.sampled);

    let unsampled = headers(&[(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00",
    )]);
    assert!(!start(&TracingConfig::default(), &unsampled).sampled);
}

#[test]
fn an_invalid_or_missing_parent_starts_a_new_trace_without_tracestate() {
    let cfg = TracingConfig::default();
    for h in [
        headers(&[]),
        headers(&[
            (
                "traceparent",
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            ),
            ("tracestate", "vendor=abc"),
        ]),
        headers(&[("traceparent", "garbage"), ("tracestate", "vendor=abc")]),
    ] {
        let t = start(&cfg, &h);
        assert_ne!(t.trace_id, TraceId::INVALID);
        assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(t.span_id, SpanId::INVALID);
        assert!(t.sampled, "sample_ratio 1.0");
        assert!(t.tracestate.is_empty());
    }
    let a = start(&cfg, &headers(&[]));
    let b = start(&cfg, &headers(&[]));
    assert_ne!(a.trace_id, b.trace_id, "random ids");
    let never = TracingConfig {
        sample_ratio: 0.0,
        ..TracingConfig::default()
    };
    assert!(!start(&never, &headers(&[])).sampled);
}

#[test]
fn an_untrusted_client_parent_is_ignored() {
    let cfg = TracingConfig {
        trust_client_traceparent: false,
        ..TracingConfig::default()
    };
    let h = headers(&[("traceparent", CLIENT), ("tracestate", "vendor=abc")]);
    let t = start(&cfg, &h);
    assert_ne!(t.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert!(t.tracestate.is_empty());
}

#[test]
fn rewrite_replaces_the_client_headers() {
    let h = headers(&[
        ("traceparent", CLIENT),
        ("tracestate", "a=1"),
        ("tracestate", "b=2"),
    ]);
    let t = start(&TracingConfig::default(), &h);
    let mut out = h.clone();
    t.rewrite(&mut out);
    assert!(out.get("traceparent").is_none(), "set per try");
    let states: Vec<_> = out.get_all("tracestate").iter().collect();
    assert_eq!(states, ["a=1", "b=2"]);
    set_traceparent(&mut out, &t);
    assert_eq!(out.get_all("traceparent").iter().count(), 1);
    assert_ne!(out["traceparent"], CLIENT);

    let fresh = start(
        &TracingConfig::default(),
        &headers(&[("tracestate", "a=1")]),
    );
    let mut out = headers(&[("traceparent", "junk"), ("tracestate", "a=1")]);
    fresh.rewrite(&mut out);
    assert!(
        out.get("tracestate").is_none(),
        "no valid parent: no tracestate"
    );
}

#[test]
fn config_is_checked() {
    let ok = TracingConfig::default();
    assert!(ok.validate("tracing").is_ok());
    assert_eq!(ok.service_name, "fraiseql-edge");
    let bad = |c: TracingConfig| c.validate("tracing").unwrap_err().0;
    assert_eq!(
        bad(TracingConfig {
            sample_ratio: 1.5,
            ..ok.clone()
        }),
        "tracing.sample_ratio"
    );
    assert_eq!(
        bad(TracingConfig {
            sample_ratio: f64::NAN,
            ..ok.clone()
        }),
        "tracing.sample_ratio"
    );
    for endpoint in ["127.0.0.1:4317", "https://collector:4317", "not a uri"] {
        assert_eq!(
            bad(TracingConfig {
                otlp_endpoint: Some(endpoint.into()),
                ..ok.clone()
            }),
            "tracing.otlp_endpoint",
            "{endpoint}"
        );
    }
    assert!(
        TracingConfig {
            otlp_endpoint: Some("http://127.0.0.1:4317".into()),
            ..ok.clone()
        }
        .validate("tracing")
        .is_ok()
    );
    assert_eq!(
        bad(TracingConfig {
            service_name: " ".into(),
            ..ok
        }),
        "tracing.service_name"
    );
}
