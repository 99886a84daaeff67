//! Shared harness for the end-to-end tests and benchmarks: privilege checks,
//! private bpffs pin directories, network namespaces and the daemon process.
//!
//! Kernel tests need root. Outside CI they skip with a printed reason; with
//! `CI=true` a missing privilege is a failure, never a skip.

use std::path::PathBuf;

pub mod clients;
pub mod control;
pub mod daemon;
pub mod edgectl;
pub mod frames;
pub mod graphql;
pub mod http_audit;
pub mod jwks;
pub mod loopback;
pub mod netns;
pub mod postgres;
pub mod prometheus;
pub mod promtool;
pub mod redis;
pub mod servers;
pub mod subgraphs;
pub mod wait;
pub mod xdp_attach;

/// A loopback address with a port free right now (for servers the tests
/// start that take their port on the command line).
pub fn free_port() -> std::net::SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr")
}

/// The path of `bin` on `PATH`, if it is there.
pub fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.is_file())
    })
}

/// True when this process may use BPF. Outside CI, prints why a test skips;
/// in CI (`CI=true`), panics instead.
pub fn kernel_tests_enabled(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: kernel tests need root and CI=true forbids skipping them");
    }
    eprintln!("SKIP {test}: needs root (BPF, network namespaces); run `sudo -E cargo xtask test`");
    false
}

/// A private pin directory under /sys/fs/bpf, removed (with everything
/// pinned in it, which detaches pinned links) on drop.
pub struct PinDir(pub PathBuf);

impl PinDir {
    /// `/sys/fs/bpf/fe-test-<name>-<pid>`; bpffs is mounted if needed.
    pub fn new(name: &str) -> Self {
        let bpffs = std::path::Path::new("/sys/fs/bpf");
        fraiseql_edge::kernel::bpffs::ensure_bpffs(&bpffs.join("x")).expect("bpffs");
        let dir = bpffs.join(format!("fe-test-{name}-{}", std::process::id()));
        if dir.exists() {
            let _ = fraiseql_edge::kernel::detach(&dir);
        }
        std::fs::create_dir_all(&dir).expect("create pin dir");
        Self(dir)
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if self.0.exists() {
            let _ = fraiseql_edge::kernel::detach(&self.0);
        }
    }
}
