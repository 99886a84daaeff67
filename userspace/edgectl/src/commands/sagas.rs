//! `edgectl sagas`: ListSagas, GetSaga, CancelSaga, RetrySaga.

use fraiseql_edge_api::v1::{
    CancelSagaRequest, GetSagaRequest, ListSagasRequest, RetrySagaRequest, Saga, SagaStep,
};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::Error,
    render::{Output, Table, View, format},
};

/// One saga (`--json`); `steps` is empty in a listing.
#[derive(Debug, Serialize)]
pub struct SagaView {
    pub id: String,
    pub state: String,
    pub parked: bool,
    pub partially_compensated: bool,
    pub running: bool,
    pub last_error: String,
    pub created_unix_ms: u64,
    pub updated_unix_ms: u64,
    pub step_count: u32,
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
pub struct StepView {
    pub index: u32,
    pub subgraph: String,
    pub state: String,
    pub attempts: u32,
    pub compensation_attempts: u32,
    pub idempotency_key: String,
    pub last_error: String,
    /// The mutation's data, once completed.
    pub result: Option<serde_json::Value>,
}

/// `sagas list --json`.
#[derive(Debug, Serialize)]
pub struct SagaList {
    pub sagas: Vec<SagaView>,
}

fn view(s: Saga) -> SagaView {
    SagaView {
        id: s.id,
        state: s.state,
        parked: s.parked,
        partially_compensated: s.partially_compensated,
        running: s.running,
        last_error: s.last_error,
        created_unix_ms: s.created_unix_ms,
        updated_unix_ms: s.updated_unix_ms,
        step_count: s.step_count,
        steps: s.steps.into_iter().map(step).collect(),
    }
}

fn step(s: SagaStep) -> StepView {
    StepView {
        index: s.index,
        subgraph: s.subgraph,
        state: s.state,
        attempts: s.attempts,
        compensation_attempts: s.compensation_attempts,
        idempotency_key: s.idempotency_key,
        last_error: s.last_error,
        result: serde_json::from_str(&s.result_json).ok(),
    }
}

pub async fn list(session: &Session, out: Output, req: ListSagasRequest) -> Result<(), Error> {
    let answer = session.unary(session.client().list_sagas(req)).await?;
    out.print(&SagaList {
        sagas: answer.sagas.into_iter().map(view).collect(),
    })
}

pub async fn show(session: &Session, out: Output, id: String) -> Result<(), Error> {
    let saga = session
        .unary(session.client().get_saga(GetSagaRequest { id }))
        .await?;
    out.print(&view(saga))
}

pub async fn cancel(session: &Session, out: Output, id: String) -> Result<(), Error> {
    let saga = session
        .unary(session.client().cancel_saga(CancelSagaRequest { id }))
        .await?;
    out.print(&view(saga))
}

pub async fn retry(session: &Session, out: Output, id: String) -> Result<(), Error> {
    let saga = session
        .unary(session.client().retry_saga(RetrySagaRequest { id }))
        .await?;
    out.print(&view(saga))
}

/// The state, with the parked mark.
fn state(s: &SagaView) -> String {
    match (s.parked, s.partially_compensated) {
        (true, true) => format!("{} (parked, partially compensated)", s.state),
        (true, false) => format!("{} (parked)", s.state),
        _ => s.state.clone(),
    }
}

impl View for SagaList {
    fn human(&self) -> String {
        if self.sagas.is_empty() {
            return "no sagas\n".to_string();
        }
        let mut t =
            Table::new(&["ID", "STATE", "STEPS", "CREATED", "UPDATED", "ERROR"]).right(&[2]);
        for s in &self.sagas {
            t.row(vec![
                s.id.clone(),
                state(s),
                s.step_count.to_string(),
                format::unix_ms(s.created_unix_ms),
                format::unix_ms(s.updated_unix_ms),
                s.last_error.clone(),
            ]);
        }
        t.render()
    }
}

impl View for SagaView {
    fn human(&self) -> String {
        let mut out = format!(
            "saga {}\nstate    {}\nrunning  {}\ncreated  {}\nupdated  {}\n",
            self.id,
            state(self),
            format::yes_no(self.running),
            format::unix_ms(self.created_unix_ms),
            format::unix_ms(self.updated_unix_ms),
        );
        if !self.last_error.is_empty() {
            out += &format!("error    {}\n", self.last_error);
        }
        let mut t = Table::new(&[
            "STEP",
            "SUBGRAPH",
            "STATE",
            "TRIES",
            "COMP. TRIES",
            "IDEMPOTENCY KEY",
            "ERROR",
        ])
        .right(&[0, 3, 4]);
        for s in &self.steps {
            t.row(vec![
                s.index.to_string(),
                s.subgraph.clone(),
                s.state.clone(),
                s.attempts.to_string(),
                s.compensation_attempts.to_string(),
                s.idempotency_key.clone(),
                s.last_error.clone(),
            ]);
        }
        out + &t.render()
    }
}
