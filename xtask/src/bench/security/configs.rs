//! The configs of the security benchmark's proxies: fraiseql-edge with its
//! full pipeline, and HAProxy verifying the same RS256 token with a stick
//! table. The plain rows reuse the proxy benchmark's configs.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::{Context, Result, bail};

use super::super::proxy::targets::{PROXY_PATH, PROXY_THREADS, SUBGRAPH_PATH, edge_config};
use super::token::{AUDIENCE, ISSUER};

/// Requests per minute per identity that neither proxy ever reaches: the
/// limit is checked on every request and never refuses.
pub const RATE_PER_MINUTE: u64 = 4_000_000_000;

/// The edge's full pipeline: `[auth]` with the JWKS file (issuer, audience
/// and `exp` required), the per-identity rate limit on, and the subgraph's
/// SDL, so every document is validated and costed against it (an
/// outcome-cache hit after the first). `cache_size` is the verified-token
/// cache (0: every request verifies the signature).
pub fn edge_full(
    listen: SocketAddr,
    admin: SocketAddr,
    upstream: SocketAddr,
    jwks: &Path,
    sdl: &Path,
    cache_size: usize,
) -> Result<String> {
    let plain = edge_config(listen, admin, upstream);
    // The plain config turns the limit off (wrk is one client); here it is on.
    let off = "# wrk is one client: the per-identity limit would refuse it.\n\
               [rate_limit]\n\
               requests_per_minute = 0\n";
    if !plain.contains(off) {
        bail!("the proxy benchmark's edge config changed: update the security benchmark");
    }
    let on = format!(
        "[auth]\n\
         issuers = [{ISSUER:?}]\n\
         audiences = [{AUDIENCE:?}]\n\
         cache_size = {cache_size}\n\
         \n\
         [[auth.keys]]\n\
         type = \"jwks_file\"\n\
         path = {:?}\n\
         algorithms = [\"RS256\"]\n\
         \n\
         # Checked on every request, keyed by the token's subject; never refuses.\n\
         [rate_limit]\n\
         requests_per_minute = {RATE_PER_MINUTE}\n\
         burst = 1000000\n",
        utf8(jwks)?
    );
    let mut text = plain.replace(off, &on);
    text.push_str(&format!("sdl = {:?}\n", utf8(sdl)?));
    Ok(text)
}

/// HAProxy doing what the edge's identify and rate-limit phases do: the
/// bearer token's `alg` must be RS256, its signature verify against the
/// public key (`jwt_verify`), `iss` and `aud` match and `exp` lie ahead;
/// else 401. Then the token's `sub` is tracked in a stick table counting
/// `http_req_rate`, with a deny rule at the edge's (unreachable) limit.
/// Proxying as in the proxy benchmark's HAProxy config.
pub fn haproxy_jwt(listen: SocketAddr, upstream: SocketAddr, public_pem: &Path) -> Result<String> {
    let pem = utf8(public_pem)?;
    Ok(format!(
        "global\n\
        \x20   nbthread {PROXY_THREADS}\n\
        \x20   maxconn 4096\n\
        \n\
        defaults\n\
        \x20   mode http\n\
        \x20   option http-keep-alive\n\
        \x20   http-reuse always\n\
        \x20   timeout connect 1s\n\
        \x20   timeout client 30s\n\
        \x20   timeout server 30s\n\
        \x20   timeout http-request 10s\n\
        \x20   timeout http-keep-alive 30s\n\
        \x20   maxconn 4096\n\
        \n\
        frontend bench\n\
        \x20   bind {listen}\n\
        \x20   stick-table type string len 64 size 100k expire 60s store http_req_rate(60s)\n\
        \x20   acl bench_route path {PROXY_PATH}\n\
        \x20   http-request deny deny_status 404 unless bench_route\n\
        \x20   http-request set-var(txn.bearer) http_auth_bearer\n\
        \x20   http-request set-var(txn.alg) var(txn.bearer),jwt_header_query('$.alg')\n\
        \x20   http-request set-var(txn.iss) var(txn.bearer),jwt_payload_query('$.iss')\n\
        \x20   http-request set-var(txn.aud) var(txn.bearer),jwt_payload_query('$.aud')\n\
        \x20   http-request set-var(txn.exp) var(txn.bearer),jwt_payload_query('$.exp','int')\n\
        \x20   http-request set-var(txn.sub) var(txn.bearer),jwt_payload_query('$.sub')\n\
        \x20   http-request set-var(txn.now) date()\n\
        \x20   http-request deny deny_status 401 unless {{ var(txn.alg) -m str RS256 }}\n\
        \x20   http-request deny deny_status 401 unless {{ var(txn.bearer),jwt_verify(txn.alg,\"{pem}\") -m int 1 }}\n\
        \x20   http-request deny deny_status 401 unless {{ var(txn.iss) -m str {ISSUER} }}\n\
        \x20   http-request deny deny_status 401 unless {{ var(txn.aud) -m str {AUDIENCE} }}\n\
        \x20   http-request deny deny_status 401 unless {{ var(txn.exp) -m found }}\n\
        \x20   http-request deny deny_status 401 if {{ var(txn.exp),sub(txn.now) -m int lt 0 }}\n\
        \x20   http-request track-sc0 var(txn.sub)\n\
        \x20   http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {RATE_PER_MINUTE} }}\n\
        \x20   use_backend subgraph\n\
        \n\
        backend subgraph\n\
        \x20   http-request set-path {SUBGRAPH_PATH}\n\
        \x20   server bench {upstream} maxconn 100\n"
    ))
}

/// The SDL the edge validates against: `demo-subgraph --print-sdl` (a
/// federation SDL) with `email`, which the benchmark's query selects,
/// marked `@authenticated`: every request also runs the authorize phase
/// (and passes it, with its token).
pub fn subgraph_sdl(demo_subgraph: &Path) -> Result<String> {
    let out = std::process::Command::new(demo_subgraph)
        .arg("--print-sdl")
        .output()
        .with_context(|| format!("running {} --print-sdl", demo_subgraph.display()))?;
    if !out.status.success() {
        bail!(
            "{} --print-sdl failed: {}",
            demo_subgraph.display(),
            out.status
        );
    }
    let printed = String::from_utf8(out.stdout).context("the SDL is not UTF-8")?;
    annotate(&printed)
}

/// Imports `@authenticated` and puts it on `User.email`.
fn annotate(sdl: &str) -> Result<String> {
    let (import, field) = ("import: [\"@key\"", "\temail: String!\n");
    if !sdl.contains(import) || !sdl.contains(field) {
        bail!("the demo subgraph's SDL changed: update the security benchmark");
    }
    Ok(sdl
        .replacen(import, "import: [\"@key\", \"@authenticated\"", 1)
        .replacen(field, "\temail: String! @authenticated\n", 1))
}

fn utf8(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_edge_turns_every_phase_on() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let text = edge_full(
            a(1),
            a(2),
            a(3),
            Path::new("/k/jwks.json"),
            Path::new("/s.graphql"),
            0,
        )
        .unwrap();
        assert!(text.contains("[auth]\n"), "{text}");
        assert!(text.contains("path = \"/k/jwks.json\"\n"), "{text}");
        assert!(text.contains("cache_size = 0\n"), "{text}");
        assert!(
            text.contains("requests_per_minute = 4000000000\n"),
            "{text}"
        );
        assert!(!text.contains("requests_per_minute = 0"), "{text}");
        assert!(text.ends_with("sdl = \"/s.graphql\"\n"), "{text}");
    }

    #[test]
    fn the_sdl_asks_for_authentication_on_the_queried_field() {
        let sdl = "type User @key(fields: \"id\") {\n\tid: ID!\n\temail: String!\n}\n\
                   extend schema @link(url: \"https://specs.apollo.dev/federation/v2.5\", import: [\"@key\"])\n";
        let out = annotate(sdl).unwrap();
        assert!(out.contains("\temail: String! @authenticated\n"), "{out}");
        assert!(
            out.contains("import: [\"@key\", \"@authenticated\"]"),
            "{out}"
        );
        assert!(annotate("type Query { a: Int }").is_err());
    }

    #[test]
    fn haproxy_verifies_then_tracks() {
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        let text = haproxy_jwt(a(1), a(2), Path::new("/k/pub.pem")).unwrap();
        let verify = text
            .find("jwt_verify(txn.alg,\"/k/pub.pem\") -m int 1")
            .unwrap();
        let track = text.find("track-sc0 var(txn.sub)").unwrap();
        assert!(verify < track, "{text}");
        assert!(
            text.contains("server bench 127.0.0.1:2 maxconn 100\n"),
            "{text}"
        );
    }
}
