//! Map names, map value types and counter indices shared by kernel and user space.

/// Client key: the source address as 16 bytes. IPv4 addresses are stored
/// IPv4-mapped (`::ffff:a.b.c.d`) so one key type and one LPM trie cover both
/// families; IPv6 addresses may be masked to their /64 (see [`GlobalConfig`]).
pub type ClientKey = [u8; 16];

/// Names of the maps in the object file (and of their pins under bpffs).
pub mod maps {
    /// `Array<GlobalConfig>`, one entry: limits, flags and the protected ports.
    pub const CONFIG: &str = "EDGE_CONFIG";
    /// `HashMap<ClientKey, u64>`: block expiry (CLOCK_MONOTONIC ns; `u64::MAX` = no expiry).
    pub const BLOCKS: &str = "EDGE_BLOCKS";
    /// `LpmTrie<ClientKey, Override>` over IPv4-mapped and IPv6 keys.
    pub const OVERRIDES: &str = "EDGE_OVERRIDES";
    /// `LruHashMap<ClientKey, ClientState>`: per-client bucket and counters.
    pub const CLIENTS: &str = "EDGE_CLIENTS";
    /// `HashMap<ClientKey, ConnCount>`: connection slots held per client —
    /// live connections plus admitted handshakes in flight (never LRU).
    pub const CONN_COUNTS: &str = "EDGE_CONN_COUNTS";
    /// `HashMap<u64, ClientKey>`: socket address → client, for idempotent counting.
    pub const CONN_SOCKS: &str = "EDGE_CONN_SOCKS";
    /// `HashMap<FlowKey, PendingConn>`: SYNs admitted by the connection cap
    /// whose handshake has not completed; each holds one slot.
    pub const CONN_PENDING: &str = "EDGE_CONN_PENDING";
    /// `Array<TrackerConfig>`, one entry: where the tracker reads its fields.
    pub const TRACKER: &str = "EDGE_TRACKER";
    /// `PerCpuArray<u64>` indexed by [`super::Counter`].
    pub const STATS: &str = "EDGE_STATS";
    /// `RingBuf` of [`super::DropEvent`].
    pub const EVENTS: &str = "EDGE_EVENTS";
    /// Every map the daemon pins, in one list.
    pub const ALL: [&str; 10] = [
        CONFIG,
        TRACKER,
        BLOCKS,
        OVERRIDES,
        CLIENTS,
        CONN_COUNTS,
        CONN_SOCKS,
        CONN_PENDING,
        STATS,
        EVENTS,
    ];
}

/// Program names in the object file.
pub mod programs {
    /// The XDP enforcement program.
    pub const XDP: &str = "fraiseql_edge_xdp";
    /// The `sock/inet_sock_set_state` tracepoint that counts connections.
    pub const CONN_TRACKER: &str = "fraiseql_edge_conn";
    /// `return XDP_PASS`: the baseline of the kernel benchmark; never attached.
    pub const BASELINE_PASS: &str = "fraiseql_edge_baseline_pass";
    /// Releases one expired [`super::PendingConn`]: run by the daemon through
    /// `BPF_PROG_TEST_RUN` with a [`super::FlowKey`] as the packet, so the
    /// slot is returned with the same atomics the programs use. Never attached.
    pub const SWEEP: &str = "fraiseql_edge_sweep";
}

/// Capacity of the per-client LRU map.
pub const MAX_CLIENTS: u32 = 1 << 20;
/// Capacity of the connection-count maps (clients with live connections).
pub const MAX_CONN_CLIENTS: u32 = 1 << 18;
/// Capacity of the live-socket map (connections tracked at once).
pub const MAX_CONN_SOCKS: u32 = 1 << 20;
/// Capacity of the in-flight handshake map.
pub const MAX_CONN_PENDING: u32 = 1 << 18;
/// An admitted SYN holds its client's connection slot this long at most
/// when its handshake does not complete (the daemon then releases it).
/// Covers round trips of seconds and the client's SYN retransmissions at
/// 1 s and 3 s, which reuse the same reservation.
pub const PENDING_TIMEOUT_NS: u64 = 5_000_000_000;
/// Capacity of the block list.
pub const MAX_BLOCKS: u32 = 1 << 16;
/// Capacity of the override trie.
pub const MAX_OVERRIDES: u32 = 1 << 14;
/// Words of the protected-port bitmap.
pub const PORT_WORDS: u32 = 65536 / 32;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 18;

/// Rate limits in the form the hot path uses (no division there): a GCRA
/// (virtual scheduling) over fixed-point nanoseconds, equivalent to a token
/// bucket of `burst` tokens refilled at `rate` per second.
/// Build one with [`crate::bucket::Limits::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Nanoseconds between two packets at the sustained rate, fixed point
    /// with [`crate::bucket::FP_SHIFT`] fractional bits.
    pub interval: u64,
    /// How far ahead of the clock the theoretical arrival time may run
    /// (burst × interval), same fixed point.
    pub window: u64,
    /// Live-connection cap per client; 0 means no cap.
    pub max_conns: u32,
    /// 1 when the rate limit applies, 0 when only the connection cap does.
    pub rate_enabled: u32,
}

/// [`GlobalConfig::flags`]: the block list may hold entries.
pub const FLAG_BLOCKS: u32 = 1;
/// [`GlobalConfig::flags`]: the override trie holds entries.
pub const FLAG_OVERRIDES: u32 = 1 << 1;
/// [`GlobalConfig::flags`]: at least one override is a `deny`.
pub const FLAG_DENY: u32 = 1 << 2;

/// Global configuration, entry 0 of [`maps::CONFIG`]. One write reaches every
/// CPU, and the packet path needs this one lookup for every setting.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Limits for clients without an override.
    pub default_limits: Limits,
    /// 1: IPv6 clients are keyed by their /64; 0: by the full address.
    pub ipv6_mask64: u32,
    /// Emit a drop event for the 1st drop and then every 2^n-th, per reason
    /// and CPU; 32 disables events.
    pub event_sample_shift: u32,
    /// 1 once user space wrote the configuration; until then the program only passes.
    pub enabled: u32,
    /// `FLAG_*` bits: which maps hold entries, so empty ones cost no lookup.
    pub flags: u32,
    /// Bitmap of protected ports: word `port >> 5`, bit `port & 31`.
    pub ports: [u32; PORT_WORDS as usize],
}

impl Default for GlobalConfig {
    fn default() -> Self {
        Self {
            default_limits: Limits::default(),
            ipv6_mask64: 0,
            event_sample_shift: 0,
            enabled: 0,
            flags: 0,
            ports: [0; PORT_WORDS as usize],
        }
    }
}

impl GlobalConfig {
    /// True when `port` is protected.
    #[inline(always)]
    pub fn port_protected(&self, port: u16) -> bool {
        match self.ports.get(usize::from(port >> 5)) {
            Some(word) => word & (1u32 << (port & 31)) != 0,
            None => false,
        }
    }

    /// Marks `port` protected.
    pub fn protect_port(&mut self, port: u16) {
        self.ports[usize::from(port >> 5)] |= 1 << (port & 31);
    }
}

/// What an override does with matching clients.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OverrideAction {
    /// Bypass every limit. A block still applies: it is a verdict (an
    /// operator's or the L7 layer's), not a limit, and is checked first.
    Allow = 0,
    /// Drop every packet to a protected port.
    Deny = 1,
    /// Apply the override's own limits instead of the defaults.
    Limit = 2,
}

/// Value of the override trie.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Override {
    /// An [`OverrideAction`] as `u32`.
    pub action: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Limits for [`OverrideAction::Limit`].
    pub limits: Limits,
}

/// Per-client state in the LRU map: the rate limiter and the client's counters.
/// One client's packets may be processed on several CPUs at once: the
/// schedule (`tat`) is updated by compare-and-swap; `passed` and `dropped`
/// are statistics, updated with plain adds (exact totals are in
/// [`maps::STATS`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientState {
    /// Theoretical arrival time of the next packet (fixed-point
    /// CLOCK_MONOTONIC ns, wrapping; see [`crate::bucket`]).
    pub tat: u64,
    /// Packets to protected ports passed.
    pub passed: u64,
    /// Packets dropped (any reason; block and deny drops count only for
    /// clients already tracked).
    pub dropped: u64,
}

/// Value of [`maps::CONN_COUNTS`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConnCount {
    /// Slots held: live connections plus admitted handshakes in flight.
    /// Changed only with atomic fetch-and-add; the entry is deleted by the
    /// one CPU whose decrement fetched 1.
    pub slots: u64,
    /// The key this entry was created for. A program that looked the entry
    /// up just before it was deleted and its memory reused for another
    /// client detects the reuse here and takes its increment back.
    pub owner: ClientKey,
}

/// One TCP connection attempt, as the XDP program sees its SYN and the
/// tracker sees the socket. Addresses are IPv4-mapped for IPv4; ports are in
/// host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// The client's full address.
    pub client_addr: [u8; 16],
    /// The local (destination) address.
    pub local_addr: [u8; 16],
    /// The client's port.
    pub client_port: u16,
    /// The local (protected) port.
    pub local_port: u16,
}

/// Entry 0 of [`maps::TRACKER`]: field offsets of the
/// `sock/inet_sock_set_state` tracepoint, read by user space from the
/// tracepoint's `format` file, and of the socket's network namespace, read
/// from the kernel's BTF — nothing about the kernel's layout is compiled in.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackerConfig {
    /// 1 once user space wrote the offsets; until then nothing is counted.
    pub ready: u32,
    /// Offset of `skaddr` (8 bytes).
    pub skaddr: u32,
    /// Offset of `oldstate` (4 bytes).
    pub oldstate: u32,
    /// Offset of `newstate` (4 bytes).
    pub newstate: u32,
    /// Offset of `sport`, the local port (2 bytes, host order).
    pub sport: u32,
    /// Offset of `dport`, the remote port (2 bytes, host order).
    pub dport: u32,
    /// Offset of `protocol` (2 bytes).
    pub protocol: u32,
    /// Offset of `saddr_v6`, the local address (16 bytes; IPv4-mapped for IPv4).
    pub saddr_v6: u32,
    /// Offset of `daddr_v6`, the remote address (16 bytes; IPv4-mapped for IPv4).
    pub daddr_v6: u32,
    /// Offset of the `struct net *` in `struct sock`; `u32::MAX`: unknown,
    /// sockets of every namespace are counted.
    pub sk_net: u32,
    /// Offset of the namespace's inode number in `struct net`.
    pub net_inum: u32,
    /// The inode number of the daemon's network namespace: only its
    /// sockets are counted.
    pub netns_inum: u32,
}

/// Value of [`maps::CONN_PENDING`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingConn {
    /// The client key whose slot this reservation holds.
    pub client: ClientKey,
    /// When the SYN was admitted (CLOCK_MONOTONIC ns).
    pub since_ns: u64,
}

/// Indices of the per-CPU counters in [`maps::STATS`].
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Packets to protected ports that passed every check.
    Passed = 0,
    /// Dropped by the token bucket.
    DroppedRate = 1,
    /// New connections dropped by the connection cap.
    DroppedConn = 2,
    /// Dropped because the client is on the block list.
    DroppedBlock = 3,
    /// Dropped by a deny override.
    DroppedDeny = 4,
    /// Frames that could not be parsed (truncated, bad header lengths); passed.
    Malformed = 5,
    /// Clients seen for the first time (new entries in the client map).
    NewClients = 6,
    /// Packets passed by an allow override without any check.
    Bypassed = 7,
    /// Packets not addressed to a protected port or protocol; passed unexamined.
    NotProtected = 8,
    /// Non-first IP fragments (no transport header to classify); passed.
    Fragments = 9,
    /// Drop events lost because the ring buffer was full.
    EventsLost = 10,
    /// Connections counted by the tracker (transitions into ESTABLISHED).
    ConnOpened = 11,
    /// Connections uncounted by the tracker (transitions into CLOSE).
    ConnClosed = 12,
    /// Dropped fragments that would defeat classification (RFC 1858: a TCP
    /// first fragment too short for the TCP header, a TCP fragment at offset
    /// 8; any first fragment without the whole transport header).
    DroppedFragment = 13,
    /// Dropped IPv6 packets with a longer extension-header chain than the
    /// program walks (their transport cannot be classified).
    DroppedExtHeaders = 14,
    /// A client's first connection could not be counted: the count map is full.
    ConnCountsFull = 15,
    /// A connection could not be tracked: the socket map is full.
    ConnSocksFull = 16,
    /// A SYN admitted without a reservation: the in-flight map is full (its
    /// connection is counted when it is established).
    ConnPendingFull = 17,
    /// A count update that could not be applied (lost a race three times, or
    /// a decrement below zero, which is refused).
    ConnCountErrors = 18,
    /// Reservations of handshakes that never completed, released by the daemon.
    ConnPendingExpired = 19,
}

impl Counter {
    /// The counter's metric-friendly name (from [`Counter::ALL`]).
    pub fn name(self) -> &'static str {
        Self::ALL[self as usize].1
    }

    /// Number of counters (size of the stats array).
    pub const COUNT: u32 = 20;
    /// Every counter with its metric-friendly name, in index order.
    pub const ALL: [(Counter, &'static str); Self::COUNT as usize] = [
        (Counter::Passed, "passed"),
        (Counter::DroppedRate, "dropped_rate"),
        (Counter::DroppedConn, "dropped_conn"),
        (Counter::DroppedBlock, "dropped_block"),
        (Counter::DroppedDeny, "dropped_deny"),
        (Counter::Malformed, "malformed"),
        (Counter::NewClients, "new_clients"),
        (Counter::Bypassed, "bypassed"),
        (Counter::NotProtected, "not_protected"),
        (Counter::Fragments, "fragments"),
        (Counter::EventsLost, "events_lost"),
        (Counter::ConnOpened, "conn_opened"),
        (Counter::ConnClosed, "conn_closed"),
        (Counter::DroppedFragment, "dropped_fragment"),
        (Counter::DroppedExtHeaders, "dropped_ext_headers"),
        (Counter::ConnCountsFull, "conn_counts_full"),
        (Counter::ConnSocksFull, "conn_socks_full"),
        (Counter::ConnPendingFull, "conn_pending_full"),
        (Counter::ConnCountErrors, "conn_count_errors"),
        (Counter::ConnPendingExpired, "conn_pending_expired"),
    ];
}

/// Why a packet was dropped (in [`DropEvent::reason`]).
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Token bucket empty.
    Rate = 1,
    /// Connection cap reached.
    Conn = 2,
    /// Client blocked.
    Block = 3,
    /// Deny override.
    Deny = 4,
    /// A fragment that would defeat classification (RFC 1858).
    Fragment = 5,
    /// An IPv6 extension-header chain longer than the program walks.
    ExtHeaders = 6,
}

impl DropReason {
    /// Decodes the `u32` carried in a [`DropEvent`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Rate),
            2 => Some(Self::Conn),
            3 => Some(Self::Block),
            4 => Some(Self::Deny),
            5 => Some(Self::Fragment),
            6 => Some(Self::ExtHeaders),
            _ => None,
        }
    }

    /// Short lowercase name, used in logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rate => "rate",
            Self::Conn => "conn",
            Self::Block => "block",
            Self::Deny => "deny",
            Self::Fragment => "fragment",
            Self::ExtHeaders => "ext_headers",
        }
    }
}

/// A sampled drop, sent through the ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropEvent {
    /// Time of the drop (CLOCK_MONOTONIC ns).
    pub ts_ns: u64,
    /// The client.
    pub client: ClientKey,
    /// A [`DropReason`] as `u32`.
    pub reason: u32,
    /// Destination port (host order; 0 when the packet has no readable port).
    pub port: u16,
    /// IP protocol (6 TCP, 17 UDP).
    pub protocol: u8,
    /// Explicit padding.
    pub _pad: u8,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: every type is `#[repr(C)]`, `Copy`, made only of integers and
    // byte arrays, with explicit padding fields, so any bit pattern is valid.
    #![expect(unsafe_code, reason = "aya::Pod is an unsafe marker trait")]
    unsafe impl aya::Pod for super::Limits {}
    unsafe impl aya::Pod for super::GlobalConfig {}
    unsafe impl aya::Pod for super::Override {}
    unsafe impl aya::Pod for super::ClientState {}
    unsafe impl aya::Pod for super::DropEvent {}
    unsafe impl aya::Pod for super::ConnCount {}
    unsafe impl aya::Pod for super::FlowKey {}
    unsafe impl aya::Pod for super::PendingConn {}
    unsafe impl aya::Pod for super::TrackerConfig {}
}

#[cfg(test)]
mod tests {
    use super::Counter;

    #[test]
    fn counters_are_listed_in_index_order_under_their_names() {
        assert_eq!(Counter::ALL.len(), Counter::COUNT as usize);
        for (i, (counter, name)) in Counter::ALL.iter().enumerate() {
            assert_eq!(*counter as usize, i, "{name}");
            assert_eq!(counter.name(), *name);
        }
    }
}
