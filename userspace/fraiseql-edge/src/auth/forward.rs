//! Claims forwarded to subgraphs as request headers (`auth.forward_claims`).
//!
//! A subgraph behind the edge trusts these headers instead of parsing the
//! token again, so a client must never be able to set them: every
//! configured header is removed from the client's request whether or not
//! the request carries an identity, and only then filled in from the
//! verified claims.

use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde::Deserialize;
use serde_json::Value;

use super::Identity;

/// One claim sent upstream as a header.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForwardClaim {
    /// The claim: a name, or a dotted path into nested claims
    /// (`realm_access.roles`; a claim whose name has dots is found by its
    /// full name first).
    pub claim: String,
    /// The header it is sent in. A string claim is sent as is; any other
    /// JSON value (number, boolean, array, object) as compact JSON.
    pub header: String,
}

/// Headers a claim must never be forwarded in: the proxy sets or strips
/// them itself.
const RESERVED: [HeaderName; 9] = [
    header::AUTHORIZATION,
    header::CONNECTION,
    header::CONTENT_LENGTH,
    header::CONTENT_TYPE,
    header::COOKIE,
    header::HOST,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Checks `auth.forward_claims`; `at` is its config path.
pub fn validate(claims: &[ForwardClaim], at: &str) -> Result<(), String> {
    let mut seen = Vec::new();
    for (i, c) in claims.iter().enumerate() {
        let at = format!("{at}[{i}]");
        if c.claim.is_empty() || c.claim.split('.').any(str::is_empty) {
            return Err(format!(
                "{at}.claim: not a claim name or dotted path: {:?}",
                c.claim
            ));
        }
        let name = HeaderName::from_bytes(c.header.as_bytes())
            .map_err(|_| format!("{at}.header: not a header name: {:?}", c.header))?;
        if RESERVED.contains(&name) || name.as_str().starts_with("x-forwarded-") {
            return Err(format!(
                "{at}.header: {name} is set by the proxy itself and cannot carry a claim"
            ));
        }
        if seen.contains(&name) {
            return Err(format!("{at}.header: {name} is used twice"));
        }
        seen.push(name);
    }
    Ok(())
}

/// The claims to forward, with their header names parsed once.
#[derive(Clone, Debug, Default)]
pub struct ClaimHeaders {
    claims: Vec<(String, HeaderName)>,
}

impl ClaimHeaders {
    /// From a validated `auth.forward_claims`.
    pub fn new(claims: &[ForwardClaim]) -> Self {
        Self {
            claims: claims
                .iter()
                .filter_map(|c| {
                    let name = HeaderName::from_bytes(c.header.as_bytes()).ok()?;
                    Some((c.claim.clone(), name))
                })
                .collect(),
        }
    }

    /// Removes every configured header the client sent, then adds those the
    /// identity's claims fill in. A claim that is absent, `null`, or not
    /// representable as a header value is not sent.
    pub fn apply(&self, identity: Option<&Identity>, headers: &mut HeaderMap) {
        for (_, name) in &self.claims {
            headers.remove(name);
        }
        let Some(identity) = identity else { return };
        for (path, name) in &self.claims {
            let Some(value) = identity.claim(path) else {
                continue;
            };
            let text = match value {
                Value::Null => continue,
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            match HeaderValue::from_str(&text) {
                Ok(v) => {
                    headers.insert(name.clone(), v);
                }
                Err(_) => {
                    tracing::debug!(header = %name, "claim not forwarded: not a valid header value");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fc(claim: &str, header: &str) -> ForwardClaim {
        ForwardClaim {
            claim: claim.into(),
            header: header.into(),
        }
    }

    fn identity(claims: Value) -> Identity {
        Identity {
            claims: claims.as_object().unwrap().clone(),
            ..Identity::default()
        }
    }

    #[test]
    fn client_copies_are_stripped_and_claims_filled_in() {
        let cfg = [
            fc("sub", "x-user-id"),
            fc("realm.roles", "x-user-roles"),
            fc("tenant", "x-tenant"),
            fc("missing", "x-missing"),
        ];
        validate(&cfg, "auth.forward_claims").unwrap();
        let ch = ClaimHeaders::new(&cfg);
        let mut h = HeaderMap::new();
        for name in ["x-user-id", "x-tenant", "x-missing", "x-user-roles"] {
            h.append(name, HeaderValue::from_static("forged"));
            h.append(name, HeaderValue::from_static("forged-again"));
        }
        h.insert("x-other", HeaderValue::from_static("kept"));
        let id = identity(json!({"sub": "alice", "realm": {"roles": ["a", "b"]}, "tenant": 42}));
        ch.apply(Some(&id), &mut h);
        assert_eq!(h.get_all("x-user-id").iter().collect::<Vec<_>>(), ["alice"]);
        assert_eq!(h["x-user-roles"], r#"["a","b"]"#);
        assert_eq!(h["x-tenant"], "42");
        assert!(
            h.get("x-missing").is_none(),
            "an absent claim sends nothing"
        );
        assert_eq!(h["x-other"], "kept");

        let mut anonymous = HeaderMap::new();
        anonymous.insert("x-user-id", HeaderValue::from_static("admin"));
        ch.apply(None, &mut anonymous);
        assert!(anonymous.is_empty(), "an anonymous request cannot set them");
    }

    #[test]
    fn values_that_cannot_be_headers_are_not_sent() {
        let ch = ClaimHeaders::new(&[fc("name", "x-name")]);
        let mut h = HeaderMap::new();
        ch.apply(
            Some(&identity(json!({"name": "a\r\nx-injected: 1"}))),
            &mut h,
        );
        assert!(h.is_empty());
    }

    #[test]
    fn bad_configs_name_the_key() {
        for (cfg, expect) in [
            (vec![fc("", "x-a")], "auth.forward_claims[0].claim"),
            (vec![fc("a..b", "x-a")], "auth.forward_claims[0].claim"),
            (
                vec![fc("sub", "bad header")],
                "auth.forward_claims[0].header",
            ),
            (vec![fc("sub", "Authorization")], "set by the proxy"),
            (vec![fc("sub", "x-forwarded-for")], "set by the proxy"),
            (vec![fc("sub", "x-a"), fc("tid", "X-A")], "used twice"),
        ] {
            let e = validate(&cfg, "auth.forward_claims").unwrap_err();
            assert!(e.contains(expect), "{cfg:?}: {e}");
        }
    }
}
