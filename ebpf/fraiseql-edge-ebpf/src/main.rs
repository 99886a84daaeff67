//! fraiseql-edge kernel programs.
//!
//! * `fraiseql_edge_xdp` (XDP): parses Ethernet (+ up to two VLAN tags),
//!   IPv4/IPv6 (bounded extension-header walk) and TCP/UDP with a bounds check
//!   before every read. The block list and `deny` overrides apply to every
//!   IP packet from the source, whatever its transport; fragments and header
//!   chains that would hide the transport from classification are dropped
//!   (RFC 1858); packets to a protected port then go through `allow`/`limit`
//!   overrides, the connection cap (new TCP connections, with a slot
//!   reserved until the handshake completes) and the per-client GCRA. Frames
//!   without a readable IP source are counted and passed: the kernel's own
//!   checks drop them before any socket sees them.
//! * `fraiseql_edge_conn` (`sock/inet_sock_set_state` tracepoint): counts live
//!   TCP connections per client for sockets on a protected port, keyed by the
//!   socket's address so every open and close is counted exactly once, and
//!   turns the slot reserved by the SYN into the connection's slot.
//! * `fraiseql_edge_sweep` (XDP, never attached): run by the daemon through
//!   `BPF_PROG_TEST_RUN` to release the reservation of a handshake that never
//!   completed.
//!
//! Every count is changed with atomic fetch-and-add (`BPF_FETCH`) and every
//! rate decision with compare-and-swap, so one client's packets may arrive
//! on any number of CPUs at once.
//!
//! All maps are pinned by name, so a restarted daemon adopts them with their
//! state. The ABI (map types, counter indices) lives in `fraiseql-edge-common`.
#![no_std]
#![no_main]
// The BPF target exposes no atomic read-modify-write methods on stable
// `core::sync::atomic`; the intrinsics lower to BPF atomic instructions
// (fetch-add and compare-and-exchange need BPF v3, the build's CPU).
#![feature(core_intrinsics)]
#![expect(
    internal_features,
    reason = "atomic intrinsics are the only atomics on the BPF target"
)]

use core::{
    intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd},
    mem::size_of,
    ptr::read_volatile,
};

use aya_ebpf::{
    bindings::{BPF_NOEXIST, xdp_action},
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, tracepoint, xdp},
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
    programs::{TracePointContext, XdpContext},
};
use aya_log_ebpf::debug;
use fraiseql_edge_common::{
    ClientKey, ClientState, ConnCount, Counter, DropEvent, DropReason, EVENTS_BYTES, FLAG_BLOCKS,
    FLAG_DENY, FLAG_OVERRIDES, FlowKey, GlobalConfig, Limits, MAX_BLOCKS, MAX_CLIENTS,
    MAX_CONN_CLIENTS, MAX_CONN_PENDING, MAX_CONN_SOCKS, MAX_OVERRIDES, Override, OverrideAction,
    PENDING_TIMEOUT_NS, PendingConn, TrackerConfig, bucket, key,
};

#[map]
static EDGE_CONFIG: Array<GlobalConfig> = Array::pinned(1, 0);
#[map]
static EDGE_BLOCKS: HashMap<ClientKey, u64> = HashMap::pinned(MAX_BLOCKS, 0);
#[map]
static EDGE_OVERRIDES: LpmTrie<ClientKey, Override> = LpmTrie::pinned(MAX_OVERRIDES, 0);
#[map]
static EDGE_CLIENTS: LruHashMap<ClientKey, ClientState> = LruHashMap::pinned(MAX_CLIENTS, 0);
#[map]
static EDGE_CONN_COUNTS: HashMap<ClientKey, ConnCount> = HashMap::pinned(MAX_CONN_CLIENTS, 0);
#[map]
static EDGE_CONN_SOCKS: HashMap<u64, ClientKey> = HashMap::pinned(MAX_CONN_SOCKS, 0);
#[map]
static EDGE_CONN_PENDING: HashMap<FlowKey, PendingConn> = HashMap::pinned(MAX_CONN_PENDING, 0);
#[map]
static EDGE_TRACKER: Array<TrackerConfig> = Array::pinned(1, 0);
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
/// IPv6 extension headers walked; a longer chain is dropped (its transport
/// cannot be classified, and Linux would deliver it).
const MAX_IPV6_EXT: usize = 8;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const EEXIST: i32 = -17;

/// Why a packet is not classified any further.
enum Skip {
    /// No readable IP source: counted as malformed and passed (the kernel's
    /// own header checks drop it before any socket).
    Malformed,
    /// Not IP, not TCP/UDP, or not a protected port.
    NotProtected,
    /// A non-first IP fragment: no transport header to classify. Its first
    /// fragment was classified (or dropped, and reassembly then fails).
    Fragment,
    /// Dropped: it would hide its transport from classification.
    Drop(DropReason, Counter),
}

#[xdp]
pub fn fraiseql_edge_xdp(ctx: XdpContext) -> u32 {
    match try_xdp(&ctx) {
        Ok(action) => action,
        Err(Skip::Malformed) => pass_counted(Counter::Malformed),
        Err(Skip::NotProtected) => pass_counted(Counter::NotProtected),
        Err(Skip::Fragment) => pass_counted(Counter::Fragments),
        // Unreachable: try_xdp turns drops into verdicts itself.
        Err(Skip::Drop(..)) => xdp_action::XDP_DROP,
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

#[inline(always)]
fn fetch_add(ptr: *mut u64, delta: u64) -> u64 {
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(ptr, delta) }
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

/// What the IP layer tells: enough to judge the source, and where the
/// transport header is.
///
/// Addresses stay in the packet (offsets, re-read where needed): sixteen-byte
/// arrays kept live across the program are split into byte registers by the
/// compiler and spilled, which exhausts the 512-byte BPF stack.
struct Ip {
    /// The client key (IPv6 possibly masked to its /64).
    client: ClientKey,
    /// Offset of the source address; the destination address follows it.
    src_off: usize,
    /// IPv4 (addresses are 4 bytes, read IPv4-mapped).
    v4: bool,
    /// Transport protocol (after the extension headers for IPv6).
    protocol: u8,
    /// Offset of the transport header.
    l4: usize,
    /// End of the IP packet as its header states it.
    end: usize,
    /// Fragment offset in 8-byte units: non-zero for a later fragment.
    /// (Plain integers, not an enum with data: the verifier rejects the
    /// spill of an uninitialised enum payload.)
    frag_offset: u16,
    /// Offset 0 and more fragments follow: must hold the transport header.
    first_fragment: bool,
    /// IPv6 only: the extension-header walk ran out before the transport.
    chain_too_long: bool,
    /// IPv6 only: an extension header is cut short by the frame.
    chain_truncated: bool,
}

/// A packet to a protected port, classified.
struct Flow {
    dport: u16,
    sport: u16,
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
    let ip = parse_ip(ctx, cfg)?;

    // Verdicts on the source come first and cover every packet from it —
    // fragments, unknown transports and unprotected ports included — so no
    // packet shape gets a blocked or denied client past them.
    let mut now = 0u64;
    if cfg.flags & FLAG_BLOCKS != 0 {
        if let Some(expiry) = unsafe { EDGE_BLOCKS.get(&ip.client) } {
            now = unsafe { bpf_ktime_get_ns() };
            if now < *expiry {
                return Ok(source_drop(
                    ctx,
                    cfg,
                    &ip,
                    now,
                    DropReason::Block,
                    Counter::DroppedBlock,
                ));
            }
        }
    }
    // Overrides match the full source address (an override longer than the
    // client key's /64 still applies). With a deny among them, every packet
    // is looked up; without, only packets to a protected port.
    let mut over: Option<&Override> = None;
    if cfg.flags & FLAG_DENY != 0 {
        over = override_for(ctx, &ip);
        if let Some(ov) = over {
            if ov.action == OverrideAction::Deny as u32 {
                return Ok(source_drop(
                    ctx,
                    cfg,
                    &ip,
                    now,
                    DropReason::Deny,
                    Counter::DroppedDeny,
                ));
            }
        }
    }

    let flow = match classify(ctx, cfg, &ip) {
        Ok(flow) => flow,
        Err(Skip::Drop(reason, counter)) => {
            return Ok(drop_packet(ctx, cfg, &ip, 0, now, reason, counter));
        }
        Err(skip) => return Err(skip),
    };

    if cfg.flags & (FLAG_OVERRIDES | FLAG_DENY) == FLAG_OVERRIDES {
        over = override_for(ctx, &ip);
    }
    let mut limits: &Limits = &cfg.default_limits;
    if let Some(ov) = over {
        if ov.action == OverrideAction::Allow as u32 {
            count(Counter::Bypassed);
            return Ok(xdp_action::XDP_PASS);
        }
        limits = &ov.limits;
    }
    if now == 0 {
        now = unsafe { bpf_ktime_get_ns() };
    }
    Ok(enforce(ctx, cfg, &ip, &flow, limits, now))
}

#[inline(always)]
fn parse_ip(ctx: &XdpContext, cfg: &GlobalConfig) -> Result<Ip, Skip> {
    let mut ethertype = load_be16(ctx, 12)?;
    let mut off = 14usize;
    // Up to two VLAN tags (802.1Q, 802.1ad QinQ).
    for _ in 0..2 {
        if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
            ethertype = load_be16(ctx, off + 2)?;
            off += 4;
        }
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off),
        ETH_P_IPV6 => parse_ipv6(ctx, off, cfg.ipv6_mask64 != 0),
        _ => Err(Skip::NotProtected),
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, off: usize) -> Result<Ip, Skip> {
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
    let frag_word = u16::from_be_bytes([hdr[6], hdr[7]]);
    let frag_offset = frag_word & 0x1fff;
    let more = frag_word & 0x2000 != 0;
    Ok(Ip {
        client: key::from_ipv4([hdr[12], hdr[13], hdr[14], hdr[15]]),
        src_off: off + 12,
        v4: true,
        protocol: hdr[9],
        l4: off + ihl,
        end: off + total_len,
        frag_offset,
        first_fragment: frag_offset == 0 && more,
        chain_too_long: false,
        chain_truncated: false,
    })
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, off: usize, mask64: bool) -> Result<Ip, Skip> {
    // The whole fixed header must be there before any field is trusted.
    if ctx.data() + off + 40 > ctx.data_end() {
        return Err(Skip::Malformed);
    }
    let fixed: [u8; 8] = load(ctx, off)?;
    if fixed[0] >> 4 != 6 {
        return Err(Skip::Malformed);
    }
    // Payload length 0 is a jumbogram (RFC 2675): the frame is the bound.
    let payload = u16::from_be_bytes([fixed[4], fixed[5]]) as usize;
    let end = if payload == 0 {
        usize::MAX
    } else {
        off + 40 + payload
    };
    let mut ip = Ip {
        client: key::from_ipv6(load(ctx, off + 8)?, mask64),
        src_off: off + 8,
        v4: false,
        protocol: fixed[6],
        l4: off + 40,
        end,
        frag_offset: 0,
        first_fragment: false,
        chain_too_long: false,
        chain_truncated: false,
    };
    // Walk at most MAX_IPV6_EXT extension headers. A header that cannot be
    // read ends the walk, marked: the packet is then judged with its source
    // known (malformed, or a dropped first fragment).
    for _ in 0..MAX_IPV6_EXT {
        match ip.protocol {
            // Hop-by-hop, routing, destination options: length in 8-octet units, minus one.
            0 | 43 | 60 => {
                let Ok(ext) = load::<[u8; 2]>(ctx, ip.l4) else {
                    ip.chain_truncated = true;
                    return Ok(ip);
                };
                ip.protocol = ext[0];
                ip.l4 += (ext[1] as usize + 1) * 8;
            }
            // Authentication header: length in 4-octet units, minus two.
            51 => {
                let Ok(ext) = load::<[u8; 2]>(ctx, ip.l4) else {
                    ip.chain_truncated = true;
                    return Ok(ip);
                };
                ip.protocol = ext[0];
                ip.l4 += (ext[1] as usize + 2) * 4;
            }
            // Fragment header: fixed 8 bytes.
            44 => {
                let Ok(ext) = load::<[u8; 4]>(ctx, ip.l4) else {
                    ip.chain_truncated = true;
                    return Ok(ip);
                };
                let word = u16::from_be_bytes([ext[2], ext[3]]);
                ip.frag_offset = word >> 3;
                ip.first_fragment = ip.frag_offset == 0 && word & 1 != 0;
                ip.protocol = ext[0];
                ip.l4 += 8;
                if ip.frag_offset != 0 {
                    // Only the first fragment carries the rest of the chain.
                    return Ok(ip);
                }
            }
            _ => return Ok(ip),
        }
    }
    ip.chain_too_long = is_ipv6_extension(ip.protocol);
    Ok(ip)
}

#[inline(always)]
fn is_ipv6_extension(next: u8) -> bool {
    matches!(next, 0 | 43 | 44 | 51 | 60)
}

/// The source (`which` = 0) or destination (1) address, IPv4-mapped for IPv4.
#[inline(always)]
fn address(ctx: &XdpContext, ip: &Ip, which: usize) -> Result<[u8; 16], Skip> {
    if ip.v4 {
        Ok(key::from_ipv4(load(ctx, ip.src_off + which * 4)?))
    } else {
        load(ctx, ip.src_off + which * 16)
    }
}

/// The override for the full source address (an override longer than the
/// client key's /64 still applies).
#[inline(always)]
fn override_for(ctx: &XdpContext, ip: &Ip) -> Option<&'static Override> {
    let src = address(ctx, ip, 0).ok()?;
    EDGE_OVERRIDES.get(Key::new(128, src))
}

/// Finds the ports of a packet whose source passed the block and deny checks.
#[inline(always)]
fn classify(ctx: &XdpContext, cfg: &GlobalConfig, ip: &Ip) -> Result<Flow, Skip> {
    if ip.frag_offset != 0 {
        // RFC 1858: a TCP fragment at offset 8 bytes can rewrite the flags
        // of a first fragment that passed.
        if ip.protocol == IPPROTO_TCP && ip.frag_offset == 1 {
            return Err(Skip::Drop(DropReason::Fragment, Counter::DroppedFragment));
        }
        return Err(Skip::Fragment);
    }
    if ip.chain_too_long {
        return Err(Skip::Drop(
            DropReason::ExtHeaders,
            Counter::DroppedExtHeaders,
        ));
    }
    let need = match ip.protocol {
        IPPROTO_TCP => 20,
        IPPROTO_UDP => 8,
        _ if ip.chain_truncated => {
            if ip.first_fragment {
                return Err(Skip::Drop(DropReason::Fragment, Counter::DroppedFragment));
            }
            return Err(Skip::Malformed);
        }
        _ => return Err(Skip::NotProtected),
    };
    // The transport header must be in the frame and inside the IP length
    // (Ethernet padding is not a header). A first fragment without it
    // would be classified by nobody: RFC 1858 says drop.
    let complete = !ip.chain_truncated
        && ip.l4 + need <= ip.end
        && ctx.data() + ip.l4 + need <= ctx.data_end();
    if !complete {
        if ip.first_fragment {
            return Err(Skip::Drop(DropReason::Fragment, Counter::DroppedFragment));
        }
        return Err(Skip::Malformed);
    }
    let ports: [u8; 4] = load(ctx, ip.l4)?;
    let dport = u16::from_be_bytes([ports[2], ports[3]]);
    if !cfg.port_protected(dport) {
        return Err(Skip::NotProtected);
    }
    let mut syn = false;
    if ip.protocol == IPPROTO_TCP {
        let hdr: [u8; 2] = load(ctx, ip.l4 + 12)?;
        if (hdr[0] >> 4) < 5 {
            return Err(Skip::Malformed);
        }
        let flags = hdr[1];
        syn = flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0;
    }
    Ok(Flow {
        dport,
        sport: u16::from_be_bytes([ports[0], ports[1]]),
        syn,
    })
}

#[inline(always)]
fn enforce(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    ip: &Ip,
    flow: &Flow,
    limits: &Limits,
    now: u64,
) -> u32 {
    // Per-client state: created with a full bucket on first sight.
    let state = match EDGE_CLIENTS.get_ptr_mut(&ip.client) {
        Some(state) => state,
        None => {
            new_client(ctx, &ip.client, now, flow.dport);
            match EDGE_CLIENTS.get_ptr_mut(&ip.client) {
                Some(state) => state,
                // Evicted between insert and lookup (the LRU is under a
                // flood of new clients): a fresh state admits its first
                // packet, so this one passes as the client's first.
                None => return pass_counted(Counter::Passed),
            }
        }
    };

    // Connection cap: a new connection takes a slot now, held until its
    // handshake completes (then it is the connection's) or times out.
    let mut reserved: Option<FlowKey> = None;
    if flow.syn && limits.max_conns != 0 {
        let Some(fk) = flow_key(ctx, ip, flow) else {
            return pass_counted(Counter::Malformed);
        };
        match reserve(&fk, &ip.client, limits.max_conns as u64, now) {
            Reserve::Reserved => reserved = Some(fk),
            Reserve::Unreserved => {}
            Reserve::AtCap => {
                client_dropped(state);
                return drop_packet(
                    ctx,
                    cfg,
                    ip,
                    flow.dport,
                    now,
                    DropReason::Conn,
                    Counter::DroppedConn,
                );
            }
        }
    }

    // Rate: one compare-and-swap on the client's schedule.
    if limits.rate_enabled != 0 && !rate_take(state, limits, now) {
        if let Some(fk) = &reserved {
            unreserve(fk, &ip.client);
        }
        client_dropped(state);
        return drop_packet(
            ctx,
            cfg,
            ip,
            flow.dport,
            now,
            DropReason::Rate,
            Counter::DroppedRate,
        );
    }
    unsafe { (*state).passed += 1 };
    count(Counter::Passed);
    xdp_action::XDP_PASS
}

/// Creates a client's state with a full bucket. Out of line: it runs once
/// per client, and keeps its buffers off the packet path's stack.
#[inline(never)]
fn new_client(ctx: &XdpContext, client: &ClientKey, now: u64, port: u16) {
    let fresh = bucket::new_state(now);
    if EDGE_CLIENTS
        .insert(client, &fresh, BPF_NOEXIST as u64)
        .is_ok()
    {
        count(Counter::NewClients);
        debug!(ctx, "new client, port {}", port);
    }
}

enum Reserve {
    /// A slot is reserved for this handshake.
    Reserved,
    /// Admitted without a new reservation: a retransmitted SYN (its first
    /// copy holds the slot), or the maps could not take one (counted).
    Unreserved,
    /// The client holds `max_conns` slots already.
    AtCap,
}

#[inline(always)]
fn flow_key(ctx: &XdpContext, ip: &Ip, flow: &Flow) -> Option<FlowKey> {
    Some(FlowKey {
        client_addr: address(ctx, ip, 0).ok()?,
        local_addr: address(ctx, ip, 1).ok()?,
        client_port: flow.sport,
        local_port: flow.dport,
    })
}

/// Reserves a connection slot for a SYN. Out of line: only SYNs of capped
/// clients come here (and it takes no packet pointers: the verifier must
/// see the context's fields as packet pointers, which a call can lose).
#[inline(never)]
fn reserve(fk: &FlowKey, client: &ClientKey, cap: u64, now: u64) -> Reserve {
    if unsafe { EDGE_CONN_PENDING.get(fk) }.is_some() {
        return Reserve::Unreserved;
    }
    match slot_take(client, cap) {
        Take::Taken => {}
        Take::AtCap => return Reserve::AtCap,
        Take::Failed => return Reserve::Unreserved,
    }
    let pending = PendingConn {
        client: *client,
        since_ns: now,
    };
    match EDGE_CONN_PENDING.insert(fk, &pending, BPF_NOEXIST as u64) {
        Ok(()) => Reserve::Reserved,
        Err(e) => {
            // EEXIST: the same SYN on another CPU reserved it. Full:
            // admitted under the cap, counted once established.
            slot_release(client);
            if e != EEXIST {
                count(Counter::ConnPendingFull);
            }
            Reserve::Unreserved
        }
    }
}

/// Takes back the reservation of a SYN that is dropped after all.
#[inline(never)]
fn unreserve(fk: &FlowKey, client: &ClientKey) {
    if EDGE_CONN_PENDING.remove(fk).is_ok() {
        slot_release(client);
    }
}

/// The GCRA step with a compare-and-swap, so packets of one client on
/// several CPUs each take their own interval. Three lost races in a row
/// (a client flooding every CPU) drop the packet.
#[inline(always)]
fn rate_take(state: *mut ClientState, limits: &Limits, now_ns: u64) -> bool {
    let now = bucket::fixed(now_ns);
    let tat = unsafe { &raw mut (*state).tat };
    for _ in 0..3 {
        let old = unsafe { read_volatile(tat) };
        let (new, pass) = bucket::admit(old, limits, now);
        if new == old {
            return pass;
        }
        let (_, stored) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                tat, old, new,
            )
        };
        if stored {
            return pass;
        }
    }
    false
}

/// Per-client figures are statistics: plain adds, which a packet of the
/// same client on another CPU at the same instant can overwrite (the
/// exact totals are the per-CPU counters). A locked add would cost every
/// packet about 6 ns.
#[inline(always)]
fn client_dropped(state: *mut ClientState) {
    unsafe { (*state).dropped += 1 };
}

/// Drops a packet on a verdict about its source (block, deny): no port was
/// read, and the drop counts against the client if it is tracked.
#[inline(always)]
fn source_drop(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    ip: &Ip,
    now: u64,
    reason: DropReason,
    counter: Counter,
) -> u32 {
    count_client_drop(&ip.client);
    drop_packet(ctx, cfg, ip, 0, now, reason, counter)
}

/// Counts a block or deny drop against a client the program already tracks
/// (one client-map lookup; such drops never create client state: a spoofed
/// flood must not fill the map).
#[inline(always)]
fn count_client_drop(client: &ClientKey) {
    if let Some(state) = EDGE_CLIENTS.get_ptr_mut(client) {
        client_dropped(state);
    }
}

/// Counts a drop, samples it into the ring buffer and returns `XDP_DROP`.
/// Events are sampled per reason and CPU: the 1st drop, then every 2^shift-th.
#[inline(always)]
fn drop_packet(
    ctx: &XdpContext,
    cfg: &GlobalConfig,
    ip: &Ip,
    port: u16,
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
        let meta = (reason as u64) << 32 | (ip.protocol as u64) << 16 | port as u64;
        emit_drop(ctx, &ip.client, now, meta);
    }
    xdp_action::XDP_DROP
}

/// Writes one sampled drop event (`meta`: reason << 32 | protocol << 16 |
/// port). Out of line: it is the rare path, and its event buffer would
/// otherwise weigh on the packet path's stack.
#[inline(never)]
fn emit_drop(ctx: &XdpContext, client: &ClientKey, now: u64, meta: u64) {
    let reason = (meta >> 32) as u32;
    let port = meta as u16;
    let event = DropEvent {
        ts_ns: if now != 0 {
            now
        } else {
            unsafe { bpf_ktime_get_ns() }
        },
        client: *client,
        reason,
        port,
        protocol: (meta >> 16) as u8,
        _pad: 0,
    };
    if EDGE_EVENTS.output::<DropEvent>(&event, 0).is_err() {
        count(Counter::EventsLost);
    }
    if reason == DropReason::Block as u32 {
        // A block is judged before any port is read: the protocol tells
        // what was dropped.
        debug!(
            ctx,
            "blocked client dropped, protocol {}",
            (meta >> 16) as u8
        );
    }
}

// ---------------------------------------------------------------------------
// Connection slots: EDGE_CONN_COUNTS holds, per client, live connections plus
// admitted handshakes. Changed only by fetch-and-add; an entry is deleted by
// the one CPU whose decrement fetched 1.

enum Take {
    Taken,
    /// The client holds `cap` slots already.
    AtCap,
    /// Not counted: the map is full or the races were lost (counted).
    Failed,
}

/// Takes one slot for `client`, refusing at `cap` (0: no cap).
#[inline(always)]
fn slot_take(client: &ClientKey, cap: u64) -> Take {
    for _ in 0..3 {
        if let Some(entry) = EDGE_CONN_COUNTS.get_ptr_mut(client) {
            let slots = unsafe { &raw mut (*entry).slots };
            let old = fetch_add(slots, 1);
            if old == 0 {
                // Its count reached zero and its deleter is removing it:
                // take the increment back (never delete: that is the
                // deleter's) and create a new entry.
                fetch_add(slots, u64::MAX);
                continue;
            }
            if unsafe { (*entry).owner } != *client {
                // Deleted and reused for another client since the lookup:
                // the increment landed on that client's live entry.
                let other = unsafe { (*entry).owner };
                if fetch_add(slots, u64::MAX) == 1 {
                    let _ = EDGE_CONN_COUNTS.remove(&other);
                }
                continue;
            }
            if cap != 0 && old >= cap {
                slot_put(entry, client);
                return Take::AtCap;
            }
            return Take::Taken;
        }
        let fresh = ConnCount {
            slots: 1,
            owner: *client,
        };
        match EDGE_CONN_COUNTS.insert(client, &fresh, BPF_NOEXIST as u64) {
            Ok(()) => return Take::Taken,
            // Created (or still being deleted) by another CPU: look again.
            Err(EEXIST) => continue,
            Err(_) => {
                count(Counter::ConnCountsFull);
                return Take::Failed;
            }
        }
    }
    count(Counter::ConnCountErrors);
    Take::Failed
}

/// Returns one slot of `client`.
#[inline(always)]
fn slot_release(client: &ClientKey) {
    match EDGE_CONN_COUNTS.get_ptr_mut(client) {
        Some(entry) => slot_put(entry, client),
        None => count(Counter::ConnCountErrors),
    }
}

/// Returns one slot of an entry the caller holds a slot in (so the entry
/// cannot be deleted or reused under it).
#[inline(always)]
fn slot_put(entry: *mut ConnCount, client: &ClientKey) {
    let slots = unsafe { &raw mut (*entry).slots };
    match fetch_add(slots, u64::MAX) {
        1 => {
            let _ = EDGE_CONN_COUNTS.remove(client);
        }
        0 => {
            // Below zero: refuse (no wrap to u64::MAX, which would lock the
            // client out) and count it.
            fetch_add(slots, 1);
            count(Counter::ConnCountErrors);
        }
        _ => {}
    }
}

// ---------------------------------------------------------------------------
// Reservation sweep, run by the daemon through BPF_PROG_TEST_RUN: the
// "packet" is a FlowKey. XDP_PASS: released; XDP_DROP: nothing to release.

#[xdp]
pub fn fraiseql_edge_sweep(ctx: XdpContext) -> u32 {
    let Ok(fk) = load::<FlowKey>(&ctx, 0) else {
        return xdp_action::XDP_ABORTED;
    };
    let Some(pending) = (unsafe { EDGE_CONN_PENDING.get(&fk) }).copied() else {
        return xdp_action::XDP_DROP;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    if now.wrapping_sub(pending.since_ns) < PENDING_TIMEOUT_NS {
        return xdp_action::XDP_DROP;
    }
    // Whoever deletes the reservation (this, or the tracker converting it)
    // owns its slot.
    if EDGE_CONN_PENDING.remove(&fk).is_err() {
        return xdp_action::XDP_DROP;
    }
    slot_release(&pending.client);
    count(Counter::ConnPendingExpired);
    xdp_action::XDP_PASS
}

// ---------------------------------------------------------------------------
// Connection tracker: sock/inet_sock_set_state. Field offsets come from
// EDGE_TRACKER (user space reads them from the tracepoint's format file and
// the kernel's BTF).
const TCP_ESTABLISHED: i32 = 1;
const TCP_CLOSE: i32 = 7;

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn fraiseql_edge_conn(ctx: TracePointContext) -> u32 {
    let _ = try_conn(&ctx);
    0
}

#[inline(always)]
fn try_conn(ctx: &TracePointContext) -> Result<(), i64> {
    let Some(tp) = EDGE_TRACKER.get(0) else {
        return Ok(());
    };
    if tp.ready == 0 {
        return Ok(());
    }
    let protocol: u16 = unsafe { ctx.read_at(tp.protocol as usize)? };
    if protocol != IPPROTO_TCP as u16 {
        return Ok(());
    }
    let newstate: i32 = unsafe { ctx.read_at(tp.newstate as usize)? };
    let skaddr: u64 = unsafe { ctx.read_at(tp.skaddr as usize)? };
    if newstate == TCP_ESTABLISHED {
        let oldstate: i32 = unsafe { ctx.read_at(tp.oldstate as usize)? };
        if oldstate == TCP_ESTABLISHED {
            return Ok(());
        }
        let Some(cfg) = EDGE_CONFIG.get(0) else {
            return Ok(());
        };
        // The local port is the one clients connect to: only count sockets
        // this node terminates on a protected port …
        let sport: u16 = unsafe { ctx.read_at(tp.sport as usize)? };
        if !cfg.port_protected(sport) {
            return Ok(());
        }
        // … in the daemon's network namespace (the one XDP protects).
        if !in_daemon_netns(tp, skaddr) {
            return Ok(());
        }
        // The tracepoint gives IPv4 sockets' addresses IPv4-mapped, as
        // the client keys are.
        let fk = FlowKey {
            client_addr: unsafe { ctx.read_at(tp.daddr_v6 as usize)? },
            local_addr: unsafe { ctx.read_at(tp.saddr_v6 as usize)? },
            client_port: unsafe { ctx.read_at(tp.dport as usize)? },
            local_port: sport,
        };
        conn_established(cfg, skaddr, &fk);
    } else if newstate == TCP_CLOSE {
        // Only sockets counted at ESTABLISHED are in the map: no namespace
        // or port check needed here.
        let Some(client) = (unsafe { EDGE_CONN_SOCKS.get(&skaddr) }).copied() else {
            return Ok(());
        };
        // Only the CPU whose delete succeeds uncounts the socket.
        if EDGE_CONN_SOCKS.remove(&skaddr).is_err() {
            return Ok(());
        }
        slot_release(&client);
        count(Counter::ConnClosed);
    }
    Ok(())
}

/// Whether the socket at `skaddr` lives in the daemon's network namespace.
#[inline(always)]
fn in_daemon_netns(tp: &TrackerConfig, skaddr: u64) -> bool {
    if tp.sk_net == u32::MAX {
        return true;
    }
    let Ok(net) = (unsafe { bpf_probe_read_kernel((skaddr + tp.sk_net as u64) as *const u64) })
    else {
        return false;
    };
    match unsafe { bpf_probe_read_kernel((net + tp.net_inum as u64) as *const u32) } {
        Ok(inum) => inum == tp.netns_inum,
        Err(_) => false,
    }
}

/// Counts a socket that became ESTABLISHED: the slot its SYN reserved
/// becomes the connection's, or (no reservation: no cap, an allow override,
/// a full reservation map, a connection older than the daemon) a slot is
/// taken now.
#[inline(always)]
fn conn_established(cfg: &GlobalConfig, skaddr: u64, fk: &FlowKey) {
    let mut client = key::from_ipv6(fk.client_addr, cfg.ipv6_mask64 != 0);
    let mut reserved = false;
    if let Some(pending) = unsafe { EDGE_CONN_PENDING.get(fk) } {
        let owner = pending.client;
        // Whoever deletes the reservation owns its slot.
        if EDGE_CONN_PENDING.remove(fk).is_ok() {
            client = owner;
            reserved = true;
        }
    }
    // One socket is counted once, whatever the kernel reports twice.
    if let Err(e) = EDGE_CONN_SOCKS.insert(&skaddr, &client, BPF_NOEXIST as u64) {
        if reserved {
            slot_release(&client);
        }
        if e != EEXIST {
            count(Counter::ConnSocksFull);
        }
        return;
    }
    if !reserved {
        if let Take::Failed = slot_take(&client, 0) {
            // Not counted: do not uncount it at close either.
            let _ = EDGE_CONN_SOCKS.remove(&skaddr);
            return;
        }
    }
    count(Counter::ConnOpened);
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
