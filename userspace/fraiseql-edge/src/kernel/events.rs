//! Sampled drop events from the kernel's ring buffer.

use std::net::IpAddr;

use aya::maps::{MapData, RingBuf};
use fraiseql_edge_common::{DropEvent, DropReason};
use tokio::io::unix::AsyncFd;

use crate::client_key;

/// A decoded drop event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Drop {
    /// The client.
    pub client: IpAddr,
    /// Why it was dropped.
    pub reason: DropReason,
    /// Destination port.
    pub port: u16,
    /// IP protocol.
    pub protocol: u8,
}

/// Decodes one ring-buffer record; `None` for a record of the wrong size or reason.
pub fn decode(bytes: &[u8]) -> Option<Drop> {
    if bytes.len() < size_of::<DropEvent>() {
        return None;
    }
    // SAFETY: the length is checked and DropEvent is plain old data.
    #[expect(unsafe_code, reason = "reading a POD record from the ring buffer")]
    let ev: DropEvent = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    Some(Drop {
        client: client_key::to_ip(&ev.client),
        reason: DropReason::from_u32(ev.reason)?,
        port: ev.port,
        protocol: ev.protocol,
    })
}

/// Logs every drop event, and publishes it on `events`, until the ring
/// buffer fails.
pub async fn log_drops(
    ring: RingBuf<MapData>,
    events: crate::events::EventBus,
) -> std::io::Result<()> {
    // The ring buffer owns its fd for as long as the AsyncFd lives.
    #[expect(deprecated, reason = "the replacement, AsyncFd::register, is unsafe")]
    let mut fd = AsyncFd::new(ring)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        let ring = guard.get_inner_mut();
        while let Some(item) = ring.next() {
            match decode(&item) {
                Some(d) => {
                    tracing::info!(
                        client = %d.client,
                        reason = d.reason.as_str(),
                        port = d.port,
                        protocol = d.protocol,
                        "kernel drop (sampled)"
                    );
                    events.publish(
                        crate::events::Event::new(
                            crate::events::Kind::Drop,
                            d.client.to_string(),
                            format!("dropped: {}", d.reason.as_str()),
                        )
                        .by("kernel")
                        .with("reason", d.reason.as_str())
                        .with("port", d.port)
                        .with("protocol", d.protocol),
                    );
                }
                None => tracing::warn!(len = item.len(), "undecodable drop event"),
            }
        }
        guard.clear_ready();
    }
}

/// Where the programs' aya-log records go: the daemon's log, at info level
/// whatever level the program used (recorded as a field), because
/// `kernel.ebpf_debug_log` is the switch — a `RUST_LOG` filter must not
/// hide what the operator turned on.
pub struct ProgramLog;

impl log::Log for ProgramLog {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        tracing::info!(
            target: "fraiseql_edge::ebpf",
            program = record.target(),
            level = %record.level(),
            "{}",
            record.args()
        );
    }

    fn flush(&self) {}
}

/// Forwards the programs' debug log into the daemon's log until the ring
/// buffer fails.
pub async fn forward_debug_log(logger: aya_log::EbpfLogger<ProgramLog>) -> std::io::Result<()> {
    // The logger owns its ring buffer's fd for as long as the AsyncFd lives.
    #[expect(deprecated, reason = "the replacement, AsyncFd::register, is unsafe")]
    let mut fd = AsyncFd::new(logger)?;
    loop {
        let mut guard = fd.readable_mut().await?;
        guard.get_inner_mut().flush();
        guard.clear_ready();
    }
}
