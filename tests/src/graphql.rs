//! The client side of the proxy tests: GraphQL-over-HTTP requests to the
//! edge or straight to a subgraph, their replies (status and body bytes,
//! whatever the status), and the Prometheus text of the admin port.
//!
//! One blocking [`Client`] is shared by a test's threads. It never treats a
//! 4xx/5xx status as an error (the refusal body is what the tests check),
//! never decompresses (bodies are compared byte for byte) and never uses an
//! HTTP proxy from the environment (all traffic stays on loopback).

use std::{collections::BTreeMap, time::Duration};

use serde_json::Value;

/// Largest body a test reads (`bigList(n: 200000)` is about 3 MB).
const BODY_LIMIT: u64 = 64 << 20;

/// One HTTP answer.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, exactly as received.
    pub body: Vec<u8>,
}

impl Reply {
    /// The body as JSON (panics with the body when it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            )
        })
    }

    /// The body as (lossy) text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// `errors[0].extensions.code` of a GraphQL-shaped refusal.
    pub fn code(&self) -> Option<String> {
        let v: Value = serde_json::from_slice(&self.body).ok()?;
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_string)
    }

    /// A 200 answer with `data` and no `errors`.
    pub fn is_data(&self) -> bool {
        self.status == 200
            && serde_json::from_slice::<Value>(&self.body).is_ok_and(|v| {
                v.get("data").is_some_and(|d| !d.is_null()) && v.get("errors").is_none()
            })
    }
}

/// What went wrong below HTTP (connection refused or reset, timeout).
#[derive(Debug)]
pub struct TransportError(pub String);

impl std::fmt::Display for TransportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A blocking HTTP client; cheap to clone, safe to share between threads.
#[derive(Clone)]
pub struct Client {
    agent: ureq::Agent,
}

impl Default for Client {
    fn default() -> Self {
        Self::new(Duration::from_secs(60))
    }
}

/// The tests' HTTP agent: statuses are answers, not errors; no proxy from
/// the environment; every call gives up after `timeout` (a stuck test
/// fails instead of hanging).
pub fn agent(timeout: Duration) -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(timeout))
        .build()
        .into()
}

impl Client {
    /// A client whose calls give up after `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Self {
            agent: agent(timeout),
        }
    }

    /// POSTs `body` with `content_type` (none when `None`).
    pub fn try_post(
        &self,
        url: &str,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Reply, TransportError> {
        let mut req = self.agent.post(url);
        if let Some(ct) = content_type {
            req = req.header("content-type", ct);
        }
        read(req.send(body))
    }

    /// POSTs a raw body as `application/json`; panics on a transport error.
    pub fn post_raw(&self, url: &str, body: &[u8]) -> Reply {
        self.try_post(url, Some("application/json"), body)
            .unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    /// POSTs a JSON value with extra request headers (a name may repeat);
    /// panics on a transport error.
    pub fn post_json_with(&self, url: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut req = self
            .agent
            .post(url)
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        read(req.send(body.to_string().as_bytes())).unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    /// POSTs a JSON value; panics on a transport error.
    pub fn post_json(&self, url: &str, body: &Value) -> Reply {
        self.post_raw(url, body.to_string().as_bytes())
    }

    /// POSTs `{"query": query}`; panics on a transport error.
    pub fn query(&self, url: &str, query: &str) -> Reply {
        self.post_json(url, &serde_json::json!({ "query": query }))
    }

    /// Like [`Self::query`], but a transport error is returned.
    pub fn try_query(&self, url: &str, query: &str) -> Result<Reply, TransportError> {
        let body = serde_json::json!({ "query": query }).to_string();
        self.try_post(url, Some("application/json"), body.as_bytes())
    }

    /// GETs `url` with the given query parameters (URL-encoded here).
    pub fn try_get(&self, url: &str, params: &[(&str, &str)]) -> Result<Reply, TransportError> {
        let mut req = self.agent.get(url);
        for (k, v) in params {
            req = req.query(*k, *v);
        }
        read(req.call())
    }

    /// GETs `url`; panics on a transport error.
    pub fn get(&self, url: &str, params: &[(&str, &str)]) -> Reply {
        self.try_get(url, params)
            .unwrap_or_else(|e| panic!("GET {url}: {e}"))
    }

    /// PUTs a JSON body (a method the GraphQL endpoint must refuse).
    pub fn put(&self, url: &str, body: &[u8]) -> Reply {
        let req = self
            .agent
            .put(url)
            .header("content-type", "application/json");
        read(req.send(body)).unwrap_or_else(|e| panic!("PUT {url}: {e}"))
    }

    /// DELETEs `url`; panics on a transport error.
    pub fn delete(&self, url: &str) -> Reply {
        read(self.agent.delete(url).call()).unwrap_or_else(|e| panic!("DELETE {url}: {e}"))
    }

    /// Scrapes a Prometheus text endpoint.
    pub fn metrics(&self, url: &str) -> Metrics {
        let reply = self.get(url, &[]);
        assert_eq!(reply.status, 200, "GET {url}: {}", reply.text());
        Metrics::parse(&reply.text())
    }
}

fn read(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<Reply, TransportError> {
    let mut resp = result.map_err(|e| TransportError(e.to_string()))?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .body_mut()
        .with_config()
        .limit(BODY_LIMIT)
        .read_to_vec()
        .map_err(|e| TransportError(format!("reading the body: {e}")))?;
    Ok(Reply {
        status,
        content_type,
        body,
    })
}

/// A sample's labels, by name.
pub type Labels = BTreeMap<String, String>;

/// One scrape of Prometheus text: samples by name, each with its labels.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    samples: BTreeMap<String, Vec<(Labels, f64)>>,
}

impl Metrics {
    /// Parses the text exposition format (comments skipped).
    pub fn parse(text: &str) -> Self {
        let mut samples: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (series, value) = line
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad sample line: {line}"));
            let value: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad sample value: {line}"));
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (series, Labels::new()),
            };
            samples
                .entry(name.to_string())
                .or_default()
                .push((labels, value));
        }
        Self { samples }
    }

    /// Every sample of `name` whose labels include all of `labels`.
    pub fn matching(&self, name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
        self.samples
            .get(name)
            .into_iter()
            .flatten()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(k, v)| have.get(*k).is_some_and(|h| h == v))
            })
            .map(|(_, v)| *v)
            .collect()
    }

    /// The one sample of `name` matching `labels`; `None` if there is none,
    /// panics if several match.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found = self.matching(name, labels);
        assert!(
            found.len() <= 1,
            "{name}{labels:?} matches {} series",
            found.len()
        );
        found.first().copied()
    }

    /// The sum of the samples of `name` matching `labels` (0 when none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).iter().sum()
    }
}

/// `a="1",b="x \"y\""` → {a: 1, b: x "y"}.
fn parse_labels(text: &str) -> Labels {
    let mut labels = Labels::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Asserts a refusal: `status`, a JSON body whose `errors[0].extensions.code`
/// is `code`.
#[track_caller]
pub fn assert_refused(reply: &Reply, status: u16, code: &str) {
    assert_eq!(
        (reply.status, reply.code().as_deref()),
        (status, Some(code)),
        "body: {}",
        reply.text()
    );
    assert_eq!(
        reply.content_type.as_deref(),
        Some("application/json"),
        "refusals are JSON"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_samples_and_labels() {
        let m = Metrics::parse(
            "# HELP x y\n# TYPE x counter\nx_total{a=\"1\",b=\"q \\\"z\\\"\"} 3\nup 1\n\
             x_total{a=\"2\",b=\"w\"} 4\n",
        );
        assert_eq!(m.get("x_total", &[("a", "1"), ("b", "q \"z\"")]), Some(3.0));
        assert_eq!(m.sum("x_total", &[]), 7.0);
        assert_eq!(m.get("up", &[]), Some(1.0));
        assert_eq!(m.get("x_total", &[("a", "3")]), None);
    }
}
