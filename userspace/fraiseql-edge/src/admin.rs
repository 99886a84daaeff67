//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (ready to serve: see [`Live::not_ready`]). It runs
//! on its own port (loopback by default) so that scrapes and probes never
//! queue behind client traffic. Operators change the daemon over the gRPC
//! control API ([`crate::control`]), not here: this listener only reads.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::live::Live;

/// What the admin endpoints report on.
pub struct Admin {
    /// Every metric of the daemon.
    pub registry: Registry,
    /// Readiness.
    pub live: Arc<Live>,
}

impl Admin {
    /// Answers one request.
    pub fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        if !matches!(*req.method(), Method::GET | Method::HEAD) {
            let mut resp = text(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                b"the admin listener only reads (GET); operators use the gRPC control API\n"
                    .to_vec(),
            );
            resp.headers_mut()
                .insert(header::ALLOW, http::HeaderValue::from_static("GET, HEAD"));
            return resp;
        }
        match req.uri().path() {
            "/metrics" => {
                let mut buf = Vec::new();
                let encoder = TextEncoder::new();
                match encoder.encode(&self.registry.gather(), &mut buf) {
                    Ok(()) => text(StatusCode::OK, encoder.format_type(), buf),
                    Err(e) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "text/plain",
                        format!("encoding metrics: {e}\n").into_bytes(),
                    ),
                }
            }
            "/healthz" => text(StatusCode::OK, "text/plain", b"ok\n".to_vec()),
            "/readyz" => {
                let why = self.live.not_ready();
                if why.is_empty() {
                    text(StatusCode::OK, "text/plain", b"ready\n".to_vec())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        format!("not ready: {}\n", why.join("; ")).into_bytes(),
                    )
                }
            }
            _ => text(
                StatusCode::NOT_FOUND,
                "text/plain",
                b"not found (the admin listener serves /metrics, /healthz, /readyz)\n".to_vec(),
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

/// Serves the admin endpoints on `listener`.
pub async fn serve(admin: Arc<Admin>, listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = Arc::clone(&admin);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let admin = Arc::clone(&admin);
                async move { Ok::<_, Infallible>(admin.respond(&req)) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
