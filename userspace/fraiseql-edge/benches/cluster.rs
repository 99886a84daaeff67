//! Per-request cost of one rate-limit check, local against global:
//!
//! * `cluster/local` — [`RateLimiter::check`] for one hot key (the node's
//!   own limit, a mutex and an LRU lookup);
//! * `cluster/global/<k>` — [`GlobalLimiter::check`] for the same key
//!   against a real `redis-server` on loopback (one Lua script per check
//!   over the limiter's multiplexed connection), with `k` checks in flight
//!   at once (`k` tasks on a two-worker runtime, as the daemon's). The time
//!   reported is the wall time of all checks divided by their number, so
//!   checks/s = 10⁹ / ns; at `k = 1` it is one round trip.
//!
//! Both limits never refuse (the allowed path is the common one): 60 000 000
//! requests per minute (the fastest rate the global script represents: 1 µs
//! between requests) with a burst of 1 000 000.
//!
//! The bench starts its own `redis-server` (no persistence, a free port,
//! killed at the end); without one it measures the local check alone and
//! says why.
//!
//! `cargo bench -p fraiseql-edge --bench cluster`

use std::{
    hint::black_box,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fraiseql_edge::{
    cluster::{ClusterConfig, GlobalDecision, GlobalLimiter},
    ratelimit::{Key, RateLimitConfig, RateLimiter},
};

/// Requests per minute of both limits: one every µs, never reached here.
const RATE: u32 = 60_000_000;
/// Burst of both limits.
const BURST: u32 = 1_000_000;
/// Checks in flight at once for the global limiter.
const IN_FLIGHT: [u64; 3] = [1, 16, 64];

/// A private `redis-server`, killed on drop.
struct Redis {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one on a free loopback port, or says why not.
    fn start() -> Result<Self, String> {
        let bin = find("redis-server").ok_or("no redis-server on PATH")?;
        let addr = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?;
        let dir = tempfile::tempdir().map_err(|e| format!("no temp dir: {e}"))?;
        let child = Command::new(&bin)
            .args(["--bind", "127.0.0.1", "--port", &addr.port().to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("starting {}: {e}", bin.display()))?;
        let redis = Self {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !redis.answers() {
            if Instant::now() > deadline {
                return Err(format!("redis-server never answered on {addr}"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    /// Whether it answers `PING`.
    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` in a directory of `PATH`.
fn find(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    p.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn cluster(c: &mut Criterion) {
    let mut group = c.benchmark_group("cluster");
    group.throughput(Throughput::Elements(1));

    let local = RateLimiter::new(
        &RateLimitConfig {
            requests_per_minute: RATE,
            burst: BURST,
            ..RateLimitConfig::default()
        },
        Instant::now(),
    )
    .expect("a limit");
    let key = Key::Address([127, 0, 0, 1].into());
    assert!(local.check(&key, Instant::now()).allowed);
    group.bench_function("local", |b| {
        b.iter(|| black_box(local.check(black_box(&key), Instant::now())))
    });

    let redis = match Redis::start() {
        Ok(redis) => redis,
        Err(why) => {
            println!("cluster/global: skipped ({why}); `cargo xtask setup` installs redis-server");
            group.finish();
            return;
        }
    };
    // The daemon's runtime: two workers.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let global = Arc::new(
        GlobalLimiter::new(&ClusterConfig {
            redis_url: format!("redis://{}", redis.addr),
            node: Some("bench".to_owned()),
            // Queueing at 64 in flight on a busy machine is measured, not
            // turned into a fallback.
            timeout_ms: 10_000,
            ..ClusterConfig::default()
        })
        .expect("a valid [cluster]"),
    );
    // The key the proxy builds for an anonymous client's global limit.
    let id = "global:addr:127.0.0.1";
    let first = rt.block_on(global.check(id, RATE, BURST, 1));
    assert!(
        matches!(first, GlobalDecision::Checked(d) if d.allowed),
        "redis-server at {} did not admit the first check: {first:?}",
        redis.addr
    );
    for k in IN_FLIGHT {
        group.bench_with_input(BenchmarkId::new("global", k), &k, |b, &k| {
            b.to_async(&rt).iter_custom(|iters| {
                let global = global.clone();
                async move {
                    let started = Instant::now();
                    let mut tasks = tokio::task::JoinSet::new();
                    for t in 0..k {
                        // `iters` checks in all, spread over `k` tasks.
                        let share = iters / k + u64::from(t < iters % k);
                        let global = global.clone();
                        tasks.spawn(async move {
                            for _ in 0..share {
                                let d = global.check(id, RATE, BURST, 1).await;
                                assert!(
                                    matches!(d, GlobalDecision::Checked(d) if d.allowed),
                                    "{d:?}"
                                );
                            }
                        });
                    }
                    while let Some(done) = tasks.join_next().await {
                        done.expect("a checking task");
                    }
                    started.elapsed()
                }
            })
        });
    }
    group.finish();
    drop(redis);
}

criterion_group!(benches, cluster);
criterion_main!(benches);
