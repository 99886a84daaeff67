//! `cargo xtask image`: the container image the Kubernetes manifests run,
//! `ghcr.io/fraiseql/fraiseql-edge:<workspace version>`, built offline.
//!
//! 1. release-build `fraiseql-edge` and `edgectl` (or take them from
//!    `--bin-dir`);
//! 2. stage a root file system under `target/image/rootfs`: the two binaries
//!    in `/usr/bin` and exactly the shared libraries `ldd` lists for them,
//!    the dynamic loader included, each at the path `ldd` names;
//! 3. `buildah build` of `k8s/image/Containerfile` (`FROM scratch`, so
//!    nothing is pulled) with that directory as the context;
//! 4. run `fraiseql-edge --version` and `edgectl --version` in the image
//!    with `podman run --network none` and compare them with the workspace
//!    version.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cmd, compile, paths, setup};

/// Where the image is published; the tag is the workspace version.
pub const REPOSITORY: &str = "ghcr.io/fraiseql/fraiseql-edge";

/// The binaries the image holds, in `/usr/bin`.
const BINARIES: [&str; 2] = ["fraiseql-edge", "edgectl"];

/// The image reference the manifests use: `REPOSITORY:<workspace version>`.
pub fn reference() -> String {
    format!("{REPOSITORY}:{}", env!("CARGO_PKG_VERSION"))
}

/// `cargo xtask image [--bin-dir DIR]`.
pub fn image(bin_dir: Option<PathBuf>) -> Result<()> {
    let started = Instant::now();
    setup::ensure_setup()?;
    let bin_dir = match bin_dir {
        Some(dir) => dir,
        None => {
            let packages: Vec<&str> = BINARIES.iter().flat_map(|b| ["-p", b]).collect();
            compile::build_release(&packages)?;
            paths::target_dir().join("release")
        }
    };
    let reference = reference();
    build_and_verify(&bin_dir, &reference)?;
    println!(
        "image: {reference} built and verified in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The test command's check of the Containerfile and the staging: the
/// image built from the test build's (debug) binaries under a local tag,
/// both binaries run in it, then it is removed.
pub fn check_with_test_build() -> Result<()> {
    let reference = "localhost/fraiseql-edge:test-build";
    let result = build_and_verify(&paths::target_dir().join("debug"), reference);
    let mut remove = Command::new("buildah");
    remove.args(["rmi", "--force", reference]);
    let removed = cmd::run(&mut remove);
    result?;
    removed.context("removing the test image")
}

/// Stages the root file system from the binaries in `bin_dir`, builds
/// `k8s/image/Containerfile` as `reference` and runs both binaries in it.
fn build_and_verify(bin_dir: &Path, reference: &str) -> Result<()> {
    let context = paths::target_dir().join("image");
    let binaries: Vec<PathBuf> = BINARIES.iter().map(|b| bin_dir.join(b)).collect();
    stage_rootfs(&binaries, &context.join("rootfs"))?;
    let containerfile = paths::root()
        .join("k8s")
        .join("image")
        .join("Containerfile");
    let mut build = Command::new("buildah");
    build
        .args(["build", "--network", "none", "--layers=false"])
        .arg("--file")
        .arg(&containerfile)
        .args([
            "--build-arg",
            &format!("VERSION={}", env!("CARGO_PKG_VERSION")),
        ])
        .args(["--tag", reference])
        .arg(&context);
    println!("image: {}", cmd::describe(&build));
    cmd::run(&mut build)?;
    verify(reference)
}

/// Lays out `rootfs`: the binaries in `usr/bin`, and every library `ldd`
/// lists for them (the loader too) at the same path as on this machine,
/// copied through symbolic links.
fn stage_rootfs(binaries: &[PathBuf], rootfs: &Path) -> Result<()> {
    if rootfs.exists() {
        fs::remove_dir_all(rootfs)
            .with_context(|| format!("removing the old {}", rootfs.display()))?;
    }
    let bin = rootfs.join("usr").join("bin");
    fs::create_dir_all(&bin).with_context(|| format!("creating {}", bin.display()))?;
    let mut libraries = BTreeSet::new();
    for binary in binaries {
        if !binary.is_file() {
            bail!("{} is missing: build it first", binary.display());
        }
        let name = binary
            .file_name()
            .with_context(|| format!("{} has no file name", binary.display()))?;
        copy_executable(binary, &bin.join(name))?;
        let listing = cmd::output(Command::new("ldd").arg(binary))?;
        libraries.extend(parse_ldd(&listing).with_context(|| format!("ldd {}", binary.display()))?);
    }
    for library in &libraries {
        let relative = library.strip_prefix("/").unwrap_or(library);
        let target = rootfs.join(relative);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        copy_executable(library, &target)?;
    }
    let listed: Vec<String> = libraries.iter().map(|l| l.display().to_string()).collect();
    println!(
        "image: staged {} with {}",
        rootfs.display(),
        listed.join(", ")
    );
    Ok(())
}

/// Copies `from` (following symbolic links) to `to` with mode 0755.
fn copy_executable(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    fs::set_permissions(to, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod 755 {}", to.display()))
}

/// The files `ldd` names: `libc.so.6 => /lib/…/libc.so.6 (0x…)` gives the
/// path after `=>`, a line starting with a path (the dynamic loader) gives
/// that path, and the kernel's vDSO (no file) is left out. A library `ldd`
/// could not find is an error.
fn parse_ldd(listing: &str) -> Result<Vec<PathBuf>> {
    let mut paths = Vec::new();
    for line in listing.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("shared library {} not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            paths.push(PathBuf::from(path));
        } else if !line.starts_with("linux-vdso") && !line.starts_with("linux-gate") {
            bail!("unexpected ldd line: {line}");
        }
    }
    if paths.is_empty() {
        bail!(
            "ldd listed no libraries (a static binary needs no staging, but this was not expected)"
        );
    }
    Ok(paths)
}

/// Runs both binaries inside the image, without network, and checks that
/// they report the workspace version.
///
/// `--runtime runc` and the explicit limits are for sandboxed build
/// machines: crun (podman's default) refuses a host whose cgroups are in
/// hybrid mode, and as root podman raises the open-file and process limits
/// to their maximum, which needs `CAP_SYS_RESOURCE`. Neither changes what
/// runs.
fn verify(reference: &str) -> Result<()> {
    let version = env!("CARGO_PKG_VERSION");
    for binary in BINARIES {
        let mut run = Command::new("podman");
        run.args(["--runtime", "runc", "run", "--rm", "--network", "none"])
            .args([
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .args([reference, binary, "--version"]);
        println!("image: {}", cmd::describe(&run));
        let out = cmd::output(&mut run)?;
        let expected = format!("{binary} {version}");
        if out.trim() != expected {
            bail!(
                "`{binary} --version` in {reference} printed {:?}, expected {expected:?}",
                out.trim()
            );
        }
        println!("image: {binary} --version: {}", out.trim());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LDD: &str = "\tlinux-vdso.so.1 (0x00007ffd5a1e5000)\n\
        \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f9163121000)\n\
        \tlibm.so.6 => /lib/x86_64-linux-gnu/libm.so.6 (0x00007f9163041000)\n\
        \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f916201e000)\n\
        \t/lib64/ld-linux-x86-64.so.2 (0x00007f9163154000)\n";

    #[test]
    fn ldd_gives_libraries_and_the_loader_but_not_the_vdso() {
        let paths = parse_ldd(LDD).unwrap();
        let paths: Vec<&str> = paths.iter().map(|p| p.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libm.so.6",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2",
            ]
        );
    }

    #[test]
    fn a_missing_library_is_an_error() {
        let err = parse_ldd("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert!(err.to_string().contains("libfoo.so.1"), "{err}");
    }

    #[test]
    fn a_static_binary_is_not_taken_silently() {
        assert!(parse_ldd("\tstatically linked\n").is_err());
    }

    #[test]
    fn the_reference_is_tagged_with_the_workspace_version() {
        assert_eq!(
            reference(),
            format!(
                "ghcr.io/fraiseql/fraiseql-edge:{}",
                env!("CARGO_PKG_VERSION")
            )
        );
    }
}
