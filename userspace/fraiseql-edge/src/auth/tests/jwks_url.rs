//! The JWKS URL source against a real in-process HTTP server.

use std::time::Duration;

use jsonwebtoken::Algorithm as J;

use super::{fixtures::*, *};
use crate::auth::config::JwksUrlConfig;

fn config(url: String, refresh_secs: u64) -> AuthConfig {
    AuthConfig {
        keys: vec![KeySource::JwksUrl(JwksUrlConfig {
            url,
            algorithms: vec![Algorithm::ES256, Algorithm::EdDSA],
            refresh_secs,
            ..JwksUrlConfig::default()
        })],
        ..AuthConfig::default()
    }
}

#[tokio::test]
async fn a_url_down_at_start_is_an_error() {
    let server = JwksServer::start(String::new()).await;
    let url = server.url();
    server.stop().await;
    let err = Authenticator::new(config(url, 300))
        .await
        .err()
        .expect("down");
    assert!(err.to_string().contains("auth.keys[0]"), "{err}");
    assert!(err.to_string().contains("connect"), "{err}");
}

#[tokio::test]
async fn cached_keys_still_verify_when_the_server_goes_down() {
    let key = p256("a");
    let server = JwksServer::start(jwks(&[&key.jwk])).await;
    let a = Authenticator::new(config(server.url(), 1))
        .await
        .expect("start");
    assert_eq!(server.requests(), 1);
    server.stop().await;
    // Let at least one background refresh fail.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let token = sign(J::ES256, Some("a"), &claims(), &key.encoding);
    let identity = a.verify(&token).await.expect("last good keys");
    assert_eq!(identity.subject.as_deref(), Some("user-1"));
}

#[tokio::test]
async fn background_refresh_picks_up_new_keys() {
    let (a_key, b_key) = (p256("a"), ed25519("b"));
    let server = JwksServer::start(jwks(&[&a_key.jwk])).await;
    let a = Authenticator::new(config(server.url(), 1))
        .await
        .expect("start");
    server.serve(jwks(&[&b_key.jwk]));
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(server.requests() >= 2);
    let old = sign(J::ES256, Some("a"), &claims(), &a_key.encoding);
    assert_eq!(
        a.verify(&old).await.expect_err("rotated out").code(),
        "UNKNOWN_KEY"
    );
}

#[tokio::test]
async fn rotation_is_picked_up_on_unknown_kid_and_refetches_are_rate_limited() {
    let (old, new) = (p256("old"), ed25519("new"));
    let server = JwksServer::start(jwks(&[&old.jwk])).await;
    let a = Authenticator::new(config(server.url(), 300))
        .await
        .expect("start");
    assert_eq!(server.requests(), 1);

    let token = sign(J::EdDSA, Some("new"), &claims(), &new.encoding);
    let cached = sign(J::ES256, Some("old"), &claims(), &old.encoding);
    a.verify(&cached).await.expect("old key");
    server.serve(jwks(&[&old.jwk, &new.jwk]));
    let identity = a.verify(&token).await.expect("refetched on unknown kid");
    assert_eq!(identity.subject.as_deref(), Some("user-1"));
    assert_eq!(server.requests(), 2);
    // The key set changed: the cached verification of `cached` is void, but
    // its key is still served, so it verifies again.
    a.verify(&cached).await.expect("old key still served");
    assert_eq!(
        a.stats()
            .verifications
            .load(std::sync::atomic::Ordering::Relaxed),
        3
    );

    // Forged kids: no more than one refetch per 30 s.
    for kid in ["x", "y", "z"] {
        let forged = sign(J::EdDSA, Some(kid), &claims(), &new.encoding);
        assert_eq!(
            a.verify(&forged).await.expect_err(kid).code(),
            "UNKNOWN_KEY"
        );
    }
    assert_eq!(server.requests(), 2, "rate-limited");
}

#[tokio::test]
async fn first_unknown_kid_refetches_then_waits() {
    let key = p256("a");
    let server = JwksServer::start(jwks(&[&key.jwk])).await;
    let a = Authenticator::new(config(server.url(), 300))
        .await
        .expect("start");
    for (kid, requests) in [("x", 2), ("y", 2)] {
        let forged = sign(J::ES256, Some(kid), &claims(), &key.encoding);
        assert_eq!(
            a.verify(&forged).await.expect_err(kid).code(),
            "UNKNOWN_KEY"
        );
        assert_eq!(server.requests(), requests, "{kid}");
    }
}

#[tokio::test]
async fn concurrent_unknown_kids_share_one_refetch() {
    let (old, new) = (p256("old"), ed25519("new"));
    let server = JwksServer::start(jwks(&[&old.jwk])).await;
    let a = Authenticator::new(config(server.url(), 300))
        .await
        .expect("start");
    server.serve(jwks(&[&old.jwk, &new.jwk]));
    let mut c = claims();
    let first = sign(J::EdDSA, Some("new"), &c, &new.encoding);
    c["sub"] = serde_json::json!("user-2");
    let second = sign(J::EdDSA, Some("new"), &c, &new.encoding);
    let (one, two) = tokio::join!(a.verify(&first), a.verify(&second));
    assert_eq!(one.expect("first").subject.as_deref(), Some("user-1"));
    assert_eq!(two.expect("second").subject.as_deref(), Some("user-2"));
    assert_eq!(server.requests(), 2, "one refetch for both");
}
