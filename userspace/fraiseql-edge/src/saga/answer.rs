//! What a subgraph's answer to a saga step (or a compensation) means for
//! the saga: it took effect, it was refused for good, or nobody knows yet
//! and the same request goes again with the same `Idempotency-Key`.
//!
//! "Usable data" follows FraiseQL: an HTTP 200 whose `errors` list is not
//! empty and whose `data` is null, or has only null root fields, did not
//! take effect and fails the step (the saga compensates); an answer with
//! data is done even if it also carries errors on some nested field.

use bytes::Bytes;
use http::StatusCode;
use serde_json::Value;

use crate::proxy::error::ProxyError;

/// The meaning of one answer.
#[derive(Clone, Debug, PartialEq)]
pub enum Answer {
    /// The mutation took effect; its `data`.
    Done(Value),
    /// It did not take effect and will not by trying again.
    Refused(String),
    /// It may or may not have taken effect (transport error, timeout, 5xx,
    /// the key still in progress at the subgraph): send it again with the
    /// same key.
    Retry(String),
}

/// Classifies what [`crate::proxy::Proxy::send`] returned.
pub fn classify(sent: Result<(StatusCode, Bytes), ProxyError>) -> Answer {
    let (status, body) = match sent {
        Ok(answer) => answer,
        Err(ProxyError::NotFound(what)) => return Answer::Refused(format!("no {what}")),
        Err(e) => return Answer::Retry(e.to_string()),
    };
    let json: Option<Value> = serde_json::from_slice(&body).ok();
    let first_error = || {
        json.as_ref().and_then(|v| v["errors"].get(0)).map(|e| {
            match e["extensions"]["code"].as_str() {
                Some(code) => format!("{code}: {}", e["message"].as_str().unwrap_or("")),
                None => e["message"].as_str().unwrap_or("").to_string(),
            }
        })
    };
    if status.is_success() {
        let Some(v) = &json else {
            return Answer::Retry(format!("HTTP {status} with a body that is not JSON"));
        };
        let has_errors = v["errors"].as_array().is_some_and(|e| !e.is_empty());
        let usable = match &v["data"] {
            Value::Object(fields) => fields.values().any(|f| !f.is_null()),
            _ => false,
        };
        return match (usable, has_errors) {
            (true, _) => Answer::Done(v["data"].clone()),
            (false, true) => Answer::Refused(first_error().unwrap_or_default()),
            (false, false) => Answer::Refused(format!("HTTP {status} without data or errors")),
        };
    }
    let code = json.as_ref().and_then(|v| {
        v["errors"][0]["extensions"]["code"]
            .as_str()
            .map(str::to_string)
    });
    let why = format!(
        "HTTP {status}{}",
        first_error().map(|e| format!(": {e}")).unwrap_or_default()
    );
    let retry = status.is_server_error()
        || matches!(
            status,
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_EARLY | StatusCode::TOO_MANY_REQUESTS
        )
        || (status == StatusCode::CONFLICT
            && code.as_deref() == Some("IDEMPOTENCY_KEY_IN_PROGRESS"));
    if retry {
        Answer::Retry(why)
    } else {
        Answer::Refused(why)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        classify(Ok((
            StatusCode::from_u16(status).unwrap(),
            Bytes::from(body.to_string()),
        )))
    }

    #[test]
    fn data_is_done_even_beside_nested_errors() {
        assert_eq!(
            answer(200, json!({"data": {"reserve": {"id": "r1"}}})),
            Answer::Done(json!({"reserve": {"id": "r1"}}))
        );
        let partial = json!({"data": {"reserve": {"id": "r1", "note": null}},
            "errors": [{"message": "note unavailable", "path": ["reserve", "note"]}]});
        assert!(matches!(answer(200, partial), Answer::Done(_)));
    }

    #[test]
    fn errors_without_usable_data_refuse_the_step() {
        let no_data = json!({"data": null, "errors": [{"message": "only 2 left",
            "extensions": {"code": "INSUFFICIENT_STOCK"}}]});
        assert_eq!(
            answer(200, no_data),
            Answer::Refused("INSUFFICIENT_STOCK: only 2 left".into())
        );
        let null_roots = json!({"data": {"reserve": null}, "errors": [{"message": "no"}]});
        assert_eq!(answer(200, null_roots), Answer::Refused("no".into()));
        assert!(matches!(answer(200, json!({})), Answer::Refused(_)));
    }

    #[test]
    fn unknown_outcomes_are_retried_with_the_same_key() {
        for status in [500, 502, 503, 504, 408, 429] {
            assert!(
                matches!(answer(status, json!({})), Answer::Retry(_)),
                "{status}"
            );
        }
        let in_progress = json!({"errors": [{"message": "busy",
            "extensions": {"code": "IDEMPOTENCY_KEY_IN_PROGRESS"}}]});
        assert!(matches!(answer(409, in_progress), Answer::Retry(_)));
        assert!(matches!(
            classify(Ok((StatusCode::OK, Bytes::from_static(b"<html>")))),
            Answer::Retry(_)
        ));
        assert!(matches!(
            classify(Err(ProxyError::UpstreamTimeout("users".into()))),
            Answer::Retry(_)
        ));
    }

    #[test]
    fn client_errors_and_a_reused_key_are_refused() {
        let reused = json!({"errors": [{"message": "different body",
            "extensions": {"code": "IDEMPOTENCY_KEY_REUSED"}}]});
        assert_eq!(
            answer(409, reused),
            Answer::Refused("HTTP 409 Conflict: IDEMPOTENCY_KEY_REUSED: different body".into())
        );
        assert!(matches!(answer(400, json!({})), Answer::Refused(_)));
        assert!(matches!(answer(403, json!({})), Answer::Refused(_)));
        assert!(matches!(
            classify(Err(ProxyError::NotFound("subgraph `x`".into()))),
            Answer::Refused(_)
        ));
    }
}
