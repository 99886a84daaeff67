//! Command line: `run` (the daemon) and local `kernel …` admin commands that
//! work on the pinned maps directly, with or without a running daemon.

use std::{net::IpAddr, path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    config::{self, Config},
    fallback::UserLimiter,
    kernel::{self, Kernel, KernelMaps},
};

/// fraiseql-edge: eBPF-accelerated edge enforcement for GraphQL federation.
#[derive(Debug, Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// `fraiseql-edge --config FILE` is short for `fraiseql-edge run --config FILE`.
    #[command(flatten)]
    run: Option<RunArgs>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run(RunArgs),
    /// Parse and validate a configuration file, then exit.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(long)]
        config: PathBuf,
    },
    /// Inspect or change the kernel layer through its pinned maps.
    Kernel(KernelArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, required = true)]
    config: PathBuf,
    /// Refuse to start without the kernel layer instead of degrading to user space.
    #[arg(long)]
    require_ebpf: bool,
    /// Log as JSON lines instead of text.
    #[arg(long)]
    log_json: bool,
}

#[derive(Debug, Args)]
struct KernelArgs {
    /// bpffs directory the daemon pins under (`kernel.pin_path`).
    #[arg(long, default_value = "/sys/fs/bpf/fraiseql-edge", global = true)]
    pin_path: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    action: KernelAction,
}

#[derive(Debug, Subcommand)]
enum KernelAction {
    /// Counters summed over all CPUs.
    Stats,
    /// The busiest clients: passed, dropped, live connections.
    Clients {
        /// How many to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Block a client at XDP for a time.
    Block {
        /// Client address.
        addr: IpAddr,
        /// Seconds; omit for a block that lasts until `unblock`.
        #[arg(long)]
        ttl: Option<u64>,
    },
    /// Lift a block.
    Unblock {
        /// Client address.
        addr: IpAddr,
    },
    /// List blocks.
    Blocks,
    /// Live connections of one client.
    Conns {
        /// Client address.
        addr: IpAddr,
    },
    /// Detach the programs and delete every pin (enforcement stops).
    Detach,
}

/// Parses the command line and runs it.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match (cli.command, cli.run) {
        (Some(Command::Run(args)), _) | (None, Some(args)) => run(args),
        (Some(Command::CheckConfig { config }), _) => check_config(&config),
        (Some(Command::Kernel(args)), _) => kernel_command(args),
        (None, None) => {
            eprintln!("fraiseql-edge: nothing to do; try `fraiseql-edge --help`");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fraiseql-edge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    let cfg = Config::load(path).and_then(|c| {
        config::check_interfaces(&c.kernel)?;
        Ok(c)
    });
    cfg.map_err(|e| {
        eprintln!(
            "fraiseql-edge: invalid configuration {}: {e}",
            path.display()
        );
        ExitCode::from(2)
    })
}

fn check_config(path: &std::path::Path) -> anyhow::Result<ExitCode> {
    match load_config(path) {
        Ok(_) => {
            println!("{}: ok", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(code) => Ok(code),
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// How the daemon enforces the kernel-layer limits.
enum Enforcement {
    Kernel(Box<Kernel>),
    /// Degraded mode; the limiter is handed to the listener.
    UserSpace(
        #[expect(dead_code, reason = "used by the request path's listener")] Arc<UserLimiter>,
    ),
}

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    init_logging(args.log_json);
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    let enforcement = match Kernel::start(&config.kernel) {
        Ok(k) => {
            for (iface, mode) in &k.attachments {
                tracing::info!(interface = %iface, mode = %mode, "XDP enforcement attached");
            }
            tracing::info!(
                adopted = !k.tracker_attached_now,
                "connection tracker attached"
            );
            Enforcement::Kernel(Box::new(k))
        }
        Err(e) if args.require_ebpf => {
            anyhow::bail!("the kernel layer is required (--require-ebpf) but unavailable: {e}");
        }
        Err(e) => {
            tracing::warn!(
                error = %e,
                "eBPF UNAVAILABLE: kernel enforcement is OFF; enforcing the same limits in user \
                 space on the daemon's own listener (degraded mode). Run as root with bpffs \
                 mounted, or pass --require-ebpf to refuse to start like this."
            );
            Enforcement::UserSpace(Arc::new(UserLimiter::new(&config.kernel)))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(enforcement, args.config))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(mut enforcement: Enforcement, config_path: PathBuf) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    if let Enforcement::Kernel(k) = &mut enforcement
        && let Some(ring) = k.take_events()
    {
        tokio::spawn(async move {
            if let Err(e) = kernel::events::log_drops(ring).await {
                tracing::warn!(error = %e, "drop-event reader stopped");
            }
        });
    }
    tracing::info!("ready");
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => reload(&mut enforcement, &config_path),
            _ = tick.tick() => {
                if let Enforcement::Kernel(k) = &mut enforcement {
                    match k.maps.expire_blocks() {
                        Ok(done) => for addr in done {
                            tracing::info!(client = %addr, "block expired");
                        },
                        Err(e) => tracing::warn!(error = %e, "expiring blocks"),
                    }
                }
            }
        }
    }
    if let Enforcement::Kernel(k) = &enforcement {
        let pins: Vec<_> = k.attachments.iter().map(|(i, _)| i.as_str()).collect();
        tracing::info!(
            interfaces = ?pins,
            "shutting down; kernel enforcement stays attached (pinned); \
             `fraiseql-edge kernel detach` removes it"
        );
    }
    Ok(())
}

fn reload(enforcement: &mut Enforcement, path: &std::path::Path) {
    let cfg = match Config::load(path) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "reload rejected; keeping the running configuration");
            return;
        }
    };
    if let Enforcement::Kernel(k) = enforcement {
        match k.maps.apply(&cfg.kernel) {
            Ok(()) => tracing::info!("configuration reloaded"),
            Err(e) => tracing::error!(error = %e, "reload failed"),
        }
    }
}

fn kernel_command(args: KernelArgs) -> anyhow::Result<ExitCode> {
    if let KernelAction::Detach = args.action {
        let removed = kernel::detach(&args.pin_path)
            .with_context(|| format!("detaching {}", args.pin_path.display()))?;
        println!(
            "removed {} pins under {}",
            removed.len(),
            args.pin_path.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut maps = KernelMaps::open_pinned(&args.pin_path).with_context(|| {
        format!(
            "opening the kernel maps under {} (is the daemon running with this pin_path?)",
            args.pin_path.display()
        )
    })?;
    let json = args.json;
    match args.action {
        KernelAction::Stats => {
            let stats = maps.stats()?;
            if json {
                let obj: serde_json::Map<_, _> = stats
                    .iter()
                    .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                    .collect();
                println!("{}", serde_json::Value::Object(obj));
            } else {
                for (name, value) in stats {
                    println!("{name:<16} {value}");
                }
            }
        }
        KernelAction::Clients { limit } => {
            let clients = maps.top_clients(limit)?;
            if json {
                println!("{}", serde_json::to_string(&clients)?);
            } else {
                println!(
                    "{:<40} {:>12} {:>12} {:>8}",
                    "client", "passed", "dropped", "conns"
                );
                for c in clients {
                    println!(
                        "{:<40} {:>12} {:>12} {:>8}",
                        c.client, c.passed, c.dropped, c.conns
                    );
                }
            }
        }
        KernelAction::Block { addr, ttl } => {
            maps.block(addr, ttl)?;
            match ttl {
                Some(t) => println!("blocked {addr} for {t}s"),
                None => println!("blocked {addr} until unblocked"),
            }
        }
        KernelAction::Unblock { addr } => {
            if maps.unblock(addr)? {
                println!("unblocked {addr}");
            } else {
                println!("{addr} was not blocked");
            }
        }
        KernelAction::Blocks => {
            let blocks = maps.blocks()?;
            if json {
                println!("{}", serde_json::to_string(&blocks)?);
            } else {
                for b in blocks {
                    match b.expires_in_secs {
                        Some(s) => println!("{:<40} expires in {s}s", b.client),
                        None => println!("{:<40} no expiry", b.client),
                    }
                }
            }
        }
        KernelAction::Conns { addr } => {
            let n = maps.conns(addr)?;
            if json {
                println!("{}", serde_json::json!({ "client": addr, "conns": n }));
            } else {
                println!("{n}");
            }
        }
        KernelAction::Detach => unreachable!("handled above"),
    }
    Ok(ExitCode::SUCCESS)
}
