//! Every `edgectl …` and `fraiseql-edge …` command shown in the README,
//! the runbooks and the operations package's READMEs parses with the real
//! command line: `fraiseql-edge` through its own clap definition, `edgectl`
//! by running the real binary against a socket that does not exist, where
//! a command that parsed and passed edgectl's value checks ends with exit
//! 3 (daemon unreachable) or 4 (its token file missing), and a wrong one
//! with 2 (usage) or 5 (invalid value).

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use clap::Parser as _;
use fraiseql_edge_tests::edgectl::edgectl_bin;

/// A command found in a document: where, and its words.
#[derive(Debug)]
struct Found {
    at: String,
    words: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The documents whose commands are checked.
fn documents() -> Vec<PathBuf> {
    let root = root();
    let mut out: Vec<PathBuf> = [
        "README.md",
        "alerts/README.md",
        "dashboards/README.md",
        "k8s/README.md",
    ]
    .iter()
    .map(|p| root.join(p))
    .filter(|p| p.exists())
    .collect();
    let mut stack = vec![root.join("runbooks/src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The lines inside the fenced code blocks of `text`, `\` continuations
/// joined: (line number, line).
fn code_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    let mut pending: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
            pending = None;
            continue;
        }
        if !inside {
            continue;
        }
        let (start, mut joined) = pending.take().unwrap_or((i + 1, String::new()));
        let body = line.trim_end();
        if let Some(cont) = body.strip_suffix('\\') {
            joined.push_str(cont);
            joined.push(' ');
            pending = Some((start, joined));
        } else {
            joined.push_str(body);
            out.push((start, joined));
        }
    }
    out
}

/// `text` with every fenced block that is not shell (TOML, YAML, JSON,
/// PromQL …) blanked, line numbers kept.
fn shell_blocks_only(text: &str) -> String {
    let mut keep = String::new();
    let mut inside: Option<bool> = None;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") {
            match inside {
                None => {
                    let info = trimmed.trim_start_matches('`').trim();
                    let lang = info.split([',', ' ']).next().unwrap_or("");
                    let shell = matches!(
                        lang,
                        "" | "sh" | "bash" | "console" | "shell" | "text" | "shell-session"
                    );
                    inside = Some(shell);
                    if shell {
                        keep.push_str("```\n");
                    }
                }
                Some(shell) => {
                    if shell {
                        keep.push_str("```\n");
                    }
                    inside = None;
                }
            }
            continue;
        }
        if inside == Some(true) {
            keep.push_str(line);
        }
        keep.push('\n');
    }
    keep
}

/// The edgectl and fraiseql-edge commands on one shell line.
fn commands_in(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut line = line.trim();
    // A comment line; a `$ ` prompt.
    if line.starts_with('#') {
        return out;
    }
    if let Some(rest) = line.strip_prefix("$ ") {
        line = rest;
    }
    // A comment ends the line.
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    for segment in line.split(['|', ';']).flat_map(|s| s.split("&&")) {
        let mut seg = segment.trim();
        if let Some(i) = seg.find(" -- ")
            && (seg.starts_with("kubectl") || seg.starts_with("sudo kubectl"))
        {
            seg = seg[i + 4..].trim();
        }
        for prefix in ["sudo -E ", "sudo ", "exec ", "time "] {
            if let Some(rest) = seg.strip_prefix(prefix) {
                seg = rest.trim();
            }
        }
        // Environment assignments before the command.
        while let Some((first, rest)) = seg.split_once(' ') {
            if first.contains('=') && !first.starts_with('-') && !first.contains('/') {
                seg = rest.trim();
            } else {
                break;
            }
        }
        // Redirections end the command.
        let seg = match seg.find(['>', '<']) {
            Some(i) => seg[..i].trim(),
            None => seg,
        };
        let first = seg.split_whitespace().next().unwrap_or("");
        let program = first.rsplit('/').next().unwrap_or("");
        if program == "edgectl" || program == "fraiseql-edge" {
            out.push(seg.to_string());
        }
    }
    out
}

fn all_commands() -> Vec<Found> {
    let mut out = Vec::new();
    for doc in documents() {
        let text = std::fs::read_to_string(&doc).expect("read document");
        let rel = doc
            .strip_prefix(root())
            .unwrap_or(&doc)
            .display()
            .to_string();
        for (n, line) in code_lines(&shell_blocks_only(&text)) {
            for cmd in commands_in(&line) {
                let words = shlex::split(&cmd)
                    .unwrap_or_else(|| panic!("{rel}:{n}: unbalanced quotes: {cmd}"));
                out.push(Found {
                    at: format!("{rel}:{n}"),
                    words,
                });
            }
        }
    }
    out
}

/// Why `found` does not parse, if it does not.
fn problem(found: &Found) -> Option<String> {
    let shown = found.words.join(" ");
    if let Some(w) = found
        .words
        .iter()
        .find(|w| w.contains('$') || (w.starts_with('<') && w.ends_with('>')))
    {
        return Some(format!(
            "{}: `{shown}`: `{w}` is a placeholder; show a concrete value",
            found.at
        ));
    }
    let program = found.words[0].rsplit('/').next().unwrap_or("");
    if program == "fraiseql-edge" {
        return match fraiseql_edge::cli::Cli::try_parse_from(&found.words) {
            Ok(_) => None,
            Err(e)
                if matches!(
                    e.kind(),
                    clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
                ) =>
            {
                None
            }
            Err(e) => Some(format!("{}: `{shown}`:\n{e}", found.at)),
        };
    }
    let out = Command::new(edgectl_bin())
        .args(&found.words[1..])
        .env_remove("FRAISEQL_EDGE_ADDR")
        .env_remove("FRAISEQL_EDGE_TOKEN")
        .env_remove("FRAISEQL_EDGE_TOKEN_FILE")
        .env(
            "FRAISEQL_EDGE_SOCKET",
            "/nonexistent/fraiseql-edge-docs-check.sock",
        )
        .output()
        .expect("running edgectl");
    match out.status.code() {
        Some(0 | 3 | 4) => None,
        code => Some(format!(
            "{}: `{shown}` exits {code:?}:\n{}",
            found.at,
            String::from_utf8_lossy(&out.stderr)
        )),
    }
}

#[test]
fn every_documented_command_parses_with_the_real_cli() {
    let found = all_commands();
    let edgectl = found
        .iter()
        .filter(|f| f.words[0].ends_with("edgectl"))
        .count();
    assert!(
        edgectl >= 20 && found.len() > edgectl,
        "only {} commands found ({edgectl} edgectl): is the extraction broken?",
        found.len()
    );
    let problems: Vec<String> = found.iter().filter_map(problem).collect();
    println!(
        "{} documented commands checked ({edgectl} edgectl)",
        found.len()
    );
    assert!(
        problems.is_empty(),
        "{} of {} documented commands do not parse:\n\n{}",
        problems.len(),
        found.len(),
        problems.join("\n\n")
    );
}

#[test]
fn the_extraction_finds_commands_where_operators_write_them() {
    let cases = [
        ("$ edgectl status", vec!["edgectl status"]),
        (
            "kubectl -n fraiseql-edge exec ds/fraiseql-edge -c edge -- edgectl --json status | jq .ready",
            vec!["edgectl --json status"],
        ),
        (
            "sudo fraiseql-edge kernel stats",
            vec!["fraiseql-edge kernel stats"],
        ),
        (
            "FOO=1 edgectl limits get > out.txt",
            vec!["edgectl limits get"],
        ),
        (
            "edgectl block 203.0.113.7 --ttl 10m # a comment",
            vec!["edgectl block 203.0.113.7 --ttl 10m"],
        ),
        (
            "cd fraiseql-edge && ./target/release/fraiseql-edge check-config --config edge.toml",
            vec!["./target/release/fraiseql-edge check-config --config edge.toml"],
        ),
        ("ls /sys/fs/bpf/fraiseql-edge", vec![]),
        ("# edgectl is the CLI", vec![]),
    ];
    for (line, expected) in cases {
        assert_eq!(commands_in(line), expected, "{line}");
    }
    let doc = "text\n```toml\nedgectl = 1\n```\n```sh\nedgectl block \\\n  203.0.113.7\n```\n";
    let lines: Vec<String> = code_lines(&shell_blocks_only(doc))
        .into_iter()
        .map(|(_, l)| l)
        .collect();
    assert_eq!(lines, vec!["edgectl block    203.0.113.7".to_string()]);
}

#[test]
fn a_wrong_command_is_reported() {
    let bad = |words: &[&str]| Found {
        at: "test".into(),
        words: words.iter().map(|w| w.to_string()).collect(),
    };
    assert!(problem(&bad(&["edgectl", "blok", "203.0.113.7"])).is_some());
    assert!(problem(&bad(&["edgectl", "block", "203.0.113.7/8"])).is_some());
    assert!(problem(&bad(&["edgectl", "block", "<ip>"])).is_some());
    assert!(problem(&bad(&["fraiseql-edge", "kernel", "nonsense"])).is_some());
    assert!(problem(&bad(&["edgectl", "status"])).is_none());
    assert!(problem(&bad(&["fraiseql-edge", "kernel", "stats"])).is_none());
}
