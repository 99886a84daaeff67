//! Map names, map value types and counter indices shared by kernel and user space.

/// Client key: the source address as 16 bytes. IPv4 addresses are stored
/// IPv4-mapped (`::ffff:a.b.c.d`) so one key type and one LPM trie cover both
/// families; IPv6 addresses may be masked to their /64 (see [`GlobalConfig`]).
pub type ClientKey = [u8; 16];

/// Names of the maps in the object file (and of their pins under bpffs).
pub mod maps {
    /// `Array<GlobalConfig>`, one entry.
    pub const CONFIG: &str = "EDGE_CONFIG";
    /// `Array<u32>` bitmap of protected ports (`port >> 5`, bit `port & 31`).
    pub const PORTS: &str = "EDGE_PORTS";
    /// `HashMap<ClientKey, u64>`: block expiry (CLOCK_MONOTONIC ns; `u64::MAX` = no expiry).
    pub const BLOCKS: &str = "EDGE_BLOCKS";
    /// `LpmTrie<ClientKey, Override>` over IPv4-mapped and IPv6 keys.
    pub const OVERRIDES: &str = "EDGE_OVERRIDES";
    /// `LruHashMap<ClientKey, ClientState>`: per-client bucket and counters.
    pub const CLIENTS: &str = "EDGE_CLIENTS";
    /// `HashMap<ClientKey, u64>`: live TCP connections per client (never LRU).
    pub const CONN_COUNTS: &str = "EDGE_CONN_COUNTS";
    /// `HashMap<u64, ClientKey>`: socket address → client, for idempotent counting.
    pub const CONN_SOCKS: &str = "EDGE_CONN_SOCKS";
    /// `PerCpuArray<u64>` indexed by [`super::Counter`].
    pub const STATS: &str = "EDGE_STATS";
    /// `RingBuf` of [`super::DropEvent`].
    pub const EVENTS: &str = "EDGE_EVENTS";
    /// Every map the daemon pins, in one list.
    pub const ALL: [&str; 9] = [
        CONFIG,
        PORTS,
        BLOCKS,
        OVERRIDES,
        CLIENTS,
        CONN_COUNTS,
        CONN_SOCKS,
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
}

/// Capacity of the per-client LRU map.
pub const MAX_CLIENTS: u32 = 1 << 20;
/// Capacity of the connection-count maps (clients with live connections).
pub const MAX_CONN_CLIENTS: u32 = 1 << 18;
/// Capacity of the live-socket map (connections tracked at once).
pub const MAX_CONN_SOCKS: u32 = 1 << 20;
/// Capacity of the block list.
pub const MAX_BLOCKS: u32 = 1 << 16;
/// Capacity of the override trie.
pub const MAX_OVERRIDES: u32 = 1 << 14;
/// Words of the protected-port bitmap.
pub const PORT_WORDS: u32 = 65536 / 32;
/// Ring buffer size in bytes (power of two, multiple of the page size).
pub const EVENTS_BYTES: u32 = 1 << 18;

/// Token-bucket limits in the form the hot path uses (no division there).
/// Build one with [`crate::bucket::Limits::new`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Tokens added per nanosecond, fixed point with [`crate::bucket::FP_SHIFT`] bits.
    pub refill_per_ns: u64,
    /// Bucket capacity (the burst), fixed point.
    pub capacity: u64,
    /// Nanoseconds after which an idle bucket is full again (caps elapsed time,
    /// so `elapsed * refill_per_ns` never overflows).
    pub fill_ns: u64,
    /// Live-connection cap per client; 0 means no cap.
    pub max_conns: u32,
    /// 1 when the rate limit applies, 0 when only the connection cap does.
    pub rate_enabled: u32,
}

/// Global configuration, entry 0 of [`maps::CONFIG`]. One write reaches every CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GlobalConfig {
    /// Limits for clients without an override.
    pub default_limits: Limits,
    /// 1: IPv6 clients are keyed by their /64; 0: by the full address.
    pub ipv6_mask64: u32,
    /// Emit a drop event for a client's 1st drop and then every 2^n-th; 32 disables events.
    pub event_sample_shift: u32,
    /// 1 once user space wrote the configuration; until then the program only passes.
    pub enabled: u32,
    /// Explicit padding.
    pub _pad: u32,
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

/// Per-client state in the LRU map: the token bucket and the client's counters.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientState {
    /// Tokens left, fixed point.
    pub tokens: u64,
    /// Time of the last refill (CLOCK_MONOTONIC ns).
    pub last_ns: u64,
    /// Packets to protected ports passed.
    pub passed: u64,
    /// Packets to protected ports dropped (any reason).
    pub dropped: u64,
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
}

impl Counter {
    /// Number of counters (size of the stats array).
    pub const COUNT: u32 = 13;
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
}

impl DropReason {
    /// Decodes the `u32` carried in a [`DropEvent`].
    pub fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Rate),
            2 => Some(Self::Conn),
            3 => Some(Self::Block),
            4 => Some(Self::Deny),
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
    /// Destination port (host order).
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
}
