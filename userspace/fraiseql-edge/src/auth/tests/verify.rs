//! Verification against JWKS files and HMAC secrets: every algorithm
//! family, the classic attacks, the cache, the config and the token sources.

use std::sync::atomic::Ordering;

use jsonwebtoken::{Algorithm as J, EncodingKey};
use serde_json::json;

use super::{fixtures::*, *};
use crate::auth::config::{HmacSecretConfig, JwksFileConfig, TokenSource};

const ASYMMETRIC: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::PS256,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::RS512,
];

struct Setup {
    _files: Files,
    p256: TestKey,
    p384: TestKey,
    ed: TestKey,
    config: AuthConfig,
}

/// A JWKS file with RSA, P-256, P-384 and Ed25519 keys, and (if `hmac`) an
/// HS256 secret file; issuer and audience checked.
fn setup(hmac: bool) -> Setup {
    let files = Files::new();
    let (p256, p384, ed) = (p256("p256"), p384("p384"), ed25519("ed"));
    let doc = jwks(&[&rsa().key.jwk, &p256.jwk, &p384.jwk, &ed.jwk]);
    let mut keys = vec![KeySource::JwksFile(JwksFileConfig {
        path: files.write("jwks.json", doc.as_bytes()),
        algorithms: ASYMMETRIC.to_vec(),
    })];
    if hmac {
        keys.push(KeySource::HmacSecretFile(HmacSecretConfig {
            path: files.write("secret", &[HMAC_SECRET, b"\n"].concat()),
            algorithms: vec![Algorithm::HS256],
            kid: None,
        }));
    }
    let config = AuthConfig {
        keys,
        issuers: vec!["https://issuer".to_owned()],
        audiences: vec!["edge".to_owned()],
        ..AuthConfig::default()
    };
    Setup {
        _files: files,
        p256,
        p384,
        ed,
        config,
    }
}

async fn auth(config: &AuthConfig) -> Authenticator {
    Authenticator::new(config.clone()).await.expect("start")
}

fn bearer(token: &str) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("header"),
    );
    headers
}

#[tokio::test]
async fn every_algorithm_family_verifies() {
    let s = setup(true);
    let a = auth(&s.config).await;
    let hmac = EncodingKey::from_secret(HMAC_SECRET).expect("hmac");
    let c = claims();
    let tokens = [
        ("HS256", sign(J::HS256, None, &c, &hmac)),
        (
            "RS256",
            sign(J::RS256, Some("rsa"), &c, &rsa().key.encoding),
        ),
        (
            "PS256",
            sign(J::PS256, Some("rsa"), &c, &rsa().key.encoding),
        ),
        (
            "RS512 without kid",
            sign(J::RS512, None, &c, &rsa().key.encoding),
        ),
        ("ES256", sign(J::ES256, Some("p256"), &c, &s.p256.encoding)),
        ("ES384", sign(J::ES384, Some("p384"), &c, &s.p384.encoding)),
        ("EdDSA", sign(J::EdDSA, Some("ed"), &c, &s.ed.encoding)),
    ];
    for (name, token) in tokens {
        let identity = a
            .authenticate(&bearer(&token))
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"))
            .expect("identity");
        assert_eq!(identity.subject.as_deref(), Some("user-1"), "{name}");
        let scopes: Vec<_> = identity.scopes.iter().map(String::as_str).collect();
        assert_eq!(scopes, ["read", "write"], "{name}");
        assert_eq!(identity.claims["iss"], "https://issuer", "{name}");
    }
}

async fn refused(a: &Authenticator, token: &str) -> &'static str {
    a.verify(token).await.expect_err("must be refused").code()
}

#[tokio::test]
async fn alg_none_is_refused() {
    let a = auth(&setup(false).config).await;
    let payload = b64(claims().to_string().as_bytes());
    for header in [r#"{"alg":"none"}"#, r#"{"alg":"None","kid":"rsa"}"#] {
        let token = format!("{}.{payload}.", b64(header.as_bytes()));
        assert_eq!(refused(&a, &token).await, "UNSUPPORTED_ALGORITHM");
    }
}

#[tokio::test]
async fn hs256_signed_with_the_rsa_public_key_is_refused() {
    let c = claims();
    let r = rsa();
    let forged: Vec<String> = [r.public_pem.as_bytes(), &r.public_der]
        .into_iter()
        .flat_map(|bytes| {
            let key = EncodingKey::from_secret(bytes).expect("hmac");
            [
                sign(J::HS256, Some("rsa"), &c, &key),
                sign(J::HS256, None, &c, &key),
            ]
        })
        .collect();
    // Only public keys configured: HS256 is allowed nowhere.
    let a = auth(&setup(false).config).await;
    for token in &forged {
        assert_eq!(refused(&a, token).await, "UNSUPPORTED_ALGORITHM");
    }
    // An HMAC secret is configured too: the RSA key still never verifies
    // HS256, and the real secret rejects the forgery.
    let a = auth(&setup(true).config).await;
    for (i, token) in forged.iter().enumerate() {
        let want = if i % 2 == 0 {
            "KEY_ALGORITHM_MISMATCH"
        } else {
            "INVALID_SIGNATURE"
        };
        assert_eq!(refused(&a, token).await, want, "token {i}");
    }
}

#[tokio::test]
async fn a_key_of_the_wrong_type_for_the_alg_is_refused() {
    let s = setup(false);
    let a = auth(&s.config).await;
    // RS256 naming the P-256 key, and ES384 naming the P-256 key.
    let token = sign(J::RS256, Some("p256"), &claims(), &rsa().key.encoding);
    assert_eq!(refused(&a, &token).await, "KEY_ALGORITHM_MISMATCH");
    let token = sign(J::ES384, Some("p256"), &claims(), &s.p384.encoding);
    assert_eq!(refused(&a, &token).await, "KEY_ALGORITHM_MISMATCH");
    // Allowed for the key type but not on the allow-list.
    let token = sign(J::PS512, Some("rsa"), &claims(), &rsa().key.encoding);
    assert_eq!(refused(&a, &token).await, "UNSUPPORTED_ALGORITHM");
}

#[tokio::test]
async fn claims_are_checked() {
    let s = setup(false);
    let a = auth(&s.config).await;
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        sign(J::ES256, Some("p256"), &c, &s.p256.encoding)
    };
    let cases = [
        ("EXPIRED", with(&|c| c["exp"] = json!(now() - 120))),
        ("NOT_YET_VALID", with(&|c| c["nbf"] = json!(now() + 120))),
        ("WRONG_ISSUER", with(&|c| c["iss"] = json!("https://evil"))),
        ("WRONG_AUDIENCE", with(&|c| c["aud"] = json!(["other"]))),
        (
            "MISSING_CLAIM",
            with(&|c| drop(c.as_object_mut().map(|o| o.remove("exp")))),
        ),
        (
            "MISSING_CLAIM",
            with(&|c| drop(c.as_object_mut().map(|o| o.remove("aud")))),
        ),
    ];
    for (code, token) in cases {
        assert_eq!(refused(&a, &token).await, code);
    }
    // Within the leeway: accepted.
    let token = with(&|c| c["exp"] = json!(now() - 30));
    a.verify(&token).await.expect("within leeway");
}

#[tokio::test]
async fn unknown_kid_tampering_and_garbage_are_refused() {
    let s = setup(false);
    let a = auth(&s.config).await;
    let token = sign(J::ES256, Some("nope"), &claims(), &s.p256.encoding);
    assert_eq!(refused(&a, &token).await, "UNKNOWN_KEY");

    let token = sign(J::ES256, Some("p256"), &claims(), &s.p256.encoding);
    let parts: Vec<&str> = token.split('.').collect();
    let mut c = claims();
    c["sub"] = json!("admin");
    let tampered = format!(
        "{}.{}.{}",
        parts[0],
        b64(c.to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(refused(&a, &tampered).await, "INVALID_SIGNATURE");
    let resigned = format!("{}.{}.{}", parts[0], parts[1], b64(&[0u8; 64]));
    assert_eq!(refused(&a, &resigned).await, "INVALID_SIGNATURE");

    for garbage in [
        "...",
        "a.b.c",
        "abc.def.ghi",
        "e30.e30",
        "e30.e30.e30.e30",
        "!!!.e30.sig",
        &format!("{}!.{}.{}", parts[0], parts[1], parts[2]),
        &format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
    ] {
        assert_eq!(refused(&a, garbage).await, "MALFORMED_TOKEN", "{garbage}");
    }
}

#[tokio::test]
async fn oversized_tokens_are_refused_unparsed() {
    let a = auth(&setup(false).config).await;
    let big = format!("{}.{}.{}", b64(b"{}"), "A".repeat(16 * 1024), "B");
    let err = a.authenticate(&bearer(&big)).await.expect_err("too large");
    assert_eq!(err.code(), "TOKEN_TOO_LARGE");
    assert_eq!(refused(&a, &big).await, "TOKEN_TOO_LARGE");
}

#[tokio::test]
async fn a_crit_header_is_refused() {
    let s = setup(false);
    let a = auth(&s.config).await;
    let mut header = jsonwebtoken::Header::new(J::ES256);
    header.kid = Some("p256".to_owned());
    header.crit = Some(vec!["exp".to_owned()]);
    header.extras.insert("exp", json!(1));
    let token = jsonwebtoken::encode(&header, &claims(), &s.p256.encoding).expect("sign");
    assert_eq!(refused(&a, &token).await, "CRITICAL_HEADER");
}

#[tokio::test]
async fn a_verified_token_is_served_from_the_cache_until_exp() {
    let s = setup(false);
    let mut config = s.config.clone();
    config.leeway_secs = 0;
    let a = auth(&config).await;
    let token = sign(J::ES256, Some("p256"), &claims(), &s.p256.encoding);
    let first = a.verify(&token).await.expect("first");
    let second = a.verify(&token).await.expect("second");
    assert_eq!(first, second);
    assert_eq!(a.stats().verifications.load(Ordering::Relaxed), 1);
    assert_eq!(a.stats().cache_hits.load(Ordering::Relaxed), 1);

    let mut c = claims();
    c["exp"] = json!(now() + 1);
    let short = sign(J::ES256, Some("p256"), &c, &s.p256.encoding);
    a.verify(&short).await.expect("fresh");
    assert_eq!(a.cached_tokens(), 2);
    tokio::time::sleep(std::time::Duration::from_millis(2_500)).await;
    assert_eq!(refused(&a, &short).await, "EXPIRED");
    assert_eq!(
        a.stats().cache_hits.load(Ordering::Relaxed),
        1,
        "no hit after exp"
    );
    assert_eq!(a.cached_tokens(), 1);
}

#[tokio::test]
async fn token_sources() {
    let s = setup(false);
    let a = auth(&s.config).await;
    let token = sign(J::ES256, Some("p256"), &claims(), &s.p256.encoding);
    assert_eq!(a.authenticate(&http::HeaderMap::new()).await, Ok(None));
    let mut h = http::HeaderMap::new();
    for (value, code) in [
        ("Basic dXNlcjpwYXNz", "MALFORMED_TOKEN"),
        ("Bearer", "MISSING_TOKEN"),
        ("Bearer    ", "MISSING_TOKEN"),
        ("Bearertoken", "MALFORMED_TOKEN"),
    ] {
        h.insert(http::header::AUTHORIZATION, value.parse().expect("value"));
        let err = a.authenticate(&h).await.expect_err(value);
        assert_eq!(err.code(), code, "{value}");
    }
    h.insert(
        http::header::AUTHORIZATION,
        format!("bearer {token}").parse().expect("v"),
    );
    assert!(
        a.authenticate(&h)
            .await
            .expect("lower-case scheme")
            .is_some()
    );
    h.append(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("v"),
    );
    assert_eq!(
        a.authenticate(&h).await.expect_err("two").code(),
        "MALFORMED_TOKEN"
    );

    let mut config = s.config.clone();
    config.token_source = TokenSource::Cookie {
        name: "jwt".to_owned(),
    };
    let a = auth(&config).await;
    let mut h = http::HeaderMap::new();
    h.insert(http::header::COOKIE, "theme=dark".parse().expect("v"));
    assert_eq!(a.authenticate(&h).await, Ok(None));
    h.insert(
        http::header::COOKIE,
        format!("theme=dark; jwt={token}").parse().expect("v"),
    );
    let identity = a.authenticate(&h).await.expect("cookie").expect("identity");
    assert_eq!(identity.subject.as_deref(), Some("user-1"));
}

#[tokio::test]
async fn scopes_from_an_array_claim() {
    let s = setup(false);
    let mut config = s.config.clone();
    config.scope_claim = "scp".to_owned();
    let a = auth(&config).await;
    let mut c = claims();
    c["scp"] = json!(["a", "b", 3]);
    let token = sign(J::EdDSA, Some("ed"), &c, &s.ed.encoding);
    let identity = a.verify(&token).await.expect("verify");
    let scopes: Vec<_> = identity.scopes.iter().map(String::as_str).collect();
    assert_eq!(scopes, ["a", "b"]);
}

#[test]
fn config_defaults_parse_and_validate() {
    let c: AuthConfig = toml::from_str(
        r#"
        issuers = ["https://issuer"]
        [[keys]]
        type = "jwks_url"
        url = "http://127.0.0.1:9000/jwks"
        algorithms = ["RS256", "ES256"]
        [[keys]]
        type = "hmac_secret_file"
        path = "/etc/edge/secret"
        algorithms = ["HS256"]
        kid = "k1"
        "#,
    )
    .expect("parse");
    assert_eq!(c.token_source, TokenSource::default());
    assert!(c.require_exp);
    assert_eq!(
        (c.leeway_secs, c.cache_size, c.max_token_bytes),
        (60, 10_000, 8192)
    );
    assert_eq!(c.scope_claim, "scope");
    let KeySource::JwksUrl(u) = &c.keys[0] else {
        panic!("jwks_url")
    };
    assert_eq!(
        (
            u.refresh_secs,
            u.unknown_kid_refetch_secs,
            u.fetch_timeout_secs
        ),
        (300, 30, 15)
    );
    c.validate("auth").expect("valid");

    let cookie: AuthConfig = toml::from_str(
        "token_source = { from = \"cookie\", name = \"jwt\" }\n[[keys]]\ntype = \"jwks_file\"\npath = \"/k\"\nalgorithms = [\"EdDSA\"]",
    )
    .expect("cookie");
    assert_eq!(
        cookie.token_source,
        TokenSource::Cookie {
            name: "jwt".to_owned()
        }
    );
}

#[test]
fn bad_configs_are_refused_with_the_key_path() {
    let parse = |s: &str| toml::from_str::<AuthConfig>(s).map_err(|e| e.to_string());
    let jwks = "[[keys]]\ntype = \"jwks_url\"\nurl = \"http://h/j\"\n";
    assert!(parse(&format!("{jwks}algorithms = [\"none\"]")).is_err());
    assert!(parse("leeway = 5").is_err(), "unknown key");
    assert!(parse(&format!("{jwks}algorithms = [\"RS256\"]\nrefresh = 1")).is_err());

    let check = |s: &str| parse(s).expect("parse").validate("auth");
    assert_eq!(
        check(&format!("{jwks}algorithms = [\"RS256\", \"HS256\"]")),
        Err("auth.keys[0].algorithms: HS256 is not allowed for a JWKS (public keys)".to_owned())
    );
    let e = check("[[keys]]\ntype = \"jwks_url\"\nurl = \"https://h/j\"\nalgorithms = [\"RS256\"]");
    assert!(e.expect_err("https").starts_with("auth.keys[0].url:"));
    let e = check("[[keys]]\ntype = \"hmac_secret_file\"\npath = \"/s\"\nalgorithms = [\"RS256\"]");
    assert!(
        e.expect_err("rsa on hmac")
            .starts_with("auth.keys[0].algorithms:")
    );
    assert!(check("").expect_err("no keys").starts_with("auth.keys:"));
}

#[tokio::test]
async fn start_fails_clearly() {
    let files = Files::new();
    let short = KeySource::HmacSecretFile(HmacSecretConfig {
        path: files.write("short", b"too short"),
        algorithms: vec![Algorithm::HS256],
        kid: None,
    });
    let config = AuthConfig {
        keys: vec![short],
        ..AuthConfig::default()
    };
    let err = Authenticator::new(config)
        .await
        .err()
        .expect("short secret");
    assert!(err.to_string().contains("auth.keys[0]"), "{err}");

    let only_hmac = KeySource::JwksFile(JwksFileConfig {
        path: files.write(
            "jwks.json",
            jwks(&[&json!({"kty": "oct", "k": b64(HMAC_SECRET)})]).as_bytes(),
        ),
        algorithms: vec![Algorithm::RS256],
    });
    let config = AuthConfig {
        keys: vec![only_hmac],
        ..AuthConfig::default()
    };
    let err = Authenticator::new(config).await.err().expect("oct only");
    assert!(err.to_string().contains("no usable signing key"), "{err}");
}

#[test]
fn www_authenticate_never_echoes_the_token() {
    assert_eq!(AuthError::MissingToken.www_authenticate(), "Bearer");
    assert_eq!(
        AuthError::Expired.www_authenticate(),
        r#"Bearer error="invalid_token", error_description="token expired""#
    );
    assert_eq!(AuthError::InvalidSignature.reason(), "invalid_signature");
}

#[test]
fn the_authenticator_can_be_shared_across_tasks() {
    fn send_sync<T: Send + Sync>(_: &T) {}
    fn send<T: Send>(_: T) {}
    fn check(a: &Authenticator, h: &http::HeaderMap) {
        send_sync(a);
        send(a.authenticate(h));
    }
    let _ = check;
}
