//! The admin port: counters for tests (`/stats`, `/idempotency`), fault
//! controls (`/faults`) and `/crash`. All bodies are JSON.
//!
//! | route               | answer                                              |
//! |---------------------|-----------------------------------------------------|
//! | `GET /stats`        | [`StatsSnapshot`]                                   |
//! | `POST /stats/reset` | zeroes the counters, answers the new snapshot       |
//! | `GET /faults`       | [`Faults`]                                          |
//! | `POST /faults`      | applies a [`FaultsPatch`], answers the new `Faults` |
//! | `GET /idempotency`  | [`Snapshot`]: counters per idempotency key, totals   |
//! | `POST /idempotency/reset` | forgets stored answers, zeroes the counters, answers the new snapshot |
//! | `GET /last-request` | [`LastRequest`]: the last GraphQL request's headers  |
//! | `POST /crash`       | exits the process with code 1, answering nothing    |

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;

use crate::{
    faults::{FaultControl, FaultError, Faults, FaultsPatch},
    idempotency::{IdempotencyStore, Snapshot},
    last_request::{LastRequest, LastRequestLog},
    server::GraphqlServer,
    stats::{Stats, StatsSnapshot},
};

/// What the admin handlers act on.
#[derive(Clone)]
pub struct AdminState {
    pub stats: Arc<Stats>,
    pub faults: FaultControl,
    pub graphql: Arc<GraphqlServer>,
    pub last_request: LastRequestLog,
    pub idempotency: Arc<IdempotencyStore>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/stats", get(stats))
        .route("/stats/reset", post(reset_stats))
        .route("/faults", get(get_faults).post(post_faults))
        .route("/idempotency", get(idempotency))
        .route("/idempotency/reset", post(reset_idempotency))
        .route("/last-request", get(last_request))
        .route("/crash", post(crash))
        .with_state(state)
}

/// Why an admin request failed; each has a stable code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("body is not a faults object: {0}")]
    BadFaults(String),
    #[error(transparent)]
    InvalidFaults(#[from] FaultError),
    #[error("cannot re-open the GraphQL port: {0}")]
    Rebind(std::io::Error),
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::BadFaults(_) | Self::InvalidFaults(_) => {
                (StatusCode::BAD_REQUEST, "INVALID_FAULTS")
            }
            Self::Rebind(_) => (StatusCode::INTERNAL_SERVER_ERROR, "REBIND_FAILED"),
        };
        (
            status,
            Json(json!({"error": self.to_string(), "code": code})),
        )
            .into_response()
    }
}

async fn stats(State(state): State<AdminState>) -> Json<StatsSnapshot> {
    Json(state.stats.snapshot())
}

async fn reset_stats(State(state): State<AdminState>) -> Json<StatsSnapshot> {
    state.stats.reset();
    Json(state.stats.snapshot())
}

async fn get_faults(State(state): State<AdminState>) -> Json<Faults> {
    Json(state.faults.current())
}

/// Applies the patch, then (for `refuse`) waits until the listener matches it,
/// so a test may connect as soon as this answers.
async fn post_faults(
    State(state): State<AdminState>,
    body: Bytes,
) -> Result<Json<Faults>, AdminError> {
    let patch: FaultsPatch =
        serde_json::from_slice(&body).map_err(|e| AdminError::BadFaults(e.to_string()))?;
    let faults = state.faults.update(patch)?;
    tracing::info!(?faults, "faults updated");
    state
        .graphql
        .apply(&state.faults)
        .await
        .map_err(AdminError::Rebind)?;
    Ok(Json(state.faults.current()))
}

async fn idempotency(State(state): State<AdminState>) -> Json<Snapshot> {
    Json(state.idempotency.snapshot())
}

async fn reset_idempotency(State(state): State<AdminState>) -> Json<Snapshot> {
    state.idempotency.reset();
    Json(state.idempotency.snapshot())
}

async fn last_request(State(state): State<AdminState>) -> Json<LastRequest> {
    Json(state.last_request.get())
}

async fn crash() {
    tracing::warn!("crash requested: exiting with code 1");
    std::process::exit(1);
}
