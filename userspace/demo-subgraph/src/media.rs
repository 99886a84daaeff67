//! The GraphQL-over-HTTP response media types: `application/json` (the
//! legacy one: always 200, whatever the GraphQL errors) and
//! `application/graphql-response+json` (a request that fails before
//! execution — parse, validation, variable coercion — is a 400 without a
//! `data` entry), chosen from the request's `Accept`.

use async_graphql::Response as GraphqlResponse;
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

/// The media type a response is sent as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Media {
    /// `application/json`.
    Json,
    /// `application/graphql-response+json`.
    GraphqlResponse,
}

impl Media {
    pub const GRAPHQL_RESPONSE: &str = "application/graphql-response+json";

    /// `application/graphql-response+json` when `Accept` lists it (with a
    /// non-zero q) ahead of, or without, `application/json`; `application/json`
    /// otherwise (no `Accept`, `*/*`, legacy clients).
    pub fn negotiate(headers: &HeaderMap) -> Self {
        let ranges = headers
            .get_all(header::ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for range in ranges {
            let mut parts = range.split(';').map(str::trim);
            let ty = parts.next().unwrap_or_default().to_ascii_lowercase();
            let refused = parts.any(|p| {
                p.strip_prefix("q=")
                    .and_then(|q| q.parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if refused {
                continue;
            }
            match ty.as_str() {
                Self::GRAPHQL_RESPONSE => return Self::GraphqlResponse,
                "application/json" => return Self::Json,
                _ => {}
            }
        }
        Self::Json
    }

    /// The `Content-Type` value.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::GraphqlResponse => Self::GRAPHQL_RESPONSE,
        }
    }

    /// The status and JSON body of an executed request in this media type.
    pub fn encode(self, response: &GraphqlResponse) -> serde_json::Result<(StatusCode, Vec<u8>)> {
        let mut body = serde_json::to_value(response)?;
        let status = if self == Self::GraphqlResponse && is_request_error(response) {
            if let Value::Object(map) = &mut body {
                map.remove("data");
            }
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::OK
        };
        Ok((status, serde_json::to_vec(&body)?))
    }
}

/// Whether execution never started: no data, and errors none of which
/// points at a field (a field error has a path; parse, validation and
/// variable coercion errors do not).
fn is_request_error(response: &GraphqlResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e| e.path.is_empty())
}

#[cfg(test)]
mod tests {
    use async_graphql::{PathSegment, ServerError};

    use super::*;

    fn accept(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, v.parse().unwrap());
        h
    }

    #[test]
    fn accept_picks_the_first_acceptable_graphql_media_type() {
        assert_eq!(Media::negotiate(&HeaderMap::new()), Media::Json);
        assert_eq!(Media::negotiate(&accept("*/*")), Media::Json);
        assert_eq!(
            Media::negotiate(&accept(
                "application/graphql-response+json, application/json;q=0.9"
            )),
            Media::GraphqlResponse
        );
        assert_eq!(
            Media::negotiate(&accept(
                "application/json, application/graphql-response+json"
            )),
            Media::Json
        );
        assert_eq!(
            Media::negotiate(&accept("application/graphql-response+json;q=0, */*")),
            Media::Json
        );
    }

    #[test]
    fn request_errors_are_400_without_data_only_in_the_new_media_type() {
        let failed = GraphqlResponse::from_errors(vec![ServerError::new("syntax", None)]);
        let (status, body) = Media::GraphqlResponse.encode(&failed).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(body.get("data").is_none() && body["errors"][0]["message"] == "syntax");
        let (status, body) = Media::Json.encode(&failed).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::OK);
        assert!(body.get("data").is_some());

        // A field error nulling the whole result is still an executed request.
        let mut field = ServerError::new("resolver failed", None);
        field.path = vec![PathSegment::Field("user".into())];
        let partial = GraphqlResponse::from_errors(vec![field]);
        let (status, _) = Media::GraphqlResponse.encode(&partial).unwrap();
        assert_eq!(status, StatusCode::OK);
    }
}
