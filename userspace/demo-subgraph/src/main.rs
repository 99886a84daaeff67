//! `demo-subgraph`: a real GraphQL federation subgraph for fraiseql-edge's
//! end-to-end tests, benchmarks and demo, with counters (`GET /stats`), fault
//! injection (`POST /faults`), idempotency-key counters (`GET /idempotency`)
//! and the last request's headers (`GET /last-request`) on a separate admin
//! port. A `POST` with an `Idempotency-Key` header executes once per key and
//! is answered the same afterwards, as FraiseQL subgraphs do for saga steps
//! (see `idempotency.rs`).
//!
//! When both ports are bound it prints one line to stdout and flushes it:
//!
//! ```text
//! demo-subgraph <name> listening on <graphql addr> (admin <admin addr>)
//! ```
//!
//! with the addresses actually bound, so `--listen 127.0.0.1:0` works.

mod admin;
mod fault_body;
mod faults;
mod graphql_http;
mod idempotency;
mod last_request;
mod media;
mod schema;
mod server;
mod stats;

use std::{
    io::{IsTerminal, Write},
    net::SocketAddr,
    process::ExitCode,
    sync::Arc,
    time::Duration,
};

use clap::Parser;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

use crate::{
    faults::{FaultControl, Faults},
    graphql_http::GraphqlState,
    idempotency::IdempotencyStore,
    server::GraphqlServer,
    stats::Stats,
};

/// A GraphQL federation subgraph with counters and fault injection.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Address of the GraphQL port (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:4001")]
    listen: SocketAddr,
    /// Address of the admin port (`/stats`, `/faults`, `/idempotency`, `/last-request`, `/crash`; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:5001")]
    admin_listen: SocketAddr,
    /// Name shown in logs, in the ready line and in `/stats` (no spaces).
    #[arg(long, default_value = "demo")]
    name: String,
    /// Delay added before every GraphQL response, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Fraction (0.0–1.0) of GraphQL requests answered with `--error-status`.
    #[arg(long, default_value_t = 0.0, value_parser = parse_rate)]
    error_rate: f64,
    /// HTTP status of an injected error.
    #[arg(long, default_value_t = 503, value_parser = clap::value_parser!(u16).range(100..=999))]
    error_status: u16,
    /// How long the answer to an `Idempotency-Key` is kept, in milliseconds (default 24 h).
    #[arg(long, default_value_t = idempotency::DEFAULT_TTL_MS, value_parser = clap::value_parser!(u64).range(1..))]
    idempotency_ttl_ms: u64,
    /// Most answers to `Idempotency-Key`s kept; the oldest are evicted first.
    #[arg(long, default_value_t = idempotency::DEFAULT_MAX_ENTRIES, value_parser = parse_max_entries)]
    idempotency_max_entries: usize,
    /// Print the federation SDL (what `_service { sdl }` returns) and exit.
    #[arg(long)]
    print_sdl: bool,
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s.parse().map_err(|e| format!("{e}"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0.0 and 1.0"))
    }
}

fn parse_max_entries(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_string()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let stats = Arc::new(Stats::new(cli.name.clone()));
    let schema = schema::build(Arc::new(schema::Store::seeded()), stats.clone());
    if cli.print_sdl {
        println!("{}", schema::sdl(&schema));
        return ExitCode::SUCCESS;
    }
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    // Every log line of this process carries its name, spawned tasks included.
    let span = tracing::info_span!("subgraph", name = %cli.name);
    match run(cli, stats, schema).instrument(span).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("demo-subgraph: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, stats: Arc<Stats>, schema: schema::DemoSchema) -> Result<(), String> {
    let faults = FaultControl::new(
        Faults {
            latency_ms: cli.latency_ms,
            error_rate: cli.error_rate,
            error_status: cli.error_status,
            ..Faults::default()
        },
        schema::root_fields(&schema).await,
    )
    .map_err(|e| e.to_string())?;
    let last_request = last_request::LastRequestLog::default();
    let idempotency = IdempotencyStore::new(
        Duration::from_millis(cli.idempotency_ttl_ms),
        cli.idempotency_max_entries,
    );
    let graphql_router = graphql_http::router(GraphqlState {
        schema,
        stats: stats.clone(),
        faults: faults.clone(),
        last_request: last_request.clone(),
        idempotency: idempotency.clone(),
    });
    let graphql = GraphqlServer::start(cli.listen, graphql_router, stats.clone())
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", cli.listen))?;
    let admin_listener = server::bind(cli.admin_listen)
        .map_err(|e| format!("cannot listen on {} (admin): {e}", cli.admin_listen))?;
    let admin_addr = admin_listener
        .local_addr()
        .map_err(|e| format!("admin socket: {e}"))?;
    let admin_router = admin::router(admin::AdminState {
        stats,
        faults,
        graphql: graphql.clone(),
        last_request,
        idempotency,
    });
    tokio::spawn(server::serve_plain(admin_listener, admin_router).in_current_span());

    tracing::info!(graphql = %graphql.local_addr(), admin = %admin_addr, "ready");
    let mut stdout = std::io::stdout().lock();
    writeln!(
        stdout,
        "demo-subgraph {} listening on {} (admin {admin_addr})",
        cli.name,
        graphql.local_addr()
    )
    .and_then(|()| stdout.flush())
    .map_err(|e| format!("cannot write the ready line: {e}"))?;
    drop(stdout);

    shutdown_signal().await;
    tracing::info!("shutting down");
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
