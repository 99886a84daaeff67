//! The GraphQL requests inside an accepted HTTP request, for phase 4: each
//! operation's document, operation name and variables, from a POST body
//! (one request or a batch) or a GET query string.

use std::borrow::Cow;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{accept::Accepted, error::ProxyError};

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
}

/// The requests of `accepted`: one, or a batch's members in order.
pub fn of(accepted: &Accepted) -> Result<Vec<Document<'_>>, ProxyError> {
    if accepted.method == Method::GET {
        return from_query(accepted.query.as_deref().unwrap_or(""));
    }
    let bad = |e: serde_json::Error| ProxyError::BadRequest(format!("not a GraphQL request: {e}"));
    let first = accepted.body.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        serde_json::from_slice(&accepted.body).map_err(bad)
    } else {
        Ok(vec![serde_json::from_slice(&accepted.body).map_err(bad)?])
    }
}

fn from_query(qs: &str) -> Result<Vec<Document<'_>>, ProxyError> {
    let params: Vec<(Cow<'_, str>, Cow<'_, str>)> = serde_urlencoded::from_str(qs)
        .map_err(|e| ProxyError::BadRequest(format!("bad query string: {e}")))?;
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
            _ => {}
        }
    }
    Ok(vec![doc])
}
