//! bpf-linker, built against the LLVM that ships inside the nightly
//! toolchain (no system LLVM of the right version exists), installed into the
//! ignored `target/toolchain`.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, anyhow, bail};

use crate::setup::Report;
use crate::{cmd, paths};

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure_bpf_linker(report: Report) -> Result<()> {
    let root = paths::toolchain_dir()?;
    let linker = root.join("bin").join("bpf-linker");
    if cmd::succeeds(Command::new(&linker).arg("--version")) {
        report.ok(&format!("bpf-linker ({})", linker.display()));
        return Ok(());
    }
    report.note(&format!(
        "bpf-linker missing or not runnable at {}: building it",
        linker.display()
    ));
    let major = nightly_llvm_major()?;
    let llvm = root.join("llvm");
    link_llvm(&nightly_sysroot()?.join("lib"), &llvm.join("lib"))?;
    install(&root, &llvm, major, report)?;
    cmd::run(Command::new(&linker).arg("--version"))
        .context("the freshly installed bpf-linker does not run")
}

fn nightly_llvm_major() -> Result<u32> {
    let info = cmd::output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    llvm_major(&info)
        .ok_or_else(|| anyhow!("no `LLVM version:` line in `rustc +nightly -vV`:\n{info}"))
}

/// The major version from rustc's `LLVM version: 22.1.4` line.
fn llvm_major(rustc_vv: &str) -> Option<u32> {
    let line = rustc_vv
        .lines()
        .find_map(|l| l.trim().strip_prefix("LLVM version:"))?;
    line.trim().split('.').next()?.parse().ok()
}

fn nightly_sysroot() -> Result<PathBuf> {
    let out = cmd::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    Ok(PathBuf::from(out.trim()))
}

/// Fills `lib` with links to every `libLLVM*` of the toolchain, plus the
/// `libLLVM.so` name the linker links against. Old links are removed first so
/// a nightly update leaves no dangling ones behind.
fn link_llvm(sysroot_lib: &Path, lib: &Path) -> Result<()> {
    if lib.exists() {
        fs::remove_dir_all(lib).with_context(|| format!("removing {}", lib.display()))?;
    }
    fs::create_dir_all(lib).with_context(|| format!("creating {}", lib.display()))?;
    let names = llvm_libraries(sysroot_lib)?;
    for name in &names {
        link(&sysroot_lib.join(name), &lib.join(name))?;
    }
    let versioned = names
        .iter()
        .find(|n| n.starts_with("libLLVM.so."))
        .ok_or_else(|| anyhow!("no libLLVM.so.<version> in {}", sysroot_lib.display()))?;
    link(&sysroot_lib.join(versioned), &lib.join("libLLVM.so"))
}

fn llvm_libraries(dir: &Path) -> Result<Vec<String>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut names = Vec::new();
    for entry in entries {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") {
            names.push(name);
        }
    }
    if names.is_empty() {
        bail!("the nightly toolchain has no libLLVM* in {}", dir.display());
    }
    names.sort();
    Ok(names)
}

fn link(target: &Path, name: &Path) -> Result<()> {
    println!("setup: link {} -> {}", name.display(), target.display());
    symlink(target, name).with_context(|| format!("linking {}", name.display()))
}

fn install(root: &Path, llvm: &Path, major: u32, report: Report) -> Result<()> {
    let mut cargo = Command::new("cargo");
    cargo
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--force",
        ])
        .args([
            "--no-default-features",
            "--features",
            &format!("llvm-{major}"),
        ])
        .arg("--root")
        .arg(root)
        .env("LLVM_PREFIX", llvm)
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER");
    report.doing(
        &format!("installing bpf-linker with LLVM_PREFIX={}", llvm.display()),
        &cargo,
    );
    cmd::run(&mut cargo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_llvm_major() {
        let vv = "rustc 1.97.0-nightly (e50aa6fba 2026-05-19)\nhost: x86_64-unknown-linux-gnu\n\
                  release: 1.97.0-nightly\nLLVM version: 22.1.4\n";
        assert_eq!(llvm_major(vv), Some(22));
        assert_eq!(llvm_major("rustc 1.0\n"), None);
    }
}
