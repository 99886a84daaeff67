//! `cargo xtask …`: how developers, CI and operators drive fraiseql-edge.
//! Run `cargo xtask --help` for the commands.

mod bench;
mod cmd;
mod compile;
mod demo;
mod fuzz;
mod image;
mod linker;
mod ops;
mod paths;
mod setup;
mod system;
mod testing;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    bin_name = "cargo xtask",
    about = "Build, test and demonstrate fraiseql-edge"
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what building and testing need (nightly + rust-src,
    /// bpf-linker in target/toolchain; as root: bpffs, tracefs, Debian
    /// packages). Idempotent.
    Setup,
    /// Build the eBPF object alone, for inspection
    /// (target/bpf/bpfel-unknown-none/release/<bin>).
    BuildEbpf,
    /// Release build of the workspace.
    Build,
    /// fmt check, clippy, the test suite and (under CI=true) a bounded fuzz
    /// run: the one test command (CI runs it).
    Test {
        /// Passed on to `cargo test` (e.g. `-- -p fraiseql-edge -- --nocapture`).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Fuzz the admission pipeline (tests/fuzz, cargo-fuzz on nightly) for a
    /// bounded time; fails on any crash. Installs cargo-fuzz into
    /// target/toolchain if missing.
    Fuzz {
        /// How long the fuzzer runs (after the build).
        #[arg(long, default_value_t = fuzz::CI_SECONDS)]
        seconds: u64,
    },
    /// See it work: rate limits and a block on real traffic from a network
    /// namespace (needs root).
    Demo {
        /// How long the traffic runs.
        #[arg(long, default_value_t = 20)]
        seconds: u64,
        /// Run only the namespace and the traffic, without the daemon.
        #[arg(long)]
        no_daemon: bool,
        /// Use this daemon binary instead of building target/release/fraiseql-edge.
        #[arg(long, value_name = "PATH", conflicts_with = "no_daemon")]
        daemon: Option<std::path::PathBuf>,
    },
    /// Validate the operations package: dashboards, alerts (promtool),
    /// runbooks (mdbook, links, commands), k8s (kustomize, schemas,
    /// policies), then the live check against a real Prometheus (needs root).
    OpsCheck {
        /// Only the offline checks (no daemon, no Prometheus, no root).
        #[arg(long)]
        offline: bool,
    },
    /// Regenerate dashboards/*.json and the k8s files built from alerts/
    /// and dashboards/.
    OpsGenerate,
    /// Build the container image the k8s manifests reference
    /// (ghcr.io/fraiseql/fraiseql-edge:<version>) with buildah, offline,
    /// and run both binaries in it with podman.
    Image {
        /// Take fraiseql-edge and edgectl from this directory instead of
        /// release-building them.
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<std::path::PathBuf>,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
}

#[derive(Subcommand)]
enum Bench {
    /// The XDP fast path through BPF_PROG_TEST_RUN (arguments go to bench-kernel).
    Kernel {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The user-space proxy side by side with direct and HAProxy under wrk (options: `-- --help`).
    Proxy {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The edge's JWT, rate limit and validation under wrk, side by side with the plain edge and HAProxy with jwt_verify (options: `-- --help`).
    Security {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The edge with metrics scraped and every request's spans exported, side by side with the same edge without (options: `-- --help`).
    Monitoring {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Two mutations as a saga (SQLite and PostgreSQL logs) side by side with the same two mutations bare (options: `-- --help`).
    Sagas {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Cluster mode: local vs global limit checks, the edge under load with and without global limits, over-admission across two nodes (options: `-- --help`).
    Cluster {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Setup => setup::setup(),
        Task::BuildEbpf => compile::build_ebpf(),
        Task::Build => compile::build(),
        Task::Test { args } => testing::test(&args),
        Task::Fuzz { seconds } => fuzz::fuzz(seconds),
        Task::Demo {
            seconds,
            no_daemon,
            daemon,
        } => demo::demo(seconds, demo::DaemonChoice::from_flags(no_daemon, daemon)),
        Task::OpsCheck { offline: true } => ops::check_offline(),
        Task::OpsCheck { offline: false } => ops::check(),
        Task::OpsGenerate => ops::generate(),
        Task::Image { bin_dir } => image::image(bin_dir),
        Task::Bench {
            which: Bench::Kernel { args },
        } => bench::kernel(&args),
        Task::Bench {
            which: Bench::Proxy { args },
        } => bench::proxy(&args),
        Task::Bench {
            which: Bench::Security { args },
        } => bench::security(&args),
        Task::Bench {
            which: Bench::Monitoring { args },
        } => bench::monitoring(&args),
        Task::Bench {
            which: Bench::Sagas { args },
        } => bench::sagas(&args),
        Task::Bench {
            which: Bench::Cluster { args },
        } => bench::cluster(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
