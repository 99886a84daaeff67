//! Kernel counters as Prometheus metrics, read from the maps at scrape time
//! (summed over CPUs) — nothing is copied on the packet path.
//!
//! The collector reads a [`Snapshot`] of the maps and the pinned links, then
//! [`KernelMetrics`] turns it into metric families; the second half runs
//! without BPF, which is how the catalogue test sees every family.

use std::{
    path::{Path, PathBuf},
    sync::Mutex,
};

use fraiseql_edge_common::Counter;
use prometheus::{
    Gauge, GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    core::{Collector, Desc},
    proto::MetricFamily,
};

use super::{KernelMaps, MapFill, xdp_link_name};

/// What one scrape reads from the kernel.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every counter of the stats array, summed over CPUs.
    pub counters: Vec<(Counter, u64)>,
    /// Connection slots held (live connections plus handshakes in flight).
    pub conn_slots: u64,
    /// Fill of every bounded map.
    pub fill: Vec<MapFill>,
    /// Configured interfaces and whether their pinned XDP link exists.
    pub attached: Vec<(String, bool)>,
}

/// The kernel layer's metric families, set from a [`Snapshot`].
pub struct KernelMetrics {
    packets: IntCounterVec,
    clients: IntCounterVec,
    connections: IntCounterVec,
    map_full: IntCounterVec,
    count_errors: IntCounterVec,
    events_lost: IntCounterVec,
    blocked: IntGauge,
    tracked_clients: IntGauge,
    conn_slots: IntGauge,
    pending: IntGauge,
    fill: GaugeVec,
    attached: IntGaugeVec,
    up: Gauge,
}

impl KernelMetrics {
    /// Creates the families (registered nowhere: [`KernelCollector`] returns them).
    pub fn new() -> prometheus::Result<Self> {
        let p = "fraiseql_edge_kernel_";
        Ok(Self {
            packets: IntCounterVec::new(
                Opts::new(
                    format!("{p}packets_total"),
                    "Packets seen by the XDP program, by verdict (passed, or dropped and why)",
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
            tracked_clients: IntGauge::new(
                format!("{p}tracked_clients"),
                "Clients with a token bucket in the kernel's client map",
            )?,
            conn_slots: IntGauge::new(
                format!("{p}connection_slots"),
                "Connection slots held on protected ports: live connections plus admitted handshakes in flight",
            )?,
            pending: IntGauge::new(
                format!("{p}pending_handshakes"),
                "Admitted handshakes in flight holding a connection slot",
            )?,
            fill: GaugeVec::new(
                Opts::new(
                    format!("{p}map_fill_ratio"),
                    "Entries over capacity of each bounded kernel map",
                ),
                &["map"],
            )?,
            attached: IntGaugeVec::new(
                Opts::new(
                    format!("{p}program_attached"),
                    "1 while the XDP program's pinned link on the interface exists",
                ),
                &["interface"],
            )?,
            up: Gauge::new(
                format!("{p}maps_readable"),
                "1 if this scrape could read the kernel maps (0: kernel values are stale)",
            )?,
        })
    }

    /// Sets every family from `s` (`None`: the maps could not be read; the
    /// counters keep their last values).
    pub fn set(&self, s: Option<&Snapshot>) {
        let Some(s) = s else {
            self.up.set(0.0);
            return;
        };
        self.up.set(1.0);
        let set = |c: &prometheus::IntCounter, value: u64| c.inc_by(value.saturating_sub(c.get()));
        for &(counter, value) in &s.counters {
            match counter {
                Counter::NewClients => set(&self.clients.with_label_values::<&str>(&[]), value),
                Counter::EventsLost => set(&self.events_lost.with_label_values::<&str>(&[]), value),
                Counter::ConnOpened => set(&self.connections.with_label_values(&["opened"]), value),
                Counter::ConnClosed => set(&self.connections.with_label_values(&["closed"]), value),
                Counter::ConnPendingExpired => set(
                    &self.connections.with_label_values(&["handshake_expired"]),
                    value,
                ),
                Counter::ConnCountsFull => {
                    set(&self.map_full.with_label_values(&["conn_counts"]), value)
                }
                Counter::ConnSocksFull => {
                    set(&self.map_full.with_label_values(&["conn_socks"]), value)
                }
                Counter::ConnPendingFull => {
                    set(&self.map_full.with_label_values(&["conn_pending"]), value)
                }
                Counter::ConnCountErrors => {
                    set(&self.count_errors.with_label_values::<&str>(&[]), value)
                }
                _ => set(&self.packets.with_label_values(&[counter.name()]), value),
            }
        }
        let gauge = |g: &IntGauge, value: u64| g.set(i64::try_from(value).unwrap_or(i64::MAX));
        gauge(&self.conn_slots, s.conn_slots);
        for f in &s.fill {
            self.fill.with_label_values(&[f.map]).set(f.ratio());
            match f.map {
                "clients" => gauge(&self.tracked_clients, f.entries),
                "blocks" => gauge(&self.blocked, f.entries),
                "conn_pending" => gauge(&self.pending, f.entries),
                _ => {}
            }
        }
        for (interface, attached) in &s.attached {
            self.attached
                .with_label_values(&[interface])
                .set(i64::from(*attached));
        }
    }

    fn families(&self) -> Vec<MetricFamily> {
        [
            self.packets.collect(),
            self.clients.collect(),
            self.connections.collect(),
            self.map_full.collect(),
            self.count_errors.collect(),
            self.events_lost.collect(),
            self.blocked.collect(),
            self.tracked_clients.collect(),
            self.conn_slots.collect(),
            self.pending.collect(),
            self.fill.collect(),
            self.attached.collect(),
            self.up.collect(),
        ]
        .concat()
    }

    /// The families' descriptors.
    pub fn descs(&self) -> Vec<&Desc> {
        [
            self.packets.desc(),
            self.clients.desc(),
            self.connections.desc(),
            self.map_full.desc(),
            self.count_errors.desc(),
            self.events_lost.desc(),
            self.blocked.desc(),
            self.tracked_clients.desc(),
            self.conn_slots.desc(),
            self.pending.desc(),
            self.fill.desc(),
            self.attached.desc(),
            self.up.desc(),
        ]
        .concat()
    }
}

/// The collector; register it into the daemon's registry.
pub struct KernelCollector {
    maps: Mutex<KernelMaps>,
    metrics: KernelMetrics,
    /// Where the links are pinned, and the interfaces they should be on.
    links: Option<(PathBuf, Vec<String>)>,
}

impl KernelCollector {
    /// A collector over `maps` (typically opened from the pins).
    pub fn new(maps: KernelMaps) -> prometheus::Result<Self> {
        Ok(Self {
            maps: Mutex::new(maps),
            metrics: KernelMetrics::new()?,
            links: None,
        })
    }

    /// Also reports whether the XDP link of each of `interfaces` is still
    /// pinned under `pin_path` (`kernel_program_attached`).
    #[must_use]
    pub fn with_interfaces(mut self, pin_path: &Path, interfaces: Vec<String>) -> Self {
        self.links = Some((pin_path.to_path_buf(), interfaces));
        self
    }

    fn snapshot(&self) -> Option<Snapshot> {
        let maps = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let counters = Counter::ALL
            .iter()
            .map(|&(c, _)| maps.counter(c).map(|v| (c, v)))
            .collect::<Result<Vec<_>, _>>()
            .ok()?;
        let attached = self.links.as_ref().map_or_else(Vec::new, |(pins, ifaces)| {
            ifaces
                .iter()
                .map(|i| (i.clone(), pins.join(xdp_link_name(i)).exists()))
                .collect()
        });
        Some(Snapshot {
            counters,
            conn_slots: maps.conn_slots(),
            fill: maps.fill().to_vec(),
            attached,
        })
    }
}

impl Collector for KernelCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.metrics.descs()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.metrics.set(self.snapshot().as_ref());
        self.metrics.families()
    }
}

/// Every family of the collector, as a scrape with the maps readable shows
/// them, and the names of all it describes (for the catalogue test in
/// `crate::metrics`).
#[cfg(test)]
pub(crate) fn catalogue_families() -> (Vec<MetricFamily>, Vec<String>) {
    let m = KernelMetrics::new().expect("metrics");
    let names = m.descs().iter().map(|d| d.fq_name.clone()).collect();
    let fill = [
        "clients",
        "conn_counts",
        "conn_socks",
        "conn_pending",
        "blocks",
        "overrides",
    ]
    .map(|map| MapFill {
        map,
        entries: 0,
        capacity: 1,
    });
    m.set(Some(&Snapshot {
        counters: Counter::ALL.iter().map(|&(c, _)| (c, 0)).collect(),
        fill: fill.to_vec(),
        attached: vec![("eth0".into(), true)],
        ..Snapshot::default()
    }));
    (m.families(), names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_sets_counters_gauges_and_ratios() {
        let m = KernelMetrics::new().expect("metrics");
        let mut counters: Vec<_> = Counter::ALL.iter().map(|&(c, _)| (c, 0)).collect();
        counters[Counter::DroppedRate as usize].1 = 7;
        m.set(Some(&Snapshot {
            counters,
            fill: vec![MapFill {
                map: "clients",
                entries: 3,
                capacity: 4,
            }],
            attached: vec![("eth0".into(), true), ("eth1".into(), false)],
            ..Snapshot::default()
        }));
        assert_eq!(m.packets.with_label_values(&["dropped_rate"]).get(), 7);
        assert_eq!(m.tracked_clients.get(), 3);
        assert!((m.fill.with_label_values(&["clients"]).get() - 0.75).abs() < 1e-9);
        assert_eq!(m.attached.with_label_values(&["eth1"]).get(), 0);
        assert!((m.up.get() - 1.0).abs() < f64::EPSILON);
        // Unreadable maps: the counters keep their values, `maps_readable` 0.
        m.set(None);
        assert_eq!(m.packets.with_label_values(&["dropped_rate"]).get(), 7);
        assert!(m.up.get().abs() < f64::EPSILON);
    }
}
