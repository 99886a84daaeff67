//! GraphQL over HTTP on the subgraph port.
//!
//! `POST` (JSON body) and `GET` (`?query=&variables=&operationName=`) on both
//! `/graphql` and `/`, so a proxy may forward the path it received or rewrite it.
//! Every request goes through the same phases, in this order:
//!
//! 1. count it (`requests`, `in_flight`);
//! 2. parse it (a bad request, a `POST` whose `Content-Type` is not
//!    `application/json` included, is only answered after the faults below);
//! 3. count it as a health check if its query is `{ __typename }`;
//! 4. for a `POST` with an `Idempotency-Key` (see `idempotency.rs`): refuse a
//!    bad key (400), send a stored answer again or refuse a conflicting
//!    request (409), all at once; or claim the key, if the request parsed,
//!    and go on;
//! 5. obey the faults in force: hang, latency, injected error status, and a
//!    `fail_field` failure if the operation selects that root field;
//! 6. refuse a mutation sent over `GET` (405, as GraphQL-over-HTTP says);
//! 7. execute it and answer in the media type `Accept` asks for (see
//!    `media.rs`): `200 application/json`, or `application/graphql-response+json`
//!    with a 400 for a request that fails before execution; the answer is
//!    stored under the claimed key, if any;
//! 8. send the body as the body faults say (`slow_body_ms`, `stall_body`; see
//!    `fault_body.rs`), whatever the answer: health checks, injected errors,
//!    400, 405 and 409 answers and replays included, since an upstream that stalls mid-body
//!    does so for every response. (The router's own answers to an unknown
//!    path or method do not pass through here and are sent as they are.)
//!
//! A request counts in `in_flight` until its answer is ready, not while its
//! body is being sent.

use std::sync::Arc;

use async_graphql::{
    Positioned, Request, Variables,
    parser::types::{
        DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection,
        SelectionSet,
    },
};
use axum::{
    Router,
    body::Bytes,
    extract::{Query, State, rejection::BytesRejection, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    fault_body,
    faults::FaultControl,
    idempotency::{self, Answer, Decision, Fingerprint, IdempotencyStore, KeyError},
    last_request::LastRequestLog,
    media::Media,
    schema::{DemoSchema, RequestHeaders},
    stats::Stats,
};

/// The body of an injected error response.
pub const INJECTED_FAULT_BODY: &str = r#"{"errors":[{"message":"injected fault"}]}"#;

/// What a GraphQL request handler needs.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: DemoSchema,
    pub stats: Arc<Stats>,
    pub faults: FaultControl,
    pub last_request: LastRequestLog,
    pub idempotency: Arc<IdempotencyStore>,
}

/// The routes of the GraphQL port.
pub fn router(state: GraphqlState) -> Router {
    Router::new()
        .route("/graphql", get(get_graphql).post(post_graphql))
        .route("/", get(get_graphql).post(post_graphql))
        .with_state(state)
}

/// A request that is refused before execution. Each has a stable code.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("request body is not a GraphQL request: {0}")]
    BadBody(String),
    #[error("a POST body must be sent as application/json")]
    UnsupportedContentType,
    #[error("query string is not a GraphQL request: {0}")]
    BadQueryString(String),
    #[error("the `query` parameter is missing")]
    MissingQuery,
    #[error("`variables` is not a JSON object")]
    BadVariables,
    #[error("mutations are only accepted over POST")]
    MutationOverGet,
    #[error(transparent)]
    InvalidIdempotencyKey(#[from] KeyError),
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyKeyReused,
    #[error("a request with this Idempotency-Key is still executing; retry later")]
    IdempotencyKeyInProgress,
}

impl RequestError {
    fn code(&self) -> &'static str {
        match self {
            Self::BadBody(_) | Self::BadQueryString(_) | Self::MissingQuery => "INVALID_REQUEST",
            Self::BadVariables => "INVALID_VARIABLES",
            Self::MutationOverGet => "MUTATION_OVER_GET",
            Self::UnsupportedContentType => "UNSUPPORTED_MEDIA_TYPE",
            Self::InvalidIdempotencyKey(_) => "INVALID_IDEMPOTENCY_KEY",
            Self::IdempotencyKeyReused => "IDEMPOTENCY_KEY_REUSED",
            Self::IdempotencyKeyInProgress => "IDEMPOTENCY_KEY_IN_PROGRESS",
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        let body =
            json!({"errors": [{"message": self.to_string(), "extensions": {"code": self.code()}}]});
        let body = body.to_string();
        match self {
            Self::MutationOverGet => (
                StatusCode::METHOD_NOT_ALLOWED,
                [
                    (header::ALLOW, "POST"),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                body,
            )
                .into_response(),
            Self::UnsupportedContentType => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Self::IdempotencyKeyReused => (
                StatusCode::CONFLICT,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
            Self::IdempotencyKeyInProgress => (
                StatusCode::CONFLICT,
                [
                    (header::RETRY_AFTER, "1"),
                    (header::CONTENT_TYPE, "application/json"),
                ],
                body,
            )
                .into_response(),
            _ => (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "application/json")],
                body,
            )
                .into_response(),
        }
    }
}

/// What the `Idempotency-Key` header of a request asks for.
#[derive(Debug)]
enum Idempotency {
    /// No header (or a `GET`, which is idempotent anyway).
    None,
    /// A header that is not a valid key.
    Invalid(KeyError),
    /// A valid key, with the body's fingerprint.
    Key(String, Fingerprint),
}

#[derive(Debug, Deserialize)]
struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    #[serde(rename = "operationName")]
    operation_name: Option<String>,
}

async fn post_graphql(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let idempotency = match idempotency::key(&headers) {
        None => Idempotency::None,
        Some(Err(e)) => Idempotency::Invalid(e),
        Some(Ok(key)) => {
            let body = body.as_deref().unwrap_or_default();
            Idempotency::Key(key, idempotency::fingerprint(body))
        }
    };
    let request = body
        .map_err(|e| RequestError::BadBody(e.body_text()))
        .and_then(|body| {
            if !is_json(&headers) {
                return Err(RequestError::UnsupportedContentType);
            }
            serde_json::from_slice::<Request>(&body)
                .map_err(|e| RequestError::BadBody(e.to_string()))
        });
    run_to_completion(state, request, headers, true, idempotency).await
}

async fn get_graphql(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    params: Result<Query<GetParams>, QueryRejection>,
) -> Response {
    let request = params
        .map_err(|e| RequestError::BadQueryString(e.body_text()))
        .and_then(|Query(params)| get_request(params));
    run_to_completion(state, request, headers, false, Idempotency::None).await
}

/// Runs a request to the end even when its client goes away, as real
/// servers do: a mutation whose caller timed out still executes (the case
/// where a proxy retrying it would run it twice). The request's headers are
/// handed to the resolvers (`requestHeader`).
async fn run_to_completion(
    state: GraphqlState,
    request: Result<Request, RequestError>,
    headers: HeaderMap,
    mutations_allowed: bool,
    idempotency: Idempotency,
) -> Response {
    let media = Media::negotiate(&headers);
    if !request.as_ref().is_ok_and(|r| is_health_check(&r.query)) {
        state.last_request.record(&headers);
    }
    let request = request.map(|r| r.data(RequestHeaders(headers)));
    let faults = state.faults.clone();
    let task = tokio::spawn(async move {
        let _in_flight = state.stats.request_started();
        respond(&state, request, mutations_allowed, media, idempotency).await
    });
    let response = task
        .await
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response());
    fault_body::apply(&faults, response).await
}

fn get_request(params: GetParams) -> Result<Request, RequestError> {
    let mut request = Request::new(params.query.ok_or(RequestError::MissingQuery)?);
    if let Some(variables) = params.variables.filter(|v| !v.trim().is_empty()) {
        let value = serde_json::from_str::<serde_json::Value>(&variables)
            .map_err(|_| RequestError::BadVariables)?;
        if !value.is_object() {
            return Err(RequestError::BadVariables);
        }
        request = request.variables(Variables::from_json(value));
    }
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    Ok(request)
}

async fn respond(
    state: &GraphqlState,
    mut request: Result<Request, RequestError>,
    mutations_allowed: bool,
    media: Media,
    idempotency: Idempotency,
) -> Response {
    if request.as_ref().is_ok_and(|r| is_health_check(&r.query)) {
        state.stats.record_health_check();
    }
    let claim = match idempotency {
        Idempotency::None => None,
        Idempotency::Invalid(e) => return RequestError::from(e).into_response(),
        // A request refused before execution stores nothing.
        Idempotency::Key(..) if request.is_err() => None,
        Idempotency::Key(key, fingerprint) => match state.idempotency.begin(key, fingerprint) {
            Decision::Execute(claim) => Some(claim),
            Decision::Replay(answer) => return replay(&answer),
            Decision::Reused => return RequestError::IdempotencyKeyReused.into_response(),
            Decision::InProgress => return RequestError::IdempotencyKeyInProgress.into_response(),
        },
    };
    let fields = request.as_mut().map(root_fields).unwrap_or_default();
    if let Some(status) = state.faults.before_response(&fields).await {
        tracing::debug!(%status, "injected fault");
        if let Some(claim) = claim {
            claim.faulted();
        }
        return (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            INJECTED_FAULT_BODY,
        )
            .into_response();
    }
    let mut request = match request {
        Ok(request) => request,
        Err(e) => return e.into_response(),
    };
    if !mutations_allowed && is_mutation(&mut request) {
        return RequestError::MutationOverGet.into_response();
    }
    let response = state.schema.execute(request).await;
    match media.encode(&response) {
        Ok((status, body)) => {
            let content_type = HeaderValue::from_static(media.content_type());
            let body = Bytes::from(body);
            if let Some(claim) = claim {
                claim.store(Answer {
                    status,
                    content_type: Some(content_type.clone()),
                    body: body.clone(),
                });
            }
            (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a GraphQL response");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// A stored answer, sent again.
fn replay(answer: &Answer) -> Response {
    let mut response = (answer.status, answer.body.clone()).into_response();
    let headers = response.headers_mut();
    if let Some(content_type) = &answer.content_type {
        headers.insert(header::CONTENT_TYPE, content_type.clone());
    }
    headers.insert(
        idempotency::REPLAYED_HEADER,
        HeaderValue::from_static("true"),
    );
    response
}

/// Whether the body is declared `application/json` (parameters such as
/// `charset` allowed). A missing type is refused too: `fetch` sends a string
/// body as `text/plain`.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether `query` is `{ __typename }` or `query { __typename }`, ignoring
/// whitespace and commas (which GraphQL treats as whitespace).
pub fn is_health_check(query: &str) -> bool {
    let compact: String = query
        .chars()
        .filter(|c| !c.is_whitespace() && *c != ',' && *c != '\u{feff}')
        .collect();
    compact == "{__typename}" || compact == "query{__typename}"
}

/// The operation `request` would run: none when the document does not parse
/// or does not single out an operation (execution then fails without running
/// anything).
fn selected_operation(
    request: &mut Request,
) -> Option<(&ExecutableDocument, &OperationDefinition)> {
    let name = request.operation_name.clone();
    let doc = request.parsed_query().ok()?;
    let op = match (&doc.operations, name.as_deref()) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(want)) => ops
            .iter()
            .find(|(name, _)| name.as_str() == want)
            .map(|(_, op)| op),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        (DocumentOperations::Multiple(_), None) => None,
    }?;
    Some((doc, &op.node))
}

/// Whether the operation `request` would run is a mutation.
fn is_mutation(request: &mut Request) -> bool {
    selected_operation(request).is_some_and(|(_, op)| op.ty == OperationType::Mutation)
}

/// The root fields (names, not aliases) the operation `request` would run
/// selects, through fragment spreads and inline fragments; empty when no
/// operation would run.
fn root_fields(request: &mut Request) -> Vec<String> {
    let mut fields = Vec::new();
    if let Some((doc, op)) = selected_operation(request) {
        collect_fields(doc, &op.selection_set, &mut fields, 0);
    }
    fields
}

/// Fragments nest at most this deep here (a cycle is invalid GraphQL, which
/// validation refuses; this only keeps the walk finite before it does).
const FRAGMENT_DEPTH_MAX: usize = 32;

fn collect_fields(
    doc: &ExecutableDocument,
    set: &Positioned<SelectionSet>,
    fields: &mut Vec<String>,
    depth: usize,
) {
    if depth > FRAGMENT_DEPTH_MAX {
        return;
    }
    for selection in &set.node.items {
        match &selection.node {
            Selection::Field(field) => fields.push(field.node.name.node.to_string()),
            Selection::FragmentSpread(spread) => {
                if let Some(fragment) = doc.fragments.get(&spread.node.fragment_name.node) {
                    collect_fields(doc, &fragment.node.selection_set, fields, depth + 1);
                }
            }
            Selection::InlineFragment(inline) => {
                collect_fields(doc, &inline.node.selection_set, fields, depth + 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_checks_are_recognised_modulo_whitespace() {
        for q in [
            "{ __typename }",
            "{__typename}",
            "query {\n  __typename\n}",
            " query{ __typename } ",
        ] {
            assert!(is_health_check(q), "{q:?}");
        }
        for q in [
            "{ __typename user(id: 1) { id } }",
            "query Q { __typename }",
            "mutation { __typename }",
        ] {
            assert!(!is_health_check(q), "{q:?}");
        }
    }

    #[test]
    fn only_json_bodies_are_accepted() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, ct.parse().unwrap());
            is_json(&h)
        };
        assert!(with("application/json") && with("Application/JSON; charset=utf-8"));
        assert!(!with("text/plain;charset=UTF-8") && !with("application/graphql-response+json"));
        assert!(!is_json(&HeaderMap::new()));
    }

    #[test]
    fn mutations_are_found_by_operation_name() {
        let doc = "query A { echo(value: \"a\") } mutation B { incrementCounter }";
        assert!(!is_mutation(&mut Request::new(doc).operation_name("A")));
        assert!(is_mutation(&mut Request::new(doc).operation_name("B")));
        assert!(
            !is_mutation(&mut Request::new(doc)),
            "ambiguous: execution refuses it"
        );
        assert!(is_mutation(&mut Request::new(
            "mutation { incrementCounter }"
        )));
        // An unknown operation name selects nothing: execution refuses it.
        assert!(!is_mutation(
            &mut Request::new("mutation M { incrementCounter }").operation_name("X")
        ));
        assert!(is_mutation(
            &mut Request::new("mutation { incrementCounter }").operation_name("X")
        ));
        assert!(!is_mutation(&mut Request::new("{ echo(value: \"a\") }")));
        assert!(!is_mutation(&mut Request::new("mutation {")));
    }

    #[test]
    fn root_fields_see_through_aliases_and_fragments() {
        let doc = r#"mutation M { a: reserve(item: "x", quantity: 1) { id } ...F ... { echo } }
            fragment F on Mutation { release(item: "x", quantity: 1) }
            query Q { stock(item: "x") }"#;
        assert_eq!(
            root_fields(&mut Request::new(doc).operation_name("M")),
            ["reserve", "release", "echo"]
        );
        assert_eq!(
            root_fields(&mut Request::new(doc).operation_name("Q")),
            ["stock"]
        );
        assert!(root_fields(&mut Request::new(doc)).is_empty(), "ambiguous");
        assert!(root_fields(&mut Request::new("{")).is_empty());
        let cycle = "query { ...A } fragment A on Query { ...B } fragment B on Query { echo(value: \"x\") ...A }";
        assert!(
            !root_fields(&mut Request::new(cycle)).is_empty(),
            "a cycle ends"
        );
    }
}
