//! Every refusal of the data path, and the one place where it becomes an
//! HTTP response: a GraphQL-shaped body
//! `{"errors":[{"message":…,"extensions":{"code":…}}]}` with a stable code
//! and a fitting status. No internal detail (addresses, OS errors) reaches
//! the client; it goes to the log instead.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt as _;
use http_body_util::{Full, combinators::BoxBody};

/// Errors of a response body (an upstream's, or a deadline's).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The response body type of the proxy.
pub type ProxyBody = BoxBody<Bytes, BoxError>;

/// Why the proxy answered itself instead of the subgraph.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Malformed request (JSON, parameters).
    #[error("{0}")]
    BadRequest(String),
    /// No route for the path.
    #[error("no subgraph serves {0}")]
    NotFound(String),
    /// Method not allowed.
    #[error("method {0} is not allowed")]
    MethodNotAllowed(String),
    /// Body above `proxy.max_body_bytes`.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// Content type not JSON.
    #[error("content type must be application/json")]
    UnsupportedMediaType,
    /// The client did not send its body within `proxy.body_read_timeout_ms`.
    #[error("request body not received in time")]
    RequestTimeout,
    /// Degraded mode: the client exceeded the kernel-layer limits.
    #[error("rate limit exceeded")]
    RateLimited,
    /// The document failed to parse or validate, or exceeded a limit.
    #[error("{0}")]
    Graphql(crate::graphql::GraphqlError),
    /// A persisted query that cannot be resolved, or an operation outside
    /// the safelist.
    #[error("{0}")]
    Persisted(crate::graphql::persisted::PersistedError),
    /// Authorization (reject mode): the operation selects fields the caller
    /// may not see; the `errors` list their paths.
    #[error("Unauthorized field or type")]
    Unauthorized(serde_json::Value),
    /// `_entities` or `_service` from a caller that is not a trusted router.
    #[error("_entities and _service are only served to trusted routers")]
    EntryPointForbidden,
    /// No valid token (`[auth]`): 401 with `WWW-Authenticate`.
    #[error("{0}")]
    Unauthenticated(crate::auth::AuthError),
    /// The identity exceeded its request rate (`[rate_limit]`).
    #[error("rate limit exceeded; retry in {} s", .0.retry_after_secs)]
    TooManyRequests(crate::ratelimit::Decision),
    /// Cluster mode with `failure_mode = "closed"`: Redis cannot be asked
    /// and the request needs a cluster-wide check.
    #[error("the cluster-wide rate limit cannot be checked; retry later")]
    GlobalLimitUnavailable,
    /// Degraded mode: the client is blocked or denied.
    #[error("forbidden")]
    Forbidden,
    /// The subgraph's breaker is open.
    #[error("subgraph {0} is unavailable (circuit open)")]
    CircuitOpen(String),
    /// Every endpoint is ejected.
    #[error("subgraph {0} has no healthy endpoint")]
    NoHealthyUpstream(String),
    /// No pooled connection came free in time: the edge's own limit on
    /// concurrent requests to the subgraph, not the subgraph's failure.
    #[error("subgraph {0} is saturated")]
    Saturated(String),
    /// Connection failures / broken connections.
    #[error("subgraph {subgraph} could not be reached")]
    UpstreamUnavailable {
        /// Subgraph.
        subgraph: String,
        /// Detail, logged only.
        detail: String,
    },
    /// Per-try or overall timeout.
    #[error("subgraph {0} did not answer in time")]
    UpstreamTimeout(String),
    #[error("{0}")]
    Saga(Box<crate::saga::api::SagaApiError>),
}

impl ProxyError {
    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::MethodNotAllowed(_) => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
            }
            Self::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "REQUEST_TIMEOUT"),
            Self::RateLimited | Self::TooManyRequests(_) => {
                (StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED")
            }
            Self::GlobalLimitUnavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "GLOBAL_LIMIT_UNAVAILABLE")
            }
            Self::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::Unauthorized(_) => (StatusCode::FORBIDDEN, crate::authz::CODE),
            Self::EntryPointForbidden => {
                (StatusCode::FORBIDDEN, "FEDERATION_ENTRY_POINT_FORBIDDEN")
            }
            Self::Unauthenticated(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Graphql(e) => (StatusCode::BAD_REQUEST, e.code()),
            Self::Persisted(e) => (e.status(), e.code()),
            Self::CircuitOpen(_) => (StatusCode::SERVICE_UNAVAILABLE, "CIRCUIT_OPEN"),
            Self::NoHealthyUpstream(_) => (StatusCode::SERVICE_UNAVAILABLE, "NO_HEALTHY_UPSTREAM"),
            Self::Saturated(_) => (StatusCode::SERVICE_UNAVAILABLE, "UPSTREAM_SATURATED"),
            Self::UpstreamUnavailable { .. } => (StatusCode::BAD_GATEWAY, "UPSTREAM_UNAVAILABLE"),
            Self::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "UPSTREAM_TIMEOUT"),
            Self::Saga(e) => e.status_and_code(),
        }
    }

    /// The response a client gets.
    pub fn into_response(self) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let limit = match &self {
            Self::TooManyRequests(d) => Some(*d),
            _ => None,
        };
        let challenge = match &self {
            Self::Unauthenticated(e) => Some(e.www_authenticate()),
            _ => None,
        };
        let body = match &self {
            // One error per unauthorized path, as authorization wrote them.
            Self::Unauthorized(errors) => serde_json::json!({ "errors": errors }),
            _ => serde_json::json!({
                "errors": [{ "message": self.to_string(), "extensions": { "code": code } }]
            }),
        };
        let mut resp = Response::new(
            Full::new(Bytes::from(body.to_string()))
                .map_err(|never| match never {})
                .boxed(),
        );
        *resp.status_mut() = status;
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(c) = challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, c);
        }
        if let Some(d) = limit {
            let h = resp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(d.retry_after_secs));
            h.insert("ratelimit-limit", HeaderValue::from(d.limit));
            h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
            h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
        }
        if status == StatusCode::REQUEST_TIMEOUT {
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if status == StatusCode::METHOD_NOT_ALLOWED {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, POST"));
        }
        resp
    }
}

/// The rows of a Markdown table in `doc` under the heading `section`:
/// (code, status) pairs from lines `| \`CODE\` | 503 | …`. Used by the
/// tests that keep docs/reference.md in step with the code.
#[cfg(test)]
pub(crate) fn documented_codes(doc: &str, section: &str) -> Vec<(String, u16)> {
    let body = doc.split(section).nth(1).expect("section present");
    let body = body.split("\n## ").next().unwrap_or(body);
    body.lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let code = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells.next()?.parse().ok()?;
            Some((code.to_string(), status))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One of each variant; the match makes a new variant a compile error
    /// here until it is listed (and then documented).
    fn every() -> Vec<ProxyError> {
        let all = vec![
            ProxyError::BadRequest(String::new()),
            ProxyError::NotFound(String::new()),
            ProxyError::MethodNotAllowed(String::new()),
            ProxyError::PayloadTooLarge(0),
            ProxyError::UnsupportedMediaType,
            ProxyError::RequestTimeout,
            ProxyError::RateLimited,
            ProxyError::TooManyRequests(crate::ratelimit::Decision {
                allowed: false,
                limit: 1,
                remaining: 0,
                reset_secs: 1,
                retry_after_secs: 1,
            }),
            ProxyError::GlobalLimitUnavailable,
            ProxyError::Forbidden,
            ProxyError::Unauthorized(serde_json::Value::Null),
            ProxyError::EntryPointForbidden,
            ProxyError::CircuitOpen(String::new()),
            ProxyError::Unauthenticated(crate::auth::AuthError::MissingToken),
            ProxyError::Graphql(crate::graphql::GraphqlError::OperationNotFound),
            ProxyError::Persisted(crate::graphql::persisted::PersistedError::NotFound),
            ProxyError::NoHealthyUpstream(String::new()),
            ProxyError::Saturated(String::new()),
            ProxyError::UpstreamUnavailable {
                subgraph: String::new(),
                detail: String::new(),
            },
            ProxyError::UpstreamTimeout(String::new()),
            ProxyError::Saga(Box::new(crate::saga::api::SagaApiError::KeyRequired)),
        ];
        for e in &all {
            match e {
                ProxyError::BadRequest(_)
                | ProxyError::NotFound(_)
                | ProxyError::MethodNotAllowed(_)
                | ProxyError::PayloadTooLarge(_)
                | ProxyError::UnsupportedMediaType
                | ProxyError::RequestTimeout
                | ProxyError::RateLimited
                | ProxyError::TooManyRequests(_)
                | ProxyError::GlobalLimitUnavailable
                | ProxyError::Forbidden
                | ProxyError::Unauthorized(_)
                | ProxyError::EntryPointForbidden
                | ProxyError::Unauthenticated(_)
                | ProxyError::Graphql(_)
                | ProxyError::Persisted(_)
                | ProxyError::CircuitOpen(_)
                | ProxyError::NoHealthyUpstream(_)
                | ProxyError::Saturated(_)
                | ProxyError::UpstreamUnavailable { .. }
                | ProxyError::UpstreamTimeout(_)
                | ProxyError::Saga(_) => {}
            }
        }
        all
    }

    #[test]
    fn the_reference_page_lists_every_code_with_its_status() {
        let doc = include_str!("../../../../docs/reference.md");
        let documented = documented_codes(doc, "## Data path");
        let mut in_code: Vec<(String, u16)> = every()
            .into_iter()
            .chain(
                crate::auth::AuthError::ALL
                    .iter()
                    .map(|e| ProxyError::Unauthenticated(e.clone())),
            )
            .chain(
                crate::graphql::persisted::PersistedError::ALL
                    .iter()
                    .map(|e| ProxyError::Persisted(e.clone())),
            )
            .chain(
                crate::graphql::GraphqlError::examples()
                    .into_iter()
                    .map(ProxyError::Graphql),
            )
            .chain(
                crate::saga::api::SagaApiError::examples()
                    .into_iter()
                    .map(ProxyError::from),
            )
            .map(|e| {
                let (status, code) = e.status_and_code();
                (code.to_string(), status.as_u16())
            })
            .collect();
        in_code.sort();
        in_code.dedup();
        let mut listed = documented.clone();
        listed.sort();
        assert_eq!(listed, in_code, "docs/reference.md, Data path");
    }

    #[tokio::test]
    async fn body_is_graphql_shaped_without_detail() {
        let resp = ProxyError::UpstreamUnavailable {
            subgraph: "users".into(),
            detail: "connect 10.0.0.1:4001: refused".into(),
        }
        .into_response();
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["errors"][0]["extensions"]["code"], "UPSTREAM_UNAVAILABLE");
        assert!(!String::from_utf8_lossy(&bytes).contains("10.0.0.1"));
    }
}
