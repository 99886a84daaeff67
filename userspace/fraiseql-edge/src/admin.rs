//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers), `/readyz` (every subgraph has a healthy endpoint), and the
//! operator API of the data path:
//!
//! * `GET /v1/subgraphs` — subgraphs, breaker state, endpoints with health
//!   and pool numbers (JSON);
//! * `POST /v1/subgraphs/<name>/breaker/<open|close|auto|reset>` — force the
//!   breaker open or closed, lift the override, or reset it;
//! * `GET|POST /v1/blocks`, `DELETE /v1/blocks/<address>` — list, set and
//!   lift blocks, in the kernel or, in degraded mode, in user space
//!   ([`blocks`]).
//!
//! It runs on its own port (loopback by default) so that scrapes and probes
//! never queue behind client traffic. The mutating calls have no
//! authentication of their own yet: keep the listener on loopback. So that
//! a web page open in a browser on the node cannot drive them, a POST must
//! carry `Content-Type: application/json` — a browser sends that
//! cross-site only after a CORS preflight, which this listener never
//! grants (DELETE is always preflighted).

pub mod blocks;
pub mod error;

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;

use self::error::AdminError;
use crate::{blocklist::BlockList, breaker::Force, proxy::Proxy};

/// What the admin endpoints report on.
pub struct Admin {
    /// Every metric of the daemon.
    pub registry: Registry,
    /// The data path, when configured.
    pub proxy: Option<Arc<Proxy>>,
    /// The block list in force; `None` when the kernel layer is disabled.
    pub blocks: Option<Arc<BlockList>>,
}

impl Admin {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        if req.method() == Method::POST && !preflighted(req.headers()) {
            tracing::warn!(
                path = req.uri().path(),
                "admin call refused: browser simple request"
            );
            return AdminError::CrossSiteRequest.into_response();
        }
        let Some(rest) = blocks::route(req.uri().path()) else {
            return self.respond(req.method(), req.uri().path());
        };
        let (rest, method) = (rest.to_string(), req.method().clone());
        let body = if method == Method::POST {
            match read_body(req.into_body()).await {
                Ok(body) => body,
                Err(e) => return e.into_response(),
            }
        } else {
            Bytes::new()
        };
        match blocks::respond(self.blocks.as_deref(), &method, &rest, &body) {
            Ok((status, value)) => json(status, &value),
            Err(e) => e.into_response(),
        }
    }

    fn respond(&self, method: &http::Method, path: &str) -> Response<Full<Bytes>> {
        if let Some(rest) = path.strip_prefix("/v1/subgraphs") {
            return self.subgraphs_api(method, rest);
        }
        let (status, ctype, body) = match path {
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&self.registry.gather(), &mut buf) {
                    Ok(()) => (StatusCode::OK, encoder.format_type().to_string(), buf),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain".into(),
                        format!("encoding metrics: {e}\n").into_bytes(),
                    ),
                }
            }
            "/healthz" => (StatusCode::OK, "text/plain".into(), b"ok\n".to_vec()),
            "/readyz" => {
                let down: Vec<String> = self
                    .proxy
                    .iter()
                    .flat_map(|p| p.unready_subgraphs())
                    .collect();
                if down.is_empty() {
                    (StatusCode::OK, "text/plain".into(), b"ready\n".to_vec())
                } else {
                    let msg = format!("no healthy endpoint: {}\n", down.join(", "));
                    (
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain".into(),
                        msg.into_bytes(),
                    )
                }
            }
            _ => (
                StatusCode::NOT_FOUND,
                "text/plain".into(),
                b"not found\n".to_vec(),
            ),
        };
        text(status, &ctype, body)
    }

    fn subgraphs_api(&self, method: &http::Method, rest: &str) -> Response<Full<Bytes>> {
        let Some(proxy) = &self.proxy else {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "no [proxy] configured"}),
            );
        };
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        match (method, parts.as_slice()) {
            (&http::Method::GET, []) => json(StatusCode::OK, &proxy.describe()),
            (&http::Method::POST, [name, "breaker", action]) => {
                let Some(sg) = proxy.subgraph(name) else {
                    return json(
                        StatusCode::NOT_FOUND,
                        &serde_json::json!({"error": format!("no subgraph named `{name}`")}),
                    );
                };
                match *action {
                    "open" => sg.breaker.force(Force::Open),
                    "close" => sg.breaker.force(Force::Closed),
                    "auto" => sg.breaker.force(Force::None),
                    "reset" => sg.breaker.reset(),
                    other => {
                        return json(
                            StatusCode::BAD_REQUEST,
                            &serde_json::json!({
                                "error": format!("unknown breaker action `{other}` (open, close, auto, reset)")
                            }),
                        );
                    }
                }
                tracing::warn!(subgraph = %name, action = %action, "breaker changed by an operator");
                json(StatusCode::OK, &sg.describe())
            }
            _ => json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({"error": "unknown admin call"}),
            ),
        }
    }
}

fn text(status: StatusCode, ctype: &str, body: Vec<u8>) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    text(status, "application/json", value.to_string().into_bytes())
}

/// Reads a body of at most [`blocks::MAX_BODY`] bytes.
async fn read_body(body: Incoming) -> Result<Bytes, AdminError> {
    match Limited::new(body, blocks::MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(AdminError::PayloadTooLarge(blocks::MAX_BODY))
        }
        Err(_) => Err(AdminError::BadRequest(
            "the request body could not be read".into(),
        )),
    }
}

/// Whether a request could only come from a browser after a CORS
/// preflight: its content type is present and not one of the three a
/// simple request may use.
fn preflighted(headers: &http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    !matches!(
        essence.as_str(),
        "" | "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
    )
}

/// Serves the admin endpoints on `listener`.
pub async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests;
