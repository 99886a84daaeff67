//! The `[authorization]` configuration: the mode, the named policies that
//! `@policy` refers to, and who counts as a trusted federation router.

use std::{collections::BTreeMap, net::IpAddr};

use ipnet::IpNet;
use serde::Deserialize;
use serde_json::Value;

use crate::auth::Identity;

/// Field authorization settings (phase 5).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthorizationConfig {
    /// What happens to an operation that selects unauthorized fields.
    pub mode: Mode,
    /// Policies by name, as `@policy(policies: [["name"]])` refers to them.
    pub policies: Policies,
    /// Callers allowed to reach `_entities` and `_service`.
    pub trusted_router: TrustedRouter,
}

/// What happens to an operation that selects unauthorized fields.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Refuse the whole operation (HTTP 403) with one error per
    /// unauthorized field; the subgraph is never called. The default: a
    /// client asking for what it may not see gets a clear answer, and the
    /// subgraph does no work for it.
    #[default]
    Reject,
    /// Remove the unauthorized fields, forward the rest, answer them as
    /// `null` with an error each (Apollo Router's behaviour).
    Filter,
}

/// Named policies: each is a list of claim predicates that must all hold.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct Policies(pub BTreeMap<String, Vec<Predicate>>);

/// One condition on a claim of the caller's token. Exactly one operator
/// (`equals`, `one_of`, `contains`, `exists`) is set.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// The claim: a top-level claim name, or a dotted path into nested
    /// claims (`org.region`). A claim whose name contains dots is found by
    /// its full name first.
    pub claim: String,
    /// The claim equals this JSON value.
    #[serde(default)]
    pub equals: Option<Value>,
    /// The claim equals one of these JSON values.
    #[serde(default)]
    pub one_of: Option<Vec<Value>>,
    /// The claim is an array holding this value, or a space-separated
    /// string holding this word.
    #[serde(default)]
    pub contains: Option<Value>,
    /// The claim is present and not null (`true`) or absent or null (`false`).
    #[serde(default)]
    pub exists: Option<bool>,
}

/// Callers that may reach the federation entry points (`_entities`,
/// `_service`): a token with one of `scopes`, or a source address in one of
/// `cidrs`. Empty lists trust nobody.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrustedRouter {
    /// Any of these scopes makes the caller a trusted router.
    pub scopes: Vec<String>,
    /// A client address in one of these networks makes the caller a
    /// trusted router.
    pub cidrs: Vec<IpNet>,
}

impl AuthorizationConfig {
    /// Checks what serde cannot; the error names the bad key under `at`
    /// (the table's path, `authorization`).
    pub fn validate(&self, at: &str) -> Result<(), String> {
        for (name, predicates) in &self.policies.0 {
            let at = format!("{at}.policies.{name}");
            if name.is_empty() {
                return Err(format!("{at}: a policy name must not be empty"));
            }
            if predicates.is_empty() {
                return Err(format!("{at}: a policy needs at least one predicate"));
            }
            for (i, predicate) in predicates.iter().enumerate() {
                predicate.validate(&format!("{at}[{i}]"))?;
            }
        }
        for (i, scope) in self.trusted_router.scopes.iter().enumerate() {
            if scope.is_empty() || scope.contains(char::is_whitespace) {
                return Err(format!(
                    "{at}.trusted_router.scopes[{i}]: not a scope: {scope:?}"
                ));
            }
        }
        Ok(())
    }
}

impl Predicate {
    fn validate(&self, at: &str) -> Result<(), String> {
        if self.claim.is_empty() || self.claim.split('.').any(str::is_empty) {
            return Err(format!(
                "{at}.claim: not a claim name or dotted path: {:?}",
                self.claim
            ));
        }
        let operators = [
            self.equals.is_some(),
            self.one_of.is_some(),
            self.contains.is_some(),
            self.exists.is_some(),
        ];
        match operators.iter().filter(|set| **set).count() {
            0 => Err(format!(
                "{at}: one operator is required: equals, one_of, contains or exists"
            )),
            1 => match &self.one_of {
                Some(values) if values.is_empty() => {
                    Err(format!("{at}.one_of: must list at least one value"))
                }
                _ => Ok(()),
            },
            _ => Err(format!(
                "{at}: only one operator per predicate (equals, one_of, contains, exists)"
            )),
        }
    }

    /// Whether the predicate holds for the caller's claims.
    pub fn holds(&self, identity: &Identity) -> bool {
        let claim = identity.claim(&self.claim).filter(|v| !v.is_null());
        if let Some(exists) = self.exists {
            return claim.is_some() == exists;
        }
        let Some(claim) = claim else {
            return false;
        };
        if let Some(value) = &self.equals {
            return claim == value;
        }
        if let Some(values) = &self.one_of {
            return values.contains(claim);
        }
        if let Some(value) = &self.contains {
            return match claim {
                Value::Array(items) => items.contains(value),
                Value::String(words) => value
                    .as_str()
                    .is_some_and(|word| words.split_whitespace().any(|w| w == word)),
                _ => false,
            };
        }
        false
    }
}

impl Policies {
    /// Whether the policy `name` holds for `identity`. An undefined policy
    /// never holds; nothing holds without an identity.
    pub fn holds(&self, name: &str, identity: Option<&Identity>) -> bool {
        match (self.0.get(name), identity) {
            (Some(predicates), Some(identity)) => predicates.iter().all(|p| p.holds(identity)),
            _ => false,
        }
    }
}

impl TrustedRouter {
    /// Whether the caller is a trusted router: its token carries one of the
    /// trusted scopes, or its address is in a trusted network.
    pub fn allows(&self, identity: Option<&Identity>, addr: IpAddr) -> bool {
        let by_scope = identity
            .is_some_and(|identity| self.scopes.iter().any(|s| identity.scopes.contains(s)));
        // An IPv4 peer seen on a dual-stack socket is `::ffff:a.b.c.d`.
        let addr = match addr {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr, IpAddr::V4),
            v4 => v4,
        };
        by_scope || self.cidrs.iter().any(|net| net.contains(&addr))
    }
}
