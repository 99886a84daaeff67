//! The gRPC control API (`fraiseql.edge.v1.EdgeControl`, `proto/`), with
//! standard gRPC health (`grpc.health.v1`, serving while the daemon is
//! ready) and reflection.
//!
//! It listens on a unix socket (mode 0600) and, if configured, on a TCP
//! address; every call but health needs a bearer token from a token file
//! ([`auth`]). Changes are made through [`Live`], which logs them with who
//! made them and publishes them on the event stream.

pub mod auth;
mod convert;
pub mod service;

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use fraiseql_edge_api::v1::{FILE_DESCRIPTOR_SET, edge_control_server::EdgeControlServer};
use tokio::{
    net::{TcpListener, UnixListener},
    sync::watch,
};
use tonic::{service::interceptor::InterceptedService, transport::Server};

use self::auth::{Authenticate, Tokens};
use crate::{config::ControlConfig, live::Live};

/// The control API's listeners, bound before the daemon says it is ready.
pub struct Listeners {
    unix: Option<(UnixListener, PathBuf)>,
    tcp: Option<TcpListener>,
}

impl Listeners {
    /// Binds what `cfg` asks for. A socket path left by a daemon that is
    /// gone is replaced; one a live daemon listens on is an error.
    pub async fn bind(cfg: &ControlConfig) -> anyhow::Result<Self> {
        let unix = if cfg.socket.as_os_str().is_empty() {
            None
        } else {
            Some((bind_unix(&cfg.socket).await?, cfg.socket.clone()))
        };
        let tcp = match cfg.listen {
            Some(addr) => {
                if !addr.ip().is_loopback() {
                    tracing::warn!(%addr, "the control API listens on a non-loopback address: keep it off the network (tokens travel in clear text)");
                }
                Some(
                    TcpListener::bind(addr)
                        .await
                        .with_context(|| format!("binding control.listen {addr}"))?,
                )
            }
            None => None,
        };
        Ok(Self { unix, tcp })
    }
}

async fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| {
            format!("creating the directory of control.socket {}", dir.display())
        })?;
    }
    if path.exists() {
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            anyhow::bail!(
                "control.socket {}: another daemon is listening on it",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale control.socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding control.socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(listener)
}

/// Starts serving on `listeners` until `stop` turns true. The token files
/// of `cfg` are read now (an unreadable one is an error) and again at
/// every reload of `live`.
pub fn serve(
    live: Arc<Live>,
    cfg: &ControlConfig,
    listeners: Listeners,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let tokens = Arc::new(ArcSwap::from_pointee(
        Tokens::load(cfg).map_err(|e| anyhow::anyhow!("[control]: {e}"))?,
    ));
    {
        let tokens = Arc::clone(&tokens);
        live.on_reload(move |next| {
            let Some(c) = &next.control else {
                return Ok(());
            };
            let loaded = Tokens::load(c).map_err(|e| format!("[control]: {e}"))?;
            tokens.store(Arc::new(loaded));
            Ok(())
        });
    }
    let auth = Authenticate::new(tokens);
    let (health, health_service) = tonic_health::server::health_reporter();
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;
    let control = EdgeControlServer::new(service::Service::new(Arc::clone(&live), stop.clone()));
    let router = || {
        Server::builder()
            .add_service(health_service.clone())
            .add_service(InterceptedService::new(reflection.clone(), auth.clone()))
            .add_service(InterceptedService::new(control.clone(), auth.clone()))
    };
    let mut tasks = vec![tokio::spawn(report_health(
        Arc::clone(&live),
        health,
        stop.clone(),
    ))];
    let until = |mut stop: watch::Receiver<bool>| async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Some((listener, path)) = listeners.unix {
        tracing::info!(socket = %path.display(), "control API (gRPC)");
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = router().serve_with_incoming_shutdown(incoming, until(stop.clone()));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "control API (socket) stopped");
            }
            let _ = std::fs::remove_file(&path);
        }));
    }
    if let Some(listener) = listeners.tcp {
        tracing::info!(addr = %listener.local_addr()?, "control API (gRPC)");
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let server = router().serve_with_incoming_shutdown(incoming, until(stop));
        tasks.push(tokio::spawn(async move {
            if let Err(e) = server.await {
                tracing::error!(error = %e, "control API (TCP) stopped");
            }
        }));
    }
    Ok(tasks)
}

/// Keeps `grpc.health.v1` in step with readiness (`/readyz`).
async fn report_health(
    live: Arc<Live>,
    health: tonic_health::server::HealthReporter,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        let status = if live.not_ready().is_empty() {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        health.set_service_status("", status).await;
        health
            .set_service_status("fraiseql.edge.v1.EdgeControl", status)
            .await;
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
    }
}
