//! What kind of operation a request carries — it decides whether a failed
//! try may be retried (queries yes; mutations only when nothing was sent).
//!
//! The body is checked to be a GraphQL-over-HTTP request (a JSON object with
//! a `query` string, or a batch of them); the document itself is only
//! scanned for its operation types here — validation against the schema is
//! a later phase.

use std::borrow::Cow;

use apollo_parser::{Lexer, TokenKind};
use serde::Deserialize;
use serde::de::IgnoredAny;

use super::error::ProxyError;

/// The operation type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OperationKind {
    /// `query` (and shorthand `{ … }`).
    Query = 0,
    /// `mutation`.
    Mutation = 1,
    /// `subscription`.
    Subscription = 2,
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

/// What the proxy needs to know about a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The (least safe) operation type.
    pub kind: OperationKind,
    /// The document mentions `_entities` (a federation entity fetch).
    pub entity_fetch: bool,
    /// Operations in the request (a batch's members; 1 otherwise).
    pub count: usize,
}

/// A GraphQL-over-HTTP request body; only the fields the proxy reads are
/// materialized (variables are skipped, not parsed into values).
#[derive(Deserialize)]
struct Body<'a> {
    #[serde(borrow, default)]
    query: Option<Cow<'a, str>>,
    #[serde(rename = "operationName", borrow, default)]
    operation_name: Option<Cow<'a, str>>,
    #[serde(default)]
    extensions: Option<IgnoredAny>,
}

/// The operation of a POST body (JSON object or batch).
/// A batch is as unsafe to retry as its least safe member.
pub fn from_post_body(body: &[u8]) -> Result<Operation, ProxyError> {
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    let bodies: Vec<Body<'_>> = match first {
        Some(b'{') => vec![parse_json(body)?],
        Some(b'[') => parse_json(body)?,
        _ => {
            return Err(ProxyError::BadRequest(
                match serde_json::from_slice::<IgnoredAny>(body) {
                    Err(e) => format!("request body is not valid JSON: {e}"),
                    Ok(_) => "request body must be a JSON object with a `query`".into(),
                },
            ));
        }
    };
    if bodies.is_empty() {
        return Err(ProxyError::BadRequest("empty batch".into()));
    }
    let mut op = Operation {
        kind: OperationKind::Query,
        entity_fetch: false,
        count: bodies.len(),
    };
    for b in &bodies {
        let this = match &b.query {
            Some(q) => from_document(q, b.operation_name.as_deref()),
            // A persisted query sent by hash only: unknown here, treat as unsafe.
            None if b.extensions.is_some() => Operation {
                kind: OperationKind::Mutation,
                entity_fetch: false,
                count: 1,
            },
            None => return Err(ProxyError::BadRequest("missing `query`".into())),
        };
        if this.kind != OperationKind::Query {
            op.kind = this.kind;
        }
        op.entity_fetch |= this.entity_fetch;
    }
    Ok(op)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProxyError> {
    serde_json::from_slice(body).map_err(|e| {
        let reason = if e.is_data() {
            format!("not a GraphQL request: {e}")
        } else {
            format!("request body is not valid JSON: {e}")
        };
        ProxyError::BadRequest(reason)
    })
}

/// The operation of a GET request's query string.
pub fn from_query_string(qs: &str) -> Result<Operation, ProxyError> {
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = serde_urlencoded::from_str(qs)
        .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
    // One value each: with two, the edge and the subgraph could each read
    // a different one (and the edge decides retries on what it read).
    for name in ["query", "operationName", "variables", "extensions"] {
        if params.iter().filter(|(n, _)| n == name).count() > 1 {
            return Err(ProxyError::BadRequest(format!(
                "`{name}` appears more than once in the query string"
            )));
        }
    }
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_ref());
    match (get("query"), get("extensions")) {
        (Some(query), _) => Ok(from_document(query, get("operationName"))),
        // A persisted query sent by hash: the graphql phase resolves it and
        // refuses a GET for anything but a query.
        (None, Some(_)) => Ok(Operation {
            kind: OperationKind::Query,
            entity_fetch: false,
            count: 1,
        }),
        (None, None) => Err(ProxyError::BadRequest("missing `query`".into())),
    }
}

/// Finds the selected operation's type by scanning the document's top-level
/// tokens (no syntax tree is built: this runs on every request). A document
/// whose operation cannot be told is reported as a mutation: never retried,
/// and the subgraph gives the error.
pub fn from_document(document: &str, operation_name: Option<&str>) -> Operation {
    #[derive(PartialEq)]
    enum At {
        /// Between definitions.
        Top,
        /// Right after `query`/`mutation`/`subscription`: a name may follow.
        Keyword,
        /// Inside an operation's or fragment's header, before its `{`.
        Header,
    }
    let mut depth = 0usize;
    let mut at = At::Top;
    // (kind, name) of each operation; fragments are not operations.
    let mut ops: Vec<(OperationKind, Option<&str>)> = Vec::new();
    let mut entity_fetch = false;
    for token in Lexer::new(document).with_limit(100_000) {
        let Ok(token) = token else {
            // Unreadable: the subgraph will say why; never retry it.
            return Operation {
                kind: OperationKind::Mutation,
                entity_fetch,
                count: 1,
            };
        };
        let kind = token.kind();
        if matches!(
            kind,
            TokenKind::Whitespace | TokenKind::Comment | TokenKind::Comma
        ) {
            continue;
        }
        if depth > 0 {
            match kind {
                TokenKind::LCurly | TokenKind::LParen | TokenKind::LBracket => depth += 1,
                TokenKind::RCurly | TokenKind::RParen | TokenKind::RBracket => depth -= 1,
                TokenKind::Name if token.data() == "_entities" => entity_fetch = true,
                _ => {}
            }
            continue;
        }
        match (kind, &at) {
            (TokenKind::LCurly, At::Top) => {
                ops.push((OperationKind::Query, None)); // `{ … }` shorthand
                depth = 1;
            }
            (TokenKind::LCurly, _) => {
                at = At::Top;
                depth = 1;
            }
            (TokenKind::LParen | TokenKind::LBracket, _) => {
                at = At::Header;
                depth = 1;
            }
            (TokenKind::Name, At::Top) => {
                let op = match token.data() {
                    "query" => Some(OperationKind::Query),
                    "mutation" => Some(OperationKind::Mutation),
                    "subscription" => Some(OperationKind::Subscription),
                    _ => None, // `fragment`, or type-system definitions
                };
                at = match op {
                    Some(k) => {
                        ops.push((k, None));
                        At::Keyword
                    }
                    None => At::Header,
                };
            }
            (TokenKind::Name, At::Keyword) => {
                if let Some(last) = ops.last_mut() {
                    last.1 = Some(token.data());
                }
                at = At::Header;
            }
            (TokenKind::Eof, _) => break,
            _ => {
                if at == At::Keyword {
                    at = At::Header;
                }
            }
        }
    }
    let selected = match operation_name {
        Some(name) => ops.iter().find(|(_, n)| *n == Some(name)),
        None if ops.len() == 1 => ops.first(),
        None => None,
    };
    Operation {
        kind: selected.map_or(OperationKind::Mutation, |(k, _)| *k),
        entity_fetch,
        count: 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(doc: &str, name: Option<&str>) -> OperationKind {
        from_document(doc, name).kind
    }

    #[test]
    fn kinds() {
        assert_eq!(kind("{ a }", None), OperationKind::Query);
        assert_eq!(kind("query Q { a }", None), OperationKind::Query);
        assert_eq!(kind("mutation M { a }", None), OperationKind::Mutation);
        assert_eq!(kind("mutation { a }", None), OperationKind::Mutation);
        let two = "query A { a } mutation B { b }";
        assert_eq!(kind(two, Some("A")), OperationKind::Query);
        assert_eq!(kind(two, Some("B")), OperationKind::Mutation);
        assert_eq!(kind(two, None), OperationKind::Mutation);
        assert_eq!(kind(two, Some("C")), OperationKind::Mutation);
        assert_eq!(
            kind("subscription S { a }", None),
            OperationKind::Subscription
        );
    }

    #[test]
    fn variables_directives_fragments_and_comments_do_not_confuse_it() {
        let doc = "# mutation in a comment\nfragment F on User { mutation }\n\
                   query Q($id: ID! = \"mutation\") @cached(ttl: [1, 2]) { user(id: $id) { ...F } }";
        assert_eq!(kind(doc, None), OperationKind::Query);
        assert_eq!(kind(doc, Some("Q")), OperationKind::Query);
        assert_eq!(
            kind("mutation($x: Int) { a(x: $x) }", None),
            OperationKind::Mutation
        );
    }

    #[test]
    fn unreadable_documents_are_unsafe() {
        assert_eq!(
            kind("query { a \"unterminated", None),
            OperationKind::Mutation
        );
        assert_eq!(kind("", None), OperationKind::Mutation);
    }

    #[test]
    fn entity_fetches_are_recognised() {
        let fetch = "query($r: [_Any!]!) { _entities(representations: $r) { __typename } }";
        assert!(from_document(fetch, None).entity_fetch);
        assert!(!from_document("{ users { id } }", None).entity_fetch);
    }

    #[test]
    fn bodies() {
        let post = |b: &[u8]| from_post_body(b).map(|o| o.kind);
        assert_eq!(
            post(br#"{"query":"{ a }","variables":{"x":1}}"#).unwrap(),
            OperationKind::Query
        );
        assert_eq!(
            post(br#"[{"query":"{ a }"},{"query":"mutation { b }"}]"#).unwrap(),
            OperationKind::Mutation
        );
        assert_eq!(
            post(br#"{"query":"{ a }","extra":[1,{"x":null}]}"#).unwrap(),
            OperationKind::Query
        );
        assert_eq!(
            post(br#"{"extensions":{"persistedQuery":{"sha256Hash":"ab"}}}"#).unwrap(),
            OperationKind::Mutation
        );
        for bad in [
            &b"{not json"[..],
            b"42",
            b"[]",
            b"{}",
            br#"{"query":5}"#,
            br#"[{"query":"{ a }"}, 7]"#,
            b"",
        ] {
            assert!(
                matches!(from_post_body(bad), Err(ProxyError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert_eq!(
            from_query_string("query=%7B%20a%20%7D").unwrap().kind,
            OperationKind::Query
        );
        assert!(from_query_string("x=1").is_err());
    }
}
