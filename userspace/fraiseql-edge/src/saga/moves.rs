//! The checks every store runs inside its write transaction, on the saga
//! and steps it has just read: the transition tables of the model, plus the
//! conditions that depend on the whole saga. Kept apart from the stores so
//! that SQLite and PostgreSQL refuse exactly the same writes.

use super::{
    model::{Saga, SagaState, StepRecord, StepState},
    store::StoreError,
};

fn illegal(subject: String, from: String, to: String, why: impl Into<String>) -> StoreError {
    StoreError::IllegalTransition {
        subject,
        from,
        to,
        why: why.into(),
    }
}

fn saga_move(saga: &Saga, to: SagaState, why: impl Into<String>) -> StoreError {
    illegal(
        format!("saga {}", saga.record.id),
        saga.record.state.to_string(),
        to.to_string(),
        why,
    )
}

fn step_move(step: &StepRecord, to: String, why: impl Into<String>) -> StoreError {
    illegal(
        format!("saga {} step {}", step.saga_id, step.index),
        with_attempt(step.state, step.attempt),
        to,
        why,
    )
}

/// `Executing(2)` for an attempt, the bare name otherwise.
fn with_attempt(state: StepState, attempt: u32) -> String {
    if state == StepState::Executing {
        format!("{state}({attempt})")
    } else {
        state.to_string()
    }
}

fn step(saga: &Saga, index: u32) -> Result<&StepRecord, StoreError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| saga.steps.get(i))
        .ok_or(StoreError::NotFound {
            saga: saga.record.id,
            step: Some(index),
        })
}

/// The first step in `state`, if any.
fn first_in<'a>(
    steps: impl IntoIterator<Item = &'a StepRecord>,
    state: StepState,
) -> Option<&'a StepRecord> {
    steps.into_iter().find(|s| s.state == state)
}

/// A compare-and-set of the saga's state (see `SagaStore::set_state`).
pub(crate) fn set_state(saga: &Saga, from: SagaState, to: SagaState) -> Result<(), StoreError> {
    let r = &saga.record;
    if r.state != from {
        return Err(StoreError::StateChanged {
            saga: r.id,
            expected: from,
            actual: r.state,
        });
    }
    if !from.can_move_to(to) {
        return Err(saga_move(saga, to, "not in the saga transition table"));
    }
    if to == SagaState::Failed {
        return Err(saga_move(
            saga,
            to,
            "a saga fails only by being parked as partially compensated",
        ));
    }
    if r.parked && to != SagaState::Cancelled {
        return Err(saga_move(
            saga,
            to,
            "the saga is parked: an operator must retry it first",
        ));
    }
    if !r.parked && to == SagaState::Cancelled && from != SagaState::Pending {
        return Err(saga_move(
            saga,
            to,
            "only a pending or a parked saga can be cancelled",
        ));
    }
    let blocking = match to {
        SagaState::Completed => saga.steps.iter().find(|s| s.state != StepState::Completed),
        SagaState::Compensating => first_in(&saga.steps, StepState::Executing),
        SagaState::Compensated => first_in(&saga.steps, StepState::Completed)
            .or_else(|| first_in(&saga.steps, StepState::Executing)),
        _ => None,
    };
    match blocking {
        Some(s) => Err(saga_move(
            saga,
            to,
            format!("step {} is {}", s.index, with_attempt(s.state, s.attempt)),
        )),
        None => Ok(()),
    }
}

/// Step `index` about to be sent for the `attempt`-th time.
pub(crate) fn step_executing(saga: &Saga, index: u32, attempt: u32) -> Result<(), StoreError> {
    let s = step(saga, index)?;
    let to = with_attempt(StepState::Executing, attempt);
    if saga.record.state != SagaState::Executing || saga.record.parked {
        let why = format!(
            "the saga is {}{}, not Executing",
            saga.record.state,
            if saga.record.parked { " (parked)" } else { "" }
        );
        return Err(step_move(s, to, why));
    }
    if let Some(earlier) = saga.steps[..index as usize]
        .iter()
        .find(|e| e.state != StepState::Completed)
    {
        let why = format!("step {} is {}", earlier.index, earlier.state);
        return Err(step_move(s, to, why));
    }
    if !s.state.can_move_to(StepState::Executing) {
        return Err(step_move(s, to, "not in the step transition table"));
    }
    if Some(attempt) != s.attempt.checked_add(1) {
        let why = format!("the next attempt is {}", s.attempt.saturating_add(1));
        return Err(step_move(s, to, why));
    }
    Ok(())
}

/// The outcome of step `index`'s mutation, about to be written as `to`.
pub(crate) fn step_finished(saga: &Saga, index: u32, to: StepState) -> Result<(), StoreError> {
    let s = step(saga, index)?;
    if s.state != StepState::Executing {
        return Err(step_move(s, to.to_string(), "no attempt is in flight"));
    }
    Ok(())
}

/// Step `index`'s compensation about to be sent for the `attempt`-th time.
pub(crate) fn compensation_started(
    saga: &Saga,
    index: u32,
    attempt: u32,
) -> Result<(), StoreError> {
    let s = step(saga, index)?;
    let to = format!("compensating({attempt})");
    if saga.record.state != SagaState::Compensating || saga.record.parked {
        let why = format!(
            "the saga is {}{}, not Compensating",
            saga.record.state,
            if saga.record.parked { " (parked)" } else { "" }
        );
        return Err(step_move(s, to, why));
    }
    if s.state != StepState::Completed {
        return Err(step_move(s, to, "only a completed step is compensated"));
    }
    if let Some(later) = saga.steps[index as usize + 1..]
        .iter()
        .find(|l| matches!(l.state, StepState::Completed | StepState::Executing))
    {
        let why = format!(
            "step {} is {} (compensations run in reverse order)",
            later.index, later.state
        );
        return Err(step_move(s, to, why));
    }
    if Some(attempt) != s.compensation_attempt.checked_add(1) {
        let why = format!(
            "the next compensation attempt is {}",
            s.compensation_attempt.saturating_add(1)
        );
        return Err(step_move(s, to, why));
    }
    Ok(())
}

/// The outcome of step `index`'s last compensation attempt.
pub(crate) fn compensation_finished(saga: &Saga, index: u32) -> Result<(), StoreError> {
    let s = step(saga, index)?;
    if s.state != StepState::Completed || s.compensation_attempt == 0 {
        return Err(step_move(
            s,
            StepState::Compensated.to_string(),
            "no compensation was started",
        ));
    }
    Ok(())
}

/// Parking; returns the state the saga will be in.
pub(crate) fn park(saga: &Saga, partially_compensated: bool) -> Result<SagaState, StoreError> {
    let state = saga.record.state;
    if state.is_terminal() {
        return Err(saga_move(saga, state, "a terminal saga cannot be parked"));
    }
    if !partially_compensated {
        return Ok(state);
    }
    if state != SagaState::Compensating {
        return Err(saga_move(
            saga,
            SagaState::Failed,
            "only a compensating saga can be partially compensated",
        ));
    }
    Ok(SagaState::Failed)
}

/// An operator's retry; returns the state the saga will be in.
pub(crate) fn unpark(saga: &Saga) -> Result<SagaState, StoreError> {
    if !saga.record.parked {
        return Err(saga_move(
            saga,
            saga.record.state,
            "only a parked saga can be retried",
        ));
    }
    Ok(match saga.record.state {
        SagaState::Failed => SagaState::Compensating,
        other => other,
    })
}
