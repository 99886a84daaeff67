//! `cargo xtask fuzz`: the admission pipeline under cargo-fuzz (libFuzzer
//! with AddressSanitizer, nightly) for a bounded time; any crash, failed
//! invariant, timeout or memory blow-up fails it. `cargo xtask test` runs it
//! for [`CI_SECONDS`] under `CI=true`.
//!
//! The fuzz crate is `tests/fuzz` (outside the workspace); it builds into
//! `target/fuzz`. The checked-in seeds are copied into a scratch corpus
//! under `target/fuzz/corpus/<target>`, which keeps what earlier runs found;
//! `tests/fuzz/regressions` (inputs that once crashed) is replayed as well.
//! Crashing inputs land in `target/fuzz/artifacts/<target>/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::setup::{self, Report};
use crate::{cmd, linker, paths};

/// The one fuzz target.
pub const TARGET: &str = "admission";
/// How long `cargo xtask test` fuzzes under `CI=true`.
pub const CI_SECONDS: u64 = 60;
/// Overrides how long `cargo xtask test` fuzzes (0: not at all).
pub const SECONDS_ENV: &str = "FRAISEQL_EDGE_FUZZ_SECONDS";

const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// `cargo xtask fuzz --seconds N`. Without nightly or cargo-fuzz (and no
/// way to install them) it skips with the reason, except under `CI=true`,
/// where that is a failure.
pub fn fuzz(seconds: u64) -> Result<()> {
    if let Err(e) = ensure_tools() {
        if is_ci() {
            return Err(e.context("CI=true: fuzzing needs nightly and cargo-fuzz"));
        }
        println!("fuzz: skipped: {e:#}");
        return Ok(());
    }
    run(seconds)
}

/// The fuzzing step of `cargo xtask test`: [`CI_SECONDS`] under `CI=true`,
/// else only when [`SECONDS_ENV`] asks for it. `false` when skipped.
pub fn in_test() -> Result<bool> {
    let seconds = match std::env::var(SECONDS_ENV) {
        Ok(s) => s
            .trim()
            .parse::<u64>()
            .with_context(|| format!("{SECONDS_ENV}={s:?} is not a number of seconds"))?,
        Err(_) if is_ci() => CI_SECONDS,
        Err(_) => 0,
    };
    if seconds == 0 {
        println!(
            "test: fuzzing skipped (runs under CI=true; set {SECONDS_ENV}=N or run `cargo xtask fuzz`)"
        );
        return Ok(false);
    }
    fuzz(seconds)?;
    Ok(true)
}

fn is_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Nightly, bpf-linker (the daemon's build script builds the eBPF object)
/// and cargo-fuzz (installed into the toolchain directory, like bpf-linker).
fn ensure_tools() -> Result<()> {
    let report = Report { verbose: false };
    setup::ensure_nightly(report).context("setting up the nightly toolchain")?;
    linker::ensure_bpf_linker(report).context("setting up bpf-linker")?;
    let bin = paths::toolchain_dir()?.join("bin").join("cargo-fuzz");
    if cmd::succeeds(Command::new(&bin).arg("--version")) {
        return Ok(());
    }
    let mut install = Command::new("cargo");
    install
        .args(["install", "cargo-fuzz", "--locked", "--force"])
        .args(["--version", CARGO_FUZZ_VERSION, "--root"])
        .arg(paths::toolchain_dir()?)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    report.doing(
        &format!("cargo-fuzz missing at {}", bin.display()),
        &install,
    );
    cmd::run(&mut install)?;
    cmd::run(Command::new(&bin).arg("--version"))
        .context("the freshly installed cargo-fuzz does not run")
}

/// Where the fuzz crate and its scratch files live.
struct Dirs {
    fuzz: PathBuf,
    target: PathBuf,
    corpus: PathBuf,
    artifacts: PathBuf,
}

impl Dirs {
    fn new() -> Self {
        let target = paths::target_dir().join("fuzz");
        Self {
            fuzz: paths::root().join("tests").join("fuzz"),
            corpus: target.join("corpus").join(TARGET),
            artifacts: target.join("artifacts").join(TARGET),
            target,
        }
    }

    /// `cargo +nightly fuzz SUBCOMMAND TARGET` with the fuzz crate and
    /// target directory set.
    fn cargo_fuzz(&self, subcommand: &str) -> Result<Command> {
        let mut cargo = paths::cargo(["+nightly", "fuzz", subcommand, TARGET])?;
        cargo
            .arg("--fuzz-dir")
            .arg(&self.fuzz)
            .arg("--target-dir")
            .arg(&self.target);
        Ok(cargo)
    }
}

fn run(seconds: u64) -> Result<()> {
    let dirs = Dirs::new();
    // Built first on its own, so that the time spent building and the
    // time spent fuzzing are reported apart.
    let started = Instant::now();
    let mut build = dirs.cargo_fuzz("build")?;
    println!("fuzz: {}", cmd::describe(&build));
    cmd::run(&mut build)?;
    let built = started.elapsed();

    copy_seeds(&dirs.fuzz.join("seeds").join(TARGET), &dirs.corpus)?;
    fs::create_dir_all(&dirs.artifacts)
        .with_context(|| format!("creating {}", dirs.artifacts.display()))?;
    let mut fuzz = dirs.cargo_fuzz("run")?;
    fuzz.arg(&dirs.corpus);
    let regressions = dirs.fuzz.join("regressions");
    if regressions.is_dir() {
        fuzz.arg(&regressions);
    }
    fuzz.arg("--").args(libfuzzer_args(seconds, &dirs));
    println!("fuzz: {}", cmd::describe(&fuzz));
    let started = Instant::now();
    let status = cmd::status(&mut fuzz)?;
    let ran = started.elapsed();
    println!(
        "fuzz: {TARGET}: build {:.0} s, fuzzing {:.0} s",
        built.as_secs_f64(),
        ran.as_secs_f64()
    );
    if !status.success() {
        bail!(
            "fuzz target {TARGET} failed ({status}): the crashing input is in {} \
             (replay it with `cargo +nightly fuzz run {TARGET} --fuzz-dir tests/fuzz <file>`)",
            dirs.artifacts.display()
        );
    }
    Ok(())
}

/// libFuzzer's options: the time bound, a memory bound, a per-input time
/// bound (admission must never hang), the dictionary and where crashes go.
fn libfuzzer_args(seconds: u64, dirs: &Dirs) -> Vec<String> {
    vec![
        format!("-max_total_time={seconds}"),
        "-rss_limit_mb=2048".to_owned(),
        "-timeout=20".to_owned(),
        format!(
            "-dict={}",
            dirs.fuzz.join(format!("{TARGET}.dict")).display()
        ),
        format!("-artifact_prefix={}/", dirs.artifacts.display()),
        "-print_final_stats=1".to_owned(),
    ]
}

/// Copies the checked-in seeds into the scratch corpus (the fuzzer adds to
/// the corpus directory it is given; the seeds stay as written).
fn copy_seeds(seeds: &Path, corpus: &Path) -> Result<()> {
    fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let entries = fs::read_dir(seeds).with_context(|| format!("reading {}", seeds.display()))?;
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let to = corpus.join(entry.file_name());
            fs::copy(entry.path(), &to).with_context(|| format!("copying to {}", to.display()))?;
        }
    }
    Ok(())
}
