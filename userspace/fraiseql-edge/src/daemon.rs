//! The running daemon: the kernel layer (or its user-space stand-in), the
//! GraphQL data path, the admin listener, block expiry, reloads, signals.

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::Context as _;
use prometheus::Registry;
use tokio::net::TcpListener;

use crate::{
    admin::{self, Admin},
    blocklist::BlockList,
    config::Config,
    events::EventBus,
    fallback::{LimiterCollector, UserLimiter},
    kernel::{self, Kernel, KernelMaps, collector::KernelCollector},
    live::{Enforcer, Live, LiveParts},
    proxy::{self, Proxy, ProxyParts, metrics::ProxyMetrics},
};

/// How long control API connections may take to close at shutdown.
const CONTROL_CLOSE: Duration = Duration::from_secs(2);

/// How the daemon enforces the kernel-layer limits.
enum Enforcement {
    /// XDP + tracker, pinned.
    Kernel(Box<Kernel>),
    /// Degraded mode: the proxy listener enforces the limits itself.
    UserSpace(Arc<UserLimiter>),
    /// `kernel.enabled = false`.
    Disabled,
}

/// Installs the log subscriber (stderr; text or JSON lines, filtered by
/// `RUST_LOG`, default `info`) and the span exporter's layer, idle until
/// [`run`] starts it from `[tracing]`. A request's log lines carry its
/// `request` span, and so its `trace_id`.
pub fn init_logging(json: bool) {
    use tracing_subscriber::{Layer as _, layer::SubscriberExt as _, util::SubscriberInitExt as _};
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let fmt = if json {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(crate::telemetry::otlp::layer())
        .init();
}

fn start_kernel(config: &Config, require_ebpf: bool) -> anyhow::Result<Enforcement> {
    if !config.kernel.enabled {
        tracing::warn!("kernel layer disabled by configuration (kernel.enabled = false)");
        return Ok(Enforcement::Disabled);
    }
    match Kernel::start(&config.kernel) {
        Ok(k) => {
            for (iface, mode) in &k.attachments {
                tracing::info!(interface = %iface, mode = %mode, "XDP enforcement attached");
            }
            tracing::info!(replaced = k.tracker_replaced, "connection tracker attached");
            Ok(Enforcement::Kernel(Box::new(k)))
        }
        Err(e) if require_ebpf => {
            anyhow::bail!("the kernel layer is required (--require-ebpf) but unavailable: {e}");
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "eBPF UNAVAILABLE: kernel enforcement is OFF; enforcing the same limits in user \
                 space on the daemon's own listener (degraded mode). Run as root with bpffs \
                 mounted, or pass --require-ebpf to refuse to start like this."
            );
            Ok(Enforcement::UserSpace(Arc::new(UserLimiter::new(
                &config.kernel,
            ))))
        }
    }
}

/// Runs the daemon until SIGTERM/SIGINT.
pub fn run(config: Config, config_path: PathBuf, require_ebpf: bool) -> anyhow::Result<()> {
    let enforcement = start_kernel(&config, require_ebpf)?;
    let workers = config.runtime.workers();
    tracing::info!(workers, "runtime");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let export = {
        let _in_runtime = runtime.enter();
        crate::telemetry::otlp::start(&config.tracing)?
    };
    let served = runtime.block_on(serve(enforcement, config, config_path));
    // The requests have drained: send the spans still buffered.
    if let Some(export) = export {
        export.shutdown();
    }
    served
}

async fn bind(what: &str, addr: std::net::SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {what} {addr}"))
}

/// Opens the saga log `[sagas]` asks for; what it is, for the log line.
async fn open_saga_log(
    cfg: &crate::saga::config::SagasConfig,
) -> anyhow::Result<(Arc<dyn crate::saga::SagaStore>, String)> {
    use crate::saga::{PostgresStore, SqliteStore, config::StoreKind, postgres::redact_url};
    match cfg.store {
        StoreKind::Sqlite => {
            let store = SqliteStore::open(&cfg.path).with_context(|| {
                format!("opening the saga log ([sagas] path {})", cfg.path.display())
            })?;
            Ok((Arc::new(store), cfg.path.display().to_string()))
        }
        StoreKind::Postgres => {
            // `validate` made sure there is one.
            let url = cfg.postgres_url.as_deref().unwrap_or_default();
            let node = cfg.node_name();
            let store = PostgresStore::open(url, &node, cfg.lease_ttl())
                .await
                .context("opening the saga log ([sagas] store = \"postgres\", postgres_url)")?;
            Ok((
                Arc::new(store),
                format!("{} as node {node}", redact_url(url)),
            ))
        }
    }
}

async fn serve(
    mut enforcement: Enforcement,
    config: Config,
    config_path: PathBuf,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;

    let registry = Registry::new();
    let events = EventBus::new();
    crate::metrics::register(
        &registry,
        match &enforcement {
            Enforcement::Kernel(_) => crate::metrics::EnforcedBy::Kernel,
            Enforcement::UserSpace(_) => crate::metrics::EnforcedBy::UserSpace,
            Enforcement::Disabled => crate::metrics::EnforcedBy::Nobody,
        },
    )?;
    // Blocks go where the limits are enforced; the admin API and the expiry
    // sweep below share this one handle.
    let blocks = match &enforcement {
        Enforcement::Kernel(_) => Some(Arc::new(BlockList::Kernel(Box::new(Mutex::new(
            KernelMaps::open_pinned(&config.kernel.pin_path)?,
        ))))),
        Enforcement::UserSpace(l) => {
            registry.register(Box::new(LimiterCollector::new(Arc::clone(l))?))?;
            Some(Arc::new(BlockList::UserSpace(Arc::clone(l))))
        }
        Enforcement::Disabled => None,
    };
    if let Enforcement::Kernel(k) = &mut enforcement {
        let maps = KernelMaps::open_pinned(&config.kernel.pin_path)?;
        let interfaces = k.attachments.iter().map(|(i, _)| i.clone()).collect();
        registry.register(Box::new(
            KernelCollector::new(maps)?.with_interfaces(&config.kernel.pin_path, interfaces),
        ))?;
        if let Some(logger) = k.take_logger() {
            tracing::warn!("eBPF debug log on (kernel.ebpf_debug_log): costly, not for production");
            tokio::spawn(async move {
                if let Err(e) = kernel::events::forward_debug_log(logger).await {
                    tracing::warn!(error = %e, "eBPF debug log reader stopped");
                }
            });
        }
        if let Some(ring) = k.take_events() {
            let events = events.clone();
            tokio::spawn(async move {
                if let Err(e) = kernel::events::log_drops(ring, events).await {
                    tracing::warn!(error = %e, "drop-event reader stopped");
                }
            });
        }
    }
    // Flipped on SIGTERM/SIGINT: the GraphQL listener stops and drains.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let mut listener_task = None;
    let auth = match &config.auth {
        Some(a) => {
            let authenticator = crate::auth::Authenticator::new(a.clone())
                .await
                .context("starting authentication ([auth])")?;
            tracing::info!(key_sources = a.keys.len(), "JWT authentication on");
            registry.register(Box::new(authenticator.jwks_collector()?))?;
            Some(Arc::new(authenticator))
        }
        None => None,
    };
    let proxy = match &config.proxy {
        Some(p) => {
            let limiter = match &enforcement {
                Enforcement::UserSpace(l) => Some(Arc::clone(l)),
                _ => None,
            };
            let metrics = ProxyMetrics::new(&registry)?.with_events(events.clone());
            let proxy = Proxy::new(ProxyParts {
                cfg: p,
                subgraphs: &config.subgraphs,
                rate_limit: &config.rate_limit,
                metrics,
                limiter,
                blocks: blocks.clone(),
                auth,
                graphql: &config.graphql,
                persisted: crate::graphql::persisted::PersistedQueries::new(
                    &config.persisted_queries,
                )
                .context("loading the safelist ([persisted_queries])")?,
                authorization: &config.authorization,
                tracing: &config.tracing,
                slow_queries: &config.slow_queries,
            });
            let listener = bind("proxy.listen", p.listen).await?;
            tracing::info!(addr = %listener.local_addr()?, "GraphQL listener");
            let limits = proxy.listener_limits();
            listener_task = Some(tokio::spawn(proxy::serve(
                Arc::clone(&proxy),
                listener,
                limits,
                stopped,
            )));
            Some(proxy)
        }
        None => None,
    };
    let cluster = match &config.cluster {
        Some(cfg) => Some(start_cluster(
            cfg,
            &config,
            &registry,
            proxy.as_deref(),
            blocks.as_ref(),
            &events,
            &stop,
        )?),
        None => None,
    };
    let sagas = match (&config.sagas, &proxy) {
        (Some(cfg), Some(proxy)) => {
            let (store, log) = open_saga_log(cfg).await?;
            let names: Vec<String> = config.subgraphs.iter().map(|s| s.name.clone()).collect();
            let metrics = crate::saga::metrics::SagaMetrics::new(&registry, &names)?;
            let coordinator = crate::saga::Coordinator::new(store, proxy, cfg.clone(), metrics);
            proxy.set_sagas(Arc::clone(&coordinator));
            tokio::spawn(Arc::clone(&coordinator).run(stop.subscribe()));
            tracing::info!(log, "saga coordinator on: POST /sagas, GET /sagas/{{id}}");
            Some(coordinator)
        }
        _ => None,
    };
    let enforcer = match &enforcement {
        Enforcement::Kernel(k) => Enforcer::Kernel {
            maps: Box::new(Mutex::new(KernelMaps::open_pinned(
                &config.kernel.pin_path,
            )?)),
            attachments: k.attachments.clone(),
            pin_path: config.kernel.pin_path.clone(),
        },
        Enforcement::UserSpace(l) => Enforcer::UserSpace(Arc::clone(l)),
        Enforcement::Disabled => Enforcer::Disabled,
    };
    let control = config.control.clone();
    let admin_cfg = config.admin.clone();
    let live = Arc::new(Live::new(LiveParts {
        config,
        config_path,
        enforcer,
        blocks: blocks.clone(),
        proxy,
        sagas,
        cluster,
        events: events.clone(),
        reload_metrics: crate::metrics::ReloadMetrics::new(&registry)?,
        registry: registry.clone(),
    }));
    let mut control_tasks = Vec::new();
    if let Some(c) = &control {
        let listeners = crate::control::Listeners::bind(c).await?;
        control_tasks = crate::control::serve(Arc::clone(&live), c, listeners, stop.subscribe())?;
    }
    if let Some(a) = &admin_cfg {
        let listener = bind("admin.listen", a.listen).await?;
        tracing::info!(
            addr = %listener.local_addr()?,
            "admin listener (/metrics, /healthz, /readyz)"
        );
        let admin = Arc::new(Admin {
            registry,
            live: Arc::clone(&live),
        });
        tokio::spawn(admin::serve(admin, listener));
    }

    tracing::info!("ready");
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                let live = Arc::clone(&live);
                // Reading files and writing maps: off the runtime.
                tokio::task::spawn_blocking(move || live.reload("signal:SIGHUP"));
            }
            _ = tick.tick() => {
                if let Enforcement::Kernel(k) = &mut enforcement {
                    k.maintain();
                }
                expire_blocks(blocks.as_deref(), &events);
            }
        }
    }
    // Stop accepting, finish what is in flight (bounded by the drain
    // deadline inside `serve`), then exit.
    let _ = stop.send(true);
    if let Some(task) = listener_task {
        let _ = task.await;
    }
    // Control connections get a moment to close (an HTTP/2 graceful close
    // waits for the client to answer a ping; an operator's idle `edgectl
    // watch` may never), then they are cut.
    for mut task in control_tasks {
        if tokio::time::timeout(CONTROL_CLOSE, &mut task)
            .await
            .is_err()
        {
            task.abort();
            tracing::info!(
                after_ms = CONTROL_CLOSE.as_millis(),
                "control API connections still open at shutdown: closed"
            );
        }
    }
    if let Some(c) = &control
        && !c.socket.as_os_str().is_empty()
    {
        let _ = std::fs::remove_file(&c.socket);
    }
    if let Enforcement::Kernel(k) = &enforcement {
        let ifaces: Vec<_> = k.attachments.iter().map(|(i, _)| i.as_str()).collect();
        tracing::info!(
            interfaces = ?ifaces,
            "shutting down; kernel enforcement stays attached (pinned); \
             `fraiseql-edge kernel detach` removes it"
        );
    }
    Ok(())
}

/// Cluster mode: the global limiter for the proxy and, with `blocks`, the
/// block list shared with the other nodes (kept in step by its own task).
fn start_cluster(
    cfg: &crate::cluster::ClusterConfig,
    config: &Config,
    registry: &Registry,
    proxy: Option<&Proxy>,
    blocks: Option<&Arc<BlockList>>,
    events: &EventBus,
    stop: &tokio::sync::watch::Sender<bool>,
) -> anyhow::Result<crate::live::ClusterParts> {
    let metrics = crate::cluster::ClusterMetrics::new(registry)?;
    let limiter = Arc::new(crate::cluster::GlobalLimiter::new(cfg)?.with_metrics(metrics));
    if let Some(proxy) = proxy {
        proxy.set_cluster(Arc::clone(&limiter));
    }
    let node = cfg.node_name();
    let shared = match (cfg.blocks, blocks) {
        (true, Some(list)) => {
            let metrics = crate::cluster::blocks::BlockSyncMetrics::new(registry)?;
            let shared = crate::cluster::blocks::SharedBlocks::new(
                cfg,
                node.clone(),
                Arc::clone(list),
                events.clone(),
                Some(metrics),
            )?;
            if let Some(proxy) = proxy {
                proxy.set_shared_blocks(Arc::clone(&shared));
            }
            tokio::spawn(Arc::clone(&shared).run(stop.subscribe()));
            Some(shared)
        }
        (true, None) => {
            tracing::warn!(
                "[cluster] blocks = true, but the kernel layer is disabled: there is no block list to share"
            );
            None
        }
        (false, _) => None,
    };
    tracing::info!(
        node,
        failure_mode = ?cfg.failure_mode,
        global_limits = config.rate_limit.global,
        shared_blocks = shared.is_some(),
        "cluster mode on: limits marked global and blocks are kept in Redis"
    );
    Ok(crate::live::ClusterParts {
        node,
        limiter,
        blocks: shared,
    })
}

/// The once-a-second sweep of expired blocks, in the kernel map or in the
/// degraded-mode limiter.
fn expire_blocks(blocks: Option<&BlockList>, events: &EventBus) {
    let Some(blocks) = blocks else { return };
    match blocks.expire() {
        Ok(done) => {
            for addr in done {
                tracing::info!(client = %addr, enforced_by = blocks.enforced_by(), "block expired");
                events.unblock(addr, "expiry");
            }
        }
        Err(e) => tracing::warn!(error = %e, "expiring blocks"),
    }
}
