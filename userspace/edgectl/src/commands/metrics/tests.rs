use fraiseql_edge_api::v1::{Bucket, MetricFamily, MetricType, Sample};

use super::{FamilyView, MetricsView};
use crate::render::View;

fn sample(labels: &[(&str, &str)], value: f64) -> Sample {
    Sample {
        labels: labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect(),
        value,
        ..Sample::default()
    }
}

#[test]
fn prometheus_text() {
    let counter = MetricFamily {
        name: "fraiseql_edge_requests_total".into(),
        help: "Requests.\nAll of them.".into(),
        r#type: MetricType::Counter as i32,
        samples: vec![sample(&[("subgraph", "users"), ("code", "a\"b")], 3.0)],
    };
    let histogram = MetricFamily {
        name: "fraiseql_edge_seconds".into(),
        help: "Latency.".into(),
        r#type: MetricType::Histogram as i32,
        samples: vec![Sample {
            count: 4,
            sum: 0.75,
            buckets: vec![
                Bucket {
                    upper_bound: 0.5,
                    cumulative_count: 3,
                },
                Bucket {
                    upper_bound: f64::INFINITY,
                    cumulative_count: 4,
                },
            ],
            ..sample(&[], 0.0)
        }],
    };
    let view = MetricsView {
        families: vec![FamilyView::from(counter), FamilyView::from(histogram)],
    };
    assert_eq!(
        view.human(),
        "# HELP fraiseql_edge_requests_total Requests.\\nAll of them.\n\
         # TYPE fraiseql_edge_requests_total counter\n\
         fraiseql_edge_requests_total{code=\"a\\\"b\",subgraph=\"users\"} 3\n\
         # HELP fraiseql_edge_seconds Latency.\n\
         # TYPE fraiseql_edge_seconds histogram\n\
         fraiseql_edge_seconds_bucket{le=\"0.5\"} 3\n\
         fraiseql_edge_seconds_bucket{le=\"+Inf\"} 4\n\
         fraiseql_edge_seconds_sum 0.75\n\
         fraiseql_edge_seconds_count 4\n"
    );
    let json = serde_json::to_value(&view).unwrap();
    assert_eq!(json["families"][0]["type"], "counter");
    assert_eq!(
        json["families"][0]["samples"][0]["labels"]["subgraph"],
        "users"
    );
    assert_eq!(
        json["families"][1]["samples"][0]["buckets"][1]["le"],
        "+Inf"
    );
}
