//! Phase 1, accept/http: the request must be GraphQL over HTTP.
//!
//! * POST with `Content-Type: application/json` (charset parameters
//!   allowed; `application/graphql-response+json` is a response type, and
//!   anything else is 415), a body of at most `proxy.max_body_bytes` (413)
//!   received within `proxy.body_read_timeout_ms` (408);
//! * GET: the query string is kept (the graphql phase reads `query`,
//!   `operationName`, `variables` and `extensions`, each at most once, and
//!   refuses a GET for anything but a query);
//! * any other method: 405.
//!
//! The body is only read here; the graphql phase parses it, once.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, header};
use http_body::Body;
use http_body_util::{BodyExt as _, Limited};

use super::error::ProxyError;

/// The limits of the accept phase.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Largest body (`proxy.max_body_bytes`).
    pub max_body: usize,
    /// Time to receive the body (`proxy.body_read_timeout_ms`).
    pub body_timeout: Duration,
}

/// A request that passed the accept phase.
pub struct Accepted {
    /// GET or POST.
    pub method: Method,
    /// The query string of a GET (forwarded as is).
    pub query: Option<String>,
    /// The client's headers.
    pub headers: HeaderMap,
    /// The buffered body (empty for GET).
    pub body: Bytes,
}

/// Runs the phase over `req`.
pub async fn accept<B>(limits: AcceptLimits, req: Request<B>) -> Result<Accepted, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let (parts, body) = req.into_parts();
    let (query, body) = match parts.method {
        Method::POST => {
            if !is_json(&parts.headers) {
                return Err(ProxyError::UnsupportedMediaType);
            }
            (None, read_body(body, limits).await?)
        }
        Method::GET => (parts.uri.query().map(str::to_string), Bytes::new()),
        ref other => return Err(ProxyError::MethodNotAllowed(other.to_string())),
    };
    Ok(Accepted {
        method: parts.method,
        query,
        headers: parts.headers,
        body,
    })
}

/// `application/json`, with parameters (`; charset=utf-8`) allowed.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| {
            let essence = ct.split(';').next().unwrap_or("").trim();
            essence.eq_ignore_ascii_case("application/json")
        })
}

/// Reads a body up to `limits.max_body` bytes within `limits.body_timeout`.
async fn read_body<B>(body: B, limits: AcceptLimits) -> Result<Bytes, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let read = Limited::new(body, limits.max_body).collect();
    match tokio::time::timeout(limits.body_timeout, read).await {
        Err(_) => Err(ProxyError::RequestTimeout),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ProxyError::PayloadTooLarge(limits.max_body))
        }
        Ok(Err(e)) => Err(ProxyError::BadRequest(format!(
            "reading the request body: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests;
