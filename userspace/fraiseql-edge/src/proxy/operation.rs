//! What kind of operation a request carries — it decides whether a failed
//! try may be retried (queries yes; mutations only when nothing was sent).
//!
//! The body is checked to be a GraphQL-over-HTTP request (a JSON object with
//! a `query` string, or a batch of them); the document itself is only
//! scanned for its operation types here — validation against the schema is
//! a later phase.

use apollo_parser::{Parser, cst};
use serde_json::Value;

use super::error::ProxyError;

/// The operation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OperationKind {
    /// `query` (and shorthand `{ … }`).
    Query,
    /// `mutation`.
    Mutation,
    /// `subscription`.
    Subscription,
}

impl OperationKind {
    /// Lowercase name, for metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Query => "query",
            Self::Mutation => "mutation",
            Self::Subscription => "subscription",
        }
    }
}

/// The operation of a POST body (JSON object or batch).
/// A batch is as unsafe to retry as its least safe member.
pub fn from_post_body(body: &[u8]) -> Result<OperationKind, ProxyError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| ProxyError::BadRequest(format!("request body is not valid JSON: {e}")))?;
    match value {
        Value::Object(_) => from_request_object(&value),
        Value::Array(items) if !items.is_empty() => {
            let mut kind = OperationKind::Query;
            for item in &items {
                let k = from_request_object(item)?;
                if k != OperationKind::Query {
                    kind = k;
                }
            }
            Ok(kind)
        }
        Value::Array(_) => Err(ProxyError::BadRequest("empty batch".into())),
        _ => Err(ProxyError::BadRequest(
            "request body must be a JSON object with a `query`".into(),
        )),
    }
}

fn from_request_object(value: &Value) -> Result<OperationKind, ProxyError> {
    let Value::Object(map) = value else {
        return Err(ProxyError::BadRequest(
            "each batch entry must be a JSON object".into(),
        ));
    };
    let name = match map.get("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return Err(ProxyError::BadRequest(
                "`operationName` must be a string".into(),
            ));
        }
    };
    match map.get("query") {
        Some(Value::String(q)) => Ok(from_document(q, name)),
        // A persisted query sent by hash only: unknown here, treat as unsafe.
        None if map.contains_key("extensions") => Ok(OperationKind::Mutation),
        None => Err(ProxyError::BadRequest("missing `query`".into())),
        Some(_) => Err(ProxyError::BadRequest("`query` must be a string".into())),
    }
}

/// The operation of a GET request's query string.
pub fn from_query_string(qs: &str) -> Result<OperationKind, ProxyError> {
    let params: Vec<(String, String)> = serde_urlencoded::from_str(qs)
        .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let query = get("query").ok_or_else(|| ProxyError::BadRequest("missing `query`".into()))?;
    Ok(from_document(query, get("operationName")))
}

/// Finds the selected operation's type. A document that cannot be read is
/// reported as a mutation: never retried, and the subgraph gives the error.
pub fn from_document(document: &str, operation_name: Option<&str>) -> OperationKind {
    let cst = Parser::new(document)
        .recursion_limit(64)
        .token_limit(100_000)
        .parse();
    let ops: Vec<cst::OperationDefinition> = cst
        .document()
        .definitions()
        .filter_map(|d| match d {
            cst::Definition::OperationDefinition(op) => Some(op),
            _ => None,
        })
        .collect();
    let selected = match operation_name {
        Some(name) => ops
            .iter()
            .find(|op| op.name().is_some_and(|n| n.text() == name)),
        None if ops.len() == 1 => ops.first(),
        None => None,
    };
    let Some(op) = selected else {
        return OperationKind::Mutation;
    };
    match op.operation_type() {
        None => OperationKind::Query,
        Some(t) if t.mutation_token().is_some() => OperationKind::Mutation,
        Some(t) if t.subscription_token().is_some() => OperationKind::Subscription,
        Some(_) => OperationKind::Query,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(from_document("{ a }", None), OperationKind::Query);
        assert_eq!(from_document("query Q { a }", None), OperationKind::Query);
        assert_eq!(
            from_document("mutation M { a }", None),
            OperationKind::Mutation
        );
        let two = "query A { a } mutation B { b }";
        assert_eq!(from_document(two, Some("A")), OperationKind::Query);
        assert_eq!(from_document(two, Some("B")), OperationKind::Mutation);
        assert_eq!(from_document(two, None), OperationKind::Mutation);
        assert_eq!(
            from_document("subscription S { a }", None),
            OperationKind::Subscription
        );
    }

    #[test]
    fn bodies() {
        assert_eq!(
            from_post_body(br#"{"query":"{ a }","variables":{"x":1}}"#).unwrap(),
            OperationKind::Query
        );
        assert_eq!(
            from_post_body(br#"[{"query":"{ a }"},{"query":"mutation { b }"}]"#).unwrap(),
            OperationKind::Mutation
        );
        for bad in [&b"{not json"[..], b"42", b"[]", b"{}", br#"{"query":5}"#] {
            assert!(
                matches!(from_post_body(bad), Err(ProxyError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            from_query_string("query=%7B%20a%20%7D").unwrap(),
            OperationKind::Query
        );
        assert!(from_query_string("x=1").is_err());
    }
}
