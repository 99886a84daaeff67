//! `_entities` outcomes: for a federation entity fetch, how many
//! representations of each `__typename` the subgraph resolved and how many
//! came back `null` (or with an error at their path).
//!
//! Only requests whose document mentions `_entities` are inspected; their
//! response is buffered (bounded), counted, and sent on byte for byte.

use std::collections::BTreeMap;

use serde_json::Value;

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
    fn bodies_without_representations_are_not_inspected() {
        assert!(representations(br#"{"query":"{ users { id } }"}"#).is_none());
        assert!(representations(b"garbage").is_none());
    }
}
