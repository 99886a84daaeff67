//! The daemon's `/v1/blocks` API from the command line
//! (`kernel block|unblock|blocks --admin HOST:PORT`): one HTTP/1.1 call per
//! command over the admin listener, so blocks reach whichever layer the
//! daemon enforces with — the kernel map, or its user-space limiter in
//! degraded mode, which has no pins to open.

use std::{net::IpAddr, time::Duration};

use anyhow::{Context as _, bail};
use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt as _, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;

use crate::kernel::BlockInfo;

/// How long one call may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(10);

/// A daemon's admin listener.
pub struct AdminClient {
    addr: String,
}

impl AdminClient {
    /// The admin listener at `addr` (`HOST:PORT`, e.g. `127.0.0.1:9090`).
    pub fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_string(),
        }
    }

    /// `POST /v1/blocks`.
    pub fn block(&self, client: IpAddr, ttl_secs: Option<u64>) -> anyhow::Result<BlockInfo> {
        let body = serde_json::json!({ "client": client, "ttl_secs": ttl_secs });
        let value = self.call(Method::POST, "/v1/blocks", Some(body))?;
        serde_json::from_value(value).context("reading the daemon's answer")
    }

    /// `DELETE /v1/blocks/<client>`; whether there was a block.
    pub fn unblock(&self, client: IpAddr) -> anyhow::Result<bool> {
        let value = self.call(Method::DELETE, &format!("/v1/blocks/{client}"), None)?;
        value["unblocked"]
            .as_bool()
            .context("the daemon's answer has no `unblocked`")
    }

    /// `GET /v1/blocks`.
    pub fn blocks(&self) -> anyhow::Result<Vec<BlockInfo>> {
        let value = self.call(Method::GET, "/v1/blocks", None)?;
        serde_json::from_value(value).context("reading the daemon's answer")
    }

    fn call(&self, method: Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("starting the runtime")?;
        let what = format!("{method} http://{}{path}", self.addr);
        let (status, bytes) = runtime
            .block_on(async {
                tokio::time::timeout(TIMEOUT, self.send(method, path, body))
                    .await
                    .context("no answer in time")?
            })
            .with_context(|| format!("{what} (is the daemon's [admin] listener there?)"))?;
        let value: Value = serde_json::from_slice(&bytes)
            .with_context(|| format!("{what}: answer is not JSON (status {status})"))?;
        if !status.is_success() {
            let error = &value["errors"][0];
            bail!(
                "the daemon refused: {} ({}, {status})",
                error["message"].as_str().unwrap_or("no message"),
                error["extensions"]["code"].as_str().unwrap_or("no code"),
            );
        }
        Ok(value)
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<(http::StatusCode, Bytes)> {
        let stream = tokio::net::TcpStream::connect(&self.addr).await?;
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &self.addr);
        // Always JSON: the admin listener refuses POSTs a browser could
        // send cross-site (no content type, or a form/text one).
        req = req.header(header::CONTENT_TYPE, "application/json");
        let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let resp = sender.send_request(req.body(Full::new(body))?).await?;
        let status = resp.status();
        let bytes = resp.into_body().collect().await?.to_bytes();
        Ok((status, bytes))
    }
}
