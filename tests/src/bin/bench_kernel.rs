//! `cargo xtask bench kernel`: the cost of the XDP limiter, printed as markdown.
//!
//! 1. **Per packet, in isolation** (`BPF_PROG_TEST_RUN`, `repeat` = 1 000 000
//!    on one 60-byte UDP frame): the `return XDP_PASS` baseline, the pass
//!    path (a client within a huge limit), the rate-drop path (bucket empty)
//!    and the block-list drop path, each with 1, 10 000 and 1 000 000 clients
//!    in the client LRU map. Runs are interleaved; medians are reported.
//!    Beside them, one test run per packet (`repeat` = 1) with every
//!    packet from another of the 1 000 000 tracked clients, so the client
//!    lookups miss the CPU caches, with the baseline and one hot client
//!    measured the same way ([`per_call`]).
//! 2. **Per dropped packet, end to end**: a UDP flood from one source in a
//!    network namespace, over a veth pair, to a protected port on the host
//!    side — with no filter (a closed port), with the XDP limiter attached in
//!    driver mode, and with the equivalent nftables per-source meter (at the
//!    netdev `ingress` hook, the closest to XDP, and at inet `input`) — and
//!    the CPU time spent per frame: the flood's own threads (precise) and
//!    the whole machine (`/proc/stat`). Two senders: socket buffers from an
//!    `AF_PACKET` socket, and XDP frames redirected by a live-frame test run
//!    (how a NIC's receive buffers reach native XDP: no socket buffer yet).
//!
//! Needs root. Every namespace, nftables table, XDP attachment and bpffs pin
//! it creates is removed on exit, on error and on Ctrl-C.
//!
//! Options: `--packets N` (frames per flood, default 2 000 000), `--runs N`
//! (repetitions of each measurement; default 5 for test runs, 3 for
//! floods), `--only test-run|flood`.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::Ipv4Addr,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    process::{Command, ExitCode, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use aya::{
    Ebpf,
    maps::{HashMap as BpfHashMap, MapData},
    programs::{TestRun, TestRunOptions, Xdp, XdpMode},
};
use fraiseql_edge::{
    config::Config,
    kernel::{self, KernelMaps, MapsError, maps::open_pin},
};
use fraiseql_edge_common::{ClientKey, ClientState, Counter, bucket, key, maps, programs};
use fraiseql_edge_tests::{PinDir, frames::Packet, netns::NetNs};

// Beside this file: a file directly in `src/bin/` would be a binary of its own.
#[path = "bench_kernel/per_call.rs"]
mod per_call;

const PORT: u16 = 8080;
const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const REPEAT: u32 = 1_000_000;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 1);
const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// `NetNs` network number of the flood (the e2e tests use small numbers).
const FLOOD_NET: u8 = 250;
const NS_TAG: &str = "kbench";
const NFT_TABLES: [(&str, &str); 2] = [("netdev", "fe_bench_ingress"), ("inet", "fe_bench_input")];

static STOP: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("bench-kernel: needs root (BPF, network namespaces, nftables)");
        return ExitCode::FAILURE;
    }
    install_stop_handler();
    match Args::parse().and_then(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-kernel: {e:#}");
            ExitCode::FAILURE
        }
    }
}

struct Args {
    packets: u64,
    runs: Option<usize>,
    test_run: bool,
    flood: bool,
}

impl Args {
    fn parse() -> Result<Self> {
        let mut args = Self {
            packets: 2_000_000,
            runs: None,
            test_run: true,
            flood: true,
        };
        let mut it = std::env::args().skip(1);
        while let Some(arg) = it.next() {
            let mut value = || it.next().with_context(|| format!("{arg} needs a value"));
            match arg.as_str() {
                "--packets" => args.packets = value()?.parse().context("--packets")?,
                "--runs" => args.runs = Some(value()?.parse().context("--runs")?),
                "--only" => match value()?.as_str() {
                    "test-run" => args.flood = false,
                    "flood" => args.test_run = false,
                    other => bail!("--only test-run|flood, not {other}"),
                },
                other => {
                    bail!("unknown argument {other} (--packets N, --runs N, --only test-run|flood)")
                }
            }
        }
        ensure!(args.packets >= 10_000, "--packets must be at least 10000");
        Ok(args)
    }
}

fn run(args: Args) -> Result<()> {
    let started = Instant::now();
    println!("# fraiseql-edge kernel benchmark\n");
    println!("{}\n", machine()?);
    if args.test_run {
        let runs = args.runs.unwrap_or(5).max(1);
        let rows = test_run_bench(runs)?;
        print_test_run(&rows, runs);
    }
    if args.flood {
        let runs = args.runs.unwrap_or(3).max(1);
        let rows = flood_bench(args.packets, runs)?;
        print_flood(&rows, args.packets, runs);
    }
    eprintln!("done in {:.0?}", started.elapsed());
    Ok(())
}

fn machine() -> Result<String> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease")?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    Ok(format!("Linux {}, {cpus} vCPU ({model})", release.trim()))
}

// ---------------------------------------------------------------------------
// Part 1: BPF_PROG_TEST_RUN.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    Baseline,
    Pass,
    DropRate,
    DropBlock,
    /// The rows of [`per_call`]: one test run per packet.
    BaselineOnce,
    PassOnce,
    PassDistinct,
}

impl Scenario {
    /// The paths measured with `repeat` = [`REPEAT`].
    const ALL: [Self; 4] = [Self::Baseline, Self::Pass, Self::DropRate, Self::DropBlock];

    fn label(self) -> &'static str {
        match self {
            Self::Baseline => "baseline `return XDP_PASS`",
            Self::Pass => "limiter: pass (within limit)",
            Self::DropRate => "limiter: drop (bucket empty)",
            Self::DropBlock => "limiter: drop (block list)",
            Self::BaselineOnce => "baseline `return XDP_PASS`, one call per packet",
            Self::PassOnce => "limiter: pass, one client, one call per packet",
            Self::PassDistinct => "limiter: pass, every packet another client, one call per packet",
        }
    }

    /// The baseline measured the same way as this path.
    fn baseline(self) -> Self {
        match self {
            Self::BaselineOnce | Self::PassOnce | Self::PassDistinct => Self::BaselineOnce,
            _ => Self::Baseline,
        }
    }
}

struct TestRunRow {
    tracked: u64,
    path: Scenario,
    /// Median, lowest and highest of the runs' kernel averages.
    ns: f64,
    min_ns: f64,
    max_ns: f64,
}

/// Limits that never drop: 10^9 packets/s, the largest burst.
const UNLIMITED: &str = "rate = 1000000000\nburst = 8388607\n";
/// One packet then nothing: the bucket stays empty during a run.
const EMPTY_BUCKET: &str = "rate = 1\nburst = 1\n";

struct Loaded {
    ebpf: Ebpf,
    maps: KernelMaps,
    pin: PinDir,
}

impl Loaded {
    fn new(name: &str, program_names: &[&str]) -> Result<Self> {
        let pin = PinDir::new(name);
        let mut ebpf = kernel::load_object(&pin.0, false).context("loading the object")?;
        for prog in program_names {
            let xdp: &mut Xdp = ebpf
                .program_mut(prog)
                .with_context(|| format!("{prog} missing"))?
                .try_into()?;
            xdp.load().with_context(|| format!("loading {prog}"))?;
        }
        let maps =
            KernelMaps::from_source(|name| ebpf.take_map(name).ok_or(MapsError::Missing(name)))?;
        Ok(Self { ebpf, maps, pin })
    }

    fn apply(&mut self, limits: &str) -> Result<()> {
        let toml = format!("[kernel]\ninterfaces = [\"lo\"]\nprotected_ports = [{PORT}]\n{limits}");
        let cfg = Config::from_toml(&toml)?.kernel;
        Ok(self.maps.apply(&cfg)?)
    }

    fn xdp(&self, name: &str) -> Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?)
    }

    fn xdp_mut(&mut self, name: &str) -> Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?)
    }
}

fn test_run_bench(runs: usize) -> Result<Vec<TestRunRow>> {
    let mut k = Loaded::new("bench-test-run", &[programs::XDP, programs::BASELINE_PASS])?;
    let mut clients: BpfHashMap<MapData, ClientKey, ClientState> =
        BpfHashMap::try_from(open_pin(&k.pin.0, maps::CLIENTS)?)?;
    // 60 bytes: the smallest Ethernet frame.
    let frame = Packet::ipv4(CLIENT, HOST)
        .udp(40000, PORT)
        .payload(&[0; 18])
        .build()
        .bytes;
    let mut rows = Vec::new();
    let mut fillers = 0u64;
    for tracked in [1u64, 10_000, MOST_TRACKED] {
        fillers = populate(&mut clients, fillers, tracked - 1)?;
        k.apply(UNLIMITED)?;
        k.xdp(programs::XDP)?.test_run(TestRunOptions {
            data_in: Some(&frame),
            ..TestRunOptions::new()
        })?;
        let resident = if tracked > 1 {
            clients.keys().filter(Result::is_ok).count()
        } else {
            1
        };
        eprintln!("test-run: {tracked} tracked clients ({resident} resident in the LRU map)");
        let mut samples: BTreeMap<Scenario, Vec<f64>> = BTreeMap::new();
        for _ in 0..runs {
            for path in Scenario::ALL {
                stop_requested()?;
                samples
                    .entry(path)
                    .or_default()
                    .push(measure_path(&mut k, path, &frame)?);
            }
        }
        rows.extend(
            samples
                .into_iter()
                .map(|(path, s)| TestRunRow::new(tracked, path, s)),
        );
    }
    // Still MOST_TRACKED clients in the map.
    rows.extend(per_call::measure(&mut k, &frame, runs)?);
    Ok(rows)
}

impl TestRunRow {
    /// The median and range of `samples`.
    fn new(tracked: u64, path: Scenario, samples: Vec<f64>) -> Self {
        Self {
            tracked,
            path,
            min_ns: samples.iter().copied().fold(f64::INFINITY, f64::min),
            max_ns: samples.iter().copied().fold(0.0, f64::max),
            ns: median(samples),
        }
    }
}

/// The largest number of clients the map is filled with.
const MOST_TRACKED: u64 = 1_000_000;

/// Filler client `i`: distinct IPv4 addresses in 10/8.
fn filler(i: u64) -> [u8; 4] {
    [10, (i >> 16) as u8, (i >> 8) as u8, i as u8]
}

/// The `i`-th of the tracked clients: the measured [`CLIENT`], then the fillers.
fn tracked_client(i: u64) -> [u8; 4] {
    match i {
        0 => CLIENT.octets(),
        i => filler(i - 1),
    }
}

/// Inserts filler clients `from..to` (distinct IPv4-mapped keys in 10/8).
fn populate(
    clients: &mut BpfHashMap<MapData, ClientKey, ClientState>,
    from: u64,
    to: u64,
) -> Result<u64> {
    if to <= from {
        return Ok(from);
    }
    let now = fraiseql_edge::clock::monotonic_ns();
    let state = bucket::new_state(now);
    let started = Instant::now();
    for i in from..to {
        if i % 65536 == 0 {
            stop_requested()?;
        }
        let k = key::from_ipv4(filler(i));
        clients.insert(k, state, 0).context("inserting a client")?;
    }
    eprintln!(
        "test-run: inserted {} clients in {:.1?}",
        to - from,
        started.elapsed()
    );
    Ok(to)
}

/// One `repeat`-run of `path`: the kernel's average ns per run.
///
/// Only the kernel's figure is used: it stops its clock while the test
/// run yields the CPU, a wall clock around the syscall does not (on a
/// shared machine it measures the neighbours).
fn measure_path(k: &mut Loaded, path: Scenario, frame: &[u8]) -> Result<f64> {
    let client = std::net::IpAddr::V4(CLIENT);
    let (program, expected, counter) = match path {
        Scenario::Baseline => (programs::BASELINE_PASS, XDP_PASS, None),
        Scenario::Pass => {
            k.apply(UNLIMITED)?;
            (programs::XDP, XDP_PASS, Some(Counter::Passed))
        }
        Scenario::DropRate => {
            k.apply(EMPTY_BUCKET)?;
            (programs::XDP, XDP_DROP, Some(Counter::DroppedRate))
        }
        Scenario::DropBlock => {
            k.apply(UNLIMITED)?;
            k.maps.block(client, None)?;
            (programs::XDP, XDP_DROP, Some(Counter::DroppedBlock))
        }
        other => bail!("{other:?} is measured in `per_call`"),
    };
    let xdp = k.xdp(program)?;
    if path == Scenario::DropRate {
        // Take the one token left so that every measured run drops.
        xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
    }
    let before = counter.map(|c| k.maps.counter(c)).transpose()?;
    let r = xdp.test_run(TestRunOptions {
        data_in: Some(frame),
        repeat: REPEAT,
        ..TestRunOptions::new()
    })?;
    if let (Some(c), Some(before)) = (counter, before) {
        let n = k.maps.counter(c)? - before;
        // A rate refill of 1/s may let a packet through during the run.
        ensure!(
            n + 2 >= u64::from(REPEAT),
            "{path:?}: {c:?} moved by {n}, not {REPEAT}"
        );
    }
    ensure!(
        r.return_value == expected,
        "{path:?}: verdict {} instead of {expected}",
        r.return_value
    );
    if path == Scenario::DropBlock {
        k.maps.unblock(client)?;
    }
    Ok(r.duration.as_nanos() as f64)
}

fn print_test_run(rows: &[TestRunRow], runs: usize) {
    println!("## Per packet, `BPF_PROG_TEST_RUN`\n");
    println!(
        "One 60-byte UDP frame to a protected port, `repeat` = {}; the kernel's average \
         (`duration`, whole ns) per run, median (and range) of {runs} interleaved runs. Every \
         run repeats one client, so its map entries stay in cache.\n",
        thousands(u64::from(REPEAT))
    );
    println!(
        "The rows \"one call per packet\" make one test run per frame (`repeat` = 1, {} calls \
         per path and run) and report the mean of the calls' `duration`: the baseline, the \
         limiter with one client, and the limiter with each frame from the next of the {} \
         tracked clients — all runs together visit every client once, so each lookup finds \
         its entries cold, as in a flood from many sources. They compare with the baseline \
         measured the same way.\n",
        thousands(u64::from(per_call::calls_per_run(runs))),
        thousands(MOST_TRACKED)
    );
    println!("| clients in map | path | ns/pkt | range | above baseline | × baseline |");
    println!("|---:|---|---:|---:|---:|---:|");
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.tracked == row.tracked && r.path == row.path.baseline())
            .expect("baseline measured");
        println!(
            "| {} | {} | {:.0} | {:.0}–{:.0} | {:+.0} | {:.1} |",
            thousands(row.tracked),
            row.path.label(),
            row.ns,
            row.min_ns,
            row.max_ns,
            row.ns - base.ns,
            row.ns / base.ns.max(1.0),
        );
    }
    println!();
}

// ---------------------------------------------------------------------------
// Part 2: a UDP flood over a veth pair.

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Filter {
    None,
    Xdp,
    NftIngress,
    NftInput,
}

impl Filter {
    fn label(self) -> &'static str {
        match self {
            Self::None => "no filter (closed port)",
            Self::Xdp => "XDP limiter (driver mode)",
            Self::NftIngress => "nftables meter, netdev `ingress`",
            Self::NftInput => "nftables meter, inet `input`",
        }
    }
}

struct FloodSample {
    /// Busy time of the whole machine (`/proc/stat`), ns per packet.
    machine_ns: f64,
    /// CPU time of the sender thread and of every `ksoftirqd`, ns per packet.
    flood_ns: f64,
    duration: Duration,
    rejected: u64,
    reached_udp: u64,
    steal_pct: f64,
}

struct FloodRow {
    sender: Sender,
    filter: Filter,
    samples: Vec<FloodSample>,
}

/// Removes the benchmark's nftables tables (on creation and on drop).
struct NftGuard;

impl NftGuard {
    fn new() -> Self {
        Self.clear();
        Self
    }

    fn clear(&self) {
        for (family, table) in NFT_TABLES {
            let _ = Command::new("nft")
                .args(["delete", "table", family, table])
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for NftGuard {
    fn drop(&mut self) {
        self.clear();
    }
}

fn nft_available() -> bool {
    Command::new("nft")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The nftables equivalent of `rate = 10, burst = 5` on port 8080.
fn nft_rules(filter: Filter, host_if: &str) -> String {
    let body = format!(
        "udp dport {PORT} meter fe_meter {{ ip saddr limit rate 10/second burst 5 packets }} accept\n\
         udp dport {PORT} drop"
    );
    match filter {
        Filter::NftIngress => format!(
            "table netdev fe_bench_ingress {{\n chain ingress {{\n  type filter hook ingress \
             device \"{host_if}\" priority 0;\n  {body}\n }}\n}}\n"
        ),
        Filter::NftInput => format!(
            "table inet fe_bench_input {{\n chain input {{\n  type filter hook input priority \
             0;\n  {body}\n }}\n}}\n"
        ),
        _ => unreachable!("not an nftables filter"),
    }
}

fn nft_load(rules: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .context("running nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(rules.as_bytes())?;
    ensure!(child.wait()?.success(), "nft rejected:\n{rules}");
    Ok(())
}

/// Removes namespaces of earlier runs of this benchmark that were killed.
fn remove_stale_namespaces() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let prefix = format!("fe-{NS_TAG}-");
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", name]).status();
        }
    }
}

/// How the flood's frames reach the host-side veth.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Sender {
    /// `AF_PACKET` + `sendmmsg`: frames arrive as socket buffers. veth must
    /// copy each into a page with XDP headroom before XDP can run on it.
    Skb,
    /// `BPF_PROG_TEST_RUN` in live-frame mode with an `XDP_REDIRECT` to the
    /// namespace's veth: frames arrive as XDP frames, like a NIC's receive
    /// buffers — XDP runs before any socket buffer exists, and the stack
    /// (no filter, nftables) builds one around the frame.
    XdpFrames,
}

impl Sender {
    fn label(self) -> &'static str {
        match self {
            Self::Skb => "frames sent as socket buffers (`AF_PACKET`)",
            Self::XdpFrames => "frames sent as XDP frames (live-frame `XDP_REDIRECT`)",
        }
    }
}

fn flood_bench(packets: u64, runs: usize) -> Result<Vec<FloodRow>> {
    remove_stale_namespaces();
    let ns = NetNs::new(NS_TAG, FLOOD_NET, 1);
    let nft = NftGuard::new();
    let mut filters = vec![Filter::None, Filter::Xdp];
    if nft_available() {
        filters.extend([Filter::NftIngress, Filter::NftInput]);
    } else {
        eprintln!("flood: `nft` not found (apt-get install nftables): nftables rows skipped");
    }

    let mut k = Loaded::new("bench-flood", &[programs::XDP, programs::BASELINE_PASS])?;
    k.apply("rate = 10\nburst = 5\n")?;

    let host_mac = mac(&std::fs::read_to_string(format!(
        "/sys/class/net/{}/address",
        ns.host_if()
    ))?)?;
    let mut packet = Packet::ipv4(ns.client_v4(0), ns.host_v4())
        .udp(40000, PORT)
        .payload(&[0; 18]);
    packet.dst_mac = host_mac;
    let frame = packet.build().bytes;
    let socket = ns.run(open_packet_socket)?;
    let redirect = ns.run(|| -> Result<OwnedFd> { raw_bpf::load_redirect(peer_ifindex()?) })?;
    let source = FloodSource {
        ns: &ns,
        socket: &socket,
        redirect: &redirect,
        frame: &frame,
        cpu: std::thread::available_parallelism().map_or(1, |n| n.get()) - 1,
    };

    let mut samples: BTreeMap<(Sender, Filter), Vec<FloodSample>> = BTreeMap::new();
    for sender in [Sender::Skb, Sender::XdpFrames] {
        eprintln!("flood: {}, warm-up", sender.label());
        let warm_up = attach_for(&mut k, sender, Filter::None, ns.host_if())?;
        let warm = source.flood(sender, packets / 10);
        detach(&mut k, warm_up)?;
        warm?;
        for run in 0..runs {
            for &filter in &filters {
                stop_requested()?;
                eprintln!(
                    "flood: {}, run {}/{runs}, {}",
                    sender.label(),
                    run + 1,
                    filter.label()
                );
                let links = attach_for(&mut k, sender, filter, ns.host_if())?;
                if matches!(filter, Filter::NftIngress | Filter::NftInput) {
                    nft_load(&nft_rules(filter, ns.host_if()))?;
                }
                std::thread::sleep(Duration::from_millis(200));
                let dropped_before = k.maps.counter(Counter::DroppedRate)?;
                let sample = measure_flood(&source, sender, packets);
                let xdp_drops = k.maps.counter(Counter::DroppedRate)? - dropped_before;
                detach(&mut k, links)?;
                nft.clear();
                let sample = sample?;
                // Every frame must have reached the filter under test.
                match filter {
                    Filter::Xdp => ensure!(
                        xdp_drops + 1000 >= packets,
                        "XDP dropped only {xdp_drops} of {packets} frames"
                    ),
                    Filter::None => ensure!(
                        sample.reached_udp + 1000 >= packets,
                        "only {} of {packets} frames reached UDP",
                        sample.reached_udp
                    ),
                    Filter::NftIngress | Filter::NftInput => {}
                }
                samples.entry((sender, filter)).or_default().push(sample);
            }
        }
    }
    Ok(samples
        .into_iter()
        .map(|((sender, filter), samples)| FloodRow {
            sender,
            filter,
            samples,
        })
        .collect())
}

/// Attaches what `filter` needs on the host veth for frames sent by
/// `sender`: the limiter for [`Filter::Xdp`]; for XDP frames and any other
/// filter, the `return XDP_PASS` baseline, without which veth refuses
/// redirected frames (it is what turns on the veth's XDP receive path).
fn attach_for(
    k: &mut Loaded,
    sender: Sender,
    filter: Filter,
    host_if: &str,
) -> Result<Option<(&'static str, aya::programs::xdp::XdpLinkId)>> {
    let program = match (sender, filter) {
        (_, Filter::Xdp) => programs::XDP,
        (Sender::XdpFrames, _) => programs::BASELINE_PASS,
        (Sender::Skb, _) => return Ok(None),
    };
    let link = k
        .xdp_mut(program)?
        .attach(host_if, XdpMode::Driver)
        .with_context(|| format!("attaching {program} in driver mode to {host_if}"))?;
    Ok(Some((program, link)))
}

fn detach(
    k: &mut Loaded,
    link: Option<(&'static str, aya::programs::xdp::XdpLinkId)>,
) -> Result<()> {
    if let Some((program, link)) = link {
        k.xdp_mut(program)?.detach(link)?;
    }
    Ok(())
}

/// The index of the namespace's veth (the calling thread's namespace).
fn peer_ifindex() -> Result<u32> {
    nix::net::if_::if_nameindex()?
        .iter()
        .find(|i| i.name().to_bytes() != b"lo")
        .map(|i| i.index())
        .context("no veth in the namespace")
}

fn mac(text: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = text
        .trim()
        .split(':')
        .map(|b| u8::from_str_radix(b, 16))
        .collect::<Result<_, _>>()?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad MAC {text}"))
}

fn measure_flood(source: &FloodSource<'_>, sender: Sender, packets: u64) -> Result<FloodSample> {
    let noports_before = udp_noports()?;
    let softirqd_before = ksoftirqd_ns()?;
    let stat_before = CpuTimes::read()?;
    let start = Instant::now();
    let sent = source.flood(sender, packets)?;
    let duration = start.elapsed();
    let stat_after = CpuTimes::read()?;
    let softirqd = ksoftirqd_ns()? - softirqd_before;
    let reached_udp = udp_noports()? - noports_before;
    let ns_per_tick = 1e9 / clock_ticks()?;
    let total = stat_after.total - stat_before.total;
    let busy = stat_after.busy - stat_before.busy;
    Ok(FloodSample {
        machine_ns: busy as f64 * ns_per_tick / packets as f64,
        flood_ns: (sent.thread_cpu.as_nanos() as f64 + softirqd as f64) / packets as f64,
        duration,
        rejected: sent.refused,
        reached_udp,
        steal_pct: 100.0 * (stat_after.steal - stat_before.steal) as f64 / total.max(1) as f64,
    })
}

struct Sent {
    /// `sendmmsg` calls the veth refused (receiver behind); resent.
    refused: u64,
    /// CPU time of the sending thread, which also runs the receive side's
    /// softirq work whenever it re-enables bottom halves.
    thread_cpu: Duration,
}

/// Everything a flood needs, for either [`Sender`].
struct FloodSource<'a> {
    ns: &'a NetNs,
    socket: &'a OwnedFd,
    redirect: &'a OwnedFd,
    frame: &'a [u8],
    /// The sender is pinned here.
    cpu: usize,
}

impl FloodSource<'_> {
    /// Sends `packets` copies of the frame as fast as possible from a
    /// thread pinned to `self.cpu`.
    fn flood(&self, sender: Sender, packets: u64) -> Result<Sent> {
        use nix::time::{ClockId, clock_gettime};
        let work = || -> Result<Sent> {
            let mut set = nix::sched::CpuSet::new();
            set.set(self.cpu)?;
            nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)?;
            let start = Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?);
            let refused = match sender {
                Sender::Skb => self.send_skbs(packets)?,
                Sender::XdpFrames => {
                    // Redirect targets are looked up in the caller's namespace.
                    let mut left = packets;
                    while left > 0 {
                        stop_requested()?;
                        let n = left.min(1 << 20);
                        raw_bpf::live_frames(self.redirect, self.frame, n as u32)?;
                        left -= n;
                    }
                    0
                }
            };
            let end = Duration::from(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?);
            Ok(Sent {
                refused,
                thread_cpu: end - start,
            })
        };
        match sender {
            Sender::Skb => std::thread::scope(|s| {
                s.spawn(work)
                    .join()
                    .map_err(|_| anyhow::anyhow!("flood thread panicked"))?
            }),
            Sender::XdpFrames => self.ns.run(work),
        }
    }

    fn send_skbs(&self, packets: u64) -> Result<u64> {
        let mut sender = MmsgSender::new(self.socket, self.frame);
        let mut sent = 0u64;
        let mut refused = 0u64;
        while sent < packets {
            if sent % 65536 < 64 {
                stop_requested()?;
            }
            let batch = (packets - sent).min(64) as usize;
            match sender.send(batch) {
                Ok(n) => sent += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => refused += 1,
                Err(e) => return Err(e).context("sendmmsg"),
            }
        }
        Ok(refused)
    }
}

/// An `AF_PACKET` socket bound to the namespace's veth, bypassing the qdisc:
/// the cheapest way to put a frame on the wire, so that the receive side
/// dominates the flood's cost.
#[expect(
    unsafe_code,
    reason = "AF_PACKET sockets have no safe wrapper in our dependencies"
)]
fn open_packet_socket() -> Result<OwnedFd> {
    let ifindex = peer_ifindex()?;
    // Protocol 0: the socket sends only, it receives nothing.
    // SAFETY: plain syscall; the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET)");
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: all-zero is a valid `sockaddr_ll`.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("bind(AF_PACKET)");
    }
    let one: libc::c_int = 1;
    // SAFETY: the option value is a c_int of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            (&raw const one).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context("PACKET_QDISC_BYPASS");
    }
    Ok(fd)
}

/// `sendmmsg` of up to 64 copies of one frame per call.
struct MmsgSender<'a> {
    socket: &'a OwnedFd,
    /// Boxed so that the headers' pointer to it stays valid.
    iov: Box<libc::iovec>,
    msgs: Vec<libc::mmsghdr>,
}

impl<'a> MmsgSender<'a> {
    #[expect(unsafe_code, reason = "building raw sendmmsg headers")]
    fn new(socket: &'a OwnedFd, frame: &'a [u8]) -> Self {
        let mut iov = Box::new(libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        });
        let iov_ptr: *mut libc::iovec = &mut *iov;
        let msgs = (0..64)
            .map(|_| {
                // SAFETY: all-zero is a valid `mmsghdr` (no name, no control).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov_ptr;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        Self { socket, iov, msgs }
    }

    #[expect(
        unsafe_code,
        reason = "sendmmsg has no safe wrapper in our dependencies"
    )]
    fn send(&mut self, batch: usize) -> std::io::Result<usize> {
        debug_assert!(batch <= self.msgs.len() && !self.iov.iov_base.is_null());
        // SAFETY: `msgs` holds `batch` valid headers pointing at `iov`,
        // which points at the frame; all outlive the call.
        let n = unsafe {
            libc::sendmmsg(
                self.socket.as_raw_fd(),
                self.msgs.as_mut_ptr(),
                batch as u32,
                0,
            )
        };
        if n < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }
}

/// The whole machine's line of `/proc/stat`, in clock ticks.
#[derive(Clone, Copy, Default)]
struct CpuTimes {
    /// user + system + irq + softirq.
    busy: u64,
    steal: u64,
    total: u64,
}

impl CpuTimes {
    fn read() -> Result<Self> {
        let text = std::fs::read_to_string("/proc/stat")?;
        let line = text
            .lines()
            .find(|l| l.starts_with("cpu "))
            .context("no cpu line in /proc/stat")?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        ensure!(v.len() >= 8, "short /proc/stat line: {line}");
        // user nice system idle iowait irq softirq steal
        Ok(Self {
            busy: v[0] + v[2] + v[5] + v[6],
            steal: v[7],
            total: v[..8].iter().sum(),
        })
    }
}

/// CPU time (ns) of every `ksoftirqd/N` thread, from `/proc/<pid>/schedstat`:
/// softirq work the kernel deferred out of the sender's context.
fn ksoftirqd_ns() -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir("/proc")? {
        let path = entry?.path();
        let is_softirqd =
            std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c.starts_with("ksoftirqd/"));
        if !is_softirqd {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat"))?;
        total += stat
            .split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse::<u64>()?;
    }
    Ok(total)
}

fn clock_ticks() -> Result<f64> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?.context("CLK_TCK")?;
    Ok(hz as f64)
}

/// `Udp: NoPorts` of the root namespace: datagrams that reached UDP and
/// found no socket.
fn udp_noports() -> Result<u64> {
    let snmp = std::fs::read_to_string("/proc/net/snmp")?;
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp:"));
    let (names, values) = (
        udp.next().context("no Udp header")?,
        udp.next().context("no Udp values")?,
    );
    let at = names
        .split_whitespace()
        .position(|n| n == "NoPorts")
        .context("no NoPorts")?;
    Ok(values
        .split_whitespace()
        .nth(at)
        .context("short Udp line")?
        .parse()?)
}

fn print_flood(rows: &[FloodRow], packets: u64, runs: usize) {
    println!("## Per dropped packet, UDP flood over a veth pair\n");
    println!(
        "{} 60-byte UDP frames from one source address in a namespace, as fast as one pinned \
         CPU sends them, to port {PORT} on the host side of a veth pair; limit 10 packets/s, \
         burst 5 per source (XDP: `rate = 10, burst = 5`; nftables: `meter {{ ip saddr limit \
         rate 10/second burst 5 packets }}`), so all but a handful are dropped. Median of \
         {runs} interleaved runs; CPU time is divided by the frames sent, the sender's own \
         cost included.\n\n\
         - *flood CPU*: CPU time of the sending thread (which also runs the veth's receive \
         softirq) plus every `ksoftirqd` (`CLOCK_THREAD_CPUTIME_ID`, `/proc/<pid>/schedstat`): \
         precise, and blind to other processes.\n\
         - *machine CPU*: user + system + irq + softirq ticks of all CPUs from `/proc/stat`: \
         everything, other tenants' work included.\n",
        thousands(packets)
    );
    let median_of =
        |row: &FloodRow, f: fn(&FloodSample) -> f64| median(row.samples.iter().map(f).collect());
    for sender in [Sender::Skb, Sender::XdpFrames] {
        let rows: Vec<&FloodRow> = rows.iter().filter(|r| r.sender == sender).collect();
        if rows.is_empty() {
            continue;
        }
        let xdp = rows.iter().find(|r| r.filter == Filter::Xdp);
        let ratio = |row: &FloodRow, f: fn(&FloodSample) -> f64| {
            xdp.map_or("–".into(), |x| {
                format!("{:.2}", median_of(row, f) / median_of(x, f))
            })
        };
        println!("### {}\n", sender.label());
        println!(
            "| configuration | flood CPU ns/pkt | × XDP | machine CPU ns/pkt | × XDP | duration | Mpps | reached UDP |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let dur = median_of(row, |s| s.duration.as_secs_f64());
            println!(
                "| {} | {:.0} | {} | {:.0} | {} | {:.0} ms | {:.2} | {} |",
                row.filter.label(),
                median_of(row, |s| s.flood_ns),
                ratio(row, |s| s.flood_ns),
                median_of(row, |s| s.machine_ns),
                ratio(row, |s| s.machine_ns),
                dur * 1e3,
                packets as f64 / dur / 1e6,
                thousands(median_of(row, |s| s.reached_udp as f64) as u64),
            );
        }
        println!();
    }
    let refused: u64 = rows
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.rejected))
        .sum();
    let steal = rows
        .iter()
        .flat_map(|r| r.samples.iter().map(|s| s.steal_pct))
        .fold(0.0, f64::max);
    println!(
        "`sendmmsg` calls refused by the veth (and retried): {refused}. Highest steal time \
         during a run: {steal:.1} %.\n"
    );
    println!("Every run, in order (flood CPU / machine CPU ns per frame, duration):\n");
    for row in rows {
        let runs: Vec<String> = row
            .samples
            .iter()
            .map(|s| {
                format!(
                    "{:.0} / {:.0} ns, {:.0} ms",
                    s.flood_ns,
                    s.machine_ns,
                    s.duration.as_secs_f64() * 1e3
                )
            })
            .collect();
        let sender = match row.sender {
            Sender::Skb => "socket buffers",
            Sender::XdpFrames => "XDP frames",
        };
        println!("- {sender}, {}: {}", row.filter.label(), runs.join("; "));
    }
    println!();
}

// ---------------------------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push('\u{202f}');
        }
        out.push(c);
    }
    out
}

fn stop_requested() -> Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

extern "C" fn on_stop(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C / SIGTERM set a flag that the loops check, so that every guard
/// (namespace, nftables tables, pins, XDP links) is dropped normally.
#[expect(unsafe_code, reason = "installing a signal handler")]
fn install_stop_handler() {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(
        SigHandler::Handler(on_stop),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        let _ = unsafe { sigaction(sig, &action) };
    }
}

/// The flood's XDP-frame sender: a four-instruction XDP program
/// (`return bpf_redirect(ifindex, 0)`) run by `BPF_PROG_TEST_RUN` in
/// live-frame mode. aya has no API to load raw instructions, hence the
/// raw `bpf()` calls.
mod raw_bpf {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    use anyhow::{Context as _, Result};

    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_TEST_RUN: libc::c_long = 10;
    const BPF_PROG_TYPE_XDP: u32 = 6;
    const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;
    const BPF_FUNC_REDIRECT: i32 = 23;
    /// Larger than `union bpf_attr`; the kernel wants the tail zeroed.
    const ATTR_LEN: usize = 256;
    /// Frames per batch; the veth ring holds 256.
    const BATCH: u32 = 64;

    /// One `struct bpf_insn`.
    fn insn(code: u8, dst: u8, imm: i32) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = code;
        b[1] = dst & 0x0f;
        b[4..].copy_from_slice(&imm.to_ne_bytes());
        b
    }

    fn put_u32(attr: &mut [u8; ATTR_LEN], at: usize, v: u32) {
        attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
    }

    fn put_u64(attr: &mut [u8; ATTR_LEN], at: usize, v: u64) {
        attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
    }

    #[expect(unsafe_code, reason = "the bpf() syscall has no safe wrapper")]
    fn bpf(cmd: libc::c_long, attr: &mut [u8; ATTR_LEN]) -> std::io::Result<libc::c_long> {
        // SAFETY: `attr` is a zeroed `union bpf_attr` image of `ATTR_LEN`
        // bytes whose pointers (set by the callers) outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                cmd,
                attr.as_mut_ptr(),
                ATTR_LEN as libc::c_uint,
            )
        };
        if rc < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(rc)
        }
    }

    /// Loads `r1 = ifindex; r2 = 0; call bpf_redirect; exit`.
    #[expect(unsafe_code, reason = "owning the descriptor bpf() returned")]
    pub fn load_redirect(ifindex: u32) -> Result<OwnedFd> {
        let insns: Vec<u8> = [
            insn(0xb7, 1, ifindex as i32), // mov64 r1, ifindex
            insn(0xb7, 2, 0),              // mov64 r2, 0
            insn(0x85, 0, BPF_FUNC_REDIRECT),
            insn(0x95, 0, 0), // exit
        ]
        .concat();
        let license = c"GPL";
        let mut attr = [0u8; ATTR_LEN];
        put_u32(&mut attr, 0, BPF_PROG_TYPE_XDP);
        put_u32(&mut attr, 4, (insns.len() / 8) as u32);
        put_u64(&mut attr, 8, insns.as_ptr() as u64);
        put_u64(&mut attr, 16, license.as_ptr() as u64);
        attr[48..48 + 14].copy_from_slice(b"fe_bench_redir");
        let fd = bpf(BPF_PROG_LOAD, &mut attr).context("loading the redirect program")?;
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that we now own.
        Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
    }

    /// Sends `count` copies of `frame` through `prog` in live-frame mode.
    pub fn live_frames(prog: &OwnedFd, frame: &[u8], count: u32) -> Result<()> {
        let mut attr = [0u8; ATTR_LEN];
        put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
        put_u32(&mut attr, 8, frame.len() as u32);
        put_u64(&mut attr, 16, frame.as_ptr() as u64);
        put_u32(&mut attr, 32, count);
        put_u32(&mut attr, 64, BPF_F_TEST_XDP_LIVE_FRAMES);
        put_u32(&mut attr, 72, BATCH);
        bpf(BPF_PROG_TEST_RUN, &mut attr).context("live-frame test run")?;
        Ok(())
    }
}
