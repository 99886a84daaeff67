//! The kernel enforcement layer: load the eBPF object, attach (or adopt) the
//! XDP program on every configured interface and the connection tracker, and
//! keep everything pinned under bpffs so enforcement outlives the daemon.
//!
//! Start-up is all or nothing, in two phases:
//! 1. nothing attached yet: make sure `pin_path` is on bpffs (mounting
//!    `/sys/fs/bpf` if needed); load the object (maps are pinned by name, so
//!    maps pinned by an earlier daemon are reused with their contents:
//!    clients, counts, blocks); load every program; give the tracker its
//!    layout (`layout.rs`); write the configuration into the maps. A failure
//!    here leaves every interface as it was;
//! 2. attach: the tracker (replacing the pin of an earlier daemon's tracker,
//!    which is then released — counts live in the pinned maps, so nothing is
//!    lost or counted twice); then a new XDP link (native, then generic mode
//!    under `auto`) on every interface without a pinned one. If one of those
//!    fails, the links this start made are removed and the interfaces are
//!    as they were (an adopted state stays as the earlier daemon left it,
//!    fully configured). Last, this daemon's program is swapped atomically
//!    into every link pinned by an earlier daemon (no second attachment, no
//!    gap).
//!
//! Stopping the daemon leaves all of this in place; `fraiseql-edge kernel
//! detach` removes it.

pub mod bpffs;
pub mod collector;
pub mod events;
pub mod layout;
pub mod maps;

use std::{fmt, path::Path};

use aya::{
    Ebpf, EbpfError, EbpfLoader,
    maps::{Array, MapData, RingBuf},
    pin::PinError,
    programs::{
        ProgramError, TestRun, TestRunOptions, TracePoint, Xdp, XdpMode,
        links::{FdLink, LinkError, PinnedLink},
        xdp::XdpLink,
    },
};
use aya_log::EbpfLogger;
use fraiseql_edge_common::{Counter, FlowKey, TrackerConfig, maps as map_names, programs};
pub use maps::{BlockInfo, ClientInfo, KernelMaps, MapFill, MapsError};

use crate::config::{KernelConfig, XdpModeConfig};

/// The eBPF object, built by this crate's build script from `ebpf/`.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fraiseql-edge-xdp"));

/// Name of the pinned link of the connection tracker.
pub const TRACKER_LINK: &str = "link_conn_tracker";

/// Name of the pinned XDP link of an interface.
pub fn xdp_link_name(interface: &str) -> String {
    format!("link_xdp_{interface}")
}

impl From<EbpfError> for KernelError {
    fn from(e: EbpfError) -> Self {
        Self::Load(e)
    }
}

/// `e` and every error below it, joined by `: `.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Why the kernel layer could not start.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// bpffs or tracefs unavailable.
    #[error("{0}")]
    Filesystem(String),
    /// The object could not be loaded (no privileges, verifier, old kernel).
    #[error("loading the eBPF object: {}", causes(.0))]
    Load(EbpfError),
    /// A program could not be loaded or attached. The message carries the
    /// whole chain of causes (aya's syscall errors keep the errno in their
    /// source, which a plain `{}` would drop).
    #[error("{what}: {}", causes(cause))]
    Program {
        /// What was being done.
        what: String,
        /// Cause, printed with its own causes.
        cause: ProgramError,
    },
    /// A link could not be pinned or adopted.
    #[error("{what}: {reason}")]
    Link {
        /// What was being done.
        what: String,
        /// Cause.
        reason: String,
    },
    /// Map access failed.
    #[error(transparent)]
    Maps(#[from] MapsError),
}

fn program_err(what: impl Into<String>) -> impl FnOnce(ProgramError) -> KernelError {
    let what = what.into();
    move |cause| KernelError::Program { what, cause }
}

fn link_err<E: fmt::Display>(what: impl Into<String>) -> impl FnOnce(E) -> KernelError {
    let what = what.into();
    move |e| KernelError::Link {
        what,
        reason: e.to_string(),
    }
}

/// How the XDP program ended up on an interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// Attached now in native (driver) mode.
    Native,
    /// Attached now in generic (SKB) mode.
    Skb,
    /// A pinned link from an earlier daemon was found; its program was replaced.
    Adopted,
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Native => "native",
            Self::Skb => "skb (generic)",
            Self::Adopted => "adopted pinned link",
        })
    }
}

/// The running kernel layer.
pub struct Kernel {
    /// Keeps the programs (and their loaded state) alive.
    ebpf: Ebpf,
    /// Map handles.
    pub maps: KernelMaps,
    /// Drop events, taken by [`Kernel::take_events`].
    events: Option<RingBuf<MapData>>,
    /// Interface → how the program is attached.
    pub attachments: Vec<(String, AttachMode)>,
    /// Whether an earlier daemon's tracker was found and replaced.
    pub tracker_replaced: bool,
    /// The programs' debug log (only with `ebpf_debug_log`).
    logger: Option<EbpfLogger<events::ProgramLog>>,
    /// Last values of the counters that report trouble, to log each rise once.
    trouble: [u64; TROUBLE.len()],
}

/// Counters that mean the kernel layer could not count or reserve something:
/// each rise is logged (and they are exported as metrics).
const TROUBLE: [(Counter, &str); 4] = [
    (
        Counter::ConnCountsFull,
        "connection-count map full: new clients' connections are not counted",
    ),
    (
        Counter::ConnSocksFull,
        "socket map full: new connections are not counted",
    ),
    (
        Counter::ConnPendingFull,
        "handshake map full: SYNs are admitted by the live count only",
    ),
    (
        Counter::ConnCountErrors,
        "connection-count updates refused (lost races or a decrement below zero)",
    ),
];

impl Kernel {
    /// Loads, attaches or adopts, and applies `cfg`. See the module docs.
    pub fn start(cfg: &KernelConfig) -> Result<Self, KernelError> {
        let pin_dir = cfg.pin_path.as_path();
        bpffs::ensure_bpffs(pin_dir)?;
        std::fs::create_dir_all(pin_dir).map_err(|e| {
            KernelError::Filesystem(format!("creating pin directory {}: {e}", pin_dir.display()))
        })?;

        check_pins(pin_dir)?;
        let mut ebpf = load_object(pin_dir, cfg.ebpf_debug_log)?;
        let logger = if cfg.ebpf_debug_log {
            Some(
                EbpfLogger::init_with_logger(&mut ebpf, events::ProgramLog).map_err(|e| {
                    KernelError::Filesystem(format!("starting the eBPF debug log: {e}"))
                })?,
            )
        } else {
            None
        };

        // Phase 1, nothing attached yet: load every program, tell the
        // tracker its layout, write the configuration. Any failure here
        // leaves the interfaces as they were.
        let xdp: &mut Xdp = xdp_program(&mut ebpf, programs::XDP)?;
        xdp.load().map_err(program_err("loading the XDP program"))?;
        let sweep: &mut Xdp = xdp_program(&mut ebpf, programs::SWEEP)?;
        sweep
            .load()
            .map_err(program_err("loading the sweep program"))?;
        let tracker: &mut TracePoint = tracker_program(&mut ebpf)?;
        tracker
            .load()
            .map_err(program_err("loading the connection tracker"))?;
        bpffs::ensure_tracefs()?;
        let (layout, netns_problem) = layout::tracker_config()
            .map_err(|e| KernelError::Filesystem(format!("connection tracker: {e}")))?;
        if let Some(e) = netns_problem {
            tracing::warn!(
                error = %e,
                "connection tracker: the socket's network namespace cannot be read; \
                 sockets of every namespace on the protected ports are counted"
            );
        }
        tracing::debug!(layout = %layout::describe(&layout), "connection tracker layout");
        let mut tracker_map: Array<&mut MapData, TrackerConfig> = Array::try_from(
            ebpf.map_mut(map_names::TRACKER)
                .ok_or(MapsError::Missing(map_names::TRACKER))?,
        )
        .map_err(|source| MapsError::Open {
            name: map_names::TRACKER,
            source,
        })?;
        tracker_map
            .set(0, layout, 0)
            .map_err(|source| MapsError::Access {
                name: map_names::TRACKER,
                source,
            })?;
        let mut maps =
            KernelMaps::from_source(|name| ebpf.take_map(name).ok_or(MapsError::Missing(name)))?;
        maps.apply(cfg)?;

        // Phase 2: attach. New links first (undone on failure), then the
        // swaps into links adopted from an earlier daemon, which cannot be
        // undone and so come last.
        let tracker: &mut TracePoint = tracker_program(&mut ebpf)?;
        let tracker_replaced = attach_tracker(tracker, pin_dir)?;
        let xdp: &mut Xdp = xdp_program(&mut ebpf, programs::XDP)?;
        let attachments = match attach_all(xdp, cfg, pin_dir) {
            Ok(a) => a,
            Err(e) => {
                if !tracker_replaced {
                    // This start attached the tracker: it goes too.
                    let _ = std::fs::remove_file(pin_dir.join(TRACKER_LINK));
                }
                return Err(e);
            }
        };

        let events = ebpf
            .take_map(map_names::EVENTS)
            .and_then(|m| RingBuf::try_from(m).ok());
        let mut kernel = Self {
            ebpf,
            maps,
            events,
            attachments,
            tracker_replaced,
            logger,
            trouble: [0; TROUBLE.len()],
        };
        for (i, (counter, _)) in TROUBLE.iter().enumerate() {
            kernel.trouble[i] = kernel.maps.counter(*counter)?;
        }
        Ok(kernel)
    }

    /// Once a second: releases the connection slots of handshakes that
    /// never completed, and logs any rise of the trouble counters.
    pub fn maintain(&mut self) {
        let expired = self.maps.expired_pending();
        if !expired.is_empty() {
            match release_pending(&self.ebpf, &expired) {
                Ok(n) => tracing::debug!(released = n, "expired handshake reservations"),
                Err(e) => tracing::warn!(error = %e, "releasing expired handshake reservations"),
            }
        }
        for (i, (counter, what)) in TROUBLE.iter().enumerate() {
            let Ok(now) = self.maps.counter(*counter) else {
                continue;
            };
            if now > self.trouble[i] {
                tracing::warn!(
                    count = now - self.trouble[i],
                    counter = counter.name(),
                    "{what}"
                );
                self.trouble[i] = now;
            }
        }
    }

    /// The programs' debug log, when `ebpf_debug_log` is on (once).
    pub fn take_logger(&mut self) -> Option<EbpfLogger<events::ProgramLog>> {
        self.logger.take()
    }

    /// The drop-event ring buffer (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }
}

/// (map name, key size, value size) of every pinned map whose layout this
/// version relies on.
fn pinned_layouts() -> [(&'static str, usize, usize); 7] {
    use fraiseql_edge_common::{ClientKey, ClientState, ConnCount, GlobalConfig, PendingConn};
    use std::mem::size_of;
    [
        (map_names::CONFIG, 4, size_of::<GlobalConfig>()),
        (map_names::TRACKER, 4, size_of::<TrackerConfig>()),
        (map_names::BLOCKS, size_of::<ClientKey>(), 8),
        (
            map_names::CLIENTS,
            size_of::<ClientKey>(),
            size_of::<ClientState>(),
        ),
        (
            map_names::CONN_COUNTS,
            size_of::<ClientKey>(),
            size_of::<ConnCount>(),
        ),
        (map_names::CONN_SOCKS, 8, size_of::<ClientKey>()),
        (
            map_names::CONN_PENDING,
            size_of::<FlowKey>(),
            size_of::<PendingConn>(),
        ),
    ]
}

/// Refuses to start over maps pinned by an incompatible version (other key
/// or value sizes): they would be reused as they are, and the programs
/// would misread them or fail to load with a verifier error.
fn check_pins(pin_dir: &Path) -> Result<(), KernelError> {
    for (name, key, value) in pinned_layouts() {
        let pin = pin_dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&pin)
            .map_err(|e| KernelError::Filesystem(format!("reading {}: {e}", pin.display())))?;
        let found = (info.key_size() as usize, info.value_size() as usize);
        if found != (key, value) {
            return Err(KernelError::Filesystem(format!(
                "{} was pinned by an incompatible version (key/value {}/{} bytes, this \
                 version needs {key}/{value}); `fraiseql-edge kernel --pin-path {} detach` \
                 removes the old pins (enforcement stops until the daemon starts again)",
                pin.display(),
                found.0,
                found.1,
                pin_dir.display()
            )));
        }
    }
    Ok(())
}

/// An XDP program of the object, by name.
fn xdp_program<'a>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<&'a mut Xdp, KernelError> {
    ebpf.program_mut(name)
        .ok_or_else(|| KernelError::Filesystem(format!("{name} missing from the object")))?
        .try_into()
        .map_err(program_err(name))
}

/// The connection tracker of the object.
fn tracker_program(ebpf: &mut Ebpf) -> Result<&mut TracePoint, KernelError> {
    ebpf.program_mut(programs::CONN_TRACKER)
        .ok_or_else(|| KernelError::Filesystem("tracker program missing from the object".into()))?
        .try_into()
        .map_err(program_err("tracker program"))
}

/// Releases the slots of expired handshake reservations through the sweep
/// program (`BPF_PROG_TEST_RUN`), so the count changes with the same atomic
/// instructions as in the packet path. Returns how many were released; a
/// reservation converted by its handshake meanwhile is left alone.
pub fn release_pending(ebpf: &Ebpf, expired: &[FlowKey]) -> Result<usize, KernelError> {
    let sweep: &Xdp = ebpf
        .program(programs::SWEEP)
        .ok_or_else(|| KernelError::Filesystem("sweep program missing from the object".into()))?
        .try_into()
        .map_err(program_err("sweep program"))?;
    let mut released = 0;
    for key in expired {
        // The program reads the key from the packet; test runs want at
        // least an Ethernet header's worth of bytes, which a FlowKey is.
        let bytes = flow_key_bytes(key);
        let run = sweep
            .test_run(TestRunOptions {
                data_in: Some(&bytes),
                repeat: 1,
                ..TestRunOptions::new()
            })
            .map_err(program_err("running the sweep program"))?;
        if run.return_value == 2 {
            released += 1;
        }
    }
    Ok(released)
}

fn flow_key_bytes(key: &FlowKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(36);
    out.extend_from_slice(&key.client_addr);
    out.extend_from_slice(&key.local_addr);
    out.extend_from_slice(&key.client_port.to_ne_bytes());
    out.extend_from_slice(&key.local_port.to_ne_bytes());
    out
}

/// Loads the object with its maps pinned (or adopted) under `pin_dir`; no
/// program is loaded into the kernel or attached yet. Tests and benchmarks
/// use this with a private `pin_dir` to drive the programs with
/// `BPF_PROG_TEST_RUN`.
pub fn load_object(pin_dir: &Path, debug_log: bool) -> Result<Ebpf, EbpfError> {
    // Off unless asked for: the verifier then prunes every log call.
    let level: u8 = if debug_log {
        aya_log::Level::Debug as u8
    } else {
        0
    };
    EbpfLoader::new()
        .default_map_pin_directory(pin_dir)
        .override_global(aya_log::LEVEL, &level, true)
        .load(OBJECT)
}

/// Attaches the XDP program to every configured interface, all or nothing:
/// interfaces without a pinned link get a new one; if any of them fails,
/// the links made so far are removed (detached) and the error returned, the
/// adopted interfaces untouched. Only then is the program swapped into the
/// links adopted from an earlier daemon.
fn attach_all(
    xdp: &mut Xdp,
    cfg: &KernelConfig,
    pin_dir: &Path,
) -> Result<Vec<(String, AttachMode)>, KernelError> {
    let mut adopt = Vec::new();
    let mut fresh: Vec<(String, AttachMode)> = Vec::new();
    for iface in &cfg.interfaces {
        let pin = pin_dir.join(xdp_link_name(iface));
        if pin.exists() {
            match PinnedLink::from_pin(&pin) {
                Ok(link) => {
                    adopt.push((iface.clone(), link));
                    continue;
                }
                Err(e) => {
                    // The interface was recreated or the link detached: start over.
                    tracing::warn!(interface = %iface, error = %e, "stale pinned XDP link; attaching anew");
                    std::fs::remove_file(&pin)
                        .map_err(link_err(format!("removing stale pin {}", pin.display())))?;
                }
            }
        }
        match attach_new(xdp, iface, cfg.xdp_mode, &pin) {
            Ok(mode) => fresh.push((iface.clone(), mode)),
            Err(e) => {
                for (done, _) in &fresh {
                    // Removing the pin drops the link's last reference: detached.
                    let _ = std::fs::remove_file(pin_dir.join(xdp_link_name(done)));
                }
                return Err(e);
            }
        }
    }
    for (iface, pinned) in adopt {
        adopt_xdp(xdp, pinned, &pin_dir.join(xdp_link_name(&iface)))?;
        fresh.push((iface, AttachMode::Adopted));
    }
    Ok(fresh)
}

fn attach_new(
    xdp: &mut Xdp,
    iface: &str,
    mode: XdpModeConfig,
    pin: &Path,
) -> Result<AttachMode, KernelError> {
    let candidates: &[(XdpMode, AttachMode)] = match mode {
        XdpModeConfig::Auto => &[
            (XdpMode::Driver, AttachMode::Native),
            (XdpMode::Skb, AttachMode::Skb),
        ],
        XdpModeConfig::Native => &[(XdpMode::Driver, AttachMode::Native)],
        XdpModeConfig::Skb => &[(XdpMode::Skb, AttachMode::Skb)],
    };
    let mut last = None;
    for (xdp_mode, attach_mode) in candidates {
        match xdp.attach(iface, *xdp_mode) {
            Ok(id) => {
                let link = xdp
                    .take_link(id)
                    .map_err(program_err(format!("taking the XDP link of {iface}")))?;
                let fd_link = FdLink::try_from(link)
                    .map_err(link_err::<LinkError>(format!("XDP link of {iface}")))?;
                fd_link
                    .pin(pin)
                    .map_err(link_err::<PinError>(format!("pinning {}", pin.display())))?;
                return Ok(*attach_mode);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(KernelError::Program {
        what: format!("attaching XDP to {iface}"),
        cause: last.expect("at least one mode is tried"),
    })
}

fn adopt_xdp(xdp: &mut Xdp, pinned: PinnedLink, pin: &Path) -> Result<(), KernelError> {
    let link = XdpLink::try_from(FdLink::from(pinned))
        .map_err(link_err(format!("{} is not an XDP link", pin.display())))?;
    xdp.attach_to_link(link).map_err(program_err(format!(
        "replacing the program of {}",
        pin.display()
    )))?;
    Ok(())
}

/// Attaches the tracker and pins its link. When an earlier daemon's tracker
/// is pinned, the new one replaces it: attached first, then pinned over the
/// old pin (an atomic rename), which releases the old link. While both run
/// for that instant nothing is counted twice — the per-socket map admits
/// each socket once. Returns true when an earlier tracker was replaced.
fn attach_tracker(tracker: &mut TracePoint, pin_dir: &Path) -> Result<bool, KernelError> {
    let pin = pin_dir.join(TRACKER_LINK);
    let old = if pin.exists() {
        match PinnedLink::from_pin(&pin) {
            Ok(old) => Some(old),
            Err(e) => {
                tracing::warn!(error = %e, "stale pinned tracker link; attaching anew");
                std::fs::remove_file(&pin)
                    .map_err(link_err(format!("removing stale pin {}", pin.display())))?;
                None
            }
        }
    } else {
        None
    };
    bpffs::ensure_tracefs()?;
    let id = tracker
        .attach("sock", "inet_sock_set_state")
        .map_err(program_err("attaching the connection tracker"))?;
    let link = tracker
        .take_link(id)
        .map_err(program_err("taking the tracker link"))?;
    let fd_link = FdLink::try_from(link).map_err(link_err::<LinkError>("tracker link"))?;
    // bpffs names may not contain dots.
    let staging = pin_dir.join(format!("{TRACKER_LINK}_new"));
    let _ = std::fs::remove_file(&staging);
    fd_link.pin(&staging).map_err(link_err::<PinError>(format!(
        "pinning {}",
        staging.display()
    )))?;
    std::fs::rename(&staging, &pin).map_err(link_err(format!("replacing {}", pin.display())))?;
    Ok(old.is_some())
}

/// Removes every pin under `pin_dir` (links first: that detaches the
/// programs), then the directory. Returns the names removed.
pub fn detach(pin_dir: &Path) -> std::io::Result<Vec<String>> {
    let mut removed = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(pin_dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    // Links before maps.
    entries.sort_by_key(|name| !name.starts_with("link_"));
    for name in entries {
        std::fs::remove_file(pin_dir.join(&name))?;
        removed.push(name);
    }
    std::fs::remove_dir(pin_dir)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What operators read in the log must carry the kernel's own reason.
    #[test]
    fn a_failed_attach_names_the_errno_once() {
        let e = KernelError::Program {
            what: "attaching XDP to eth0".into(),
            cause: ProgramError::SyscallError(aya::sys::SyscallError {
                call: "bpf_link_create",
                io_error: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
            }),
        };
        let shown = e.to_string();
        assert!(
            shown.starts_with("attaching XDP to eth0: `bpf_link_create` failed: ")
                && shown.contains("not supported"),
            "{shown}"
        );
        let chained = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chained.matches("not supported").count(), 1, "{chained}");
    }
}
