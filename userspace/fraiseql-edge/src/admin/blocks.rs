//! `/v1/blocks`: the block list through the daemon, whichever layer enforces
//! it ([`BlockList`]: the kernel map, or the user-space limiter in degraded
//! mode).
//!
//! * `GET /v1/blocks` — `[{"client":"192.0.2.7","expires_in_secs":598}, …]`
//!   (`null`: no expiry; expired entries until the next once-a-second sweep);
//! * `POST /v1/blocks` with `{"client":"192.0.2.7","ttl_secs":600}` —
//!   blocks the client (`ttl_secs` omitted or `null`: until unblocked;
//!   otherwise 1 s to [`MAX_TTL_SECS`]), replacing an earlier block; answers
//!   the entry as stored (an IPv6 client may stand for its /64);
//! * `DELETE /v1/blocks/<address>` — lifts the block:
//!   `{"client":…,"unblocked":true|false}` (false: there was none).
//!
//! Every change is logged.

use std::net::IpAddr;

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::error::AdminError;
use crate::blocklist::{self, BlockError, BlockList, MAX_TTL_SECS};

/// The largest body a call takes (a block is a few dozen bytes).
pub const MAX_BODY: usize = 4096;

const SHAPE: &str =
    r#"the body must be a JSON object {"client": "<IP address>", "ttl_secs": <seconds, optional>}"#;

/// The part of `path` after `/v1/blocks`, when the path is this API's.
pub fn route(path: &str) -> Option<&str> {
    path.strip_prefix("/v1/blocks")
        .filter(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Answers `method` on `/v1/blocks<rest>` with `body` (read by the caller,
/// at most [`MAX_BODY`] bytes; only `POST` looks at it).
pub fn respond(
    list: Option<&BlockList>,
    method: &Method,
    rest: &str,
    body: &[u8],
) -> Result<(StatusCode, Value), AdminError> {
    let item = match rest.trim_start_matches('/') {
        "" => None,
        seg if !seg.contains('/') => Some(seg),
        _ => return Err(AdminError::NotFound),
    };
    match (item, method) {
        (None, &Method::GET) => {
            let blocks = enforcing(list)?.list().map_err(internal)?;
            Ok((StatusCode::OK, json!(blocks)))
        }
        (None, &Method::POST) => {
            let (addr, ttl) = parse_block(body)?;
            let list = enforcing(list)?;
            let info = list.block(addr, ttl).map_err(internal)?;
            tracing::warn!(
                client = %info.client,
                ttl_secs = ?ttl,
                enforced_by = list.enforced_by(),
                "client blocked by an operator"
            );
            Ok((StatusCode::OK, json!(info)))
        }
        (None, other) => Err(not_allowed(other, "GET, POST")),
        (Some(seg), &Method::DELETE) => {
            let addr = parse_client(&percent_decode(seg).unwrap_or_default())?;
            let list = enforcing(list)?;
            let unblocked = list.unblock(addr).map_err(internal)?;
            if unblocked {
                tracing::warn!(
                    client = %addr,
                    enforced_by = list.enforced_by(),
                    "block lifted by an operator"
                );
            }
            Ok((
                StatusCode::OK,
                json!({ "client": addr, "unblocked": unblocked }),
            ))
        }
        (Some(_), other) => Err(not_allowed(other, "DELETE")),
    }
}

fn enforcing(list: Option<&BlockList>) -> Result<&BlockList, AdminError> {
    list.ok_or(AdminError::KernelDisabled)
}

fn not_allowed(method: &Method, allow: &'static str) -> AdminError {
    AdminError::MethodNotAllowed {
        method: method.to_string(),
        allow,
    }
}

/// A block-list failure as the caller sees it; map errors are logged here.
fn internal(e: BlockError) -> AdminError {
    match e {
        BlockError::Ttl => AdminError::InvalidTtl(e.to_string()),
        BlockError::Full => AdminError::BlockListFull,
        BlockError::Maps(e) => {
            tracing::error!(error = %e, "block list access failed");
            AdminError::Internal
        }
    }
}

/// `{"client": "<address>", "ttl_secs": <u64 or null, optional>}`.
fn parse_block(body: &[u8]) -> Result<(IpAddr, Option<u64>), AdminError> {
    let bad = || AdminError::BadRequest(SHAPE.to_string());
    let value: Value = serde_json::from_slice(body).map_err(|_| bad())?;
    let Value::Object(obj) = value else {
        return Err(bad());
    };
    if obj.keys().any(|k| k != "client" && k != "ttl_secs") {
        return Err(AdminError::BadRequest(format!(
            "only `client` and `ttl_secs` are accepted; {SHAPE}"
        )));
    }
    let client = obj.get("client").and_then(Value::as_str).ok_or_else(|| {
        AdminError::InvalidClient(
            "`client` is required: an IPv4 or IPv6 address as a string".into(),
        )
    })?;
    let addr = parse_client(client)?;
    let ttl = match obj.get("ttl_secs") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(ttl_error)?),
    };
    blocklist::check_ttl(ttl).map_err(|_| ttl_error())?;
    Ok((addr, ttl))
}

fn ttl_error() -> AdminError {
    AdminError::InvalidTtl(format!(
        "`ttl_secs` must be a whole number of seconds from 1 to {MAX_TTL_SECS}, \
         or omitted for a block without expiry"
    ))
}

/// A client address; the unspecified address (`0.0.0.0`, `::`) is no client.
fn parse_client(text: &str) -> Result<IpAddr, AdminError> {
    match text.parse::<IpAddr>() {
        Ok(addr) if !addr.is_unspecified() => Ok(addr.to_canonical()),
        Ok(addr) => Err(AdminError::InvalidClient(format!(
            "{addr} is not a client address"
        ))),
        Err(_) => Err(AdminError::InvalidClient(
            "the client must be an IPv4 or IPv6 address".into(),
        )),
    }
}

/// Decodes `%XX` escapes (an IPv6 address may arrive as `2001%3Adb8%3A%3A1`);
/// `None` for a malformed escape or a result that is not UTF-8.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}
