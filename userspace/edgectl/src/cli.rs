//! The command line: global options and one subcommand per RPC.
//!
//! clap checks the shape of the command line (which flags exist, which go
//! together) and exits with 2 on a mistake. Values that parse but are wrong
//! (a CIDR with host bits, a TTL of zero) are checked in
//! [`crate::commands::Call::prepare`] and exit with 5, before connecting.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The daemon's default control socket.
pub const DEFAULT_SOCKET: &str = "/run/fraiseql-edge/control.sock";

/// Operate a running fraiseql-edge daemon over its gRPC control API.
#[derive(Debug, Parser)]
#[command(name = "edgectl", version)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Where the daemon is, how to authenticate, how to print.
#[derive(Debug, Args)]
pub struct Global {
    /// The daemon's control socket (unix domain socket).
    #[arg(long, global = true, value_name = "PATH", env = "FRAISEQL_EDGE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
    /// Connect over TCP to this address instead of the socket.
    #[arg(
        long,
        global = true,
        value_name = "HOST:PORT",
        env = "FRAISEQL_EDGE_ADDR"
    )]
    pub addr: Option<String>,
    /// A file holding the token (its content, trimmed).
    #[arg(
        long,
        global = true,
        value_name = "PATH",
        env = "FRAISEQL_EDGE_TOKEN_FILE"
    )]
    pub token_file: Option<PathBuf>,
    /// The token itself; takes precedence over --token-file.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "FRAISEQL_EDGE_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,
    /// Print one JSON document (for `watch`: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the connection and for each answer.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub timeout: u64,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Version, uptime, how each interface is enforced, readiness.
    Status,
    /// Show or change the kernel and per-identity limits.
    Limits {
        #[command(subcommand)]
        command: LimitsCommand,
    },
    /// CIDR overrides of the kernel limits.
    Overrides {
        #[command(subcommand)]
        command: OverridesCommand,
    },
    /// Block a client address.
    Block {
        /// The client address (IPv4 or IPv6).
        address: String,
        /// Lift the block after this many seconds (default: until unblocked).
        #[arg(long, value_name = "SECS")]
        ttl: Option<u64>,
        /// Why, kept in the daemon's log and the event.
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Lift a block.
    Unblock {
        /// The blocked address.
        address: String,
    },
    /// List the blocked addresses.
    Blocks,
    /// The busiest clients, from the kernel maps.
    Top {
        /// How many (1 to 10000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Subgraphs with their endpoints, health, pools and breaker.
    Subgraphs,
    /// Force a subgraph's breaker open or closed, back to automatic, or reset it.
    Breaker {
        /// The subgraph's name.
        subgraph: String,
        /// What to do.
        action: BreakerArg,
    },
    /// Stream live events, one line each, until Ctrl-C or --count events.
    Watch {
        /// Only events of this kind (repeat for several; default: all).
        #[arg(long = "kind", value_name = "KIND")]
        kinds: Vec<KindArg>,
        /// Stop after this many events.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// The most recent requests slower than the slow-query threshold.
    Slow {
        /// How many, newest first (default: all the daemon keeps).
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Re-read the configuration file and apply what can change live.
    Reload,
    /// Sagas in the daemon's log: list, show, and act on parked ones.
    Sagas {
        #[command(subcommand)]
        command: SagasCommand,
    },
    /// Every metric of the daemon, as Prometheus text (or JSON).
    Metrics {
        /// Only families whose name starts with this.
        #[arg(long, value_name = "P", default_value = "")]
        prefix: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Show the kernel limits and the per-identity limits.
    Get,
    /// Change limits (until the next reload).
    Set {
        #[command(subcommand)]
        command: SetCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum SetCommand {
    /// The kernel limits per client address.
    Kernel {
        /// Packets per second (0: no rate limit).
        #[arg(long)]
        rate: Option<u64>,
        /// Packets a client may send back to back.
        #[arg(long)]
        burst: Option<u64>,
        /// Live TCP connections (0: no cap).
        #[arg(long)]
        max_conns: Option<u32>,
    },
    /// The per-identity request limit, global or for one subgraph.
    Rate {
        /// The subgraph (default: the global limit).
        #[arg(long, value_name = "NAME")]
        subgraph: Option<String>,
        /// Requests per minute (0: off).
        #[arg(long, value_name = "N")]
        rpm: Option<u32>,
        /// Requests an idle identity may send at once.
        #[arg(long, value_name = "N")]
        burst: Option<u32>,
        /// Drop the subgraph's own limit and use the global one again.
        #[arg(long, requires = "subgraph", conflicts_with_all = ["rpm", "burst"])]
        inherit: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum SagasCommand {
    /// Sagas, newest first, without their steps.
    List {
        /// Only sagas in this state: Pending, Executing, Completed, Failed,
        /// Compensating, Compensated or Cancelled.
        #[arg(long, value_name = "STATE")]
        state: Option<String>,
        /// How many at most (default 100, at most 1000).
        #[arg(long, value_name = "N")]
        limit: Option<u32>,
    },
    /// One saga with its steps.
    Show {
        /// The saga's id (32 hex digits).
        id: String,
    },
    /// Close a parked saga, accepting what it did and undid (or withdraw one not started).
    Cancel {
        /// The saga's id.
        id: String,
    },
    /// Drive a parked saga again (a Failed one's rollback is retried).
    Retry {
        /// The saga's id.
        id: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum OverridesCommand {
    /// List the overrides.
    List,
    /// Add an override, or replace the one for the same network.
    Add {
        /// The network, e.g. 10.0.0.0/8 or 2001:db8::/32.
        cidr: String,
        /// What to do with its packets.
        #[arg(long)]
        action: ActionArg,
        /// `limit` only: packets per second.
        #[arg(long)]
        rate: Option<u64>,
        /// `limit` only: burst.
        #[arg(long)]
        burst: Option<u64>,
        /// `limit` only: live TCP connections.
        #[arg(long)]
        max_conns: Option<u32>,
    },
    /// Remove the override of a network.
    Remove {
        /// The network, as listed.
        cidr: String,
    },
}

/// `overrides add --action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ActionArg {
    /// No limits for this network.
    Allow,
    /// Drop every packet from the network, whatever its port or protocol.
    Deny,
    /// The override's own rate, burst and connection cap.
    Limit,
}

/// `breaker SUBGRAPH <action>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BreakerArg {
    /// Force open: refuse every request to the subgraph.
    Open,
    /// Force closed: send requests whatever the failures.
    Close,
    /// Back to automatic.
    Auto,
    /// Reset the breaker's state and failure history.
    Reset,
}

/// `watch --kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    Drop,
    Block,
    Unblock,
    Escalation,
    Breaker,
    Health,
    Reload,
    /// The spelling of `--json` output; `config-change` works too.
    #[value(name = "config_change", alias = "config-change")]
    ConfigChange,
    Lost,
}
