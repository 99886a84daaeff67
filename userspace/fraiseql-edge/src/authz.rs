//! Phase 5 of the request path, **authorize**: `@authenticated`,
//! `@requiresScopes` and `@policy` from the subgraph SDL, with Apollo
//! Router's semantics.
//!
//! * [`requirements`] — once per cached document: what the selected
//!   operation requires, as compact data (response paths and check ids).
//! * [`Requirements::evaluate`] — per request: the [`Verdict`] for a caller
//!   (no AST walk; free when [`Requirements::is_empty`]).
//! * Reject mode ([`Mode::Reject`]): answer 403 with [`Verdict::errors`],
//!   never calling the subgraph.
//! * Filter mode ([`Mode::Filter`]): [`filter`] rewrites the document
//!   without the unauthorized selections; forward
//!   [`Filtered::document`] and apply [`Filtered::patch`] to the
//!   subgraph's response (nulls, null propagation, errors). When nothing
//!   is left, answer [`ResponsePatch::response`] without calling the
//!   subgraph.
//! * [`AuthorizationConfig`] — the `[authorization]` table; [`Policies`]
//!   the named claim predicates; [`TrustedRouter`] who may reach
//!   `_entities` and `_service`; [`undefined_policies`] the policies the
//!   SDL names but the configuration lacks (warn at start).
//!
//! Semantics. `@authenticated` needs a verified token.
//! `@requiresScopes(scopes: [[...]])` and `@policy(policies: [[...]])` hold
//! when one inner list (OR) holds entirely (AND); a caller without a token
//! has no scopes and satisfies no policy, an undefined policy never holds,
//! and an empty outer list asks for nothing (as in Apollo Router). A directive on a field applies to it; on a type, to every field
//! returning that type and every fragment on it (abstract types: see the
//! `rules` module). `_entities` is authorized by its representations'
//! `__typename`s ([`Requirements::entity_typenames`], passed to
//! `evaluate`): one whose type's requirements fail
//! makes the whole `_entities` field unauthorized; fields and fragments
//! selected under it are checked as anywhere else.
//!
//! Errors follow Apollo Router: message `Unauthorized field or type`, code
//! `UNAUTHORIZED_FIELD_OR_TYPE`, `path` with `"@"` for list items
//! (`["users", "@", "email"]`). Where Apollo Router's paths are not response
//! paths, these are: they hold response keys (aliases, where Apollo Router
//! writes field names), one `"@"` per list level (Apollo Router writes one
//! per list field), and a fragment refused for its type condition is
//! reported at the path of the selection set holding it (Apollo Router
//! appends a `"... on Type"` element). A directive on the root operation
//! type refuses the whole operation (path `[]`). A field whose selections
//! are all removed is removed too; it is answered `null` and reported by
//! its removed children, as in Apollo Router.

pub mod config;
mod filter;
mod requirements;
mod rules;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use apollo_compiler::{Name, ast};
use serde_json::{Value, json};

use self::requirements::Representations;
pub use self::{
    config::{AuthorizationConfig, Mode, Policies, Predicate, TrustedRouter},
    filter::{Filtered, ResponsePatch, filter},
    requirements::requirements,
};
use crate::{auth::Identity, graphql::SubgraphSchema};

/// The error message, as Apollo Router words it.
pub const MESSAGE: &str = "Unauthorized field or type";
/// The error code, as Apollo Router spells it.
pub const CODE: &str = "UNAUTHORIZED_FIELD_OR_TYPE";

/// One condition from a directive.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Check {
    /// `@authenticated`.
    Authenticated,
    /// `@requiresScopes`: OR of ANDs.
    Scopes(Vec<Vec<String>>),
    /// `@policy`: OR of ANDs of policy names.
    Policies(Vec<Vec<String>>),
}

impl Check {
    fn holds(&self, identity: Option<&Identity>, policies: &Policies) -> bool {
        match self {
            Self::Authenticated => identity.is_some(),
            // An empty outer list asks for nothing (as in Apollo Router).
            Self::Scopes(any) => {
                any.is_empty()
                    || any.iter().any(|all| {
                        all.iter()
                            .all(|s| identity.is_some_and(|id| id.scopes.contains(s)))
                    })
            }
            Self::Policies(any) => {
                any.is_empty()
                    || any
                        .iter()
                        .any(|all| all.iter().all(|p| policies.holds(p, identity)))
            }
        }
    }
}

/// One element of a response path.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PathElement {
    /// A field's response key (its alias, else its name).
    Key(Name),
    /// Every item of a list (`"@"`).
    Item,
}

impl PathElement {
    fn to_json(&self) -> Value {
        match self {
            Self::Key(key) => Value::String(key.to_string()),
            Self::Item => Value::String("@".to_owned()),
        }
    }
}

/// A selection with requirements.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    /// Where it is answered (a fragment: the selection set holding it).
    path: Box<[PathElement]>,
    /// Indexes into [`Requirements::checks`]; all must hold.
    checks: Box<[u32]>,
    /// The nearest enclosing entry: when it fails, this one is not reported.
    parent: Option<u32>,
}

/// An `_entities` field and the type-level checks of its entity types.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EntityFetch {
    path: Box<[PathElement]>,
    by_type: Box<[(Name, Box<[u32]>)]>,
    representations: Representations,
}

/// What one operation requires, precomputed for [`Requirements::evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requirements {
    checks: Vec<Check>,
    entries: Vec<Entry>,
    entities: Vec<EntityFetch>,
}

impl Requirements {
    /// Nothing to check: every caller may run the operation.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.entities.is_empty()
    }

    /// The `__typename`s of the representations the operation's
    /// `_entities` fields resolve, from the request's variables (or the
    /// document's literals): the `entity_typenames` of
    /// [`Requirements::evaluate`]. Empty when there is no `_entities`.
    pub fn entity_typenames<'v>(
        &'v self,
        variables: &'v serde_json::Map<String, Value>,
    ) -> Vec<&'v str> {
        let mut out: Vec<&str> = Vec::new();
        for fetch in &self.entities {
            let found: Vec<&str> = match &fetch.representations {
                Representations::Variable(name) => variables
                    .get(name.as_str())
                    .and_then(Value::as_array)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(|item| item.get("__typename")?.as_str())
                            .collect()
                    })
                    .unwrap_or_default(),
                Representations::Literal(typenames) => {
                    typenames.iter().map(String::as_str).collect()
                }
            };
            for typename in found {
                if !out.contains(&typename) {
                    out.push(typename);
                }
            }
        }
        out
    }

    /// The verdict for a caller (`None`: no verified token), with the
    /// `__typename`s of the request's `_entities` representations (empty
    /// when it has none).
    pub fn evaluate(
        &self,
        identity: Option<&Identity>,
        policies: &Policies,
        entity_typenames: &[&str],
    ) -> Verdict {
        let mut verdict = Verdict::default();
        if self.is_empty() {
            return verdict;
        }
        let passed: Vec<bool> = self
            .checks
            .iter()
            .map(|c| c.holds(identity, policies))
            .collect();
        let fails = |ids: &[u32]| ids.iter().any(|&i| !passed[i as usize]);
        for (check, passed) in self.checks.iter().zip(&passed) {
            if !passed {
                verdict.failed.insert(check.clone());
            }
        }
        for fetch in &self.entities {
            let refused = entity_typenames.iter().any(|typename| {
                fetch
                    .by_type
                    .iter()
                    .any(|(name, ids)| name == typename && fails(ids))
            });
            if refused {
                verdict.refused_entities = true;
                verdict.paths.push(fetch.path.to_vec());
            }
        }
        let mut unauthorized = vec![false; self.entries.len()];
        for (i, entry) in self.entries.iter().enumerate() {
            let parent_failed = entry.parent.is_some_and(|p| unauthorized[p as usize]);
            let failed = fails(&entry.checks);
            unauthorized[i] = parent_failed || failed;
            if !failed || parent_failed {
                continue;
            }
            let under_refused_entities = verdict.refused_entities
                && self
                    .entities
                    .iter()
                    .any(|f| entry.path.starts_with(&f.path));
            if under_refused_entities || verdict.paths.iter().any(|p| **p == *entry.path) {
                continue;
            }
            verdict.paths.push(entry.path.to_vec());
        }
        verdict
    }
}

/// The outcome of [`Requirements::evaluate`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Verdict {
    /// Response paths of the unauthorized selections, in document order.
    paths: Vec<Vec<PathElement>>,
    /// The checks that failed (for [`filter`]).
    failed: BTreeSet<Check>,
    /// An `_entities` representation's type is unauthorized.
    refused_entities: bool,
}

impl Verdict {
    /// Nothing selected is unauthorized.
    pub fn is_authorized(&self) -> bool {
        self.paths.is_empty()
    }

    /// Response paths of the unauthorized selections, in document order.
    pub fn paths(&self) -> &[Vec<PathElement>] {
        &self.paths
    }

    /// The GraphQL `errors` array: one error per unauthorized selection.
    pub fn errors(&self) -> Value {
        Value::Array(
            self.paths
                .iter()
                .map(|path| {
                    json!({
                        "message": MESSAGE,
                        "path": path.iter().map(PathElement::to_json).collect::<Vec<_>>(),
                        "extensions": { "code": CODE },
                    })
                })
                .collect(),
        )
    }
}

/// Policy names that `@policy` uses in the SDL but `policies` does not
/// define (they never hold); sorted, for a warning at start-up.
pub fn undefined_policies(schema: &SubgraphSchema, policies: &Policies) -> Vec<String> {
    let name = &schema.directive_names().policy;
    let valid = schema.schema();
    let mut directives: Vec<&ast::Directive> = Vec::new();
    for ty in valid.types.values() {
        directives.extend(ty.directives().get_all(name).map(|d| &***d));
        let fields: Vec<&apollo_compiler::schema::Component<ast::FieldDefinition>> = match ty {
            apollo_compiler::schema::ExtendedType::Object(o) => o.fields.values().collect(),
            apollo_compiler::schema::ExtendedType::Interface(i) => i.fields.values().collect(),
            _ => Vec::new(),
        };
        for field in fields {
            directives.extend(field.directives.get_all(name).map(|d| &**d));
        }
    }
    let mut undefined = BTreeSet::new();
    for directive in directives {
        let Some(outer) = directive
            .specified_argument_by_name("policies")
            .and_then(|v| v.as_list())
        else {
            continue;
        };
        for inner in outer {
            for policy in inner.as_list().unwrap_or(std::slice::from_ref(inner)) {
                if let Some(policy) = policy.as_str()
                    && !policies.0.contains_key(policy)
                {
                    undefined.insert(policy.to_owned());
                }
            }
        }
    }
    undefined.into_iter().collect()
}
