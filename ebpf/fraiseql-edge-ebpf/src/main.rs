//! fraiseql-edge kernel programs.
//!
//! * `fraiseql_edge_xdp` (XDP): parses Ethernet (+ up to two VLAN tags),
//!   IPv4/IPv6 (bounded extension-header walk) and TCP/UDP with a bounds check
//!   before every read; for packets to a protected port it applies, in order,
//!   the block list, the CIDR overrides, the connection cap (new TCP
//!   connections only) and the per-client token bucket. Anything it cannot
//!   classify is counted and passed: the program never drops traffic it does
//!   not understand.
//! * `fraiseql_edge_conn` (`sock/inet_sock_set_state` tracepoint): counts live
//!   TCP connections per client for sockets on a protected port, keyed by the
//!   socket's address so every open and close is counted exactly once.
//!
//! All maps are pinned by name, so a restarted daemon adopts them with their
//! state. The ABI (map types, counter indices) lives in `fraiseql-edge-common`.
#![no_std]
#![no_main]
// The BPF target exposes no atomic read-modify-write methods on stable
// `core::sync::atomic`; the intrinsic lowers to the BPF atomic add (XADD).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic_xadd is the only atomic add on the BPF target"
)]

use core::{
    intrinsics::{AtomicOrdering, atomic_xadd},
    mem::size_of,
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::bpf_ktime_get_ns,
    macros::{map, tracepoint, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{TracePointContext, XdpContext},
};
use aya_log_ebpf::debug;
use fraiseql_edge_common::{
    ClientKey, ClientState, Counter, DropEvent, DropReason, EVENTS_BYTES, GlobalConfig, Limits,
    MAX_BLOCKS, MAX_CLIENTS, MAX_CONN_CLIENTS, MAX_CONN_SOCKS, MAX_OVERRIDES, Override,
    OverrideAction, PORT_WORDS, bucket, key,
};

#[map]
static EDGE_CONFIG: Array<GlobalConfig> = Array::pinned(1, 0);
#[map]
static EDGE_PORTS: Array<u32> = Array::pinned(PORT_WORDS, 0);
#[map]
static EDGE_BLOCKS: HashMap<ClientKey, u64> = HashMap::pinned(MAX_BLOCKS, 0);
#[map]
static EDGE_OVERRIDES: LpmTrie<ClientKey, Override> = LpmTrie::pinned(MAX_OVERRIDES, 0);
#[map]
static EDGE_CLIENTS: LruHashMap<ClientKey, ClientState> = LruHashMap::pinned(MAX_CLIENTS, 0);
#[map]
static EDGE_CONN_COUNTS: HashMap<ClientKey, u64> = HashMap::pinned(MAX_CONN_CLIENTS, 0);
#[map]
static EDGE_CONN_SOCKS: HashMap<u64, ClientKey> = HashMap::pinned(MAX_CONN_SOCKS, 0);
#[map]
static EDGE_STATS: PerCpuArray<u64> = PerCpuArray::pinned(Counter::COUNT, 0);
#[map]
static EDGE_EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88a8;
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;
/// IPv6 extension headers walked before giving up (counted as malformed).
const MAX_IPV6_EXT: usize = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;

/// Why parsing stopped without a verdict: the frame passes either way.
enum Skip {
    /// Truncated or inconsistent headers.
    Malformed,
    /// Not IP, not TCP/UDP, or not a protected port.
    NotProtected,
    /// A non-first IP fragment: no transport header to classify.
    Fragment,
}

#[xdp]
pub fn fraiseql_edge_xdp(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Ok(action) => action,
        Err(Skip::Malformed) => pass_counted(Counter::Malformed),
        Err(Skip::NotProtected) => pass_counted(Counter::NotProtected),
        Err(Skip::Fragment) => pass_counted(Counter::Fragments),
    }
}

/// Benchmark baseline: the cheapest possible XDP program. Never attached.
#[xdp]
pub fn fraiseql_edge_baseline_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[inline(always)]
fn pass_counted(counter: Counter) -> u32 {
    count(counter);
    xdp_action::XDP_PASS
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = EDGE_STATS.get_ptr_mut(counter as u32) {
        // Per-CPU slot: no other CPU writes it.
        unsafe { *slot += 1 };
    }
}

/// The one bounds-checked read of packet bytes.
#[inline(always)]
fn load<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, Skip> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + offset + size_of::<T>() > end {
        return Err(Skip::Malformed);
    }
    Ok(unsafe { core::ptr::read_unaligned((start + offset) as *const T) })
}

#[inline(always)]
fn load_be16(ctx: &XdpContext, offset: usize) -> Result<u16, Skip> {
    load::<[u8; 2]>(ctx, offset).map(u16::from_be_bytes)
}

/// What the parser learned about a packet to classify.
struct Flow {
    client: ClientKey,
    dport: u16,
    protocol: u8,
    /// TCP SYN without ACK: a new connection.
    syn: bool,
}

#[inline(always)]
fn try_xdp(ctx: &XdpContext) -> Result<u32, Skip> {
    let Some(cfg) = EDGE_CONFIG.get(0) else {
        return Err(Skip::NotProtected);
    };
    if cfg.enabled == 0 {
        return Err(Skip::NotProtected);
    }
    let flow = parse(ctx, cfg)?;
    if !port_protected(flow.dport) {
        return Err(Skip::NotProtected);
    }
    Ok(enforce(ctx, cfg, &flow))
}

#[inline(always)]
fn parse(ctx: &XdpContext, cfg: &GlobalConfig) -> Result<Flow, Skip> {
    let mut ethertype = load_be16(ctx, 12)?;
    let mut off = 14usize;
    // Up to two VLAN tags (802.1Q, 802.1ad QinQ).
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = load_be16(ctx, off + 2)?;
            off += 4;
        }
    }
    let (client, protocol, l4, ip_end) = match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off)?,
        ETH_P_IPV6 => parse_ipv6(ctx, off, cfg.ipv6_mask64 != 0)?,
        _ => return Err(Skip::NotProtected),
    };
    match protocol {
        IPPROTO_TCP => {
            // The fixed 20-byte TCP header must be there; flags at byte 13.
            // The IP length must cover it too (Ethernet padding is not a header).
            if l4 + 20 > ip_end {
                return Err(Skip::Malformed);
            }
            let hdr: [u8; 20] = load(ctx, l4)?;
            let data_off = (hdr[12] >> 4) as usize * 4;
            if data_off < 20 {
                return Err(Skip::Malformed);
            }
            let flags = hdr[13];
            Ok(Flow {
                client,
                dport: u16::from_be_bytes([hdr[2], hdr[3]]),
                protocol,
                syn: flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0,
            })
        }
        IPPROTO_UDP => {
            if l4 + 8 > ip_end {
                return Err(Skip::Malformed);
            }
            let hdr: [u8; 8] = load(ctx, l4)?;
            Ok(Flow {
                client,
                dport: u16::from_be_bytes([hdr[2], hdr[3]]),
                protocol,
                syn: false,
            })
        }
        _ => Err(Skip::NotProtected),
    }
}

/// Returns (client, transport protocol, transport header offset, end of the
/// IP packet as its header states it).
#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<(ClientKey, u8, usize, usize), Skip> {
    let hdr: [u8; 20] = load(ctx, off)?;
    if hdr[0] >> 4 != 4 {
        return Err(Skip::Malformed);
    }
    let ihl = (hdr[0] & 0x0f) as usize * 4;
    if ihl < 20 {
        return Err(Skip::Malformed);
    }
    let total_len = u16::from_be_bytes([hdr[2], hdr[3]]) as usize;
    if total_len < ihl {
        return Err(Skip::Malformed);
    }
    let frag_off = u16::from_be_bytes([hdr[6], hdr[7]]) & 0x1fff;
    if frag_off != 0 {
        return Err(Skip::Fragment);
    }
    let client = key::from_ipv4([hdr[12], hdr[13], hdr[14], hdr[15]]);
    Ok((client, hdr[9], off + ihl, off + total_len))
}

#[inline(always)]
fn parse_ipv6(
    ctx: &XdpContext,
    off: usize,
    mask64: bool,
) -> Result<(ClientKey, u8, usize, usize), Skip> {
    // The whole fixed header must be there before any field is trusted.
    let hdr: [u8; 40] = load(ctx, off)?;
    if hdr[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    let mut next = hdr[6];
    let mut src = [0u8; 16];
    src.copy_from_slice(&hdr[8..24]);
    let mut l4 = off + 40;
    // Walk at most MAX_IPV6_EXT extension headers; the header after the
    // last one walked is still classified.
    for _ in 0..MAX_IPV6_EXT {
        match next {
            // Hop-by-hop, routing, destination options: length in 8-octet units, minus one.
            0 | 43 | 60 => {
                let ext: [u8; 2] = load(ctx, l4)?;
                next = ext[0];
                l4 += (ext[1] as usize + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus two.
            51 => {
                let ext: [u8; 2] = load(ctx, l4)?;
                next = ext[0];
                l4 += (ext[1] as usize + 2) * 4;
            }
            // Fragment header: fixed 8 bytes; only the first fragment has ports.
            44 => {
                let ext: [u8; 4] = load(ctx, l4)?;
                if u16::from_be_bytes([ext[2], ext[3]]) & 0xfff8 != 0 {
                    return Err(Skip::Fragment);
                }
                next = ext[0];
                l4 += 8;
            }
            _ => break,
        }
    }
    if is_ipv6_extension(next) {
        // More extension headers than the bounded walk allows.
        return Err(Skip::Malformed);
    }
    // Payload length 0 is a jumbogram (RFC 2675): the frame is the bound.
    let payload = u16::from_be_bytes([hdr[4], hdr[5]]) as usize;
    let end = if payload == 0 {
        usize::MAX
    } else {
        off + 40 + payload
    };
    Ok((key::from_ipv6(src, mask64), next, l4, end))
}

#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60)
}

#[inline(always)]
fn port_protected(port: u16) -> bool {
    match EDGE_PORTS.get(port as u32 >> 5) {
        Some(word) => word & (1u32 << (port & 31)) != 0,
        None => false,
    }
}

#[inline(always)]
fn enforce(ctx: &XdpContext, cfg: &GlobalConfig, flow: &Flow) -> u32 {
    let now = unsafe { bpf_ktime_get_ns() };

    // 1. Block list: drop while the entry is unexpired.
    if let Some(expiry) = unsafe { EDGE_BLOCKS.get(&flow.client) } {
        if now < *expiry {
            count_client_drop(&flow.client);
            return drop_packet(
                ctx,
                cfg,
                flow,
                now,
                DropReason::Block,
                Counter::DroppedBlock,
            );
        }
    }

    // 2. CIDR overrides (longest prefix wins).
    let mut limits: &Limits = &cfg.default_limits;
    if let Some(ov) = EDGE_OVERRIDES.get(Key::new(128, flow.client)) {
        if ov.action == OverrideAction::Allow as u32 {
            count(Counter::Bypassed);
            return xdp_action::XDP_PASS;
        }
        if ov.action == OverrideAction::Deny as u32 {
            count_client_drop(&flow.client);
            return drop_packet(ctx, cfg, flow, now, DropReason::Deny, Counter::DroppedDeny);
        }
        limits = &ov.limits;
    }

    // 3. Per-client state: created with a full bucket on first sight.
    let state = match EDGE_CLIENTS.get_ptr_mut(&flow.client) {
        Some(state) => state,
        None => {
            let fresh = bucket::new_state(limits, now);
            if EDGE_CLIENTS
                .insert(&flow.client, &fresh, BPF_NOEXIST as u64)
                .is_ok()
            {
                count(Counter::NewClients);
                debug!(ctx, "new client, port {}", flow.dport);
            }
            match EDGE_CLIENTS.get_ptr_mut(&flow.client) {
                Some(state) => state,
                // Evicted between insert and lookup: fail open for this packet.
                None => return xdp_action::XDP_PASS,
            }
        }
    };
    let state = unsafe { &mut *state };

    // 4. Connection cap: a new connection needs a free slot.
    if flow.syn && limits.max_conns != 0 {
        let live = unsafe { EDGE_CONN_COUNTS.get(&flow.client) }
            .copied()
            .unwrap_or(0);
        if live >= limits.max_conns as u64 {
            state.dropped += 1;
            return drop_packet(ctx, cfg, flow, now, DropReason::Conn, Counter::DroppedConn);
        }
    }

    // 5. Token bucket.
    if !bucket::take(state, limits, now) {
        state.dropped += 1;
        return drop_packet(ctx, cfg, flow, now, DropReason::Rate, Counter::DroppedRate);
    }
    state.passed += 1;
    count(Counter::Passed);
    xdp_action::XDP_PASS
}

/// Counts a block or deny drop against a client the program already tracks
/// (such drops never create client state: a spoofed flood must not fill the map).
#[inline(always)]
fn count_client_drop(client: &ClientKey) {
    if let Some(state) = EDGE_CLIENTS.get_ptr_mut(client) {
        unsafe { (*state).dropped += 1 };
    }
}

/// Counts a drop, samples it into the ring buffer and returns `XDP_DROP`.
/// Events are sampled per reason and CPU: the 1st drop, then every 2^shift-th.
#[inline(always)]
fn drop_packet(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    flow: &Flow,
    now: u64,
    reason: DropReason,
    counter: Counter,
) -> u32 {
    let Some(slot) = EDGE_STATS.get_ptr_mut(counter as u32) else {
        return xdp_action::XDP_DROP;
    };
    let seen = unsafe { *slot };
    unsafe { *slot = seen + 1 };
    if cfg.event_sample_shift < 32 && seen & ((1u64 << cfg.event_sample_shift) - 1) == 0 {
        let event = DropEvent {
            ts_ns: now,
            client: flow.client,
            reason: reason as u32,
            port: flow.dport,
            protocol: flow.protocol,
            _pad: 0,
        };
        if EDGE_EVENTS.output::<DropEvent>(&event, 0).is_err() {
            count(Counter::EventsLost);
        }
        if reason == DropReason::Block {
            debug!(ctx, "blocked client dropped, port {}", flow.dport);
        }
    }
    xdp_action::XDP_DROP
}

// ---------------------------------------------------------------------------
// Connection tracker: sock/inet_sock_set_state.
// Offsets from /sys/kernel/tracing/events/sock/inet_sock_set_state/format
// (stable tracepoint ABI).
const TP_SKADDR: usize = 8;
const TP_OLDSTATE: usize = 16;
const TP_NEWSTATE: usize = 20;
const TP_SPORT: usize = 24;
const TP_FAMILY: usize = 28;
const TP_PROTOCOL: usize = 30;
const TP_DADDR: usize = 36;
const TP_DADDR_V6: usize = 56;
const TCP_ESTABLISHED: i32 = 1;
const TCP_CLOSE: i32 = 7;
const AF_INET: u16 = 2;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn fraiseql_edge_conn(ctx: TracePointContext) -> u32 {
    let _ = try_conn(&ctx);
    0
}

#[inline(always)]
fn try_conn(ctx: &TracePointContext) -> Result<(), i64> {
    let protocol: u16 = unsafe { ctx.read_at(TP_PROTOCOL)? };
    if protocol != IPPROTO_TCP as u16 {
        return Ok(());
    }
    let newstate: i32 = unsafe { ctx.read_at(TP_NEWSTATE)? };
    let skaddr: u64 = unsafe { ctx.read_at(TP_SKADDR)? };
    if newstate == TCP_ESTABLISHED {
        let oldstate: i32 = unsafe { ctx.read_at(TP_OLDSTATE)? };
        if oldstate == TCP_ESTABLISHED {
            return Ok(());
        }
        // The local port is the one clients connect to: only count sockets
        // this node terminates on a protected port.
        let sport: u16 = unsafe { ctx.read_at(TP_SPORT)? };
        if !port_protected(sport) {
            return Ok(());
        }
        let mask64 = match EDGE_CONFIG.get(0) {
            Some(cfg) => cfg.ipv6_mask64 != 0,
            None => false,
        };
        let family: u16 = unsafe { ctx.read_at(TP_FAMILY)? };
        let client = if family == AF_INET {
            key::from_ipv4(unsafe { ctx.read_at(TP_DADDR)? })
        } else {
            key::from_ipv6(unsafe { ctx.read_at(TP_DADDR_V6)? }, mask64)
        };
        // One socket is counted once, whatever the kernel reports twice.
        if EDGE_CONN_SOCKS
            .insert(&skaddr, &client, BPF_NOEXIST as u64)
            .is_err()
        {
            return Ok(());
        }
        conn_add(&client, 1);
        count(Counter::ConnOpened);
    } else if newstate == TCP_CLOSE {
        let Some(client) = (unsafe { EDGE_CONN_SOCKS.get(&skaddr) }).copied() else {
            return Ok(());
        };
        // Only the CPU whose delete succeeds uncounts the socket.
        if EDGE_CONN_SOCKS.remove(&skaddr).is_err() {
            return Ok(());
        }
        conn_add(&client, u64::MAX);
        count(Counter::ConnClosed);
    }
    Ok(())
}

/// Adds `delta` (1, or `u64::MAX` for −1) to a client's live-connection count
/// with an atomic add, creating the entry on the first connection and
/// deleting it when the count returns to zero.
#[inline(always)]
fn conn_add(client: &ClientKey, delta: u64) {
    if let Some(ptr) = EDGE_CONN_COUNTS.get_ptr_mut(client) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, delta) };
        if delta != 1 && unsafe { read_volatile(ptr) } == 0 {
            let _ = EDGE_CONN_COUNTS.remove(client);
        }
        return;
    }
    if delta == 1
        && EDGE_CONN_COUNTS
            .insert(client, &1u64, BPF_NOEXIST as u64)
            .is_err()
    {
        // Another CPU created it first: add to theirs.
        if let Some(ptr) = EDGE_CONN_COUNTS.get_ptr_mut(client) {
            unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(ptr, 1) };
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
