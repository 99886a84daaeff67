//! A bad configuration is refused at start-up with exit code 2 and a message
//! naming the offending key: `fraiseql-edge: invalid configuration PATH: KEY: reason`.
//! These run the real binary (`check-config`, and `run` where it matters)
//! and need no privileges.

use std::{path::Path, process::Output};

use fraiseql_edge_tests::daemon::run_cli;

/// A config with only what is required; `lo` exists on every host.
const VALID: &str =
    "[kernel]\ninterfaces = [\"lo\"]\nprotected_ports = [8080]\nrate = 100\nburst = 50\n";

fn with_config(toml: &str, args: impl FnOnce(&Path) -> Output) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("edge.toml");
    std::fs::write(&path, toml).expect("writing the config");
    let out = args(&path);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn check_config(toml: &str) -> (Option<i32>, String) {
    with_config(toml, |path| {
        run_cli(&["check-config", "--config", path.to_str().expect("UTF-8")])
    })
}

/// Asserts exit code 2 and `invalid configuration <file>: <key>: ` on stderr.
fn assert_rejected(toml: &str, key: &str) {
    let (code, stderr) = check_config(toml);
    println!("{key}: exit {code:?}: {}", stderr.trim());
    assert_eq!(code, Some(2), "exit code; stderr: {stderr}");
    assert!(
        stderr.contains("fraiseql-edge: invalid configuration ")
            && stderr.contains(&format!("edge.toml: {key}: ")),
        "stderr does not name `{key}`: {stderr}"
    );
}

#[test]
fn valid_config_is_accepted() {
    let (code, stderr) = check_config(VALID);
    assert_eq!(code, Some(0), "stderr: {stderr}");
}

#[test]
fn unknown_key_is_named() {
    assert_rejected(&format!("{VALID}rate_limit = 5\n"), "kernel.rate_limit");
    assert_rejected("[limits]\nrate = 5\n", "limits");
}

#[test]
fn negative_rate_is_named() {
    assert_rejected(&VALID.replace("rate = 100", "rate = -5"), "kernel.rate");
}

#[test]
fn bad_cidr_is_named() {
    let bad_syntax =
        format!("{VALID}\n[[kernel.overrides]]\ncidr = \"10.0.0.300/24\"\naction = \"deny\"\n");
    assert_rejected(&bad_syntax, "kernel.overrides[0].cidr");
    let host_bits = format!(
        "{VALID}\n[[kernel.overrides]]\ncidr = \"10.0.0.0/8\"\naction = \"allow\"\n\
         [[kernel.overrides]]\ncidr = \"10.0.0.1/24\"\naction = \"deny\"\n"
    );
    assert_rejected(&host_bits, "kernel.overrides[1].cidr");
}

#[test]
fn missing_interface_is_named() {
    assert_rejected(
        &VALID.replace("\"lo\"", "\"fe-nope0\""),
        "kernel.interfaces[0]",
    );
}

#[test]
fn malformed_toml_is_rejected() {
    let (code, stderr) = check_config("[kernel\ninterfaces = [\"lo\"]\n");
    println!("malformed: exit {code:?}: {}", stderr.trim());
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("invalid configuration") && stderr.contains("edge.toml"),
        "{stderr}"
    );
}

#[test]
fn missing_file_is_rejected() {
    let out = run_cli(&[
        "check-config",
        "--config",
        "/nonexistent/fraiseql-edge.toml",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(
        stderr.contains("/nonexistent/fraiseql-edge.toml") && stderr.contains("cannot read"),
        "{stderr}"
    );
}

/// `run` refuses the same way before touching the kernel.
#[test]
fn run_refuses_an_invalid_config() {
    let (code, stderr) = with_config(&VALID.replace("rate = 100", "rate = -5"), |path| {
        run_cli(&["run", "--config", path.to_str().expect("UTF-8")])
    });
    assert_eq!(code, Some(2), "stderr: {stderr}");
    assert!(stderr.contains("edge.toml: kernel.rate: "), "{stderr}");
    assert!(!stderr.contains("ready"), "{stderr}");
}
