//! Fuzzes the admission pipeline, [`Proxy::admission`]: client limits,
//! route, accept, identify (JWT), rate limit, graphql (parse, limits,
//! validation against `schema.graphql`, persisted queries), authorize.
//! Nothing is forwarded; the subgraph endpoints are never connected to.
//!
//! An input is a request in a plain-text shape, so that seeds are readable
//! and the dictionary's tokens land where they mean something:
//!
//! ```text
//! POST /users/graphql?optional=query
//! content-type: application/json
//! authorization: Bearer $VALID
//!
//! {"query":"{ me { id } }"}
//! ```
//!
//! The first line is the method and the request target; header lines
//! follow up to an empty line; the rest is the body. Bytes never allowed
//! in a URI (space, quotes, braces, controls, non-ASCII) are
//! percent-encoded in the target, so that `GET /public/graphql?query={ a }`
//! is written as read. A request or header line that hyper would never hand
//! over (invalid method, URI, header name or value) is dropped.
//!
//! Short forms keep mutated inputs in the graphql phase (a full request
//! breaks at its first line, content type or JSON more often than not):
//! an input that starts with `{` or `[` is the JSON body of an anonymous
//! `POST /public/graphql`; one that starts with `?` is the query string of
//! an anonymous `GET /public/graphql`; one that starts with `!` is a
//! GraphQL document, which the harness sends as `{"query": <the rest>}`
//! (invalid UTF-8 replaced) in such a POST. In header values `$VALID`, `$SCOPED`,
//! `$EXPIRED`, `$WRONG_KEY`, `$WRONG_AUD`, `$NO_EXP`, `$NONE_ALG` and
//! `$UNKNOWN_KID` stand for tokens minted at start (see [`Tokens`]). The
//! pseudo-header `fuzz-peer: <ip>` sets the peer address (default
//! 192.0.2.1) and with it the proxy the request goes to (see [`Harness`]).
//!
//! `FUZZ_ADMISSION_TRACE=1` prints each input's outcome.
//!
//! Besides "no panic", every outcome is checked against what must hold
//! (see [`check_refusal`] and [`check_admitted`]).

#![no_main]

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU32, Ordering},
    },
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use bytes::Bytes;
use fraiseql_edge::{
    auth::Authenticator,
    blocklist::BlockList,
    config::Config,
    fallback::UserLimiter,
    graphql::{SubgraphSchema, persisted::PersistedQueries},
    proxy::{
        Proxy, ProxyParts,
        error::{ProxyBody, ProxyError},
        metrics::ProxyMetrics,
    },
};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyExt as _, Full};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The subgraph schema requests are validated against.
const SDL: &str = include_str!("../schema.graphql");
/// The safelist (a plain `{"<id>": "<document>"}` manifest).
const SAFELIST: &str = include_str!("../safelist.json");
/// The HMAC secret tokens are signed with (at least 32 bytes).
const SECRET: &[u8] = b"fraiseql-edge-fuzz-hmac-secret-0123456789";
/// Issuer and audience the edge requires.
const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "edge";
/// `proxy.max_body_bytes`: small, so that 413 is within a fuzz input's reach.
const MAX_BODY: usize = 2048;
/// The pseudo-header that sets the peer address.
const PEER_HEADER: &str = "fuzz-peer";
const DEFAULT_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Three proxies over the same subgraphs, picked by the peer address, so
/// that one process covers the settings that exclude each other:
///
/// * `open` (any peer not below): generous rate limit, safelist in `log`
///   mode, so that most requests reach the graphql phase;
/// * `tight` (198.51.100.0/24): degraded mode (the kernel layer's limits
///   enforced in user space, phase 0), a rate limit of a few requests and
///   escalation into the user-space block list; each such input is sent
///   several times from a fresh address (see [`Harness::route`]);
/// * `strict` (203.0.113.0/24): safelist `enforce`, no APQ.
///
/// Every proxy trusts 10.0.0.0/8 as forwarding proxies, so the client
/// address comes from `X-Forwarded-For` for such peers.
struct Harness {
    runtime: tokio::runtime::Runtime,
    open: Arc<Proxy>,
    tight: Arc<Proxy>,
    /// The `tight` proxy's limiter, whose expired blocks the harness sweeps
    /// as the daemon does.
    tight_limiter: Arc<UserLimiter>,
    strict: Arc<Proxy>,
    tokens: Tokens,
    /// `FUZZ_ADMISSION_TRACE=1`: print each input's outcome (to check
    /// what seeds and corpus entries reach).
    trace: bool,
}

/// Tokens minted at start: `(placeholder, token, identifies)`.
struct Tokens(Vec<(&'static str, String, bool)>);

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| Harness::new().expect("the fuzz harness starts"))
}

impl Harness {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("fraiseql-edge-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |name: &str, text: &[u8]| -> Result<PathBuf, String> {
            let path = dir.join(name);
            std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(path)
        };
        let sdl = write("schema.graphql", SDL.as_bytes())?;
        let safelist = write("safelist.json", SAFELIST.as_bytes())?;
        let secret = write("hmac.secret", SECRET)?;
        // A schema that does not validate would silently turn validation
        // off (the proxy logs it and goes on): refuse to fuzz without it.
        SubgraphSchema::parse(SDL).map_err(|e| format!("schema.graphql: {e}"))?;

        // Current-thread: one request at a time, background tasks (pool
        // maintenance, health checks) only run inside `block_on`.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let (open, _) = runtime.block_on(build(
            &dir,
            &config(&sdl, &secret, &safelist, Profile::Open),
        ))?;
        let (tight, tight_limiter) = runtime.block_on(build(
            &dir,
            &config(&sdl, &secret, &safelist, Profile::Tight),
        ))?;
        let (strict, _) = runtime.block_on(build(
            &dir,
            &config(&sdl, &secret, &safelist, Profile::Strict),
        ))?;
        // Every file was read while building; nothing is left behind.
        std::fs::remove_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        Ok(Self {
            runtime,
            open,
            tight,
            tight_limiter: tight_limiter.ok_or("the tight proxy has no limiter")?,
            strict,
            tokens: Tokens::mint()?,
            trace: std::env::var_os("FUZZ_ADMISSION_TRACE").is_some_and(|v| v == "1"),
        })
    }

    /// The proxy for a request from `peer`, the address it comes from and
    /// how many times it is sent. A `tight` request is sent
    /// [`TIGHT_REPEATS`] times from an address no earlier input used, so
    /// that what happens to it (burst, 429s, strikes, block) does not
    /// depend on the inputs run before it.
    fn route(&self, peer: IpAddr) -> (&Proxy, SocketAddr, usize) {
        let at = |ip| SocketAddr::new(ip, 40_000);
        match peer {
            IpAddr::V4(v4) if v4.octets()[..3] == [198, 51, 100] => {
                (&self.tight, at(self.fresh_client()), TIGHT_REPEATS)
            }
            IpAddr::V4(v4) if v4.octets()[..3] == [203, 0, 113] => (&self.strict, at(peer), 1),
            _ => (&self.open, at(peer), 1),
        }
    }
}

/// Requests of a `tight` input: three pass the burst of the rate limit,
/// five 429s make the strikes that block the address, the last two meet
/// the block.
const TIGHT_REPEATS: usize = 10;

impl Harness {
    /// A client address no earlier input used: 100.64.0.0/10, in turn (the
    /// limiter's tables forget the oldest long before it wraps). Every
    /// 256 addresses the expired blocks are swept, as the daemon's timer
    /// does, so the block table does not fill up over a long run.
    fn fresh_client(&self) -> IpAddr {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % (1 << 22);
        if n.is_multiple_of(256) {
            self.tight_limiter.expire_blocks();
        }
        IpAddr::V4(Ipv4Addr::from(0x6440_0000 | n))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Profile {
    Open,
    Tight,
    Strict,
}

/// The configuration of one proxy. Endpoints point at the discard port of
/// loopback (admission never connects); no warm connections are kept and
/// health checks are a day apart, so no background task touches the
/// network during a run.
fn config(sdl: &Path, secret: &Path, safelist: &Path, profile: Profile) -> String {
    let subgraph = |name: &str, route: Option<&str>, sdl: Option<&Path>, auth: bool| {
        let mut s = format!(
            "[[subgraphs]]\nname = \"{name}\"\nendpoints = [\"http://127.0.0.1:9/graphql\"]\n\
             require_authentication = {auth}\n"
        );
        if let Some(route) = route {
            s += &format!("route = \"{route}\"\n");
        }
        if let Some(sdl) = sdl {
            s += &format!("sdl = {:?}\n", sdl.display().to_string());
        }
        s + "[subgraphs.pool]\nmin_idle = 0\nmax = 1\n\
             [subgraphs.health]\ninterval_ms = 86400000\ntimeout_ms = 1000\n"
    };
    let (kernel, rate_limit, persisted, authz_mode) = match profile {
        Profile::Open => (
            "",
            "requests_per_minute = 6000000\nburst = 1000000\n",
            "safelist_mode = \"log\"\n",
            "filter",
        ),
        Profile::Tight => (
            "rate = 20\nburst = 10\n",
            "requests_per_minute = 60\nburst = 3\n\
             [rate_limit.escalation]\nthreshold = 5\nwindow_secs = 60\nblock_secs = 1\n",
            "safelist_mode = \"log\"\n",
            "reject",
        ),
        Profile::Strict => (
            "",
            "requests_per_minute = 6000000\nburst = 1000000\n",
            "safelist_mode = \"enforce\"\napq = false\n",
            "reject",
        ),
    };
    format!(
        "[kernel]\nenabled = false\n{kernel}\
         [proxy]\nmax_body_bytes = {MAX_BODY}\ntrusted_proxies = [\"10.0.0.0/8\"]\n\
         [auth]\nissuers = [\"{ISSUER}\"]\naudiences = [\"{AUDIENCE}\"]\n\
         [[auth.keys]]\ntype = \"hmac_secret_file\"\npath = {:?}\nalgorithms = [\"HS256\", \"HS384\"]\n\
         [rate_limit]\n{rate_limit}\
         [persisted_queries]\nsafelist = {:?}\n{persisted}\
         [authorization]\nmode = \"{authz_mode}\"\n\
         policies = {{ admin = [{{ claim = \"role\", equals = \"admin\" }}] }}\n\
         trusted_router = {{ scopes = [\"router\"], cidrs = [\"10.9.0.0/16\"] }}\n\
         {}{}{}",
        secret.display().to_string(),
        safelist.display().to_string(),
        subgraph("users", None, Some(sdl), true),
        subgraph("public", Some("/public/"), Some(sdl), false),
        subgraph("plain", None, None, true),
    )
}

/// A proxy and, in degraded mode, its user-space limiter.
async fn build(dir: &Path, toml: &str) -> Result<(Arc<Proxy>, Option<Arc<UserLimiter>>), String> {
    let mut cfg = Config::from_toml(toml).map_err(|e| format!("{e}\n{toml}"))?;
    cfg.resolve_files(dir).map_err(|e| e.to_string())?;
    let auth = Authenticator::new(cfg.auth.clone().ok_or("no [auth]")?)
        .await
        .map_err(|e| e.to_string())?;
    let (limiter, blocks): (Option<Arc<UserLimiter>>, _) = if cfg.kernel.rate > 0 {
        let limiter = Arc::new(UserLimiter::new(&cfg.kernel));
        let blocks = Arc::new(BlockList::UserSpace(Arc::clone(&limiter)));
        (Some(limiter), Some(blocks))
    } else {
        (None, None)
    };
    let metrics = ProxyMetrics::new(&prometheus::Registry::new()).map_err(|e| e.to_string())?;
    let persisted = PersistedQueries::new(&cfg.persisted_queries).map_err(|e| e.to_string())?;
    let proxy = Proxy::new(ProxyParts {
        cfg: cfg.proxy.as_ref().ok_or("no [proxy]")?,
        subgraphs: &cfg.subgraphs,
        rate_limit: &cfg.rate_limit,
        metrics,
        limiter: limiter.clone(),
        blocks,
        auth: Some(Arc::new(auth)),
        graphql: &cfg.graphql,
        persisted,
        authorization: &cfg.authorization,
        tracing: &cfg.tracing,
        slow_queries: &cfg.slow_queries,
    });
    Ok((proxy, limiter))
}

impl Tokens {
    fn mint() -> Result<Self, String> {
        let now = jsonwebtoken::get_current_timestamp();
        let key = EncodingKey::from_secret(SECRET).map_err(|e| e.to_string())?;
        let other = EncodingKey::from_secret(b"another-secret-of-thirty-two-bytes-or-more")
            .map_err(|e| e.to_string())?;
        let year = 365 * 24 * 3600;
        let claims = |sub: &str, extra: Value| {
            let mut c = json!({"sub": sub, "iss": ISSUER, "aud": AUDIENCE, "exp": now + year});
            if let (Value::Object(c), Value::Object(extra)) = (&mut c, extra) {
                c.extend(extra);
            }
            c
        };
        let sign = |alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey| {
            let mut header = Header::new(alg);
            header.kid = kid.map(str::to_owned);
            jsonwebtoken::encode(&header, claims, key).map_err(|e| e.to_string())
        };
        let b64 = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let none_alg = format!(
            "{}.{}.",
            b64(&json!({"alg": "none", "typ": "JWT"})),
            b64(&claims("mallory", json!({"scope": "read write admin"})))
        );
        let no_exp = {
            let mut c = claims("carol", json!({}));
            if let Value::Object(c) = &mut c {
                c.remove("exp");
            }
            c
        };
        Ok(Self(vec![
            (
                "$VALID",
                sign(Algorithm::HS256, None, &claims("alice", json!({})), &key)?,
                true,
            ),
            (
                "$SCOPED",
                sign(
                    Algorithm::HS384,
                    None,
                    &claims("bob", json!({"scope": "read write"})),
                    &key,
                )?,
                true,
            ),
            (
                "$EXPIRED",
                sign(
                    Algorithm::HS256,
                    None,
                    &claims("dave", json!({"exp": now - 2 * 3600})),
                    &key,
                )?,
                false,
            ),
            (
                "$WRONG_KEY",
                sign(Algorithm::HS256, None, &claims("erin", json!({})), &other)?,
                false,
            ),
            (
                "$WRONG_AUD",
                sign(
                    Algorithm::HS256,
                    None,
                    &claims("frank", json!({"aud": "other"})),
                    &key,
                )?,
                false,
            ),
            (
                "$NO_EXP",
                sign(Algorithm::HS256, None, &no_exp, &key)?,
                false,
            ),
            ("$NONE_ALG", none_alg, false),
            (
                "$UNKNOWN_KID",
                sign(
                    Algorithm::HS256,
                    Some("k9"),
                    &claims("grace", json!({})),
                    &key,
                )?,
                false,
            ),
        ]))
    }

    /// `value` with every placeholder replaced by its token.
    fn expand(&self, value: &[u8]) -> Vec<u8> {
        if !value.contains(&b'$') {
            return value.to_vec();
        }
        let mut out = value.to_vec();
        for (placeholder, token, _) in &self.0 {
            out = replace(&out, placeholder.as_bytes(), token.as_bytes());
        }
        out
    }

    /// Whether `value` holds a token that identifies its bearer.
    fn identifies(&self, value: &[u8]) -> bool {
        self.0
            .iter()
            .filter(|(_, _, ok)| *ok)
            .any(|(_, token, _)| find(value, token.as_bytes()).is_some())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut rest = haystack;
    while let Some(at) = find(rest, from) {
        out.extend_from_slice(&rest[..at]);
        out.extend_from_slice(to);
        rest = &rest[at + from.len()..];
    }
    out.extend_from_slice(rest);
    out
}

/// A decoded input: the request, its peer, and whether it carries a token
/// that identifies.
struct Decoded {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    peer: IpAddr,
    identified: bool,
}

impl Decoded {
    fn anonymous(method: Method, uri: Uri, headers: HeaderMap, body: &[u8]) -> Self {
        Self {
            method,
            uri,
            headers,
            body: Bytes::copy_from_slice(body),
            peer: IpAddr::V4(DEFAULT_PEER),
            identified: false,
        }
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// Reads an input in the shape of the module doc; `None` for what no HTTP
/// server would hand over.
fn decode(data: &[u8], tokens: &Tokens) -> Option<Decoded> {
    let public = Uri::from_static("/public/graphql");
    match data.first() {
        Some(b'{' | b'[') => {
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Some(Decoded::anonymous(Method::POST, public, headers, data));
        }
        Some(b'!') => {
            let document = String::from_utf8_lossy(&data[1..]);
            let body = json!({ "query": document }).to_string();
            let mut headers = HeaderMap::new();
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Some(Decoded::anonymous(
                Method::POST,
                public,
                headers,
                body.as_bytes(),
            ));
        }
        Some(b'?') => {
            let target = [public.path().as_bytes(), &encode_target(data)].concat();
            let uri = Uri::try_from(target).ok()?;
            return Some(Decoded::anonymous(Method::GET, uri, HeaderMap::new(), &[]));
        }
        _ => {}
    }
    let (head, body) = match find(data, b"\n\n") {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let mut lines = head
        .split(|b| *b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let first = lines.next()?;
    let (method, target) = match first.iter().position(|b| *b == b' ') {
        Some(at) => (&first[..at], &first[at + 1..]),
        None => (first, &b"/"[..]),
    };
    let method = Method::from_bytes(method).ok()?;
    let uri = Uri::try_from(encode_target(target)).ok()?;
    let mut decoded = Decoded::anonymous(method, uri, HeaderMap::new(), body);
    for line in lines {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let name = &line[..colon];
        let value = tokens.expand(line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(PEER_HEADER.as_bytes()) {
            if let Some(ip) = std::str::from_utf8(&value)
                .ok()
                .and_then(|v| v.parse().ok())
            {
                decoded.peer = ip;
            }
            continue;
        }
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name),
            HeaderValue::from_bytes(&value),
        ) else {
            continue;
        };
        if name == header::AUTHORIZATION {
            decoded.identified |= tokens.identifies(value.as_bytes());
        }
        decoded.headers.append(name, value);
    }
    Some(decoded)
}

/// `target` with the bytes a URI never holds percent-encoded.
fn encode_target(target: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(target.len());
    for &b in target {
        if b.is_ascii_graphic() && !b"\"<>\\^`{|}".contains(&b) {
            out.push(b);
        } else {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        }
    }
    out
}

/// A refusal is a 4xx with a stable code (admission never reaches a
/// subgraph, so it has no 5xx of its own), except an APQ miss, which the
/// protocol answers with 200; its response is the documented GraphQL
/// error shape with that code.
fn check_refusal(h: &Harness, e: ProxyError) {
    let (status, code) = e.status_and_code();
    assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'),
        "code {code:?} of {e:?}"
    );
    assert!(
        status.is_client_error() || status == StatusCode::OK && code == "PERSISTED_QUERY_NOT_FOUND",
        "status {status} for {code} ({e:?})"
    );
    let message = e.to_string();
    let resp = e.into_response();
    assert_eq!(resp.status(), status, "{code}");
    let headers = resp.headers();
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes),
        Some(&b"application/json"[..]),
        "{code}"
    );
    if status == StatusCode::UNAUTHORIZED {
        assert!(
            headers.contains_key(header::WWW_AUTHENTICATE),
            "{code}: no WWW-Authenticate"
        );
    }
    if status == StatusCode::METHOD_NOT_ALLOWED {
        assert!(headers.contains_key(header::ALLOW), "{code}: no Allow");
    }
    let body = body_json(h, resp);
    assert_eq!(body["errors"][0]["extensions"]["code"], code, "{body}");
    assert_eq!(body["errors"][0]["message"], message, "{body}");
}

fn body_json(h: &Harness, resp: http::Response<ProxyBody>) -> Value {
    let bytes = h
        .runtime
        .block_on(resp.into_body().collect())
        .expect("a refusal's body is in memory")
        .to_bytes();
    serde_json::from_slice(&bytes).expect("a refusal's body is JSON")
}

/// An admitted request is a GET or POST, with a body within the limit, and
/// reaches a subgraph that requires authentication only with a token that
/// identifies (only `public` admits anonymous requests).
fn check_admitted(input: &Decoded) {
    let method = &input.method;
    assert!(
        *method == Method::GET || *method == Method::POST,
        "{method} admitted"
    );
    let len = input.body.len();
    assert!(len <= MAX_BODY, "{len}-byte body admitted");
    let path = input.uri.path();
    let public = path == "/public" || path.starts_with("/public/");
    assert!(
        input.identified || public,
        "{path} admitted without a token that identifies"
    );
}

fuzz_target!(|data: &[u8]| {
    let h = harness();
    let Some(input) = decode(data, &h.tokens) else {
        return;
    };
    let (proxy, peer, times) = h.route(input.peer);
    for _ in 0..times {
        let outcome = h.runtime.block_on(proxy.admission(input.request(), peer));
        if h.trace {
            let what = outcome
                .as_ref()
                .map_or_else(|e| e.status_and_code().1, |()| "ADMITTED");
            eprintln!(
                "admission: {} {} from {peer}: {what}",
                input.method,
                input.uri.path()
            );
        }
        match outcome {
            Ok(()) => check_admitted(&input),
            Err(e) => check_refusal(h, e),
        }
    }
});
