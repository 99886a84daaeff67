//! The saga API on the GraphQL listener (with `[sagas]` configured):
//!
//! * `POST /sagas` with `Idempotency-Key: <key>` and a JSON body
//!   `{"steps": [{"subgraph", "mutation", "variables", "compensation",
//!   "compensationVariables"}, …]}` writes the saga and starts it: `202`
//!   with the saga and `Location: /sagas/<id>`. The same key with the same
//!   body (compared as parsed JSON) answers `200` with that saga and
//!   `Idempotent-Replayed: true`; with another body, `409`
//!   `IDEMPOTENCY_KEY_REUSED`. Keys are scoped by caller: two identities
//!   may use the same key.
//! * `GET /sagas/<id>`: the saga with its steps, to the identity that
//!   submitted it (another gets `404`, as for an unknown id).
//!
//! A submission passes what any request passes: the client limits of
//! degraded mode, authentication (a token presented is always checked; one
//! is required when a step's subgraph requires authentication), the
//! per-identity rate limit (one request per step, on the step's subgraph's
//! limiter), and, for every mutation and compensation, the `[graphql]`
//! limits, validation against the subgraph's SDL and field authorization
//! (reject mode: a saga is never rewritten). Anything refused is answered
//! with a code and writes nothing.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header};
use http_body::Body;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{
    coordinator::{Coordinator, CoordinatorError},
    model::{NewSaga, NewStep, Saga, SagaId, StepRecord},
    store::{Created, StoreError},
};
use crate::proxy::{
    Proxy, context::RequestContext, error::ProxyBody, error::ProxyError, operation::OperationKind,
};

/// The path of the collection.
pub const PATH: &str = "/sagas";

/// The headers kept with a saga and sent with each of its mutations: who
/// the caller is, as the subgraphs would have seen it on a plain request.
const IDENTITY_HEADERS: [&str; 6] = [
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-real-ip",
];

/// Whether `path` belongs to the saga API.
pub fn owns(path: &str) -> bool {
    path == PATH || path.strip_prefix(PATH).is_some_and(|r| r.starts_with('/'))
}

/// Why the saga API refused a request. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SagaApiError {
    /// `POST /sagas` without `Idempotency-Key`.
    #[error(
        "a saga is submitted with an Idempotency-Key header (1 to 255 visible ASCII characters)"
    )]
    KeyRequired,
    /// An `Idempotency-Key` that is empty, too long, repeated or not visible
    /// ASCII.
    #[error("Idempotency-Key must be 1 to 255 visible ASCII characters, sent once")]
    BadKey,
    /// The body is not a saga.
    #[error("not a saga: {0}")]
    Invalid(String),
    /// A step names a subgraph the edge does not serve.
    #[error("step {index}: no subgraph `{subgraph}`")]
    UnknownSubgraph {
        /// The step.
        index: usize,
        /// The name it gave.
        subgraph: String,
    },
    /// A step's mutation or compensation is another operation type.
    #[error("step {index}: the {which} is a {kind}, not a mutation")]
    NotMutation {
        /// The step.
        index: usize,
        /// `mutation` or `compensation`.
        which: &'static str,
        /// What it is.
        kind: &'static str,
    },
    /// A step's mutation or compensation was refused as a request would be
    /// (limits, validation, authorization); the status and code are that
    /// refusal's.
    #[error("step {index}: the {which}: {error}")]
    Step {
        /// The step.
        index: usize,
        /// `mutation` or `compensation`.
        which: &'static str,
        /// The refusal.
        error: Box<ProxyError>,
    },
    /// The key was used with another body.
    #[error("this Idempotency-Key was already used with a different saga")]
    KeyReused,
    /// No such saga (or not the caller's).
    #[error("no saga {0}")]
    NotFound(String),
    /// The node has as many sagas in flight as it may.
    #[error("{0}; retry later")]
    Busy(String),
    /// The log failed (the detail is logged).
    #[error("the saga log is unavailable")]
    LogUnavailable,
}

impl SagaApiError {
    /// Every code the API answers with itself (for the reference page).
    pub fn examples() -> Vec<SagaApiError> {
        vec![
            SagaApiError::KeyRequired,
            SagaApiError::BadKey,
            SagaApiError::Invalid(String::new()),
            SagaApiError::UnknownSubgraph {
                index: 0,
                subgraph: String::new(),
            },
            SagaApiError::NotMutation {
                index: 0,
                which: "mutation",
                kind: "query",
            },
            SagaApiError::KeyReused,
            SagaApiError::NotFound(String::new()),
            SagaApiError::Busy(String::new()),
            SagaApiError::LogUnavailable,
        ]
    }

    /// The status and the stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::KeyRequired => (StatusCode::BAD_REQUEST, "IDEMPOTENCY_KEY_REQUIRED"),
            Self::BadKey => (StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY"),
            Self::Invalid(_) => (StatusCode::BAD_REQUEST, "SAGA_INVALID"),
            Self::UnknownSubgraph { .. } => (StatusCode::BAD_REQUEST, "SAGA_UNKNOWN_SUBGRAPH"),
            Self::NotMutation { .. } => (StatusCode::BAD_REQUEST, "SAGA_STEP_NOT_MUTATION"),
            Self::Step { error, .. } => error.status_and_code(),
            Self::KeyReused => (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "SAGA_NOT_FOUND"),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, "SAGAS_BUSY"),
            Self::LogUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "SAGA_LOG_UNAVAILABLE"),
        }
    }
}

impl From<SagaApiError> for ProxyError {
    fn from(e: SagaApiError) -> Self {
        ProxyError::Saga(Box::new(e))
    }
}

/// A submitted saga, as the body says it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Submitted {
    steps: Vec<SubmittedStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SubmittedStep {
    subgraph: String,
    mutation: String,
    #[serde(default)]
    variables: Option<Map<String, Value>>,
    compensation: String,
    #[serde(default)]
    compensation_variables: Option<Map<String, Value>>,
}

/// Serves one request to the saga API.
pub async fn handle<B>(
    proxy: &Proxy,
    coordinator: &Arc<Coordinator>,
    ctx: &mut RequestContext,
    req: Request<B>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let id = ctx
        .path
        .strip_prefix(PATH)
        .and_then(|r| r.strip_prefix('/'))
        .map(str::to_string);
    match (req.method(), id) {
        (&Method::POST, None) => submit(proxy, coordinator, ctx, req).await,
        (&Method::GET, Some(id)) => show(proxy, coordinator, ctx, req, &id).await,
        (other, _) => Err(ProxyError::MethodNotAllowed(other.to_string())),
    }
}

async fn submit<B>(
    proxy: &Proxy,
    coordinator: &Arc<Coordinator>,
    ctx: &mut RequestContext,
    req: Request<B>,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let key = idempotency_key(req.headers())?;
    let accepted = proxy.accept_saga(req).await?;
    // Parsed once: the saga, and its canonical text for the body hash.
    let body: Value =
        serde_json::from_slice(&accepted.body).map_err(|e| SagaApiError::Invalid(e.to_string()))?;
    let submitted =
        Submitted::deserialize(&body).map_err(|e| SagaApiError::Invalid(e.to_string()))?;
    let max = coordinator.config().max_steps;
    if submitted.steps.is_empty() || submitted.steps.len() > max {
        return Err(SagaApiError::Invalid(format!(
            "a saga has 1 to {max} steps (`sagas.max_steps`), this one {}",
            submitted.steps.len()
        ))
        .into());
    }
    let subgraphs = submitted
        .steps
        .iter()
        .enumerate()
        .map(|(index, s)| {
            proxy
                .subgraph(&s.subgraph)
                .ok_or_else(|| SagaApiError::UnknownSubgraph {
                    index,
                    subgraph: s.subgraph.clone(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let policy = proxy.policy_snapshot();
    let required = subgraphs.iter().any(|sg| sg.cfg.require_authentication);
    proxy
        .identify_headers(ctx, &policy, &accepted.headers, required)
        .await?;
    for sg in &subgraphs {
        proxy.saga_rate_limit(ctx, sg).await?;
    }
    for (index, (step, sg)) in submitted.steps.iter().zip(&subgraphs).enumerate() {
        for (which, query, variables) in [
            ("mutation", &step.mutation, &step.variables),
            (
                "compensation",
                &step.compensation,
                &step.compensation_variables,
            ),
        ] {
            let kind = proxy
                .check_saga_mutation(ctx, &policy, sg, query, variables.as_ref())
                .map_err(|error| SagaApiError::Step {
                    index,
                    which,
                    error: Box::new(error),
                })?;
            if kind != OperationKind::Mutation {
                return Err(SagaApiError::NotMutation {
                    index,
                    which,
                    kind: kind.as_str(),
                }
                .into());
            }
        }
    }
    let canonical = body.to_string();
    let forwarded = crate::proxy::headers::upstream_headers(accepted.headers.clone(), &ctx.client);
    let identity_headers = IDENTITY_HEADERS
        .iter()
        .flat_map(|name| {
            forwarded
                .get_all(*name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .map(|v| ((*name).to_string(), v.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let new = NewSaga {
        client_key: format!("{}\n{key}", owner(ctx)),
        body_sha256: crate::graphql::persisted::sha256(&canonical),
        identity_headers,
        steps: submitted
            .steps
            .into_iter()
            .map(|s| NewStep {
                subgraph: s.subgraph,
                mutation: s.mutation,
                variables: s.variables.map_or(Value::Null, Value::Object),
                compensation: s.compensation,
                compensation_variables: s.compensation_variables.map_or(Value::Null, Value::Object),
            })
            .collect(),
    };
    let (created, saga) = coordinator.submit(new).await.map_err(|e| match e {
        CoordinatorError::Store(StoreError::Conflict { .. }) => SagaApiError::KeyReused,
        CoordinatorError::Busy(_) => SagaApiError::Busy(e.to_string()),
        e => {
            tracing::error!(error = %e, "writing a saga");
            SagaApiError::LogUnavailable
        }
    })?;
    let (status, replayed) = match created {
        Created::New(_) => (StatusCode::ACCEPTED, false),
        Created::Existing(_) => (StatusCode::OK, true),
    };
    let mut resp = respond(status, &view(&saga, coordinator.is_running(saga.record.id)));
    let h = resp.headers_mut();
    if let Ok(loc) = HeaderValue::from_str(&format!("{PATH}/{}", saga.record.id)) {
        h.insert(header::LOCATION, loc);
    }
    if replayed {
        h.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

async fn show<B>(
    proxy: &Proxy,
    coordinator: &Arc<Coordinator>,
    ctx: &mut RequestContext,
    req: Request<B>,
    id: &str,
) -> Result<Response<ProxyBody>, ProxyError>
where
    B: Body<Data = Bytes>,
{
    let policy = proxy.policy_snapshot();
    proxy
        .identify_headers(ctx, &policy, req.headers(), false)
        .await?;
    proxy.saga_read_rate_limit(ctx).await?;
    let not_found = || SagaApiError::NotFound(id.to_string());
    let id: SagaId = id.parse().map_err(|_| not_found())?;
    let saga = match coordinator.get(id).await {
        Ok(saga) => saga,
        Err(StoreError::NotFound { .. }) => return Err(not_found().into()),
        Err(e) => {
            tracing::error!(saga = %id, error = %e, "reading a saga");
            return Err(SagaApiError::LogUnavailable.into());
        }
    };
    let mine = saga
        .record
        .client_key
        .split_once('\n')
        .is_some_and(|(o, _)| o == owner(ctx));
    if !mine {
        return Err(not_found().into());
    }
    Ok(respond(
        StatusCode::OK,
        &view(&saga, coordinator.is_running(id)),
    ))
}

/// Who owns a saga: the caller's subject as JSON (`null`: anonymous).
fn owner(ctx: &RequestContext) -> String {
    let subject = ctx.identity.as_ref().and_then(|i| i.subject.clone());
    Value::from(subject).to_string()
}

/// The `Idempotency-Key` of a submission.
fn idempotency_key(headers: &HeaderMap) -> Result<String, SagaApiError> {
    let mut all = headers.get_all("idempotency-key").iter();
    let (Some(value), None) = (all.next(), all.next()) else {
        return Err(if headers.contains_key("idempotency-key") {
            SagaApiError::BadKey
        } else {
            SagaApiError::KeyRequired
        });
    };
    let bytes = value.as_bytes();
    if bytes.is_empty() || bytes.len() > 255 || !bytes.iter().all(|b| (b'!'..=b'~').contains(b)) {
        return Err(SagaApiError::BadKey);
    }
    Ok(String::from_utf8_lossy(bytes).into_owned())
}

/// The saga as the API shows it.
pub fn view(saga: &Saga, running: bool) -> Value {
    let r = &saga.record;
    json!({
        "id": r.id.to_string(),
        "state": r.state.as_str(),
        "parked": r.parked,
        "partiallyCompensated": r.partially_compensated,
        "running": running,
        "error": r.last_error,
        "createdAtMs": r.created_ms,
        "updatedAtMs": r.updated_ms,
        "steps": saga.steps.iter().map(step_view).collect::<Vec<_>>(),
    })
}

fn step_view(s: &StepRecord) -> Value {
    json!({
        "index": s.index,
        "subgraph": s.subgraph,
        "state": s.state.as_str(),
        "attempts": s.attempt,
        "compensationAttempts": s.compensation_attempt,
        "idempotencyKey": s.idempotency_key(),
        "error": s.last_error,
        "result": s.result,
    })
}

fn respond(status: StatusCode, body: &Value) -> Response<ProxyBody> {
    let mut resp = crate::proxy::json_response(body);
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_api_owns_its_paths_only() {
        assert!(owns("/sagas") && owns("/sagas/abc"));
        assert!(!owns("/sagasx") && !owns("/graphql") && !owns("/saga"));
    }

    #[test]
    fn keys_are_checked() {
        let mut h = HeaderMap::new();
        assert!(matches!(
            idempotency_key(&h),
            Err(SagaApiError::KeyRequired)
        ));
        h.insert("idempotency-key", HeaderValue::from_static("order-42"));
        assert_eq!(idempotency_key(&h).unwrap(), "order-42");
        h.append("idempotency-key", HeaderValue::from_static("again"));
        assert!(matches!(idempotency_key(&h), Err(SagaApiError::BadKey)));
        for bad in ["", "has space", &"k".repeat(256)] {
            let mut h = HeaderMap::new();
            h.insert("idempotency-key", HeaderValue::from_str(bad).unwrap());
            assert!(
                matches!(idempotency_key(&h), Err(SagaApiError::BadKey)),
                "{bad:?}"
            );
        }
    }
}
