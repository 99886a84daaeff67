//! `promtool check metrics` on real exposition text: the metrics the daemon
//! exports must pass Prometheus's own linter.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

/// Runs `promtool check metrics` on `text`; panics with promtool's findings
/// when it objects. Without promtool: a failure under `CI=true` (setup
/// installs it), a printed skip elsewhere — returns false then.
pub fn check_metrics(test: &str, text: &str) -> bool {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: promtool is needed (cargo xtask setup installs it): {e}");
            }
            eprintln!("SKIP {test}: promtool not found ({e}); run `cargo xtask setup`");
            return false;
        }
    };
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("writing to promtool");
    let out = child.wait_with_output().expect("waiting for promtool");
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && findings.trim().is_empty(),
        "promtool check metrics objects:\n{findings}\n--- input ---\n{text}"
    );
    true
}

/// The exposition text of the kernel collector over the maps pinned under
/// `pin_path`, as the daemon's `/metrics` would serve it.
pub fn kernel_metrics_text(pin_path: &std::path::Path) -> String {
    use fraiseql_edge::kernel::{KernelMaps, collector::KernelCollector};
    let maps = KernelMaps::open_pinned(pin_path).expect("open pins");
    let registry = prometheus::Registry::new();
    registry
        .register(Box::new(KernelCollector::new(maps).expect("collector")))
        .expect("register");
    let mut text = Vec::new();
    prometheus::Encoder::encode(
        &prometheus::TextEncoder::new(),
        &registry.gather(),
        &mut text,
    )
    .expect("encode");
    String::from_utf8(text).expect("utf-8")
}
