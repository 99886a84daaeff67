//! One `BPF_PROG_TEST_RUN` call per packet, so that every packet can come
//! from a different client.
//!
//! A test run repeats one frame: with `repeat` = 1 000 000 a single client's
//! map entries stay in the CPU caches, whatever the map holds. A flood from
//! many (or spoofed) sources is different: each packet looks up a client
//! that nothing touched since its last packet. Here each call carries one
//! frame (`repeat` = 1) whose source is the next of the [`MOST_TRACKED`]
//! clients in the map; the runs together walk the whole list once, so no
//! client is seen twice and every lookup lands on a cold entry.
//!
//! A call's `duration` covers one run plus the per-call work around it
//! (timer reads, softirqs off and on). The baseline `return XDP_PASS` and
//! the limiter with one hot client are measured the same way, so the rows
//! compare side by side: *hot vs. baseline* is the program, *distinct vs.
//! hot* is the cache misses.

use std::{collections::BTreeMap, time::Instant};

use anyhow::{Result, ensure};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use fraiseql_edge_common::{Counter, programs};
use fraiseql_edge_tests::frames::{ETH_HLEN, internet_checksum};

use super::{
    CLIENT, Loaded, MOST_TRACKED, Scenario, TestRunRow, UNLIMITED, XDP_PASS, stop_requested,
    tracked_client,
};

/// The paths, in the order each run measures them.
const PATHS: [Scenario; 3] = [
    Scenario::BaselineOnce,
    Scenario::PassOnce,
    Scenario::PassDistinct,
];

/// Calls per path and run: `runs` runs walk the tracked clients once.
pub fn calls_per_run(runs: usize) -> u32 {
    let runs = runs.max(1) as u64;
    u32::try_from(MOST_TRACKED.div_ceil(runs)).expect("fewer than 2^32 calls")
}

/// Measures [`PATHS`] `runs` times, interleaved, with [`MOST_TRACKED`]
/// clients in the map; `frame` is the UDP frame of the other rows.
pub fn measure(k: &mut Loaded, frame: &[u8], runs: usize) -> Result<Vec<TestRunRow>> {
    let started = Instant::now();
    let runs = runs.max(1);
    let calls = calls_per_run(runs);
    let mut frame = frame.to_vec();
    ensure!(frame[ETH_HLEN] == 0x45, "an IPv4 frame without options");
    // The source changes per call: UDP checksum 0 ("none", valid in IPv4).
    frame[ETH_HLEN + 26..ETH_HLEN + 28].fill(0);
    k.apply(UNLIMITED)?;
    // The client comes from the empty-bucket rows: after a reload to wider
    // limits it continues from an empty bucket, refilled at 10^9/s. One
    // packet and a pause let the refill catch up before anything is timed.
    set_source(&mut frame, CLIENT.octets());
    k.xdp(programs::XDP)?.test_run(TestRunOptions {
        data_in: Some(&frame),
        ..TestRunOptions::new()
    })?;
    std::thread::sleep(std::time::Duration::from_millis(20));
    let new_clients = k.maps.counter(Counter::NewClients)?;
    eprintln!(
        "test-run: one call per packet, {} calls per path and run",
        calls
    );

    let mut samples: BTreeMap<Scenario, Vec<f64>> = BTreeMap::new();
    for run in 0..runs {
        // This run's stretch of the tracked clients.
        let first = run as u64 * u64::from(calls);
        let distinct = |j: u32| tracked_client((first + u64::from(j)) % MOST_TRACKED);
        for path in PATHS {
            let passed = k.maps.counter(Counter::Passed)?;
            let ns = match path {
                // The baseline gets the same frames as the distinct path.
                Scenario::BaselineOnce => {
                    mean_ns(k.xdp(programs::BASELINE_PASS)?, &mut frame, calls, distinct)?
                }
                Scenario::PassOnce => mean_ns(k.xdp(programs::XDP)?, &mut frame, calls, |_| {
                    CLIENT.octets()
                })?,
                Scenario::PassDistinct => {
                    mean_ns(k.xdp(programs::XDP)?, &mut frame, calls, distinct)?
                }
                other => unreachable!("{other:?} is not measured per call"),
            };
            if path != Scenario::BaselineOnce {
                let n = k.maps.counter(Counter::Passed)? - passed;
                ensure!(
                    n == u64::from(calls),
                    "{path:?}: passed moved by {n}, not {calls}"
                );
            }
            samples.entry(path).or_default().push(ns);
        }
    }
    // Clients evicted from the LRU map since they were inserted come back as new.
    let missing = k.maps.counter(Counter::NewClients)? - new_clients;
    eprintln!(
        "test-run: one call per packet: {missing} of {} distinct clients were no longer in \
         the map; {:.1?}",
        u64::from(calls) * runs as u64,
        started.elapsed()
    );
    Ok(samples
        .into_iter()
        .map(|(path, s)| TestRunRow::new(MOST_TRACKED, path, s))
        .collect())
}

/// `calls` test runs of one frame each, the `j`-th from `source(j)`: the
/// mean of the kernel's `duration` per run, in ns.
fn mean_ns(
    xdp: &Xdp,
    frame: &mut [u8],
    calls: u32,
    source: impl Fn(u32) -> [u8; 4],
) -> Result<f64> {
    let mut total = 0u128;
    for j in 0..calls {
        if j % 65536 == 0 {
            stop_requested()?;
        }
        set_source(frame, source(j));
        let r = xdp.test_run(TestRunOptions {
            data_in: Some(frame),
            ..TestRunOptions::new()
        })?;
        ensure!(
            r.return_value == XDP_PASS,
            "verdict {} instead of XDP_PASS",
            r.return_value
        );
        total += r.duration.as_nanos();
    }
    Ok(total as f64 / f64::from(calls))
}

/// Writes the IPv4 source address and the header checksum.
fn set_source(frame: &mut [u8], src: [u8; 4]) {
    let ip = ETH_HLEN;
    frame[ip + 12..ip + 16].copy_from_slice(&src);
    frame[ip + 10..ip + 12].fill(0);
    let sum = internet_checksum(&frame[ip..ip + 20]);
    frame[ip + 10..ip + 12].copy_from_slice(&sum.to_be_bytes());
}
