//! A JWKS fetched from a URL: fetched at start, refreshed in the background,
//! refetched early (rate-limited) when a token names an unknown `kid`.
//!
//! Plain `http://` only, over one hyper HTTP/1.1 connection per fetch: the
//! daemon carries no TLS stack. Serve the identity provider's JWKS through a
//! local sidecar or over a trusted network.
//!
//! While the URL fails, the last good key set stays in use. A failure is
//! logged when the source goes from healthy to failing, and the recovery
//! when it comes back — not on every attempt.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;

use super::{config::JwksUrlConfig, keys::Key};

/// Where to fetch from, split out of the configured URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpTarget {
    /// `host` or `host:port`, for the `Host` header.
    pub authority: String,
    /// Host to connect to.
    pub host: String,
    /// Port to connect to (80 when absent).
    pub port: u16,
    /// Path and query to request.
    pub path: String,
}

/// Parses an `http://` URL; anything else is refused with the reason.
pub fn parse_http_url(url: &str) -> Result<HttpTarget, String> {
    let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") {
        return Err("only http:// URLs are supported".to_owned());
    }
    let authority = uri.authority().ok_or("URL without a host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    if host.is_empty() {
        return Err("URL without a host".to_owned());
    }
    Ok(HttpTarget {
        authority: authority.as_str().to_owned(),
        host: host.to_owned(),
        port: authority.port_u16().unwrap_or(80),
        path: uri
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
    })
}

/// A JWKS URL key source.
pub struct JwksUrl {
    config: JwksUrlConfig,
    target: HttpTarget,
    keys: ArcSwap<Vec<Arc<Key>>>,
    /// Bumped whenever the served key set changes (shared by all sources):
    /// cached verifications from before are no longer trusted.
    epoch: Arc<AtomicU64>,
    /// Body of the last good fetch, to tell a change from a refresh.
    last_body: std::sync::Mutex<Bytes>,
    healthy: AtomicBool,
    /// When the last fetch that installed (or confirmed) a key set ended.
    last_ok: std::sync::Mutex<Instant>,
    /// Fetches that failed since start (the old key set stayed).
    failures: AtomicU64,
    /// When the last unknown-`kid` refetch started; held across the fetch so
    /// concurrent requests wait for it instead of fetching again.
    refetch: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksUrl {
    /// Fetches the key set once; an unreachable URL or an empty key set is an error.
    pub async fn start(config: JwksUrlConfig, epoch: Arc<AtomicU64>) -> Result<Arc<Self>, String> {
        let target = parse_http_url(&config.url)?;
        let source = Arc::new(Self {
            config,
            target,
            keys: ArcSwap::from_pointee(Vec::new()),
            epoch,
            last_body: std::sync::Mutex::new(Bytes::new()),
            healthy: AtomicBool::new(true),
            last_ok: std::sync::Mutex::new(Instant::now()),
            failures: AtomicU64::new(0),
            refetch: tokio::sync::Mutex::new(None),
        });
        source.refresh().await?;
        Ok(source)
    }

    /// The URL, for logs.
    pub fn url(&self) -> &str {
        &self.config.url
    }

    /// Time since the last successful fetch (the initial one at start).
    pub fn refresh_age(&self) -> Duration {
        self.last_ok
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .elapsed()
    }

    /// Fetches that failed since start.
    pub fn refresh_failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The current key set.
    pub fn keys(&self) -> Arc<Vec<Arc<Key>>> {
        self.keys.load_full()
    }

    /// Refreshes every `refresh_secs` until the task is aborted.
    pub async fn refresh_loop(self: Arc<Self>) {
        let period = Duration::from_secs(self.config.refresh_secs);
        loop {
            tokio::time::sleep(period).await;
            // Failures are logged (once per state change) inside.
            let _ = self.refresh().await;
        }
    }

    /// Refetches because a token named an unknown `kid`, unless one was
    /// done less than `unknown_kid_refetch_secs` ago. Returns when the
    /// refetch (this one or a concurrent one) is over.
    pub async fn refetch_for_unknown_kid(&self) {
        let mut last = self.refetch.lock().await;
        let min = Duration::from_secs(self.config.unknown_kid_refetch_secs);
        if last.is_some_and(|t| t.elapsed() < min) {
            return;
        }
        *last = Some(Instant::now());
        let _ = self.refresh().await;
    }

    /// Fetches and installs the key set; on failure the old one stays.
    async fn refresh(&self) -> Result<(), String> {
        let outcome = self.fetch().await.and_then(|body| {
            let (keys, skipped) = super::keys::parse_jwks(&body, &self.config.algorithms)?;
            if keys.is_empty() {
                return Err(format!("no usable signing key ({skipped} skipped)"));
            }
            Ok((body, keys))
        });
        match outcome {
            Ok((body, keys)) => {
                let mut last = self.last_body.lock().unwrap_or_else(|p| p.into_inner());
                if *last != body {
                    self.keys
                        .store(Arc::new(keys.into_iter().map(Arc::new).collect()));
                    *last = body;
                    self.epoch.fetch_add(1, Ordering::Release);
                }
                *self.last_ok.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
                if !self.healthy.swap(true, Ordering::AcqRel) {
                    tracing::info!(url = %self.config.url, "JWKS fetch recovered");
                }
                Ok(())
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if self.healthy.swap(false, Ordering::AcqRel) {
                    tracing::warn!(url = %self.config.url, error = %e, "JWKS fetch failing; keeping the last good key set");
                } else {
                    tracing::debug!(url = %self.config.url, error = %e, "JWKS fetch still failing");
                }
                Err(e)
            }
        }
    }

    /// One GET over a fresh HTTP/1.1 connection, bounded in time and size.
    async fn fetch(&self) -> Result<Bytes, String> {
        let timeout = Duration::from_secs(self.config.fetch_timeout_secs);
        tokio::time::timeout(timeout, self.fetch_inner())
            .await
            .map_err(|_| format!("timed out after {}s", timeout.as_secs()))?
    }

    async fn fetch_inner(&self) -> Result<Bytes, String> {
        let t = &self.target;
        let stream = tokio::net::TcpStream::connect((t.host.as_str(), t.port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        let conn = AbortOnDrop(tokio::spawn(async move {
            let _ = conn.await;
        }));
        let request = http::Request::get(t.path.as_str())
            .header(http::header::HOST, t.authority.as_str())
            .header(http::header::ACCEPT, "application/json")
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("request: {e}"))?;
        if response.status() != http::StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        let body = Limited::new(response.into_body(), self.config.max_bytes)
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        drop(conn);
        Ok(body)
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
