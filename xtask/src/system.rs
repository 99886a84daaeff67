//! Machine-wide setup that needs root: the bpf and trace file systems and
//! the Debian packages the daemon and the tests call.

use std::process::Command;

use anyhow::{Context, Result};
use nix::mount::{MsFlags, mount};

use crate::cmd;
use crate::setup::Report;

const PACKAGES: [&str; 15] = [
    "nftables",
    "bpftool",
    "iproute2",
    "util-linux",
    // `cargo xtask bench proxy`: the load generator, the reference proxy and
    // the fixed-response upstream. The benchmark runs its own nginx with its
    // own config; where an init system is allowed to start services, apt also
    // starts Debian's default site on port 80, which the benchmark ignores.
    "haproxy",
    "wrk",
    "nginx",
    // `cargo xtask bench security`: the RSA key and the RS256 tokens.
    "openssl",
    // `promtool check metrics` in the tests.
    "prometheus",
    // The PostgreSQL saga store's tests: they run `initdb` and `postgres`
    // from /usr/lib/postgresql/<version>/bin as the package's `postgres`
    // user, each test its own server in a temporary directory. Debian also
    // starts its own cluster where an init system is allowed to; the tests
    // never use it.
    "postgresql",
    // Cluster mode's tests: each runs its own `redis-server` on a free port
    // without persistence (Debian also starts its own on 6379 where an init
    // system is allowed to; the tests never use it).
    "redis-server",
    // The graphql-http server audit (tests/audit, run by the e2e tests).
    // Some builds of this package bundle npm; see `missing_packages`.
    "nodejs",
    // `cargo xtask image`: builds the image (buildah) and runs its binaries
    // (podman, with runc: Debian's crun refuses hybrid cgroup hosts).
    "buildah",
    "podman",
    "runc",
];

/// `(fs type, mount point)` pairs the daemon and the kernel tests need.
const MOUNTS: [(&str, &str); 2] = [("bpf", "/sys/fs/bpf"), ("tracefs", "/sys/kernel/tracing")];

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

pub fn ensure_system(report: Report) -> Result<()> {
    let missing = missing_packages();
    if !is_root() {
        report_not_root(&missing)?;
        return Ok(());
    }
    for (fstype, target) in MOUNTS {
        ensure_mounted(fstype, target, report)?;
    }
    install_packages(&missing, report)
}

fn report_not_root(missing: &[&str]) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let mut skipped: Vec<String> = MOUNTS
        .iter()
        .filter(|(fstype, target)| !is_mounted(&mounts, fstype, target))
        .map(|(fstype, target)| format!("mounting {fstype} at {target}"))
        .collect();
    if !missing.is_empty() {
        skipped.push(format!("installing {}", missing.join(", ")));
    }
    if !skipped.is_empty() {
        println!(
            "setup: not root, so skipped: {} (run `cargo xtask setup` as root to do it)",
            skipped.join("; ")
        );
    }
    Ok(())
}

fn missing_packages() -> Vec<&'static str> {
    if which::which("dpkg").is_err() {
        println!("setup: no dpkg on this machine: not checking Debian packages {PACKAGES:?}");
        return Vec::new();
    }
    let mut missing: Vec<&'static str> = PACKAGES
        .into_iter()
        .filter(|name| !cmd::succeeds(Command::new("dpkg").args(["-s", name])))
        .collect();
    // Debian's nodejs leaves npm to its own package; NodeSource's bundles it
    // (and conflicts with Debian's npm), so npm is only asked for when absent.
    if which::which("npm").is_err() {
        missing.push("npm");
    }
    missing
}

fn install_packages(missing: &[&str], report: Report) -> Result<()> {
    if missing.is_empty() {
        if which::which("dpkg").is_ok() {
            report.ok(&format!("Debian packages {}", PACKAGES.join(", ")));
        }
        return Ok(());
    }
    let mut update = apt_get();
    update.arg("update");
    report.doing(&format!("missing packages {}", missing.join(", ")), &update);
    cmd::run(&mut update)?;
    let mut install = apt_get();
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(missing);
    report.doing("installing", &install);
    cmd::run(&mut install)
}

fn apt_get() -> Command {
    let mut cmd = Command::new("apt-get");
    cmd.env("DEBIAN_FRONTEND", "noninteractive");
    cmd
}

fn ensure_mounted(fstype: &str, target: &str, report: Report) -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    let what = format!("{fstype} at {target}");
    if is_mounted(&mounts, fstype, target) {
        report.ok(&what);
        return Ok(());
    }
    report.note(&format!(
        "mounting {what} (mount -t {fstype} {fstype} {target})"
    ));
    mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::empty(),
        None::<&str>,
    )
    .with_context(|| format!("mount -t {fstype} {fstype} {target}"))
}

/// True when `/proc/mounts` lists a file system of `fstype` at `target`.
fn is_mounted(proc_mounts: &str, fstype: &str, target: &str) -> bool {
    proc_mounts.lines().any(|line| {
        let mut fields = line.split_whitespace().skip(1);
        fields.next() == Some(target) && fields.next() == Some(fstype)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mounts_by_type_and_place() {
        let mounts = "sysfs /sys sysfs rw 0 0\nbpf /sys/fs/bpf bpf rw,relatime 0 0\n";
        assert!(is_mounted(mounts, "bpf", "/sys/fs/bpf"));
        assert!(!is_mounted(mounts, "tracefs", "/sys/kernel/tracing"));
        assert!(!is_mounted(mounts, "sysfs", "/sys/fs/bpf"));
    }
}
