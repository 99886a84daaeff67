//! `fraiseql-edge kernel …` with `--json`, against a real daemon's pins:
//! every command's output is parsed and compared with what the maps hold
//! (read through `KernelMaps`) and with what the traffic did. Bad input
//! must give a clear error and a non-zero exit.
//!
//! Namespace `net` 7 and ports 187xx (see `kernel_e2e` for the scheme).

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Output,
    time::Duration,
};

use fraiseql_edge::kernel::{TRACKER_LINK, xdp_link_name};
use fraiseql_edge_common::Counter;
use fraiseql_edge_tests::{
    clients::{flood_for, tcp_connect},
    daemon::{Daemon, EdgeConfig, run_cli},
    kernel_tests_enabled,
    netns::NetNs,
    servers::{TcpHolder, UdpCounter},
    wait::{eventually, settled},
    xdp_attach::{link_exists, pinned_link, xdp_prog_ids},
};
use serde_json::{Value, json};

use crate::kernel_e2e::{conns, counter, open_maps, pin_dir};

/// `fraiseql-edge kernel --pin-path <pin> --json <args>`.
fn kernel_cli(pin: &Path, args: &[&str]) -> Output {
    let pin = pin.to_str().expect("UTF-8 pin path");
    let all: Vec<&str> = ["kernel", "--pin-path", pin, "--json"]
        .into_iter()
        .chain(args.iter().copied())
        .collect();
    run_cli(&all)
}

/// Runs a `kernel` command that must succeed and returns its parsed output.
fn kernel_json(pin: &Path, args: &[&str]) -> Value {
    let out = kernel_cli(pin, args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kernel {}: {:?}; stderr:\n{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "kernel {}: stdout is not JSON ({e}): {stdout}",
            args.join(" ")
        )
    });
    println!("cli: kernel {} → {value}", args.join(" "));
    value
}

/// The entry of `client` in a `clients` or `blocks` listing.
fn entry(list: &Value, client: IpAddr) -> Option<&Value> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .find(|e| e["client"] == client.to_string())
}

/// The clients a `blocks` listing names.
fn listed(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .expect("a JSON array")
        .iter()
        .map(|e| {
            e["client"]
                .as_str()
                .expect("client is a string")
                .to_string()
        })
        .collect()
}

#[test]
fn kernel_commands_print_json_that_matches_the_maps() {
    if !kernel_tests_enabled("kernel_commands_print_json_that_matches_the_maps") {
        return;
    }
    const UDP_PORT: u16 = 18701;
    const TCP_PORT: u16 = 18702;
    const RATE: u64 = 100;
    const BURST: u64 = 50;
    const TTL: u64 = 600;
    let pin = pin_dir("cli");
    let ns = NetNs::new("cli", 7, 4);
    let (flooder, holder_client, blocked, forever) =
        (ns.client(0), ns.client(1), ns.client(2), ns.client(3));
    let udp_dst = SocketAddr::new(ns.host_v4().into(), UDP_PORT);
    let tcp_dst = SocketAddr::new(ns.host_v4().into(), TCP_PORT);
    let server = UdpCounter::bind(&[udp_dst]);
    let holder = TcpHolder::bind(tcp_dst);
    let mut cfg = EdgeConfig::new(ns.host_if(), &[UDP_PORT, TCP_PORT], &pin.0);
    cfg.rate = RATE;
    cfg.burst = BURST;
    let mut daemon = Daemon::start(&cfg);
    let maps = open_maps(&pin);

    // Traffic to report on: a flood above the limit and one open connection.
    let report = flood_for(&ns, flooder, udp_dst, 10 * RATE, Duration::from_secs(1));
    let received = settled(Duration::from_secs(3), || server.received(flooder));
    let conn = tcp_connect(&ns, holder_client, tcp_dst, Duration::from_secs(3)).expect("connect");
    assert!(eventually(Duration::from_secs(3), || conns(
        &maps,
        holder_client
    ) == 1));

    // conns: the live count of the real connection.
    let holder_ip = holder_client.to_string();
    assert_eq!(
        kernel_json(&pin.0, &["conns", &holder_ip]),
        json!({ "client": holder_ip, "conns": 1 })
    );

    // clients: the flooder's figures, as the maps hold them and as the
    // server saw them; the connection under its client.
    let clients = kernel_json(&pin.0, &["clients"]);
    let info = maps
        .client(flooder)
        .expect("reading the client map")
        .expect("the flooder is tracked");
    assert_eq!(
        entry(&clients, flooder),
        Some(&json!({
            "client": flooder.to_string(),
            "passed": info.passed,
            "dropped": info.dropped,
            "conns": 0,
        })),
        "clients: {clients}"
    );
    println!(
        "cli: flooder sent {}, server received {received}, kernel passed {} dropped {}",
        report.sent, info.passed, info.dropped
    );
    assert!(
        info.passed.abs_diff(received) <= 5.max(received / 100),
        "clients says {} passed, the server received {received}",
        info.passed
    );
    assert!(info.dropped > 0 && info.passed + info.dropped <= report.sent);
    let holder_entry = entry(&clients, holder_client).expect("the holder is listed");
    assert_eq!(holder_entry["conns"], 1, "clients: {clients}");
    let top = kernel_json(&pin.0, &["clients", "--limit", "1"]);
    assert_eq!(listed(&top), BTreeSet::from([flooder.to_string()]));

    // stats: every counter, each as KernelMaps::stats has it (read just
    // before and after, for counters that stray packets may move).
    let before = maps.stats().expect("stats");
    let stats = kernel_json(&pin.0, &["stats"]);
    let after = maps.stats().expect("stats");
    let names: BTreeSet<&str> = stats
        .as_object()
        .expect("stats is an object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, Counter::ALL.iter().map(|(_, n)| *n).collect());
    for ((name, lo), (_, hi)) in before.iter().zip(&after) {
        let value = stats[*name].as_u64().expect("counters are numbers");
        assert!(
            (*lo..=*hi).contains(&value),
            "stats: {name} = {value}, the maps hold {lo}..={hi}"
        );
    }
    assert!(stats["passed"].as_u64() >= Some(info.passed));
    assert!(stats["dropped_rate"].as_u64() >= Some(info.dropped));
    assert_eq!(stats["conn_opened"], 1);

    // block with a TTL: listed with (about) that TTL, and enforced.
    let blocked_ip = blocked.to_string();
    let ttl = TTL.to_string();
    assert_eq!(
        kernel_json(&pin.0, &["block", &blocked_ip, "--ttl", &ttl]),
        json!({ "client": blocked_ip, "expires_in_secs": TTL })
    );
    let blocks = kernel_json(&pin.0, &["blocks"]);
    let expires = entry(&blocks, blocked).expect("the block is listed")["expires_in_secs"]
        .as_u64()
        .expect("a TTL block expires");
    assert!(
        (TTL - 10..=TTL).contains(&expires),
        "blocked for {TTL} s, expires in {expires} s"
    );
    let dropped_block = counter(&maps, Counter::DroppedBlock);
    let sent = flood_for(&ns, blocked, udp_dst, 40, Duration::from_millis(500)).sent;
    assert!(
        eventually(Duration::from_secs(3), || counter(
            &maps,
            Counter::DroppedBlock
        ) - dropped_block
            >= sent),
        "the blocked client's {sent} packets were not dropped as blocked"
    );
    assert_eq!(server.received(blocked), 0, "a blocked client got through");

    // block without a TTL.
    let forever_ip = forever.to_string();
    assert_eq!(
        kernel_json(&pin.0, &["block", &forever_ip]),
        json!({ "client": forever_ip, "expires_in_secs": null })
    );
    let blocks = kernel_json(&pin.0, &["blocks"]);
    assert_eq!(
        entry(&blocks, forever),
        Some(&json!({ "client": forever_ip, "expires_in_secs": null }))
    );
    let in_maps: BTreeSet<String> = maps
        .blocks()
        .expect("blocks")
        .iter()
        .map(|b| b.client.to_string())
        .collect();
    assert_eq!(listed(&blocks), in_maps);
    assert_eq!(
        in_maps,
        BTreeSet::from([blocked_ip.clone(), forever_ip.clone()])
    );

    // unblock: gone from the list and from the map; traffic passes again.
    assert_eq!(
        kernel_json(&pin.0, &["unblock", &blocked_ip]),
        json!({ "client": blocked_ip, "unblocked": true })
    );
    assert_eq!(
        kernel_json(&pin.0, &["unblock", &blocked_ip]),
        json!({ "client": blocked_ip, "unblocked": false }),
        "unblocking a client that is not blocked says so"
    );
    let blocks = kernel_json(&pin.0, &["blocks"]);
    assert_eq!(listed(&blocks), BTreeSet::from([forever_ip.clone()]));
    assert!(
        maps.blocks()
            .expect("blocks")
            .iter()
            .all(|b| b.client != blocked)
    );
    flood_for(&ns, blocked, udp_dst, 40, Duration::from_millis(500));
    assert!(
        eventually(Duration::from_secs(3), || server.received(blocked) > 0),
        "nothing arrives from an unblocked client"
    );

    // conns follows the close.
    drop(conn);
    assert!(
        eventually(Duration::from_secs(5), || kernel_json(
            &pin.0,
            &["conns", &holder_ip]
        ) == json!({ "client": holder_ip, "conns": 0 })),
        "conns did not drop to 0 after the close"
    );
    assert_eq!(holder.open(holder_client), 0);

    // Without a daemon the commands still work on the pins.
    let status = daemon.terminate();
    assert!(status.success(), "SIGTERM exit: {status:?}");
    let blocks = kernel_json(&pin.0, &["blocks"]);
    assert_eq!(listed(&blocks), BTreeSet::from([forever_ip.clone()]));

    // detach: every pin removed, the XDP program off the interface, the
    // links gone, and the block no longer enforced.
    drop(maps);
    let (xdp_link, xdp_prog) = pinned_link(&pin.0.join(xdp_link_name(ns.host_if())));
    let (tracker_link, _) = pinned_link(&pin.0.join(TRACKER_LINK));
    assert_eq!(xdp_prog_ids(ns.host_if()), vec![xdp_prog]);
    let pins: BTreeSet<String> = std::fs::read_dir(&pin.0)
        .expect("pin dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .into_string()
                .expect("UTF-8")
        })
        .collect();
    let detached = kernel_json(&pin.0, &["detach"]);
    assert_eq!(detached["pin_path"], pin.0.to_str().expect("UTF-8"));
    let removed: BTreeSet<String> = detached["removed"]
        .as_array()
        .expect("removed is a list")
        .iter()
        .map(|n| n.as_str().expect("a name").to_string())
        .collect();
    assert_eq!(removed, pins, "detach removed other pins than there were");
    assert!(!pin.0.exists(), "the pin directory is still there");
    assert!(
        eventually(Duration::from_secs(3), || xdp_prog_ids(ns.host_if())
            .is_empty()),
        "XDP programs still attached: {:?}",
        xdp_prog_ids(ns.host_if())
    );
    assert!(
        eventually(Duration::from_secs(3), || !link_exists(xdp_link)
            && !link_exists(tracker_link)),
        "links still exist after detach"
    );
    flood_for(&ns, forever, udp_dst, 40, Duration::from_millis(500));
    assert!(
        eventually(Duration::from_secs(3), || server.received(forever) > 0),
        "the block outlived detach"
    );

    // The pins are gone: the commands now fail, and say where they looked.
    let out = kernel_cli(&pin.0, &["blocks"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "blocks after detach succeeded");
    assert!(
        stderr.contains(pin.0.to_str().expect("UTF-8")),
        "stderr: {stderr}"
    );
}

/// Expects `kernel <args>` to fail with `code`, nothing on stdout and a
/// message naming `mentions` on stderr.
fn assert_refused(pin: &Path, args: &[&str], code: i32, mentions: &[&str]) {
    let out = kernel_cli(pin, args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "cli: kernel {} → {:?}: {}",
        args.join(" "),
        out.status.code(),
        stderr.lines().next().unwrap_or("")
    );
    assert_eq!(
        out.status.code(),
        Some(code),
        "kernel {}: stderr:\n{stderr}",
        args.join(" ")
    );
    assert!(
        out.stdout.is_empty(),
        "kernel {} printed {:?}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout)
    );
    for m in mentions {
        assert!(
            stderr.contains(m),
            "kernel {}: stderr does not mention {m:?}:\n{stderr}",
            args.join(" ")
        );
    }
}

/// Bad addresses are usage errors (exit 2, clap's); a pin path without a
/// daemon's pins is an error (exit 1) that names the path. Needs no
/// privileges: nothing is opened successfully.
#[test]
fn kernel_commands_reject_bad_input() {
    let missing = std::path::PathBuf::from(format!(
        "/sys/fs/bpf/fe-test-cli-missing-{}",
        std::process::id()
    ));
    assert!(!missing.exists());
    let usage_errors: [(&[&str], &[&str]); 6] = [
        (&["block", "10.0.0.256"], &["invalid value '10.0.0.256'"]),
        (
            &["block", "10.0.0.0/24", "--ttl", "60"],
            &["invalid value '10.0.0.0/24'"],
        ),
        (&["unblock", "not-an-ip"], &["invalid value 'not-an-ip'"]),
        (&["conns", "2001:db8::g"], &["invalid value '2001:db8::g'"]),
        (
            &["block", "192.0.2.7", "--ttl", "soon"],
            &["invalid value 'soon'", "--ttl"],
        ),
        (
            &["block", "192.0.2.7", "--ttl", "-5"],
            &["unexpected argument '-5'"],
        ),
    ];
    for (args, mentions) in usage_errors {
        assert_refused(&missing, args, 2, mentions);
    }
    let on_maps: [&[&str]; 6] = [
        &["stats"],
        &["clients"],
        &["blocks"],
        &["conns", "192.0.2.7"],
        &["block", "192.0.2.7", "--ttl", "60"],
        &["unblock", "192.0.2.7"],
    ];
    let path = missing.to_str().expect("UTF-8");
    for args in on_maps {
        assert_refused(
            &missing,
            args,
            1,
            &[path, "is the daemon running with this pin_path?"],
        );
    }
    assert_refused(&missing, &["detach"], 1, &["detaching", path]);

    // A directory that exists but holds no pins (not bpffs either).
    let empty = tempfile::tempdir().expect("temp dir");
    let path = empty.path().to_str().expect("UTF-8");
    assert_refused(
        empty.path(),
        &["stats"],
        1,
        &[path, "is the daemon running with this pin_path?"],
    );
}
