//! The GraphQL requests inside an accepted HTTP request, for phase 4: each
//! operation's document, operation name and variables, from a POST body
//! (one request or a batch) or a GET query string.

use std::borrow::Cow;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{accept::Accepted, error::ProxyError};
use crate::graphql::persisted::PersistedQueryExt;

/// One GraphQL request.
#[derive(Debug, Default, Deserialize)]
pub struct Document<'a> {
    /// The document; `None` for a persisted query sent by hash only.
    #[serde(borrow, default)]
    pub query: Option<Cow<'a, str>>,
    /// The operation to run.
    #[serde(rename = "operationName", borrow, default)]
    pub operation_name: Option<Cow<'a, str>>,
    /// The variables.
    #[serde(default)]
    pub variables: Option<Map<String, Value>>,
    /// The extensions the edge reads.
    #[serde(default)]
    pub extensions: Option<Extensions>,
}

/// `extensions`: only `persistedQuery` is read; the rest is forwarded.
#[derive(Debug, Default, Deserialize)]
pub struct Extensions {
    /// Automatic persisted queries / safelist ids.
    #[serde(rename = "persistedQuery", default)]
    pub persisted_query: Option<PersistedQueryExt>,
}

impl Document<'_> {
    /// The persisted-query extension, if any.
    pub fn persisted(&self) -> Option<&PersistedQueryExt> {
        self.extensions.as_ref()?.persisted_query.as_ref()
    }
}

/// The requests of `accepted`: one, or a batch's members in order. The
/// body is parsed here, once; anything that is not a GraphQL-over-HTTP
/// request (not JSON, not an object or a non-empty array of objects, a
/// `query` that is not a string, a repeated key, a repeated GET parameter)
/// is a 400.
pub fn of(accepted: &Accepted) -> Result<Vec<Document<'_>>, ProxyError> {
    if accepted.method == Method::GET {
        return from_query(accepted.query.as_deref().unwrap_or(""));
    }
    let first = accepted.body.iter().find(|b| !b.is_ascii_whitespace());
    let docs = match first {
        Some(b'{') => vec![parse_json(&accepted.body)?],
        Some(b'[') => parse_json(&accepted.body)?,
        _ => {
            return Err(ProxyError::BadRequest(
                match serde_json::from_slice::<serde::de::IgnoredAny>(&accepted.body) {
                    Err(e) => format!("request body is not valid JSON: {e}"),
                    Ok(_) => "request body must be a JSON object with a `query`".into(),
                },
            ));
        }
    };
    if docs.is_empty() {
        return Err(ProxyError::BadRequest("empty batch".into()));
    }
    Ok(docs)
}

fn parse_json<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ProxyError> {
    serde_json::from_slice(body).map_err(|e| {
        ProxyError::BadRequest(if e.is_data() {
            format!("not a GraphQL request: {e}")
        } else {
            format!("request body is not valid JSON: {e}")
        })
    })
}

fn from_query(qs: &str) -> Result<Vec<Document<'_>>, ProxyError> {
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = serde_urlencoded::from_str(qs)
        .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
    // One value each: with two, the edge and the subgraph could each read
    // a different one.
    for name in ["query", "operationName", "variables", "extensions"] {
        if params.iter().filter(|(n, _)| n == name).count() > 1 {
            return Err(ProxyError::BadRequest(format!(
                "`{name}` appears more than once in the query string"
            )));
        }
    }
    let mut doc = Document::default();
    for (k, v) in params {
        match k.as_ref() {
            "query" => doc.query = Some(v),
            "operationName" => doc.operation_name = Some(v),
            "variables" => {
                doc.variables = serde_json::from_str(&v).map_err(|e| {
                    ProxyError::BadRequest(format!("`variables` is not a JSON object: {e}"))
                })?;
            }
            "extensions" => {
                doc.extensions = serde_json::from_str(&v).map_err(|e| {
                    ProxyError::BadRequest(format!("`extensions` is not a JSON object: {e}"))
                })?;
            }
            _ => {}
        }
    }
    Ok(vec![doc])
}

/// Rewrites the request for the subgraph: the document of member `i` of
/// the request becomes `documents[i]` where that is `Some` (a persisted
/// query resolved by the edge, or a document filtered by authorization),
/// and `extensions.persistedQuery` is removed everywhere (the edge resolved
/// it; a subgraph without APQ would refuse it). Other members and keys are
/// forwarded as they came. Returns the new POST body or GET query string.
pub fn rebuild(
    accepted: &Accepted,
    documents: &[Option<std::sync::Arc<str>>],
) -> Result<Rewritten, ProxyError> {
    let bad = |e: serde_json::Error| ProxyError::BadRequest(format!("not a GraphQL request: {e}"));
    if accepted.method == Method::GET {
        let qs = accepted.query.as_deref().unwrap_or("");
        let mut params: Vec<(String, String)> = serde_urlencoded::from_str(qs)
            .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
        let document = documents.first().cloned().flatten();
        let mut has_query = false;
        params.retain_mut(|(k, v)| match k.as_str() {
            "query" => {
                has_query = true;
                if let Some(d) = &document {
                    *v = d.to_string();
                }
                true
            }
            "extensions" => match serde_json::from_str::<Map<String, Value>>(v) {
                Ok(mut ext) => {
                    ext.remove("persistedQuery");
                    *v = Value::Object(ext.clone()).to_string();
                    !ext.is_empty()
                }
                Err(_) => true,
            },
            _ => true,
        });
        if let (false, Some(d)) = (has_query, &document) {
            params.push(("query".into(), d.to_string()));
        }
        let qs = serde_urlencoded::to_string(&params)
            .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
        return Ok(Rewritten::Query(qs));
    }
    let mut value: Value = serde_json::from_slice(&accepted.body).map_err(bad)?;
    let members: Vec<&mut Value> = match &mut value {
        Value::Array(batch) => batch.iter_mut().collect(),
        one => vec![one],
    };
    for (i, member) in members.into_iter().enumerate() {
        let Value::Object(obj) = member else { continue };
        if let Some(Some(d)) = documents.get(i) {
            obj.insert("query".into(), Value::String(d.to_string()));
        }
        if let Some(Value::Object(ext)) = obj.get_mut("extensions") {
            ext.remove("persistedQuery");
            if ext.is_empty() {
                obj.remove("extensions");
            }
        }
    }
    Ok(Rewritten::Body(bytes::Bytes::from(value.to_string())))
}

/// A rewritten request.
#[derive(Debug, PartialEq, Eq)]
pub enum Rewritten {
    /// A new POST body.
    Body(bytes::Bytes),
    /// A new GET query string.
    Query(String),
}

#[cfg(test)]
mod tests {
    use http::HeaderMap;
    use serde_json::json;

    use super::*;

    fn post(body: Value) -> Accepted {
        Accepted {
            method: Method::POST,
            query: None,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(body.to_string()),
        }
    }

    fn get(qs: &str) -> Accepted {
        Accepted {
            method: Method::GET,
            query: Some(qs.into()),
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
        }
    }

    #[test]
    fn bodies_that_are_not_graphql_requests_are_bad_requests() {
        let raw = |b: &'static [u8]| Accepted {
            body: bytes::Bytes::from_static(b),
            ..post(Value::Null)
        };
        let ok = raw(br#"{"query":"{ a }","variables":{"x":1},"extra":[1,{"x":null}]}"#);
        let docs = of(&ok).unwrap();
        assert_eq!(docs[0].query.as_deref(), Some("{ a }"));
        assert_eq!(docs[0].variables.as_ref().unwrap()["x"], 1);
        assert_eq!(
            of(&raw(br#"[{"query":"{ a }"},{"query":"{ b }"}]"#))
                .unwrap()
                .len(),
            2
        );
        for bad in [
            &b"{not json"[..],
            b"42",
            b"[]",
            br#"{"query":5}"#,
            br#"[{"query":"{ a }"}, 7]"#,
            br#"{"query":"{ a }","query":"{ b }"}"#,
            br#"{"query":"{ a }","variables":[1]}"#,
            b"",
        ] {
            assert!(
                matches!(of(&raw(bad)), Err(ProxyError::BadRequest(_))),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn get_takes_each_parameter_once() {
        assert_eq!(
            of(&get("query=%7B%20a%20%7D")).unwrap()[0].query.as_deref(),
            Some("{ a }")
        );
        for qs in [
            "query=%7Ba%7D&query=mutation%7Bm%7D",
            "query=%7Ba%7D&operationName=A&operationName=B",
            "query=%7Ba%7D&variables=%7B%7D&variables=%7B%7D",
            "query=%7Ba%7D&extensions=%7B%7D&extensions=%7B%7D",
            "query=%7Ba%7D&variables=5",
        ] {
            assert!(
                matches!(of(&get(qs)), Err(ProxyError::BadRequest(_))),
                "{qs}"
            );
        }
    }

    #[test]
    fn persisted_hashes_are_replaced_by_their_documents() {
        let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": "ab"}, "trace": true});
        let a = post(json!([
            {"extensions": ext, "variables": {"n": 1}},
            {"query": "{ b }", "extensions": {"persistedQuery": {"version": 1, "sha256Hash": "cd"}}}
        ]));
        let docs = of(&a).unwrap();
        assert_eq!(docs[0].persisted().unwrap().sha256_hash, "ab");
        assert!(docs[0].query.is_none());
        let Rewritten::Body(body) = rebuild(&a, &[Some("{ a }".into()), None]).unwrap() else {
            panic!("a POST is rewritten as a body")
        };
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            json!([
                {"query": "{ a }", "extensions": {"trace": true}, "variables": {"n": 1}},
                {"query": "{ b }"}
            ])
        );
    }

    #[test]
    fn a_get_gets_its_document_in_the_query_string() {
        let ext = json!({"persistedQuery": {"version": 1, "sha256Hash": "ab"}}).to_string();
        let qs =
            serde_urlencoded::to_string([("extensions", ext.as_str()), ("operationName", "Q")])
                .unwrap();
        let a = Accepted {
            method: Method::GET,
            query: Some(qs),
            headers: HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        assert_eq!(of(&a).unwrap()[0].persisted().unwrap().sha256_hash, "ab");
        let Rewritten::Query(qs) = rebuild(&a, &[Some("query Q { a }".into())]).unwrap() else {
            panic!("a GET is rewritten as a query string")
        };
        let params: Vec<(String, String)> = serde_urlencoded::from_str(&qs).unwrap();
        assert_eq!(
            params,
            vec![
                ("operationName".to_string(), "Q".to_string()),
                ("query".to_string(), "query Q { a }".to_string())
            ]
        );
    }
}
