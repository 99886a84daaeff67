//! Talking to the daemon's kernel side through its CLI:
//! `fraiseql-edge kernel clients|stats|block … --pin-path P`.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::cmd;

/// The kernel's per-client counters.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientStats {
    pub passed: u64,
    pub dropped: u64,
    pub conns: u64,
}

pub struct Kernel {
    pub binary: PathBuf,
    pub pin_path: String,
}

impl Kernel {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("kernel").args(args);
        cmd
    }

    pub fn clients(&self) -> Result<BTreeMap<IpAddr, ClientStats>> {
        let mut cmd = self.command(&["clients", "--pin-path", &self.pin_path, "--json"]);
        let out = cmd::output(&mut cmd)?;
        parse_clients(&out)
            .with_context(|| format!("reading the output of `{}`", cmd::describe(&cmd)))
    }

    pub fn stats(&self) -> Result<Vec<(String, u64)>> {
        let mut cmd = self.command(&["stats", "--pin-path", &self.pin_path, "--json"]);
        let out = cmd::output(&mut cmd)?;
        parse_stats(&out)
            .with_context(|| format!("reading the output of `{}`", cmd::describe(&cmd)))
    }

    pub fn block(&self, client: IpAddr, ttl_secs: u64) -> Result<()> {
        let (client, ttl) = (client.to_string(), ttl_secs.to_string());
        let mut cmd = self.command(&[
            "block",
            &client,
            "--ttl",
            &ttl,
            "--pin-path",
            &self.pin_path,
        ]);
        println!("demo: {}", cmd::describe(&cmd));
        cmd::output(&mut cmd).map(drop)
    }
}

/// Parses `[{"client": "10.0.0.1", "passed": 1, "dropped": 2, "conns": 0}, …]`
/// (an object with a `clients` array is accepted too; extra fields are
/// ignored, missing counters read as 0).
fn parse_clients(json: &str) -> Result<BTreeMap<IpAddr, ClientStats>> {
    let value: Value = serde_json::from_str(json).context("not JSON")?;
    let items = match &value {
        Value::Array(items) => items,
        Value::Object(map) => match map.get("clients") {
            Some(Value::Array(items)) => items,
            _ => bail!("expected a JSON array of clients"),
        },
        _ => bail!("expected a JSON array of clients"),
    };
    let mut clients = BTreeMap::new();
    for item in items {
        let Some(ip) = item
            .get("client")
            .and_then(Value::as_str)
            .and_then(parse_ip)
        else {
            bail!("a client entry without a usable \"client\" address: {item}");
        };
        let counter = |name| item.get(name).and_then(Value::as_u64).unwrap_or(0);
        let stats = ClientStats {
            passed: counter("passed"),
            dropped: counter("dropped"),
            conns: counter("conns"),
        };
        clients.insert(ip, stats);
    }
    Ok(clients)
}

/// `10.0.0.1`, `10.0.0.1/32` or `::ffff:10.0.0.1` all mean 10.0.0.1.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let addr = text.split('/').next()?.trim();
    addr.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

/// Well-known counters first, in this order; any others after them.
const STAT_ORDER: [&str; 7] = [
    "passed",
    "dropped_rate",
    "dropped_conn",
    "dropped_block",
    "dropped_deny",
    "malformed",
    "new_clients",
];

/// Parses `{"passed": 1, "dropped_rate": 2, …}`; non-numeric fields are
/// skipped.
fn parse_stats(json: &str) -> Result<Vec<(String, u64)>> {
    let value: Value = serde_json::from_str(json).context("not JSON")?;
    let Value::Object(map) = value else {
        bail!("expected a JSON object of counters");
    };
    let mut stats: Vec<(String, u64)> = map
        .into_iter()
        .filter_map(|(name, v)| v.as_u64().map(|n| (name, n)))
        .collect();
    let rank = |name: &str| {
        STAT_ORDER
            .iter()
            .position(|k| *k == name)
            .unwrap_or(STAT_ORDER.len())
    };
    stats.sort_by(|a, b| rank(&a.0).cmp(&rank(&b.0)).then_with(|| a.0.cmp(&b.0)));
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_clients_with_extra_fields() {
        let json = r#"[{"client":"10.203.0.12","passed":10,"dropped":5,"conns":1,"tokens":3},
                       {"client":"::ffff:10.203.0.13/32","passed":1}]"#;
        let clients = parse_clients(json).unwrap();
        let twelve: IpAddr = "10.203.0.12".parse().unwrap();
        let thirteen: IpAddr = "10.203.0.13".parse().unwrap();
        assert_eq!(
            clients[&twelve],
            ClientStats {
                passed: 10,
                dropped: 5,
                conns: 1
            }
        );
        assert_eq!(clients[&thirteen].passed, 1);
        assert_eq!(clients[&thirteen].dropped, 0);
    }

    #[test]
    fn rejects_clients_without_address() {
        assert!(parse_clients(r#"[{"passed":1}]"#).is_err());
        assert!(parse_clients("42").is_err());
        assert!(parse_clients(r#"{"clients":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn orders_known_stats_first() {
        let json = r#"{"zeta":1,"new_clients":4,"passed":9,"dropped_rate":2,"note":"x"}"#;
        let names: Vec<String> = parse_stats(json)
            .unwrap()
            .into_iter()
            .map(|s| s.0)
            .collect();
        assert_eq!(names, ["passed", "dropped_rate", "new_clients", "zeta"]);
    }
}
