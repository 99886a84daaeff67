//! Per-request costs of the security phases, in ns/op:
//!
//! * `jwt` — [`Authenticator::verify`] per algorithm with the token cache
//!   off (a full verification every time: header, key selection, signature,
//!   `exp`/`iss`/`aud`), and the cached path (the same token again);
//! * `rate_limit` — [`RateLimiter::check`] for one hot key, and for keys
//!   that never repeat within the LRU's capacity (every check an insertion
//!   and an eviction);
//! * `graphql` — [`graphql::check`] (parse, limits, validation against the
//!   schema and cost: what a document-cache miss costs) for a typical and a
//!   large query, and [`DocumentCache::check`] hits for both.
//!
//! * `authz` — what authorization adds per request: deriving an operation's
//!   requirements (once per document, with the cache miss) and evaluating
//!   them for a caller who passes and one who does not.
//!
//! `cargo bench -p fraiseql-edge --bench security`

use std::{
    fmt::Write as _, hint::black_box, num::NonZeroUsize, path::Path, sync::atomic::Ordering,
    time::Instant,
};

use base64::Engine as _;
use criterion::{Criterion, criterion_group, criterion_main};
use fraiseql_edge::{
    auth::{
        AuthConfig, Authenticator, KeySource,
        config::{Algorithm, HmacSecretConfig, JwksFileConfig},
    },
    graphql::{self, DocumentCache, GraphqlLimits, SubgraphSchema},
    ratelimit::{Key, RateLimitConfig, RateLimiter},
};
use jsonwebtoken::{EncodingKey, Header};
use p256::elliptic_curve::{Generate as _, sec1::ToSec1Point as _};
use rsa::{pkcs1::EncodeRsaPrivateKey as _, traits::PublicKeyParts as _};
use serde_json::{Value, json};

// ---------------------------------------------------------------- JWT

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "edge";
const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench-secret";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// A signing key, its public JWK (`None` for HMAC) and the algorithm.
struct SigningKey {
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Option<Value>,
}

/// One key per benchmarked algorithm; RS256 and PS256 share a 2048-bit RSA key.
fn signing_keys() -> Vec<SigningKey> {
    let rsa = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("rsa keygen");
    let rsa_public = rsa.to_public_key();
    let rsa_der = rsa.to_pkcs1_der().expect("pkcs1");
    let rsa_jwk = |kid: &str| {
        json!({ "kty": "RSA", "kid": kid, "use": "sig",
                "n": b64(&rsa_public.n_bytes()), "e": b64(&rsa_public.e_bytes()) })
    };
    let p256 = {
        use p256::pkcs8::EncodePrivateKey as _;
        let secret = p256::SecretKey::generate();
        let point = secret.public_key().to_sec1_point(false);
        (
            EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
            json!({ "kty": "EC", "crv": "P-256", "kid": "es256",
                    "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")) }),
        )
    };
    let p384 = {
        use p384::pkcs8::EncodePrivateKey as _;
        let secret = p384::SecretKey::generate();
        let point = secret.public_key().to_sec1_point(false);
        (
            EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
            json!({ "kty": "EC", "crv": "P-384", "kid": "es384",
                    "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")) }),
        )
    };
    let ed = {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
        (
            EncodingKey::from_ed_der(signing.to_pkcs8_der().expect("pkcs8").as_bytes()),
            json!({ "kty": "OKP", "crv": "Ed25519", "kid": "eddsa",
                    "x": b64(signing.verifying_key().as_bytes()) }),
        )
    };
    vec![
        SigningKey {
            alg: Algorithm::HS256,
            encoding: EncodingKey::from_secret(HMAC_SECRET).expect("hmac key"),
            jwk: None,
        },
        SigningKey {
            alg: Algorithm::RS256,
            encoding: EncodingKey::from_rsa_der(rsa_der.as_bytes()),
            jwk: Some(rsa_jwk("rs256")),
        },
        SigningKey {
            alg: Algorithm::PS256,
            encoding: EncodingKey::from_rsa_der(rsa_der.as_bytes()),
            jwk: Some(rsa_jwk("ps256")),
        },
        SigningKey {
            alg: Algorithm::ES256,
            encoding: p256.0,
            jwk: Some(p256.1),
        },
        SigningKey {
            alg: Algorithm::ES384,
            encoding: p384.0,
            jwk: Some(p384.1),
        },
        SigningKey {
            alg: Algorithm::EdDSA,
            encoding: ed.0,
            jwk: Some(ed.1),
        },
    ]
}

impl SigningKey {
    /// A token valid for an hour with typical claims, `kid` set like an
    /// identity provider sets it.
    fn token(&self) -> String {
        let now = jsonwebtoken::get_current_timestamp();
        let claims = json!({
            "sub": "user-1", "iss": ISSUER, "aud": AUDIENCE,
            "exp": now + 3600, "iat": now, "scope": "read write",
        });
        // The config's names are the JWA names jsonwebtoken parses.
        let alg = format!("{:?}", self.alg).parse().expect("a JWA name");
        let mut header = Header::new(alg);
        header.kid = self
            .jwk
            .as_ref()
            .map(|j| j["kid"].as_str().expect("kid").to_owned());
        jsonwebtoken::encode(&header, &claims, &self.encoding).expect("sign")
    }

    /// `[auth]` with this key alone (a JWKS file or an HMAC secret file in
    /// `dir`), issuer and audience checked, and `cache_size` cached tokens.
    fn config(&self, dir: &Path, cache_size: usize) -> AuthConfig {
        let name = format!("{:?}", self.alg);
        let source = match &self.jwk {
            Some(jwk) => {
                let path = dir.join(format!("{name}.jwks.json"));
                std::fs::write(&path, json!({ "keys": [jwk] }).to_string()).expect("write jwks");
                KeySource::JwksFile(JwksFileConfig {
                    path,
                    algorithms: vec![self.alg],
                })
            }
            None => {
                let path = dir.join(format!("{name}.secret"));
                std::fs::write(&path, HMAC_SECRET).expect("write secret");
                KeySource::HmacSecretFile(HmacSecretConfig {
                    path,
                    algorithms: vec![self.alg],
                    kid: None,
                })
            }
        };
        AuthConfig {
            keys: vec![source],
            issuers: vec![ISSUER.to_owned()],
            audiences: vec![AUDIENCE.to_owned()],
            cache_size,
            ..AuthConfig::default()
        }
    }
}

fn jwt(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = signing_keys();
    let mut group = c.benchmark_group("jwt");
    for key in &keys {
        let token = key.token();
        for (label, cache_size) in [("verify", 0), ("cached", 10_000)] {
            let auth = rt
                .block_on(Authenticator::new(key.config(dir.path(), cache_size)))
                .expect("authenticator");
            // Twice: the path measured is the one named, a verification
            // without the cache and a hit (after the first) with it.
            for _ in 0..2 {
                let identity = rt
                    .block_on(auth.verify(&token))
                    .expect("the token verifies");
                assert_eq!(identity.subject.as_deref(), Some("user-1"));
            }
            let hits = auth.stats().cache_hits.load(Ordering::Relaxed);
            assert_eq!(hits, u64::from(cache_size > 0), "{label} {:?}", key.alg);
            group.bench_function(format!("{label} {:?}", key.alg), |b| {
                b.to_async(&rt)
                    .iter(|| async { black_box(auth.verify(black_box(&token)).await) })
            });
        }
    }
    group.finish();
}

// ---------------------------------------------------------------- rate limit

fn rate_limit(c: &mut Criterion) {
    let mut group = c.benchmark_group("rate_limit");
    let limits = |max_keys| RateLimitConfig {
        // High enough never to refuse: the allowed path is the common one.
        requests_per_minute: u32::MAX,
        burst: 1_000_000,
        max_keys,
        ..RateLimitConfig::default()
    };
    let epoch = Instant::now();
    let hot = RateLimiter::new(&limits(100_000), epoch).expect("limiter");
    let key = Key::Subject("user-1".to_owned());
    group.bench_function("check (one hot key)", |b| {
        b.iter(|| black_box(hot.check(black_box(&key), Instant::now())))
    });
    // 100 000 keys cycled through a 10 000-key table: every check misses,
    // inserts and evicts the least recently seen.
    let churn = RateLimiter::new(&limits(10_000), epoch).expect("limiter");
    let keys: Vec<Key> = (0..100_000u32)
        .map(|i| Key::Address(std::net::Ipv4Addr::from(0x0a00_0000 | i).into()))
        .collect();
    // Fill the table first: every measured check evicts.
    for key in &keys {
        assert!(churn.check(key, Instant::now()).allowed);
    }
    assert_eq!(churn.len(), 10_000);
    assert!(hot.check(&key, Instant::now()).allowed);
    let mut next = 0;
    group.bench_function("check (LRU churn, 100k keys over 10k slots)", |b| {
        b.iter(|| {
            next = (next + 1) % keys.len();
            black_box(churn.check(black_box(&keys[next]), Instant::now()))
        })
    });
    group.finish();
}

// ---------------------------------------------------------------- GraphQL

/// A subgraph with a list with a slicing argument and a wide type for the
/// large query. Federation and cost directives are declared, as the
/// validator requires.
const SDL: &str = r#"
directive @key(fields: String!) repeatable on OBJECT | INTERFACE
directive @listSize(assumedSize: Int, slicingArguments: [String!], sizedFields: [String!], requireOneSlicingArgument: Boolean = true) on FIELD_DEFINITION
directive @cost(weight: Int!) on ARGUMENT_DEFINITION | ENUM | FIELD_DEFINITION | INPUT_FIELD_DEFINITION | OBJECT | SCALAR

type Query {
  user(id: ID!): User
  product(id: ID!): Product
  products(first: Int = 10): [Product!]! @listSize(slicingArguments: ["first"])
}

type User @key(fields: "id") {
  id: ID!
  name: String
  email: String
  createdAt: String
  friends(first: Int = 10): [User!]! @listSize(slicingArguments: ["first"])
  orders(first: Int = 5): [Order!]! @listSize(slicingArguments: ["first"])
}

type Order @key(fields: "id") {
  id: ID!
  total: Float
  status: String
  items: [Product!]!
}
"#;

/// Scalar fields of `Product`, `f0` … `f29`; the large query selects each
/// of them at ten levels of `related`.
const PRODUCT_FIELDS: usize = 30;
const LARGE_LEVELS: usize = 10;

fn sdl() -> String {
    let mut sdl = SDL.to_owned();
    sdl.push_str("\ntype Product @key(fields: \"id\") {\n  id: ID!\n  related: Product\n");
    for i in 0..PRODUCT_FIELDS {
        let _ = writeln!(sdl, "  f{i}: String");
    }
    sdl.push_str("}\n");
    sdl
}

/// What a client page typically sends: one named operation with a
/// variable, two nested lists, about 15 fields.
const TYPICAL: &str = r#"query UserPage($id: ID!) {
  user(id: $id) {
    id
    name
    email
    createdAt
    friends(first: 5) { id name email }
    orders(first: 3) { id total status items { id f0 f1 } }
  }
}"#;

/// About 300 fields: `Product`'s 30 scalars through two fragments, at each
/// of ten levels of `related`.
fn large_query() -> String {
    let half = PRODUCT_FIELDS / 2;
    let fields = |range: std::ops::Range<usize>| {
        range.map(|i| format!("f{i}")).collect::<Vec<_>>().join(" ")
    };
    let mut selection = String::new();
    for _ in 0..LARGE_LEVELS {
        selection.push_str("id ...ProductHead ...ProductTail related { ");
    }
    selection.push_str("id");
    selection.push_str(&" }".repeat(LARGE_LEVELS));
    format!(
        "query ProductTree($id: ID!) {{ product(id: $id) {{ {selection} }} }}\n\
         fragment ProductHead on Product {{ {} }}\n\
         fragment ProductTail on Product {{ {} }}\n",
        fields(0..half),
        fields(half..PRODUCT_FIELDS)
    )
}

fn graphql_check(c: &mut Criterion) {
    let schema = SubgraphSchema::parse(&sdl()).expect("the bench SDL is valid");
    let limits = GraphqlLimits::default();
    let large = large_query();
    let cases = [("typical", TYPICAL.to_owned()), ("large", large)];
    let mut group = c.benchmark_group("graphql");
    for (name, doc) in &cases {
        let checked = graphql::check(doc, None, Some(schema.schema()), &limits)
            .unwrap_or_else(|e| panic!("the {name} query passes: {e:?}"));
        println!(
            "graphql {name}: {} bytes, depth {}, cost {}",
            doc.len(),
            checked.depth,
            checked.cost
        );
        group.bench_function(format!("check, miss ({name})"), |b| {
            b.iter(|| {
                black_box(graphql::check(
                    black_box(doc),
                    None,
                    Some(schema.schema()),
                    &limits,
                ))
            })
        });
        let cache = DocumentCache::new(NonZeroUsize::new(1_000).expect("non-zero"));
        cache
            .check(doc, None, Some(&schema), &limits)
            .expect("passes");
        group.bench_function(format!("cache hit ({name})"), |b| {
            b.iter(|| black_box(cache.check(black_box(doc), None, Some(&schema), &limits)))
        });
        assert_eq!(cache.misses(), 1, "only the first lookup misses");
    }
    group.finish();
}

// ---------------------------------------------------------- authorization

/// The bench schema with authorization directives on what the typical
/// query selects: `email` needs a scope, `orders` a token, `Order` a policy.
fn authz_sdl() -> String {
    sdl()
        .replacen(
            "  email: String\n",
            "  email: String @requiresScopes(scopes: [[\"read:email\"], [\"admin\"]])\n",
            1,
        )
        .replacen(
            "  orders(first: Int = 5): [Order!]!",
            "  orders(first: Int = 5): [Order!]! @authenticated",
            1,
        )
        .replacen(
            "type Order @key(fields: \"id\") {",
            "type Order @key(fields: \"id\") @policy(policies: [[\"staff\"]]) {",
            1,
        )
}

fn authz(c: &mut Criterion) {
    use fraiseql_edge::{
        auth::Identity,
        authz::{AuthorizationConfig, Policies},
    };
    let schema = SubgraphSchema::parse(&authz_sdl()).expect("the annotated SDL is valid");
    let limits = GraphqlLimits::default();
    let config: AuthorizationConfig = toml::from_str(
        "policies = { staff = [{ claim = \"role\", one_of = [\"staff\", \"admin\"] }] }",
    )
    .expect("a valid [authorization]");
    let policies: &Policies = &config.policies;
    let checked = graphql::check_for(TYPICAL, None, Some(&schema), &limits).expect("passes");
    assert!(
        !checked.authz.is_empty(),
        "the typical query has requirements"
    );
    let caller = |scope: &str, role: &str| Identity {
        subject: Some("u1".to_owned()),
        scopes: scope.split_whitespace().map(str::to_owned).collect(),
        claims: json!({"sub": "u1", "role": role})
            .as_object()
            .cloned()
            .expect("an object"),
    };
    let allowed = caller("read:email", "staff");
    let denied = caller("profile", "customer");
    assert!(
        checked
            .authz
            .evaluate(Some(&allowed), policies, &[])
            .is_authorized()
    );
    assert!(
        !checked
            .authz
            .evaluate(Some(&denied), policies, &[])
            .is_authorized()
    );

    let mut group = c.benchmark_group("authz");
    group.bench_function("check with requirements, miss (typical)", |b| {
        b.iter(|| {
            black_box(graphql::check_for(
                black_box(TYPICAL),
                None,
                Some(&schema),
                &limits,
            ))
        })
    });
    group.bench_function("evaluate, authorized (typical)", |b| {
        b.iter(|| {
            black_box(
                checked
                    .authz
                    .evaluate(Some(black_box(&allowed)), policies, &[]),
            )
        })
    });
    group.bench_function("evaluate, refused + errors (typical)", |b| {
        b.iter(|| {
            let verdict = checked
                .authz
                .evaluate(Some(black_box(&denied)), policies, &[]);
            black_box(verdict.errors())
        })
    });
    group.finish();
}

criterion_group!(benches, jwt, rate_limit, graphql_check, authz);
criterion_main!(benches);
