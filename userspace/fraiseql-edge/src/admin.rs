//! The admin listener: `/metrics` (Prometheus text), `/healthz` (the process
//! answers) and `/readyz` (every subgraph has a healthy endpoint). It runs on
//! its own port so that scrapes and probes never queue behind client traffic.

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use prometheus::{Encoder as _, Registry, TextEncoder};
use tokio::net::TcpListener;

use crate::proxy::Proxy;

/// What the admin endpoints report on.
pub struct Admin {
    /// Every metric of the daemon.
    pub registry: Registry,
    /// The data path, when configured.
    pub proxy: Option<Arc<Proxy>>,
}

impl Admin {
    fn respond(&self, path: &str) -> Response<Full<Bytes>> {
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
        let mut resp = Response::new(Full::new(Bytes::from(body)));
        *resp.status_mut() = status;
        if let Ok(v) = ctype.parse() {
            resp.headers_mut().insert(header::CONTENT_TYPE, v);
        }
        resp
    }
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
            let service = hyper::service::service_fn(move |req: http::Request<_>| {
                let resp = admin.respond(req.uri().path());
                async move { Ok::<_, Infallible>(resp) }
            });
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
