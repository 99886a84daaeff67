//! Builds the eBPF object so the daemon never embeds a stale one: cargo
//! reruns this script whenever the eBPF crates change.
//!
//! The object is built with the nightly toolchain (`rustup run nightly
//! cargo build -Z build-std=core`) for `bpfel-unknown-none`, for BPF CPU v3:
//! the programs use atomic fetch-and-add and compare-and-exchange, which the
//! BPF backend emits only from v3 on. (aya-build, which this replaces, sets
//! the compiler flags itself and has no way to pass the CPU; `cargo xtask
//! build-ebpf` uses the same flags as this script.)
//!
//! bpf-linker comes from `cargo xtask setup`, which installs it under
//! `target/toolchain/bin`; that directory is put first on PATH here.

use std::{
    env,
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, anyhow, bail};

const PACKAGE: &str = "fraiseql-edge-ebpf";
/// The object's name: the eBPF crate's binary target.
const OBJECT: &str = "fraiseql-edge-xdp";

fn main() -> anyhow::Result<()> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .ancestors()
        .nth(2)
        .ok_or_else(|| anyhow!("workspace root not found"))?
        .to_path_buf();
    let toolchain_bin = root.join("target/toolchain/bin");
    let linker = toolchain_bin.join("bpf-linker");
    println!("cargo:rerun-if-changed={}", linker.display());
    let ebpf_dir = root.join("ebpf");
    for krate in ["fraiseql-edge-common", PACKAGE] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(krate).display());
    }
    if !linker.exists() && which::which("bpf-linker").is_err() {
        bail!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask setup` first",
            toolchain_bin.display()
        );
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![toolchain_bin];
    paths.extend(env::split_paths(&path));
    let path = env::join_paths(paths)?;

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let arch = env::var("CARGO_CFG_TARGET_ARCH")?;
    build_object(&root, &out_dir, &arch, &path)
}

fn build_object(
    root: &Path,
    out_dir: &Path,
    arch: &str,
    path: &std::ffi::OsStr,
) -> anyhow::Result<()> {
    // A target directory of its own: cargo must not wait on the lock of the
    // build that runs this script.
    let target_dir = out_dir.join("ebpf-target");
    let flags = [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-cpu=v3".to_owned(),
    ]
    .join("\x1f");
    let mut cmd = Command::new("rustup");
    cmd.args(["run", "nightly", "cargo", "build", "--package", PACKAGE])
        .args(["--release", "--target", "bpfel-unknown-none"])
        .args(["-Z", "build-std=core", "--bins"])
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(root)
        .env("PATH", path)
        .env("CARGO_ENCODED_RUSTFLAGS", flags)
        // The outer build's compiler settings must not leak into the nightly build.
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_BUILD_RUSTFLAGS")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {cmd:?} (is rustup installed?)"))?;
    let stderr = child.stderr.take().context("stderr of the eBPF build")?;
    let mut log = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.context("reading the eBPF build's output")?;
        log.push(line);
    }
    let status = child.wait().context("waiting for the eBPF build")?;
    if !status.success() {
        for line in &log {
            println!("cargo:warning={line}");
        }
        bail!("building the eBPF object failed ({status}); its output is above");
    }
    let built = target_dir
        .join("bpfel-unknown-none")
        .join("release")
        .join(OBJECT);
    std::fs::copy(&built, out_dir.join(OBJECT))
        .with_context(|| format!("copying {}", built.display()))?;
    Ok(())
}
