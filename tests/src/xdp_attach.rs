//! What is attached to an interface, as the kernel reports it: the XDP
//! programs `ip -d link` lists and the XDP links behind them.

use std::{path::Path, process::Command};

use aya::programs::{
    links::{FdLink, LinkType, PinnedLink},
    loaded_links,
};

/// Ids of the XDP programs attached to `ifname` (any mode), from
/// `ip -j -d link show dev <ifname>`.
pub fn xdp_prog_ids(ifname: &str) -> Vec<u32> {
    let out = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", ifname])
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip link show {ifname}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j output");
    let Some(xdp) = json.get(0).and_then(|l| l.get("xdp")) else {
        return Vec::new();
    };
    // One program: {"mode":1,"prog":{"id":…}}; several: {"attached":[{"prog":…},…]}.
    let progs: Vec<&serde_json::Value> = match xdp.get("attached").and_then(|a| a.as_array()) {
        Some(list) => list.iter().filter_map(|a| a.get("prog")).collect(),
        None => xdp.get("prog").into_iter().collect(),
    };
    progs
        .iter()
        .filter_map(|p| p.get("id")?.as_u64())
        .map(|id| u32::try_from(id).expect("prog id fits u32"))
        .collect()
}

/// (link id, program id) of a pinned link.
pub fn pinned_link(pin: &Path) -> (u32, u32) {
    let link = PinnedLink::from_pin(pin).unwrap_or_else(|e| panic!("{}: {e}", pin.display()));
    let info = FdLink::from(link).info().expect("link info");
    (info.id(), info.program_id())
}

/// Ids of the XDP links in the system whose program is `prog_id`.
pub fn xdp_links_of_prog(prog_id: u32) -> Vec<u32> {
    loaded_links()
        // Links of other processes can vanish while we iterate: skip those.
        .filter_map(Result::ok)
        .filter(|l| matches!(l.link_type(), Ok(LinkType::Xdp)) && l.program_id() == prog_id)
        .map(|l| l.id())
        .collect()
}

/// Whether a BPF link with id `id` still exists (pinned, or held open).
pub fn link_exists(id: u32) -> bool {
    loaded_links().filter_map(Result::ok).any(|l| l.id() == id)
}
