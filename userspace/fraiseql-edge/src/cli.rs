//! Command line: `run` (the daemon) and local `kernel …` commands that work
//! on the pinned maps directly, with or without a running daemon — the
//! recovery path when no daemon runs. A running daemon (in degraded mode
//! too) is driven with `edgectl` over the gRPC control API.

use std::{net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};

use crate::{
    blocklist::MAX_TTL_SECS,
    config::{self, Config},
    kernel::{self, KernelMaps},
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
    /// Inspect or change the kernel layer through its pinned maps, with or
    /// without a running daemon (a running one: `edgectl`).
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
        /// Seconds, 1 to a year; omit for a block that lasts until `unblock`.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_SECS))]
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

fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    crate::daemon::init_logging(args.log_json);
    let config = match load_config(&args.config) {
        Ok(c) => c,
        Err(code) => return Ok(code),
    };
    crate::daemon::run(config, args.config, args.require_ebpf)?;
    Ok(ExitCode::SUCCESS)
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

fn kernel_command(args: KernelArgs) -> anyhow::Result<ExitCode> {
    let (json, pin_path) = (args.json, args.pin_path);
    let open = || {
        KernelMaps::open_pinned(&pin_path).with_context(|| {
            format!(
                "opening the kernel maps under {} (is the daemon running with this pin_path? \
                 A daemon in degraded mode has no pins: use edgectl)",
                pin_path.display()
            )
        })
    };
    match args.action {
        KernelAction::Detach => {
            let removed = kernel::detach(&pin_path)
                .with_context(|| format!("detaching {}", pin_path.display()))?;
            if json {
                let out = serde_json::json!({
                    "pin_path": pin_path.display().to_string(),
                    "removed": removed,
                });
                println!("{out}");
            } else {
                println!(
                    "removed {} pins under {}",
                    removed.len(),
                    pin_path.display()
                );
            }
        }
        KernelAction::Stats => {
            let stats = open()?.stats()?;
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
            let clients = open()?.top_clients(limit)?;
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
            let info = open()?.block(addr, ttl)?;
            if json {
                println!("{}", serde_json::to_string(&info)?);
            } else {
                match info.expires_in_secs {
                    Some(t) => println!("blocked {} for {t}s", info.client),
                    None => println!("blocked {} until unblocked", info.client),
                }
            }
        }
        KernelAction::Unblock { addr } => {
            let unblocked = open()?.unblock(addr)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "client": addr, "unblocked": unblocked })
                );
            } else if unblocked {
                println!("unblocked {addr}");
            } else {
                println!("{addr} was not blocked");
            }
        }
        KernelAction::Blocks => {
            let blocks = open()?.blocks()?;
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
            let n = open()?.conns(addr)?;
            if json {
                println!("{}", serde_json::json!({ "client": addr, "conns": n }));
            } else {
                println!("{n}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
