//! The headers of the last GraphQL request that was not a health check,
//! for tests of what a proxy sends upstream (`GET /last-request` on the
//! admin port). Unlike the `requestHeader` field, it also sees requests
//! whose answer never reaches the caller (a try the proxy gave up on).

use std::sync::{Arc, Mutex};

use axum::http::HeaderMap;
use serde::Serialize;

/// The JSON body of `GET /last-request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct LastRequest {
    /// Requests recorded since start.
    pub seen: u64,
    /// The last one's headers, in order (repeated names repeat).
    pub headers: Vec<(String, String)>,
}

/// Shared by the GraphQL handlers (which record) and the admin port.
#[derive(Debug, Clone, Default)]
pub struct LastRequestLog(Arc<Mutex<LastRequest>>);

impl LastRequestLog {
    /// Records `headers` as the last request's.
    pub fn record(&self, headers: &HeaderMap) {
        let headers = headers
            .iter()
            .map(|(name, value)| {
                (
                    name.as_str().to_string(),
                    String::from_utf8_lossy(value.as_bytes()).into_owned(),
                )
            })
            .collect();
        let mut last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        last.seen += 1;
        last.headers = headers;
    }

    /// What was recorded last.
    pub fn get(&self) -> LastRequest {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    #[test]
    fn records_every_value_in_order() {
        let log = LastRequestLog::default();
        assert_eq!(log.get(), LastRequest::default());
        let mut h = HeaderMap::new();
        h.append("traceparent", HeaderValue::from_static("a"));
        h.append("tracestate", HeaderValue::from_static("x=1"));
        h.append("tracestate", HeaderValue::from_static("y=2"));
        log.record(&h);
        let last = log.get();
        assert_eq!(last.seen, 1);
        assert_eq!(
            last.headers,
            [
                ("traceparent".to_string(), "a".to_string()),
                ("tracestate".to_string(), "x=1".to_string()),
                ("tracestate".to_string(), "y=2".to_string()),
            ]
        );
    }
}
