//! Kernel counters as Prometheus metrics, read from the maps at scrape time
//! (summed over CPUs) — nothing is copied on the packet path.

use std::sync::Mutex;

use fraiseql_edge_common::Counter;
use prometheus::{
    IntCounterVec, IntGauge, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::KernelMaps;

/// The collector; register it into the daemon's registry.
pub struct KernelCollector {
    maps: Mutex<KernelMaps>,
    packets: IntCounterVec,
    clients: IntCounterVec,
    connections: IntCounterVec,
    map_full: IntCounterVec,
    count_errors: IntCounterVec,
    events_lost: IntCounterVec,
    blocked: IntGauge,
}

impl KernelCollector {
    /// A collector over `maps` (typically opened from the pins).
    pub fn new(maps: KernelMaps) -> prometheus::Result<Self> {
        let p = "fraiseql_edge_kernel_";
        Ok(Self {
            maps: Mutex::new(maps),
            packets: IntCounterVec::new(
                Opts::new(
                    format!("{p}packets_total"),
                    "Packets seen by the XDP program, by verdict",
                ),
                &["verdict"],
            )?,
            clients: IntCounterVec::new(
                Opts::new(
                    format!("{p}clients_total"),
                    "Clients first seen by the XDP program",
                ),
                &[],
            )?,
            connections: IntCounterVec::new(
                Opts::new(
                    format!("{p}connections_total"),
                    "TCP connections on protected ports counted by the tracker, by event",
                ),
                &["event"],
            )?,
            map_full: IntCounterVec::new(
                Opts::new(
                    format!("{p}map_full_total"),
                    "Inserts refused because a kernel map was full, by map (never silent: \
                     the connection is then admitted uncounted or unreserved)",
                ),
                &["map"],
            )?,
            count_errors: IntCounterVec::new(
                Opts::new(
                    format!("{p}connection_count_errors_total"),
                    "Connection-count updates refused (a decrement below zero, or three lost races)",
                ),
                &[],
            )?,
            events_lost: IntCounterVec::new(
                Opts::new(
                    format!("{p}drop_events_lost_total"),
                    "Drop events lost (ring buffer full)",
                ),
                &[],
            )?,
            blocked: IntGauge::new(format!("{p}blocked_clients"), "Entries in the block list")?,
        })
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        [
            self.packets.desc(),
            self.clients.desc(),
            self.connections.desc(),
            self.map_full.desc(),
            self.count_errors.desc(),
            self.events_lost.desc(),
            self.blocked.desc(),
        ]
        .concat()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        for (counter, name) in Counter::ALL {
            let Ok(value) = maps.counter(counter) else {
                return Vec::new();
            };
            let set = |c: &prometheus::IntCounter| c.inc_by(value.saturating_sub(c.get()));
            match counter {
                Counter::NewClients => set(&self.clients.with_label_values::<&str>(&[])),
                Counter::EventsLost => set(&self.events_lost.with_label_values::<&str>(&[])),
                Counter::ConnOpened => set(&self.connections.with_label_values(&["opened"])),
                Counter::ConnClosed => set(&self.connections.with_label_values(&["closed"])),
                Counter::ConnPendingExpired => {
                    set(&self.connections.with_label_values(&["handshake_expired"]))
                }
                Counter::ConnCountsFull => set(&self.map_full.with_label_values(&["conn_counts"])),
                Counter::ConnSocksFull => set(&self.map_full.with_label_values(&["conn_socks"])),
                Counter::ConnPendingFull => {
                    set(&self.map_full.with_label_values(&["conn_pending"]))
                }
                Counter::ConnCountErrors => set(&self.count_errors.with_label_values::<&str>(&[])),
                _ => set(&self.packets.with_label_values(&[name])),
            }
        }
        self.blocked
            .set(maps.blocks().map_or(0, |b| b.len() as i64));
        [
            self.packets.collect(),
            self.clients.collect(),
            self.connections.collect(),
            self.map_full.collect(),
            self.count_errors.collect(),
            self.events_lost.collect(),
            self.blocked.collect(),
        ]
        .concat()
    }
}
