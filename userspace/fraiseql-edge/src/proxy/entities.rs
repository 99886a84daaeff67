//! `_entities` outcomes: for a federation entity fetch, how many
//! representations of each `__typename` the subgraph resolved and how many
//! came back `null` (or with an error at their path).
//!
//! Only requests whose document mentions `_entities` are inspected; their
//! response is buffered (bounded per response and in total across
//! requests), counted, and sent on byte for byte.
//!
//! The typenames come from the client's `representations`, so they are
//! never used as metric labels as they are: with the subgraph's SDL, only
//! its entity types (those with `@key`) are labels; without it, the first
//! `proxy.entities_max_typenames` seen; everything else is `other`.

use std::{
    collections::{BTreeMap, HashSet},
    sync::Mutex,
};

use apollo_parser::cst;
use serde_json::Value;

/// The label of typenames that are not (or no longer) labelled by name.
pub const OTHER: &str = "other";

/// The `typename` label values of one subgraph.
pub enum EntityLabels {
    /// The entity types of the subgraph's SDL.
    Declared(HashSet<String>),
    /// No SDL: the first `cap` typenames seen.
    Capped {
        /// Typenames labelled so far.
        seen: Mutex<HashSet<String>>,
        /// At most this many.
        cap: usize,
    },
}

impl EntityLabels {
    /// Labels for a subgraph with `sdl` (its entity types), or without one.
    pub fn new(sdl: Option<&str>, cap: usize) -> Self {
        match sdl {
            Some(sdl) => Self::Declared(entity_types(sdl)),
            None => Self::Capped {
                seen: Mutex::new(HashSet::new()),
                cap,
            },
        }
    }

    /// The label of `typename`: itself, or [`OTHER`].
    pub fn label<'a>(&self, typename: &'a str) -> &'a str {
        match self {
            Self::Declared(types) if types.contains(typename) => typename,
            Self::Declared(_) => OTHER,
            Self::Capped { seen, cap } => {
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                if seen.contains(typename) {
                    return typename;
                }
                if seen.len() < *cap {
                    seen.insert(typename.to_string());
                    return typename;
                }
                OTHER
            }
        }
    }
}

/// Object and interface types of an SDL that carry `@key` (federation
/// entities), in definitions and extensions alike.
pub fn entity_types(sdl: &str) -> HashSet<String> {
    let tree = apollo_parser::Parser::new(sdl).parse();
    let keyed = |name: Option<cst::Name>, directives: Option<cst::Directives>| {
        let has_key = directives.is_some_and(|d| {
            d.directives()
                .any(|d| d.name().is_some_and(|n| n.text() == "key"))
        });
        has_key
            .then(|| name.map(|n| n.text().to_string()))
            .flatten()
    };
    tree.document()
        .definitions()
        .filter_map(|def| match def {
            cst::Definition::ObjectTypeDefinition(d) => keyed(d.name(), d.directives()),
            cst::Definition::ObjectTypeExtension(d) => keyed(d.name(), d.directives()),
            cst::Definition::InterfaceTypeDefinition(d) => keyed(d.name(), d.directives()),
            cst::Definition::InterfaceTypeExtension(d) => keyed(d.name(), d.directives()),
            _ => None,
        })
        .collect()
}

/// Max response size inspected; larger ones are passed on uncounted.
pub const MAX_INSPECTED_BYTES: usize = 8 * 1024 * 1024;

/// The `__typename` of every representation, in order, of an `_entities`
/// fetch (the caller has seen `_entities` in the document); `None` when the
/// body carries no `representations` variable.
pub fn representations(body: &[u8]) -> Option<Vec<String>> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let reps = v.get("variables")?.get("representations")?.as_array()?;
    Some(
        reps.iter()
            .map(|r| {
                r.get("__typename")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown")
                    .to_string()
            })
            .collect(),
    )
}

/// Per typename: (resolved, failed). An entry is failed when it is `null`
/// or an error's path points at it; a response without `_entities` data
/// fails every representation.
pub fn outcomes(typenames: &[String], response: &[u8]) -> BTreeMap<String, (u64, u64)> {
    let v: Value = serde_json::from_slice(response).unwrap_or(Value::Null);
    let entities = v
        .get("data")
        .and_then(|d| d.get("_entities"))
        .and_then(Value::as_array);
    let errored: Vec<usize> = v
        .get("errors")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| {
            let path = e.get("path")?.as_array()?;
            (path.first()?.as_str()? == "_entities").then(|| path.get(1)?.as_u64())?
        })
        .map(|i| i as usize)
        .collect();
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (i, typename) in typenames.iter().enumerate() {
        let resolved = entities
            .and_then(|e| e.get(i))
            .is_some_and(|e| !e.is_null())
            && !errored.contains(&i);
        let slot = out.entry(typename.clone()).or_default();
        if resolved {
            slot.0 += 1;
        } else {
            slot.1 += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_typename() {
        let req = br#"{"query":"query($representations:[_Any!]!){_entities(representations:$representations){... on User{name}}}","variables":{"representations":[{"__typename":"User","id":"1"},{"__typename":"User","id":"999"},{"__typename":"Product","upc":"upc-1"}]}}"#;
        let names = representations(req).unwrap();
        assert_eq!(names, ["User", "User", "Product"]);
        let resp = br#"{"data":{"_entities":[{"name":"user-1"},null,{"name":"p"}]},"errors":[{"message":"x","path":["_entities",2]}]}"#;
        let o = outcomes(&names, resp);
        assert_eq!(o["User"], (1, 1));
        assert_eq!(o["Product"], (0, 1));
        assert_eq!(outcomes(&names, b"not json")["User"], (0, 2));
    }

    #[test]
    fn labels_are_declared_entity_types_or_a_bounded_set() {
        let sdl = r#"
            extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
            type User @key(fields: "id") { id: ID! name: String }
            extend type Product @key(fields: "upc") { upc: String! }
            interface Node @key(fields: "id") { id: ID! }
            type Query { users: [User!]! }
            type Review { body: String }
        "#;
        let declared = EntityLabels::new(Some(sdl), 100);
        assert_eq!(declared.label("User"), "User");
        assert_eq!(declared.label("Product"), "Product");
        assert_eq!(declared.label("Node"), "Node");
        assert_eq!(declared.label("Review"), OTHER);
        assert_eq!(declared.label("Query"), OTHER);
        assert_eq!(declared.label("x".repeat(1000).as_str()), OTHER);

        let capped = EntityLabels::new(None, 3);
        let labels: HashSet<String> = (0..10_000)
            .map(|i| capped.label(&format!("T{i}")).to_string())
            .collect();
        assert_eq!(labels.len(), 4, "T0, T1, T2 and other: {labels:?}");
        assert_eq!(capped.label("T0"), "T0", "the first ones keep their label");
        assert_eq!(capped.label("T3"), OTHER);
    }

    #[test]
    fn bodies_without_representations_are_not_inspected() {
        assert!(representations(br#"{"query":"{ users { id } }"}"#).is_none());
        assert!(representations(b"garbage").is_none());
    }
}
