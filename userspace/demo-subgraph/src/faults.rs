//! Fault injection: the state behind `GET/POST /faults` and how a GraphQL
//! request obeys it.
//!
//! The current [`Faults`] live in a `watch` channel: the admin port writes a
//! new snapshot, every request reads the latest one, and a hung request waits on
//! the channel until `hang` is lifted (a stalled body, until `stall_body` is).
//! `refuse` is only recorded here; the listener in `server.rs` acts on it, and
//! the body faults are carried out by `fault_body.rs`.
//!
//! `fail_field` stages failures of one root field, for sagas: the next
//! `fail_times` requests whose operation selects that root field (a query or a
//! mutation field, by name, aliases and fragments seen through) are answered
//! with `fail_status` and the injected-fault body instead of executing, and
//! each one counts `fail_times` down (`GET /faults` shows what is left). With
//! `{"fail_field": "release", "fail_times": 3}` a compensation fails three
//! times, then succeeds. The field must be one of the schema's root fields.

use std::{collections::BTreeSet, sync::Arc, time::Duration};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// The faults in force (the JSON body of `GET /faults`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Faults {
    /// Delay added before every GraphQL response, in milliseconds.
    pub latency_ms: u64,
    /// Fraction (0.0–1.0) of GraphQL requests answered with `error_status`.
    pub error_rate: f64,
    /// HTTP status of an injected error.
    pub error_status: u16,
    /// The GraphQL port is closed and its connections dropped.
    pub refuse: bool,
    /// GraphQL requests are accepted but not answered.
    pub hang: bool,
    /// GraphQL responses send their head (with the full `Content-Length`) and
    /// the first half of their body, then nothing more until this is lifted,
    /// when they finish.
    pub stall_body: bool,
    /// Pause between 16-byte pieces of every GraphQL response body, in
    /// milliseconds (0: the body goes out at once).
    pub slow_body_ms: u64,
    /// Root field whose requests fail while `fail_times` is above 0.
    pub fail_field: Option<String>,
    /// How many more requests selecting `fail_field` fail.
    pub fail_times: u64,
    /// HTTP status of a `fail_field` failure.
    pub fail_status: u16,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            // A healthy subgraph: answer at once, never fail.
            latency_ms: 0,
            error_rate: 0.0,
            // 503 is what an overloaded or restarting upstream says, so that is
            // what a proxy's breaker and retry logic most need to meet.
            error_status: 503,
            refuse: false,
            hang: false,
            stall_body: false,
            slow_body_ms: 0,
            fail_field: None,
            fail_times: 0,
            fail_status: 503,
        }
    }
}

/// The body of `POST /faults`: every field optional, unknown fields refused.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    /// New `latency_ms`.
    pub latency_ms: Option<u64>,
    /// New `error_rate` (0.0–1.0).
    pub error_rate: Option<f64>,
    /// New `error_status` (a valid HTTP status, 100–999).
    pub error_status: Option<u16>,
    /// New `refuse`.
    pub refuse: Option<bool>,
    /// New `hang`.
    pub hang: Option<bool>,
    /// New `stall_body`.
    pub stall_body: Option<bool>,
    /// New `slow_body_ms` (0 turns it off).
    pub slow_body_ms: Option<u64>,
    /// New `fail_field` (a root field of the schema).
    pub fail_field: Option<String>,
    /// New `fail_times` (0 turns `fail_field` off).
    pub fail_times: Option<u64>,
    /// New `fail_status` (a valid HTTP status, 100–999).
    pub fail_status: Option<u16>,
}

/// Why a fault setting was refused.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum FaultError {
    #[error("error_rate must be between 0.0 and 1.0, got {0}")]
    ErrorRate(f64),
    #[error("error_status must be an HTTP status code (100-999), got {0}")]
    ErrorStatus(u16),
    #[error("fail_status must be an HTTP status code (100-999), got {0}")]
    FailStatus(u16),
    #[error("fail_times needs a fail_field")]
    FailTimesWithoutField,
    #[error("fail_field {0:?} is not a root field of the schema")]
    UnknownField(String),
}

impl Faults {
    /// Returns these faults with `patch` applied, or why the result is invalid.
    pub fn patched(self, patch: FaultsPatch) -> Result<Self, FaultError> {
        let next = Self {
            latency_ms: patch.latency_ms.unwrap_or(self.latency_ms),
            error_rate: patch.error_rate.unwrap_or(self.error_rate),
            error_status: patch.error_status.unwrap_or(self.error_status),
            refuse: patch.refuse.unwrap_or(self.refuse),
            hang: patch.hang.unwrap_or(self.hang),
            stall_body: patch.stall_body.unwrap_or(self.stall_body),
            slow_body_ms: patch.slow_body_ms.unwrap_or(self.slow_body_ms),
            fail_field: patch.fail_field.or(self.fail_field),
            fail_times: patch.fail_times.unwrap_or(self.fail_times),
            fail_status: patch.fail_status.unwrap_or(self.fail_status),
        };
        next.validate()?;
        Ok(next)
    }

    pub fn validate(&self) -> Result<(), FaultError> {
        if !(0.0..=1.0).contains(&self.error_rate) {
            return Err(FaultError::ErrorRate(self.error_rate));
        }
        self.status()?;
        StatusCode::from_u16(self.fail_status)
            .map_err(|_| FaultError::FailStatus(self.fail_status))?;
        if self.fail_times > 0 && self.fail_field.is_none() {
            return Err(FaultError::FailTimesWithoutField);
        }
        Ok(())
    }

    fn status(&self) -> Result<StatusCode, FaultError> {
        StatusCode::from_u16(self.error_status)
            .map_err(|_| FaultError::ErrorStatus(self.error_status))
    }
}

/// Shared handle on the faults in force.
#[derive(Debug, Clone)]
pub struct FaultControl {
    tx: Arc<watch::Sender<Faults>>,
    /// The schema's root fields: what `fail_field` may name.
    root_fields: Arc<BTreeSet<String>>,
}

impl FaultControl {
    /// `root_fields`: the schema's query and mutation root fields.
    pub fn new(initial: Faults, root_fields: BTreeSet<String>) -> Result<Self, FaultError> {
        initial.validate()?;
        let control = Self {
            tx: Arc::new(watch::Sender::new(Faults::default())),
            root_fields: Arc::new(root_fields),
        };
        control.check_field(initial.fail_field.as_deref())?;
        control.tx.send_replace(initial);
        Ok(control)
    }

    pub fn current(&self) -> Faults {
        self.tx.borrow().clone()
    }

    fn check_field(&self, field: Option<&str>) -> Result<(), FaultError> {
        match field {
            Some(name) if !self.root_fields.contains(name) => {
                Err(FaultError::UnknownField(name.to_string()))
            }
            _ => Ok(()),
        }
    }

    /// Applies `patch` atomically and returns the faults now in force.
    pub fn update(&self, patch: FaultsPatch) -> Result<Faults, FaultError> {
        self.check_field(patch.fail_field.as_deref())?;
        let mut result = Ok(self.current());
        self.tx
            .send_if_modified(|faults| match faults.clone().patched(patch) {
                Ok(next) => {
                    let changed = next != *faults;
                    *faults = next.clone();
                    result = Ok(next);
                    changed
                }
                Err(e) => {
                    result = Err(e);
                    false
                }
            });
        result
    }

    /// Runs the faults a GraphQL request meets before it is answered: waits while
    /// `hang` is set, sleeps `latency_ms`, rolls `error_rate`, then counts
    /// `fail_times` down if the request selects `fail_field` (one of
    /// `root_fields`). Returns the status to answer with instead of the real
    /// response, if one of them fired.
    pub async fn before_response(&self, root_fields: &[String]) -> Option<StatusCode> {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let faults = match rx.wait_for(|f| !f.hang).await {
            Ok(faults) => faults.clone(),
            Err(_) => self.current(),
        };
        if faults.latency_ms > 0 {
            tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
        }
        // `fastrand::f64()` is in [0, 1): a rate of 0 never fires, 1 always does.
        if faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
            return faults.status().ok();
        }
        self.take_field_failure(root_fields)
    }

    /// Counts `fail_times` down (atomically, so N failures are exactly N) if
    /// `root_fields` selects `fail_field`; returns `fail_status` if so.
    fn take_field_failure(&self, root_fields: &[String]) -> Option<StatusCode> {
        let mut fired = None;
        self.tx.send_if_modified(|faults| {
            let selected = faults
                .fail_field
                .as_ref()
                .is_some_and(|field| root_fields.contains(field));
            if !selected || faults.fail_times == 0 {
                return false;
            }
            faults.fail_times -= 1;
            fired = StatusCode::from_u16(faults.fail_status).ok();
            true
        });
        fired
    }

    /// Resolves once `stall_body` is off (at once if it already is). Owns its
    /// receiver, so a response body can hold it.
    pub fn body_released(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            // An error means the sender is gone (shutting down): stop waiting.
            let _ = rx.wait_for(|f| !f.stall_body).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn control(initial: Faults) -> FaultControl {
        let fields = ["reserve", "release", "echo"].map(String::from);
        FaultControl::new(initial, fields.into()).unwrap()
    }

    fn fields(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn patch_changes_only_given_fields() {
        let f = Faults::default()
            .patched(FaultsPatch {
                latency_ms: Some(5),
                hang: Some(true),
                ..FaultsPatch::default()
            })
            .unwrap();
        assert_eq!(
            f,
            Faults {
                latency_ms: 5,
                hang: true,
                ..Faults::default()
            }
        );
    }

    #[test]
    fn invalid_values_are_refused_and_leave_state_alone() {
        let control = control(Faults::default());
        let bad_rate = FaultsPatch {
            error_rate: Some(1.5),
            ..FaultsPatch::default()
        };
        assert_eq!(control.update(bad_rate), Err(FaultError::ErrorRate(1.5)));
        let bad_status = FaultsPatch {
            error_status: Some(42),
            ..FaultsPatch::default()
        };
        assert_eq!(control.update(bad_status), Err(FaultError::ErrorStatus(42)));
        assert_eq!(control.current(), Faults::default());
    }

    #[test]
    fn body_faults_are_patched_and_shown() {
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"stall_body":true,"slow_body_ms":20}"#).unwrap();
        let f = Faults::default().patched(patch).unwrap();
        assert_eq!((f.stall_body, f.slow_body_ms), (true, 20));
        let shown = serde_json::to_value(&f).unwrap();
        assert_eq!(shown["stall_body"], true);
        assert_eq!(shown["slow_body_ms"], 20);
        let off: FaultsPatch = serde_json::from_str(r#"{"slow_body_ms":0}"#).unwrap();
        let f = f.patched(off).unwrap();
        assert_eq!((f.stall_body, f.slow_body_ms), (true, 0));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<FaultsPatch>(r#"{"latency":5}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `latency`"), "{err}");
        let err = serde_json::from_str::<FaultsPatch>(r#"{"stall":true}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `stall`"), "{err}");
    }

    #[test]
    fn body_faults_of_the_wrong_type_are_refused() {
        for bad in [
            r#"{"stall_body":1}"#,
            r#"{"stall_body":"yes"}"#,
            r#"{"slow_body_ms":-5}"#,
            r#"{"slow_body_ms":1.5}"#,
            r#"{"slow_body_ms":true}"#,
        ] {
            assert!(serde_json::from_str::<FaultsPatch>(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn full_error_rate_always_fires_and_zero_never_does() {
        let control = control(Faults::default());
        for _ in 0..100 {
            assert_eq!(control.before_response(&[]).await, None);
        }
        control
            .update(FaultsPatch {
                error_rate: Some(1.0),
                error_status: Some(500),
                ..FaultsPatch::default()
            })
            .unwrap();
        for _ in 0..100 {
            assert_eq!(
                control.before_response(&[]).await,
                Some(StatusCode::INTERNAL_SERVER_ERROR)
            );
        }
    }

    #[tokio::test]
    async fn hung_requests_answer_once_hang_is_lifted() {
        let control = control(Faults {
            hang: true,
            ..Faults::default()
        });
        let pending = tokio::spawn({
            let control = control.clone();
            async move { control.before_response(&[]).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!pending.is_finished());
        control
            .update(FaultsPatch {
                hang: Some(false),
                ..FaultsPatch::default()
            })
            .unwrap();
        assert_eq!(pending.await.unwrap(), None);
    }

    #[tokio::test]
    async fn stalled_bodies_are_released_when_stall_body_is_lifted() {
        let control = control(Faults {
            stall_body: true,
            ..Faults::default()
        });
        let released = tokio::spawn(control.body_released());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!released.is_finished());
        // Other faults changing does not release it.
        control
            .update(FaultsPatch {
                latency_ms: Some(1),
                ..FaultsPatch::default()
            })
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!released.is_finished());
        control
            .update(FaultsPatch {
                stall_body: Some(false),
                ..FaultsPatch::default()
            })
            .unwrap();
        released.await.unwrap();
        // Not stalled: resolves at once.
        control.body_released().await;
    }

    #[tokio::test]
    async fn fail_field_fails_the_next_requests_selecting_it() {
        let control = control(Faults::default());
        let patch: FaultsPatch =
            serde_json::from_str(r#"{"fail_field":"release","fail_times":3,"fail_status":500}"#)
                .unwrap();
        let f = control.update(patch).unwrap();
        assert_eq!(
            (f.fail_field.as_deref(), f.fail_times, f.fail_status),
            (Some("release"), 3, 500)
        );
        // Other fields pass and do not count down.
        assert_eq!(control.before_response(&fields(&["reserve"])).await, None);
        assert_eq!(control.before_response(&[]).await, None);
        for left in [2, 1, 0] {
            assert_eq!(
                control.before_response(&fields(&["echo", "release"])).await,
                Some(StatusCode::INTERNAL_SERVER_ERROR)
            );
            assert_eq!(control.current().fail_times, left);
        }
        assert_eq!(control.before_response(&fields(&["release"])).await, None);
        assert_eq!(control.current().fail_field.as_deref(), Some("release"));
    }

    #[test]
    fn fail_field_settings_are_checked() {
        let control = control(Faults::default());
        let unknown = FaultsPatch {
            fail_field: Some("releas".into()),
            fail_times: Some(1),
            ..FaultsPatch::default()
        };
        assert_eq!(
            control.update(unknown),
            Err(FaultError::UnknownField("releas".into()))
        );
        let orphan = FaultsPatch {
            fail_times: Some(1),
            ..FaultsPatch::default()
        };
        assert_eq!(
            control.update(orphan),
            Err(FaultError::FailTimesWithoutField)
        );
        let bad_status = FaultsPatch {
            fail_field: Some("release".into()),
            fail_status: Some(7),
            ..FaultsPatch::default()
        };
        assert_eq!(control.update(bad_status), Err(FaultError::FailStatus(7)));
        assert_eq!(control.current(), Faults::default());
        let err = serde_json::from_str::<FaultsPatch>(r#"{"fail_fields":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }
}
