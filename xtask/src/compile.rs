//! `cargo xtask build-ebpf` and `cargo xtask build`.

use anyhow::{Context, Result, bail};

use crate::setup::ensure_setup;
use crate::{cmd, paths};

const EBPF_PACKAGE: &str = "fraiseql-edge-ebpf";

/// Builds the eBPF object on its own (the daemon's build script builds it
/// too) and prints where it is (`target/bpf/bpfel-unknown-none/release/<bin>`),
/// for inspection with bpftool or llvm-objdump.
pub fn build_ebpf() -> Result<()> {
    ensure_setup()?;
    let root = paths::root();
    let manifest = root.join("ebpf").join(EBPF_PACKAGE).join("Cargo.toml");
    if !manifest.exists() {
        bail!(
            "the eBPF crate is not there: {} is missing",
            manifest.display()
        );
    }
    let target_dir = root.join("target").join("bpf");
    let mut cargo = paths::cargo(["+nightly", "build", "--package", EBPF_PACKAGE, "--release"])?;
    cargo
        .args(["--target", "bpfel-unknown-none", "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", ebpf_rustflags())
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    println!("build-ebpf: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)?;
    let release = target_dir.join("bpfel-unknown-none").join("release");
    for name in bin_targets(EBPF_PACKAGE)? {
        let object = release.join(&name);
        if !object.exists() {
            bail!("cargo succeeded but {} was not written", object.display());
        }
        println!("eBPF object: {}", object.display());
    }
    Ok(())
}

/// The names of a workspace package's binary targets (for the eBPF crate:
/// the objects it builds), from `cargo metadata`.
fn bin_targets(package: &str) -> Result<Vec<String>> {
    let mut metadata = paths::cargo(["metadata", "--no-deps", "--format-version", "1"])?;
    let json: serde_json::Value = serde_json::from_str(&cmd::output(&mut metadata)?)
        .context("reading `cargo metadata` output")?;
    let packages = json["packages"]
        .as_array()
        .context("no packages in cargo metadata")?;
    let Some(found) = packages.iter().find(|p| p["name"] == package) else {
        bail!("no package {package} in the workspace");
    };
    let targets = found["targets"]
        .as_array()
        .context("no targets in cargo metadata")?;
    let is_bin = |t: &&serde_json::Value| {
        t["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"))
    };
    let names: Vec<String> = targets
        .iter()
        .filter(is_bin)
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    if names.is_empty() {
        bail!("package {package} has no binary target");
    }
    Ok(names)
}

/// Flags for the eBPF build, `\x1f`-separated as `CARGO_ENCODED_RUSTFLAGS`
/// wants: the architecture the program reads kernel structs for, BTF, and
/// BPF v3 (atomic fetch-and-add and compare-and-exchange). The daemon's
/// build script uses the same flags.
fn ebpf_rustflags() -> String {
    let arch = std::env::consts::ARCH;
    [
        format!("--cfg=bpf_target_arch=\"{arch}\""),
        "-Cdebuginfo=2".to_owned(),
        "-Clink-arg=--btf".to_owned(),
        "-Ctarget-cpu=v3".to_owned(),
    ]
    .join("\x1f")
}

/// `cargo build --release` of the default members, with bpf-linker on PATH
/// for the daemon's build script. `extra` narrows it (e.g. `-p NAME`).
pub fn build_release(extra: &[&str]) -> Result<()> {
    let mut cargo = paths::cargo(["build", "--release"])?;
    cargo.args(extra);
    println!("build: {}", cmd::describe(&cargo));
    cmd::run(&mut cargo)
}

/// `cargo xtask build`.
pub fn build() -> Result<()> {
    ensure_setup()?;
    build_release(&[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rustflags_are_unit_separated() {
        let flags = ebpf_rustflags();
        let parts: Vec<&str> = flags.split('\x1f').collect();
        assert_eq!(parts.len(), 4);
        assert!(parts[0].starts_with("--cfg=bpf_target_arch=\""));
        assert_eq!(parts[2], "-Clink-arg=--btf");
        assert_eq!(parts[3], "-Ctarget-cpu=v3");
    }
}
