//! The demo's once-a-second table.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::kernel::ClientStats;
use super::traffic::{Client, Counters};

/// Counters read at one moment.
#[derive(Clone, Default)]
pub struct Snapshot {
    pub sent: Vec<u64>,
    pub received: Vec<u64>,
    pub received_other: u64,
}

impl Snapshot {
    pub fn take(counters: &Counters) -> Self {
        let read = |v: &[std::sync::atomic::AtomicU64]| {
            v.iter().map(|c| c.load(Ordering::Relaxed)).collect()
        };
        // Received first, so a packet in flight never shows received > sent.
        let received = read(&counters.received);
        let received_other = counters.received_other.load(Ordering::Relaxed);
        Snapshot {
            sent: read(&counters.sent),
            received,
            received_other,
        }
    }
}

/// What the kernel reported, when the daemon runs.
pub struct KernelView {
    pub clients: BTreeMap<IpAddr, ClientStats>,
    pub stats: Vec<(String, u64)>,
}

/// Prints the table for `label` (e.g. `t=5s`); `before` is the snapshot one
/// second earlier, for the received-per-second column.
pub fn print(
    label: &str,
    clients: &[Client],
    now: &Snapshot,
    before: &Snapshot,
    kernel: Option<&KernelView>,
) {
    println!();
    println!(
        "{label:<7} {:<13} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10}  note",
        "client", "target/s", "sent", "received", "recv/s", "k.passed", "k.dropped"
    );
    for (i, client) in clients.iter().enumerate() {
        let per_second =
            now.received[i].saturating_sub(before.received.get(i).copied().unwrap_or(0));
        let stats = kernel.map(|k| {
            k.clients
                .get(&IpAddr::V4(client.addr))
                .copied()
                .unwrap_or_default()
        });
        let (passed, dropped) = match stats {
            Some(s) => (s.passed.to_string(), s.dropped.to_string()),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "{:<7} {:<13} {:>8} {:>10} {:>10} {:>7} {:>10} {:>10}  {}",
            "",
            client.addr,
            client.rate,
            now.sent[i],
            now.received[i],
            per_second,
            passed,
            dropped,
            client.note
        );
    }
    if now.received_other > 0 {
        println!(
            "{:<7} received from other addresses: {}",
            "", now.received_other
        );
    }
    if let Some(kernel) = kernel {
        let totals: Vec<String> = kernel
            .stats
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("{:<7} kernel totals: {}", "", totals.join(" "));
    }
}

/// One closing line per client: how much of what it sent got through.
pub fn print_summary(clients: &[Client], last: &Snapshot, seconds: f64) {
    println!();
    for (i, client) in clients.iter().enumerate() {
        let (sent, received) = (last.sent[i], last.received[i]);
        let share = if sent == 0 {
            0.0
        } else {
            100.0 * received as f64 / sent as f64
        };
        println!(
            "demo: {:<13} sent {sent:>8}, the server received {received:>8} ({share:5.1}%, {:.0}/s on average) — {}",
            client.addr.to_string(),
            received as f64 / seconds.max(1.0),
            client.note
        );
    }
}
