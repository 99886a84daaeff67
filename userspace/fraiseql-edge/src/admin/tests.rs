//! The block API without sockets: [`blocks::respond`] over a degraded-mode
//! block list, and the refusal bodies it produces.

use std::{net::IpAddr, sync::Arc};

use http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::{Value, json};

use super::{blocks, error::AdminError};
use crate::{
    blocklist::BlockList,
    config::Config,
    fallback::{Capacity, Refusal, UserLimiter},
};

fn degraded(blocks: usize) -> (Arc<UserLimiter>, BlockList) {
    let cfg = Config::from_toml("[kernel]\ninterfaces = [\"lo\"]\nipv6_prefix = 64\n").unwrap();
    let capacity = Capacity {
        blocks,
        ..Capacity::default()
    };
    let limiter = Arc::new(UserLimiter::with_capacity(&cfg.kernel, capacity));
    let list = BlockList::UserSpace(Arc::clone(&limiter));
    (limiter, list)
}

fn call(
    list: &BlockList,
    method: Method,
    path: &str,
    body: &str,
) -> Result<(StatusCode, Value), AdminError> {
    let rest = blocks::route(path).expect("a /v1/blocks path");
    blocks::respond(Some(list), &method, rest, body.as_bytes())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[test]
fn block_list_and_unblock_in_degraded_mode() {
    let (limiter, list) = degraded(16);
    let client = ip("192.0.2.7");
    let (status, v) = call(
        &list,
        Method::POST,
        "/v1/blocks",
        r#"{"client":"192.0.2.7","ttl_secs":600}"#,
    )
    .unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v, json!({"client": "192.0.2.7", "expires_in_secs": 600}));
    assert_eq!(limiter.admit_request(client), Err(Refusal::Block));
    assert!(limiter.admit_request(ip("192.0.2.8")).is_ok());

    // No TTL (or null): no expiry. IPv6 clients stand for their /64.
    call(
        &list,
        Method::POST,
        "/v1/blocks",
        r#"{"client":"2001:db8:1:2::99","ttl_secs":null}"#,
    )
    .unwrap();
    let (_, v) = call(&list, Method::GET, "/v1/blocks", "").unwrap();
    assert_eq!(
        v,
        json!([
            {"client": "192.0.2.7", "expires_in_secs": 600},
            {"client": "2001:db8:1:2::", "expires_in_secs": null},
        ])
    );

    let (_, v) = call(&list, Method::DELETE, "/v1/blocks/192.0.2.7", "").unwrap();
    assert_eq!(v, json!({"client": "192.0.2.7", "unblocked": true}));
    assert!(limiter.admit_request(client).is_ok());
    let (_, v) = call(&list, Method::DELETE, "/v1/blocks/192.0.2.7", "").unwrap();
    assert_eq!(v["unblocked"], false);
    // A percent-encoded IPv6 address in the path; any address of the /64.
    let (_, v) = call(
        &list,
        Method::DELETE,
        "/v1/blocks/2001%3Adb8%3A1%3A2%3A%3A5",
        "",
    )
    .unwrap();
    assert_eq!(v["unblocked"], true);
    assert_eq!(
        call(&list, Method::GET, "/v1/blocks/", "").unwrap().1,
        json!([])
    );
}

#[test]
fn bad_input_is_a_400_with_a_stable_code() {
    let (limiter, list) = degraded(16);
    let cases: &[(&str, &str)] = &[
        ("{not json", "BAD_REQUEST"),
        ("", "BAD_REQUEST"),
        ("[\"192.0.2.7\"]", "BAD_REQUEST"),
        (r#"{"client":"192.0.2.7","ttl":5}"#, "BAD_REQUEST"),
        ("{}", "INVALID_CLIENT"),
        (r#"{"client":7}"#, "INVALID_CLIENT"),
        (r#"{"client":"192.0.2.300"}"#, "INVALID_CLIENT"),
        (r#"{"client":"192.0.2.0/24"}"#, "INVALID_CLIENT"),
        (r#"{"client":"0.0.0.0"}"#, "INVALID_CLIENT"),
        (r#"{"client":"192.0.2.7","ttl_secs":0}"#, "INVALID_TTL"),
        (r#"{"client":"192.0.2.7","ttl_secs":-5}"#, "INVALID_TTL"),
        (r#"{"client":"192.0.2.7","ttl_secs":1.5}"#, "INVALID_TTL"),
        (r#"{"client":"192.0.2.7","ttl_secs":"600"}"#, "INVALID_TTL"),
        (
            r#"{"client":"192.0.2.7","ttl_secs":31622401}"#,
            "INVALID_TTL",
        ),
        (
            r#"{"client":"192.0.2.7","ttl_secs":18446744073709551615}"#,
            "INVALID_TTL",
        ),
    ];
    for (body, code) in cases {
        let err = call(&list, Method::POST, "/v1/blocks", body).unwrap_err();
        assert_eq!(
            err.status_and_code(),
            (StatusCode::BAD_REQUEST, *code),
            "{body}: {err}"
        );
    }
    for path in ["/v1/blocks/not-an-ip", "/v1/blocks/%zz", "/v1/blocks/%3"] {
        let err = call(&list, Method::DELETE, path, "").unwrap_err();
        assert_eq!(err.status_and_code().1, "INVALID_CLIENT", "{path}");
    }
    assert!(limiter.blocks_at(0).is_empty(), "nothing was written");
    // The longest TTL is accepted.
    call(
        &list,
        Method::POST,
        "/v1/blocks",
        r#"{"client":"192.0.2.7","ttl_secs":31622400}"#,
    )
    .unwrap();
}

#[test]
fn wrong_paths_methods_and_states() {
    let (_, list) = degraded(1);
    let code = |r: Result<(StatusCode, Value), AdminError>| r.unwrap_err().status_and_code();
    assert_eq!(
        code(call(&list, Method::PUT, "/v1/blocks", "")),
        (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED")
    );
    assert_eq!(
        code(call(&list, Method::GET, "/v1/blocks/192.0.2.7", "")).1,
        "METHOD_NOT_ALLOWED"
    );
    assert_eq!(
        code(call(&list, Method::DELETE, "/v1/blocks/192.0.2.7/x", "")).1,
        "NOT_FOUND"
    );
    assert_eq!(blocks::route("/v1/blocksx"), None);
    assert_eq!(blocks::route("/v1/subgraphs"), None);

    // Full: a 503 the caller can act on, and nothing half-written.
    call(
        &list,
        Method::POST,
        "/v1/blocks",
        r#"{"client":"192.0.2.1"}"#,
    )
    .unwrap();
    assert_eq!(
        code(call(
            &list,
            Method::POST,
            "/v1/blocks",
            r#"{"client":"192.0.2.2"}"#
        )),
        (StatusCode::SERVICE_UNAVAILABLE, "BLOCK_LIST_FULL")
    );

    // kernel.enabled = false: no block list at all.
    let none = blocks::respond(None, &Method::GET, "", b"").unwrap_err();
    assert_eq!(
        none.status_and_code(),
        (StatusCode::CONFLICT, "KERNEL_LAYER_DISABLED")
    );
    // Bad input is still reported as such.
    let bad = blocks::respond(None, &Method::POST, "", b"{}").unwrap_err();
    assert_eq!(bad.status_and_code().1, "INVALID_CLIENT");
}

#[tokio::test]
async fn refusals_are_graphql_shaped_json() {
    let resp = AdminError::MethodNotAllowed {
        method: "PUT".into(),
        allow: "GET, POST",
    }
    .into_response();
    assert_eq!(resp.status(), StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(resp.headers()["allow"], "GET, POST");
    assert_eq!(resp.headers()["content-type"], "application/json");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["errors"][0]["extensions"]["code"], "METHOD_NOT_ALLOWED");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("PUT"));

    let body = AdminError::Internal.into_response().into_body();
    let text = String::from_utf8(body.collect().await.unwrap().to_bytes().to_vec()).unwrap();
    assert!(
        text.contains("INTERNAL_ERROR") && !text.contains("EDGE_BLOCKS"),
        "{text}"
    );
}
