//! Where things live in the workspace, and the environment child builds get.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// Overrides where `setup` installs bpf-linker (default `<root>/target/toolchain`).
pub const TOOLCHAIN_DIR_ENV: &str = "FRAISEQL_EDGE_TOOLCHAIN_DIR";

/// The workspace root: the parent of this crate's manifest directory.
pub fn root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// The ignored folder holding bpf-linker and the LLVM links it needs.
pub fn toolchain_dir() -> Result<PathBuf> {
    match std::env::var_os(TOOLCHAIN_DIR_ENV) {
        Some(dir) => std::path::absolute(&dir)
            .with_context(|| format!("{TOOLCHAIN_DIR_ENV}={} is not a usable path", dir.display())),
        None => Ok(root().join("target").join("toolchain")),
    }
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The release build of the daemon.
pub fn daemon_binary() -> PathBuf {
    target_dir().join("release").join("fraiseql-edge")
}

/// `PATH` with the toolchain's `bin` (bpf-linker) in front.
pub fn path_with_toolchain() -> Result<OsString> {
    let bin = toolchain_dir()?.join("bin");
    let rest = std::env::var_os("PATH").unwrap_or_default();
    let dirs = std::iter::once(bin).chain(std::env::split_paths(&rest));
    std::env::join_paths(dirs).context("PATH contains an entry with ':' in it")
}

/// `cargo ARGS…` run from the workspace root with bpf-linker on `PATH`.
pub fn cargo<I, S>(args: I) -> Result<Command>
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    let mut cmd = Command::new("cargo");
    cmd.args(args)
        .current_dir(root())
        .env("PATH", path_with_toolchain()?);
    Ok(cmd)
}
