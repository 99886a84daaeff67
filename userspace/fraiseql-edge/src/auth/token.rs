//! Finding the token in a request, and the checks made before any key is
//! touched: size, shape, `alg`, `crit`.

use base64::Engine as _;
use http::HeaderMap;

use super::{
    AuthError,
    config::{Algorithm, TokenSource},
};

/// The token presented, if any. A present but unusable source (empty value,
/// wrong scheme, repeated header) is an error rather than "no token", so a
/// client that meant to authenticate is told why it did not.
pub fn extract<'a>(
    headers: &'a HeaderMap,
    source: &TokenSource,
    max_bytes: usize,
) -> Result<Option<&'a str>, AuthError> {
    let token = match source {
        TokenSource::Header { name, scheme } => {
            let mut values = headers.get_all(name.as_str()).iter();
            let Some(value) = values.next() else {
                return Ok(None);
            };
            if values.next().is_some() {
                return Err(AuthError::MalformedToken);
            }
            if value.len() > max_bytes + scheme.len() + 1 {
                return Err(AuthError::TokenTooLarge);
            }
            let value = value
                .to_str()
                .map_err(|_| AuthError::MalformedToken)?
                .trim();
            if scheme.is_empty() {
                value
            } else {
                strip_scheme(value, scheme)?
            }
        }
        TokenSource::Cookie { name } => {
            let mut found = None;
            for header in headers.get_all(http::header::COOKIE) {
                let Ok(header) = header.to_str() else {
                    continue;
                };
                for pair in header.split(';') {
                    if let Some((k, v)) = pair.trim().split_once('=')
                        && k == name
                    {
                        if found.is_some() {
                            return Err(AuthError::MalformedToken);
                        }
                        found = Some(v.trim_matches('"'));
                    }
                }
            }
            match found {
                Some(v) => v,
                None => return Ok(None),
            }
        }
    };
    if token.is_empty() {
        return Err(AuthError::MissingToken);
    }
    if token.len() > max_bytes {
        return Err(AuthError::TokenTooLarge);
    }
    Ok(Some(token))
}

fn strip_scheme<'a>(value: &'a str, scheme: &str) -> Result<&'a str, AuthError> {
    if value.eq_ignore_ascii_case(scheme) {
        return Err(AuthError::MissingToken);
    }
    match value.split_at_checked(scheme.len()) {
        Some((s, rest)) if s.eq_ignore_ascii_case(scheme) && rest.starts_with(' ') => {
            Ok(rest.trim_start())
        }
        _ => Err(AuthError::MalformedToken),
    }
}

/// What the header says, read before verification.
#[derive(Debug, PartialEq, Eq)]
pub struct Header {
    /// The algorithm (allow-listed values only).
    pub alg: Algorithm,
    /// The key id.
    pub kid: Option<String>,
}

/// Checks the compact shape (three base64url segments) and reads the header:
/// `alg` must be a known algorithm (never `none`), and `crit` must be absent
/// — no JWS extension is understood here, so RFC 7515 §4.1.11 requires a
/// refusal.
pub fn parse_header(token: &str) -> Result<Header, AuthError> {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::MalformedToken);
    };
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if header.is_empty()
        || payload.is_empty()
        || ![header, payload, signature].into_iter().all(b64url)
    {
        return Err(AuthError::MalformedToken);
    }
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::MalformedToken)?;
    let serde_json::Value::Object(fields) =
        serde_json::from_slice(&json).map_err(|_| AuthError::MalformedToken)?
    else {
        return Err(AuthError::MalformedToken);
    };
    if fields.contains_key("crit") {
        return Err(AuthError::CriticalHeader);
    }
    let alg = match fields.get("alg") {
        Some(serde_json::Value::String(alg)) => {
            Algorithm::from_jws(alg).ok_or(AuthError::UnsupportedAlgorithm)?
        }
        _ => return Err(AuthError::MalformedToken),
    };
    if signature.is_empty() {
        return Err(AuthError::InvalidSignature);
    }
    let kid = match fields.get("kid") {
        None => None,
        Some(serde_json::Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(AuthError::MalformedToken),
    };
    Ok(Header { alg, kid })
}
