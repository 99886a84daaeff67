//! The load generator: `wrk` with a Lua script that POSTs the query and,
//! from its `done()` callback, prints one `wrk-result {json}` line.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::procs::Proc;
use super::targets::request_body;

const RESULT_PREFIX: &str = "wrk-result ";

/// The Lua script; the body goes in a long bracket string, verbatim.
pub fn script() -> String {
    script_with(&[])
}

/// [`script`] with extra request headers (`name`, `value`) on every request.
pub fn script_with(headers: &[(&str, &str)]) -> String {
    let body = request_body();
    assert!(!body.contains("]]"), "the body must fit a Lua long string");
    let mut extra = String::new();
    for (name, value) in headers {
        assert!(
            !name.contains("]]") && !value.contains("]]"),
            "headers must fit Lua long strings"
        );
        extra.push_str(&format!("wrk.headers[ [[{name}]] ] = [[{value}]]\n"));
    }
    format!(
        r#"-- Written by `cargo xtask bench proxy|security`.
wrk.method = "POST"
wrk.body = [[{body}]]
wrk.headers["content-type"] = "application/json"
{extra}
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{RESULT_PREFIX}{{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"p999_us":%d,' ..
    '"max_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,"timeout":%d}}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.max,
    e.status, e.connect, e.read, e.write, e.timeout))
end
"#
    )
}

/// One wrk run, as its `done()` callback reported it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub requests: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Responses with a status ≥ 400 (what wrk calls non-2xx/3xx).
    pub non2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
}

/// How to load a URL.
pub struct Load<'a> {
    pub url: &'a str,
    pub threads: u32,
    pub connections: u32,
    pub seconds: u64,
}

/// Runs wrk and returns its result; a wrk that fails or prints no result
/// line is an error (whether responses were all 200 is the caller's check).
pub fn run(script: &Path, load: &Load) -> Result<Sample> {
    let args: Vec<std::ffi::OsString> = vec![
        format!("-t{}", load.threads).into(),
        format!("-c{}", load.connections).into(),
        format!("-d{}s", load.seconds).into(),
        "--timeout".into(),
        "5s".into(),
        "-s".into(),
        script.into(),
        load.url.into(),
    ];
    let mut wrk = Proc::spawn("wrk", "wrk", &args)?;
    let description = wrk.describe().to_owned();
    let limit = Duration::from_secs(load.seconds + 30);
    let (status, lines) = wrk.wait_output(limit)?;
    if !status.success() {
        bail!("`{description}` failed: {status}\n{}", lines.join("\n"));
    }
    let Some(json) = lines.iter().find_map(|l| l.strip_prefix(RESULT_PREFIX)) else {
        bail!(
            "`{description}` printed no `{RESULT_PREFIX}` line:\n{}",
            lines.join("\n")
        );
    };
    parse(json).with_context(|| format!("reading the result of `{description}`"))
}

fn parse(json: &str) -> Result<Sample> {
    let v: Value = serde_json::from_str(json).with_context(|| format!("bad JSON {json:?}"))?;
    let n = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {json}"));
    let ms = |k: &str| n(k).map(|us| us as f64 / 1_000.0);
    let duration_us = n("duration_us")?;
    if duration_us == 0 {
        bail!("wrk ran for 0 µs");
    }
    let requests = n("requests")?;
    Ok(Sample {
        requests,
        rps: requests as f64 / (duration_us as f64 / 1e6),
        p50_ms: ms("p50_us")?,
        p99_ms: ms("p99_us")?,
        p999_ms: ms("p999_us")?,
        non2xx: n("non2xx")?,
        socket_errors: n("connect")? + n("read")? + n("write")? + n("timeout")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_posts_the_query_and_reports() {
        let s = script();
        assert!(s.contains(r#"wrk.body = [[{"query":"{ user(id: \"1\") { id name email } }"}]]"#));
        assert!(s.contains(r#"'wrk-result {"requests":%d,"#));
        assert!(s.contains("latency:percentile(99.9)"));
    }

    #[test]
    fn parses_a_result_line() {
        let line = r#"{"requests":20000,"duration_us":2000000,"p50_us":400,"p99_us":1500,"p999_us":4000,"max_us":9000,"non2xx":0,"connect":0,"read":1,"write":0,"timeout":2}"#;
        let s = parse(line).unwrap();
        assert_eq!(s.requests, 20_000);
        assert!((s.rps - 10_000.0).abs() < 1e-9);
        assert!((s.p99_ms - 1.5).abs() < 1e-9);
        assert_eq!((s.non2xx, s.socket_errors), (0, 3));
    }
}
