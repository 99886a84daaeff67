//! The security phases end to end, against a real edge in front of a real
//! demo subgraph: identify (`[auth]` with an HMAC secret written by the
//! test, tokens signed by the test with `jsonwebtoken`), the rate limit per
//! subject, and the graphql phase's refusals.

use std::time::{SystemTime, UNIX_EPOCH};

use fraiseql_edge_tests::subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};

use crate::proxy_e2e::serial;

const QUERY: &str = "{ users(first: 2) { id name } }";
const SECRET: &[u8] = b"a test secret of at least thirty-two bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(claims: Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET).unwrap(),
    )
    .unwrap()
}

/// POSTs `QUERY` with an optional bearer token: (status, code, WWW-Authenticate).
fn call(url: &str, bearer: Option<&str>) -> (u16, Option<String>, Option<String>) {
    let mut req = ureq::post(url)
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build();
    if let Some(t) = bearer {
        req = req.header("authorization", &format!("Bearer {t}"));
    }
    let mut resp = req
        .send(json!({ "query": QUERY }).to_string())
        .expect("POST");
    let challenge = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap_or("?").to_string());
    let body: Value = serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or(Value::Null);
    let code = body["errors"][0]["extensions"]["code"]
        .as_str()
        .map(str::to_string);
    (resp.status().as_u16(), code, challenge)
}

#[test]
fn tokens_are_checked_before_the_subgraph_and_identities_get_their_own_limit() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let private = DemoSubgraph::start("private");
    let public = DemoSubgraph::start("public");
    let health = "interval_ms = 60000, timeout_ms = 5000";
    let mut setup = ProxySetup {
        subgraphs: vec![
            SubgraphSpec::new("private", [&private]).table("health", health),
            SubgraphSpec::new("public", [&public]).table("health", health),
        ],
        ..ProxySetup::default()
    }
    .rate_limit("requests_per_minute = 60\nburst = 2\nescalation = { threshold = 0 }")
    .to_toml();
    setup = setup.replace(
        "name = \"public\"",
        "name = \"public\"\nrequire_authentication = false",
    );
    setup += &format!(
        "\n[auth]\nissuers = [\"https://issuer.test\"]\n\
         keys = [{{ type = \"hmac_secret_file\", path = {:?}, algorithms = [\"HS256\"] }}]\n",
        secret.display().to_string()
    );
    let edge = Edge::start_toml(&setup);
    let private_url = edge.route("private");
    let public_url = edge.route("public");
    let good =
        |sub: &str| token(json!({"sub": sub, "iss": "https://issuer.test", "exp": now() + 600}));

    // Refusals, each with its code and a challenge; none reaches the subgraph.
    let (status, code, challenge) = call(&private_url, None);
    assert_eq!((status, code.as_deref()), (401, Some("MISSING_TOKEN")));
    assert_eq!(challenge.as_deref(), Some("Bearer"));
    let expired = token(json!({"sub": "a", "iss": "https://issuer.test", "exp": now() - 3600}));
    let wrong_issuer = token(json!({"sub": "a", "iss": "https://evil.test", "exp": now() + 600}));
    let unsigned = {
        let t = good("a");
        let mut parts = t.split('.');
        let (_, claims) = (parts.next(), parts.next().unwrap());
        // {"alg":"none","typ":"JWT"}
        format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{claims}.")
    };
    let tampered = {
        let t = good("a");
        let mut parts: Vec<String> = t.split('.').map(str::to_string).collect();
        parts[1] = token(json!({"sub": "admin", "iss": "https://issuer.test", "exp": now() + 600}))
            .split('.')
            .nth(1)
            .unwrap()
            .to_string();
        parts.join(".")
    };
    for (what, t, want) in [
        ("garbage", "not.a.jwt".to_string(), "MALFORMED_TOKEN"),
        ("expired", expired, "EXPIRED"),
        ("wrong issuer", wrong_issuer, "WRONG_ISSUER"),
        ("alg none", unsigned, "UNSUPPORTED_ALGORITHM"),
        ("tampered", tampered, "INVALID_SIGNATURE"),
        ("16 KB", "a".repeat(16 * 1024), "TOKEN_TOO_LARGE"),
    ] {
        let (status, code, challenge) = call(&private_url, Some(&t));
        assert_eq!((status, code.as_deref()), (401, Some(want)), "{what}");
        let c = challenge.unwrap_or_default();
        assert!(
            c.starts_with("Bearer error=\"invalid_token\""),
            "{what}: {c}"
        );
        assert!(
            !c.contains(&t[..t.len().min(20)]),
            "{what}: the challenge echoes the token"
        );
    }
    assert_eq!(
        private.stats().graphql(),
        0,
        "a refused request reached the subgraph"
    );

    // A valid token passes; anonymous callers reach only the public subgraph,
    // where a bad token is still refused.
    assert_eq!(call(&private_url, Some(&good("alice"))).0, 200);
    assert_eq!(call(&public_url, None).0, 200);
    assert_eq!(call(&public_url, Some("not.a.jwt")).0, 401);

    // The rate limit keys on the subject: alice has used 1 of her burst of 2,
    // bob (same address) has his own.
    assert_eq!(call(&private_url, Some(&good("alice"))).0, 200);
    let (status, code, _) = call(&private_url, Some(&good("alice")));
    assert_eq!((status, code.as_deref()), (429, Some("RATE_LIMITED")));
    assert_eq!(call(&private_url, Some(&good("bob"))).0, 200);

    let m = fraiseql_edge_tests::graphql::Client::default().metrics(&edge.admin_url("/metrics"));
    assert_eq!(
        m.get(
            "fraiseql_edge_auth_failures_total",
            &[("reason", "expired")]
        ),
        Some(1.0)
    );
    assert_eq!(
        m.get(
            "fraiseql_edge_auth_failures_total",
            &[("reason", "missing_token")]
        ),
        Some(1.0)
    );
}

/// Phase 4 end to end: attacks on the parser and the limits are refused by
/// the edge with their codes, and the subgraph never sees them.
#[test]
fn malicious_documents_are_refused_before_the_subgraph() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let sdl = dir.path().join("users.graphql");
    std::fs::write(
        &sdl,
        "type Query { users(first: Int): [User!]! user(id: ID!): User }\n\
         type User { id: ID! name: String! email: String! friends: [User!]! }\n\
         type Mutation { createUser(name: String!): User! }\n",
    )
    .unwrap();
    let sg = DemoSubgraph::start("users");
    // Bodies up to 16 MiB are read, so that a 10 MB document reaches the
    // graphql phase (and the client reads the answer instead of having its
    // upload cut off by an early 413).
    let mut toml = ProxySetup {
        max_body_bytes: Some(16 << 20),
        ..ProxySetup::one(
            SubgraphSpec::new("users", [&sg])
                .table("health", "interval_ms = 60000, timeout_ms = 5000"),
        )
    }
    .to_toml();
    toml = toml.replace(
        "name = \"users\"",
        &format!("name = \"users\"\nsdl = {:?}", sdl.display().to_string()),
    );
    let edge = Edge::start_toml(&toml);
    let url = edge.route("users");
    let c = fraiseql_edge_tests::graphql::Client::default();

    let depth_bomb = format!(
        "{{ users {}id{} }}",
        "{ friends ".repeat(40),
        " }".repeat(40)
    );
    let aliases: String = (0..1000)
        .map(|i| format!(" a{i}: users {{ id }}"))
        .collect();
    let many_fields = format!("{{ users {{ {} }} }}", "id ".repeat(20_000));
    let directives = format!("{{ users {{ id {} }} }}", "@include(if: true) ".repeat(50));
    let tokens = format!("{{ users {{ {} }} }}", "id, ".repeat(20_000));
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "depth bomb",
            json!({"query": depth_bomb}),
            "MAX_DEPTH_EXCEEDED",
        ),
        (
            "1000 aliases",
            json!({"query": format!("{{{aliases} }}")}),
            "MAX_ALIASES_EXCEEDED",
        ),
        (
            "20 000 fields",
            json!({"query": many_fields}),
            "MAX_TOKENS_EXCEEDED",
        ),
        (
            "40 000 tokens",
            json!({"query": tokens}),
            "MAX_TOKENS_EXCEEDED",
        ),
        (
            "directive flood",
            json!({"query": directives}),
            "MAX_DIRECTIVES_EXCEEDED",
        ),
        (
            "fragment cycle",
            json!({"query": "query { users { ...A } } fragment A on User { friends { ...B } } fragment B on User { friends { ...A } }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "introspection",
            json!({"query": "{ __schema { types { name } } }"}),
            "INTROSPECTION_DISABLED",
        ),
        (
            "parse error",
            json!({"query": "{ users { id "}),
            "GRAPHQL_PARSE_FAILED",
        ),
        (
            "unknown field",
            json!({"query": "{ nope }"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "two operations, no name",
            json!({"query": "query A { users { id } } query B { users { name } }"}),
            "OPERATION_NAME_REQUIRED",
        ),
        (
            "batch of 11",
            serde_json::Value::Array(vec![json!({"query": "{ users { id } }"}); 11]),
            "BATCH_TOO_LARGE",
        ),
    ];
    for (what, body, code) in &cases {
        let r = c.post_json(&url, body);
        assert_eq!(
            (r.status, r.code().as_deref()),
            (400, Some(*code)),
            "{what}: {}",
            r.text()
        );
    }
    let r = c.post_raw(&url, b"{\"query\": \"{ users { id } }\xff\"}");
    assert_eq!(r.status, 400, "invalid UTF-8: {}", r.text());
    // Requests malformed below the document, each with its code.
    let huge_literal = format!(
        "{{\"query\": \"{{ user(id: \\\"{}\\\") {{ id }} }}\"}}",
        "x".repeat(10 << 20)
    );
    let nested_variables = format!(
        "{{\"query\": \"query($v: [Int]) {{ users {{ id }} }}\", \"variables\": {{\"v\": {}1{}}}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let batch_1000 = serde_json::Value::Array(vec![json!({"query": "{ users { id } }"}); 1000]);
    // (what, content type, body, status, code)
    type Case = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let raw: Vec<Case> = vec![
        (
            "10 MB string literal",
            Some("application/json"),
            huge_literal.into_bytes(),
            400,
            "DOCUMENT_TOO_LARGE",
        ),
        (
            "deeply nested variables",
            Some("application/json"),
            nested_variables.into_bytes(),
            400,
            "BAD_REQUEST",
        ),
        (
            "1000-operation batch",
            Some("application/json"),
            batch_1000.to_string().into_bytes(),
            400,
            "BATCH_TOO_LARGE",
        ),
        (
            "duplicate JSON keys",
            Some("application/json"),
            br#"{"query": "{ users { id } }", "query": "{ __schema { types { name } } }"}"#
                .to_vec(),
            400,
            "BAD_REQUEST",
        ),
        (
            "wrong content type",
            Some("application/xml"),
            br#"{"query": "{ users { id } }"}"#.to_vec(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "simple-request CSRF (text/plain)",
            Some("text/plain"),
            br#"{"query": "mutation { createUser(name: \"x\") { id } }"}"#.to_vec(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        (
            "simple-request CSRF (form)",
            Some("application/x-www-form-urlencoded"),
            b"query=mutation+%7B+createUser%28name%3A%22x%22%29+%7B+id+%7D+%7D".to_vec(),
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
    ];
    for (what, ct, body, status, code) in &raw {
        let r = c.try_post(&url, *ct, body).expect("POST");
        assert_eq!(
            (r.status, r.code().as_deref()),
            (*status, Some(*code)),
            "{what}: {}",
            r.text()
        );
    }
    // A cross-site GET cannot carry a mutation either.
    let r = c.get(
        &url,
        &[("query", "mutation { createUser(name: \"x\") { id } }")],
    );
    assert_eq!(
        (r.status, r.code().as_deref()),
        (405, Some("METHOD_NOT_ALLOWED")),
        "GET mutation"
    );
    assert_eq!(
        sg.stats().graphql(),
        0,
        "a refused document reached the subgraph"
    );

    // GraphQL over HTTP: a client that accepts the GraphQL response type gets it.
    let mut resp = ureq::post(&url)
        .header("content-type", "application/json")
        .header("accept", "application/graphql-response+json")
        .config()
        .http_status_as_error(false)
        .build()
        .send(json!({"query": "{ nope }"}).to_string())
        .expect("POST");
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(
        resp.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/graphql-response+json")
    );
    let _ = resp.body_mut().read_to_string();

    // A client asking for `application/json` alone: an invalid document is
    // a 200 with `errors` (the legacy media type's rule), a limit keeps its
    // 400; the subgraph sees neither.
    let json_only = |query: &str| {
        let mut resp = ureq::post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .config()
            .http_status_as_error(false)
            .build()
            .send(json!({ "query": query }).to_string())
            .expect("POST");
        let body: serde_json::Value =
            serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or_default();
        (
            resp.status().as_u16(),
            body["errors"][0]["extensions"]["code"]
                .as_str()
                .map(str::to_string),
            body.get("data").is_some(),
        )
    };
    assert_eq!(
        json_only("{ nope }"),
        (200, Some("GRAPHQL_VALIDATION_FAILED".into()), false)
    );
    assert_eq!(
        json_only("{ users { id "),
        (200, Some("GRAPHQL_PARSE_FAILED".into()), false)
    );
    assert_eq!(
        json_only("{ __schema { types { name } } }"),
        (400, Some("INTROSPECTION_DISABLED".into()), false)
    );

    // A valid query still goes through.
    assert!(c.query(&url, "{ users(first: 2) { id name } }").is_data());
    let m = c.metrics(&edge.admin_url("/metrics"));
    assert_eq!(
        m.get(
            "fraiseql_edge_graphql_refusals_total",
            &[("code", "INTROSPECTION_DISABLED")]
        ),
        Some(2.0)
    );
}

/// POSTs `body` with extra headers: (status, JSON body).
fn post(url: &str, body: &Value, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = ureq::post(url)
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build();
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let mut resp = req.send(body.to_string()).expect("POST");
    let json = serde_json::from_reader(resp.body_mut().as_reader()).unwrap_or(Value::Null);
    (resp.status().as_u16(), json)
}

fn sha256_hex(doc: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(doc.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn persisted(hash: &str) -> Value {
    json!({"persistedQuery": {"version": 1, "sha256Hash": hash}})
}

/// APQ: a hash the edge does not know is answered by the edge (200
/// `PERSISTED_QUERY_NOT_FOUND`); the document sent with its hash registers
/// it; then the hash alone runs it, by POST and by GET, and the subgraph —
/// which knows nothing of APQ — always receives the full document.
#[test]
fn automatic_persisted_queries_are_resolved_by_the_edge() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let edge = Edge::start(&ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", "interval_ms = 60000, timeout_ms = 5000"),
    ));
    let url = edge.route("users");
    let hash = sha256_hex(QUERY);

    let (status, body) = post(&url, &json!({"extensions": persisted(&hash)}), &[]);
    assert_eq!(status, 200);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_NOT_FOUND"
    );
    assert_eq!(sg.stats().graphql(), 0, "a miss is answered by the edge");

    let (status, body) = post(
        &url,
        &json!({"query": QUERY, "extensions": persisted(&sha256_hex("{ other }"))}),
        &[],
    );
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "PERSISTED_QUERY_HASH_MISMATCH"
    );
    assert_eq!(sg.stats().graphql(), 0);

    let (status, body) = post(
        &url,
        &json!({"query": QUERY, "extensions": persisted(&hash)}),
        &[],
    );
    assert_eq!(
        (status, body["data"]["users"][1]["id"].clone()),
        (200, json!("2"))
    );
    let (status, body) = post(&url, &json!({"extensions": persisted(&hash)}), &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["users"][0]["id"], "1", "{body}");

    let c = fraiseql_edge_tests::graphql::Client::default();
    let ext = persisted(&hash).to_string();
    let reply = c.get(&url, &[("extensions", ext.as_str())]);
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json()["data"]["users"][0]["name"], "user-1");
    assert_eq!(sg.stats().graphql(), 3);

    // A mutation sent by hash over GET is refused once the edge knows what it is.
    let mutation = "mutation { createUser(name: \"Eve\") { id } }";
    let m_hash = sha256_hex(mutation);
    let (status, _) = post(
        &url,
        &json!({"query": mutation, "extensions": persisted(&m_hash)}),
        &[],
    );
    assert_eq!(status, 200);
    let ext = persisted(&m_hash).to_string();
    let reply = c.get(&url, &[("extensions", ext.as_str())]);
    assert_eq!(reply.status, 405);
    assert_eq!(sg.stats().graphql(), 4);

    let m = c.metrics(&edge.admin_url("/metrics"));
    let outcome = |o: &str| m.get("fraiseql_edge_persisted_queries_total", &[("outcome", o)]);
    assert_eq!(outcome("apq_hit"), Some(3.0));
    assert_eq!(outcome("apq_registered"), Some(2.0));
}

/// A safelist in enforce mode: listed operations run (by id or as their
/// text), anything else is refused by the edge.
#[test]
fn the_safelist_admits_only_listed_operations() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("manifest.json");
    std::fs::write(
        &manifest,
        json!({"format": "apollo-persisted-query-manifest", "version": 1, "operations": [
            {"id": "users-list", "name": "Users", "type": "query", "body": QUERY}
        ]})
        .to_string(),
    )
    .unwrap();
    let sg = DemoSubgraph::start("users");
    let toml = ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", "interval_ms = 60000, timeout_ms = 5000"),
    )
    .to_toml()
        + &format!(
            "\n[persisted_queries]\nsafelist = {:?}\n",
            manifest.display().to_string()
        );
    let edge = Edge::start_toml(&toml);
    let url = edge.route("users");

    let (status, body) = post(&url, &json!({"extensions": persisted("users-list")}), &[]);
    assert_eq!(
        (status, body["data"]["users"][0]["id"].clone()),
        (200, json!("1"))
    );
    let (status, _) = post(&url, &json!({"query": QUERY}), &[]);
    assert_eq!(status, 200);
    assert_eq!(sg.stats().graphql(), 2);

    for (what, body, code) in [
        (
            "unlisted document",
            json!({"query": "{ users(first: 2) { id name email } }"}),
            "QUERY_NOT_IN_SAFELIST",
        ),
        (
            "unknown id",
            json!({"extensions": persisted("users-all")}),
            "PERSISTED_QUERY_NOT_IN_LIST",
        ),
        (
            "APQ registration",
            json!({"query": "{ users { email } }", "extensions": persisted(&sha256_hex("{ users { email } }"))}),
            "QUERY_NOT_IN_SAFELIST",
        ),
    ] {
        let (status, reply) = post(&url, &body, &[]);
        assert_eq!(
            (status, reply["errors"][0]["extensions"]["code"].as_str()),
            (400, Some(code)),
            "{what}: {reply}"
        );
    }
    assert_eq!(
        sg.stats().graphql(),
        2,
        "a refused operation reached the subgraph"
    );
}

/// `auth.forward_claims`: the subgraph gets the verified claims as headers,
/// and a client can never set those headers itself, with or without a token.
#[test]
fn claims_reach_the_subgraph_as_headers_that_clients_cannot_forge() {
    let _serial = serial();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, SECRET).unwrap();
    let sg = DemoSubgraph::start("users");
    let mut toml = ProxySetup::one(
        SubgraphSpec::new("users", [&sg]).table("health", "interval_ms = 60000, timeout_ms = 5000"),
    )
    .to_toml();
    toml = toml.replace(
        "name = \"users\"",
        "name = \"users\"\nrequire_authentication = false",
    );
    toml += &format!(
        "\n[auth]\nkeys = [{{ type = \"hmac_secret_file\", path = {:?}, algorithms = [\"HS256\"] }}]\n\
         forward_claims = [{{ claim = \"sub\", header = \"x-user-id\" }}, {{ claim = \"org.tier\", header = \"x-tier\" }}]\n",
        secret.display().to_string()
    );
    let edge = Edge::start_toml(&toml);
    let url = edge.route("users");
    let ask = json!({"query": "{ user: requestHeader(name: \"x-user-id\") tier: requestHeader(name: \"x-tier\") }"});
    let forged = [("x-user-id", "admin"), ("x-tier", "platinum")];

    let t = token(json!({"sub": "alice", "org": {"tier": "gold"}, "exp": now() + 600}));
    let bearer = format!("Bearer {t}");
    let mut headers = forged.to_vec();
    headers.push(("authorization", bearer.as_str()));
    let (status, body) = post(&url, &ask, &headers);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"], json!({"user": ["alice"], "tier": ["gold"]}));

    let (status, body) = post(&url, &ask, &forged);
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({"user": [], "tier": []}),
        "an anonymous client's copies are removed"
    );
}

/// Per-route settings: one subgraph opens introspection and has its own,
/// tighter rate limit; the other keeps the global ones. A batch counts
/// every operation against the limit.
#[test]
fn routes_override_introspection_and_the_rate_limit() {
    let _serial = serial();
    let sg = DemoSubgraph::start("users");
    let health = "interval_ms = 60000, timeout_ms = 5000";
    let edge = Edge::start(
        &ProxySetup {
            subgraphs: vec![
                SubgraphSpec::new("open", [&sg])
                    .table("health", health)
                    .table("graphql", "introspection = true")
                    .table("rate_limit", "requests_per_minute = 60, burst = 1"),
                SubgraphSpec::new("closed", [&sg]).table("health", health),
            ],
            ..ProxySetup::default()
        }
        .rate_limit("requests_per_minute = 60\nburst = 5\nescalation = { threshold = 0 }"),
    );
    let introspect = json!({"query": "{ __schema { queryType { name } } }"});
    let (status, body) = post(&edge.route("open"), &introspect, &[]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["__schema"]["queryType"]["name"], "Query");
    let (status, body) = post(&edge.route("open"), &introspect, &[]);
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (429, Some("RATE_LIMITED")),
        "the open route's burst is 1"
    );

    let (status, body) = post(&edge.route("closed"), &introspect, &[]);
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (400, Some("INTROSPECTION_DISABLED")),
        "the global default"
    );
    // The closed route has its own budget of 5 (one used just now): a batch
    // of 3 fits, the next batch of 3 does not, a single request still does.
    let batch = json!([{"query": QUERY}, {"query": QUERY}, {"query": QUERY}]);
    let (status, _) = post(&edge.route("closed"), &batch, &[]);
    assert_ne!(status, 429, "3 of the 4 left");
    let (status, body) = post(&edge.route("closed"), &batch, &[]);
    assert_eq!(
        (status, body["errors"][0]["extensions"]["code"].as_str()),
        (429, Some("RATE_LIMITED"))
    );
    let (status, _) = post(&edge.route("closed"), &json!({"query": QUERY}), &[]);
    assert_eq!(status, 200, "the refused batch took nothing");
}
