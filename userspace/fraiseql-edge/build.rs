//! Builds the eBPF object with aya-build so the daemon never embeds a stale
//! one: cargo reruns this script whenever the eBPF crates change.
//!
//! bpf-linker comes from `cargo xtask setup`, which installs it under
//! `target/toolchain/bin`; that directory is put first on PATH here.

use std::{env, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

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
    // aya-build watches the program crate; the shared ABI crate matters too.
    println!(
        "cargo:rerun-if-changed={}",
        ebpf_dir.join("fraiseql-edge-common").display()
    );
    if !linker.exists() && which::which("bpf-linker").is_err() {
        return Err(anyhow!(
            "bpf-linker not found (looked in {} and PATH): run `cargo xtask setup` first",
            toolchain_bin.display()
        ));
    }
    let path = env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![toolchain_bin];
    paths.extend(env::split_paths(&path));
    let joined = env::join_paths(paths)?;
    // SAFETY: the build script is single-threaded at this point.
    #[expect(unsafe_code, reason = "set_var is unsafe in edition 2024")]
    unsafe {
        env::set_var("PATH", joined)
    };

    let program_dir = ebpf_dir.join("fraiseql-edge-ebpf");
    let package = Package {
        name: "fraiseql-edge-ebpf",
        root_dir: program_dir.to_str().context("non-UTF-8 path")?,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::default())
}
