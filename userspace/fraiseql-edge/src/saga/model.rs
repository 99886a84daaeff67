//! The saga model: the states a saga and its steps go through (FraiseQL's
//! names), the moves allowed between them, the ids, and the records the log
//! keeps.
//!
//! The transition tables ([`SagaState::can_move_to`],
//! [`StepState::can_move_to`]) say which moves exist at all; the extra
//! conditions that depend on the rest of the saga (every step completed,
//! the saga parked, attempts numbered without gaps) are checked by
//! `saga::moves`, which every store runs inside its write transaction.

use std::{fmt, str::FromStr};

use serde_json::Value;

/// A saga's state, as FraiseQL names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SagaState {
    /// Written, not started.
    Pending,
    /// Its steps are being run, in order.
    Executing,
    /// Every step completed.
    Completed,
    /// A rollback could not finish: some compensations were given up. The
    /// saga is then always parked and `partially_compensated` (FraiseQL's
    /// `Failed` + `PartiallyCompensated`); only an operator moves it on.
    Failed,
    /// A step failed; the completed steps are being undone in reverse order.
    Compensating,
    /// Every completed step was undone.
    Compensated,
    /// Withdrawn before it started, or closed by an operator while parked.
    Cancelled,
}

impl SagaState {
    /// Every state, in the order of the enum.
    pub const ALL: [SagaState; 7] = [
        SagaState::Pending,
        SagaState::Executing,
        SagaState::Completed,
        SagaState::Failed,
        SagaState::Compensating,
        SagaState::Compensated,
        SagaState::Cancelled,
    ];

    /// The state's name (what the log, the API and the metrics use).
    pub const fn as_str(self) -> &'static str {
        match self {
            SagaState::Pending => "Pending",
            SagaState::Executing => "Executing",
            SagaState::Completed => "Completed",
            SagaState::Failed => "Failed",
            SagaState::Compensating => "Compensating",
            SagaState::Compensated => "Compensated",
            SagaState::Cancelled => "Cancelled",
        }
    }

    /// The state named `name` (exactly as [`as_str`](Self::as_str) spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether no executor or recovery will move the saga again. `Failed` is
    /// terminal too: it leaves only by an operator's hand (retry, cancel).
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            SagaState::Completed
                | SagaState::Failed
                | SagaState::Compensated
                | SagaState::Cancelled
        )
    }

    /// The saga transition table: whether a move from `self` to `to` exists.
    ///
    /// | from | to | when |
    /// |---|---|---|
    /// | Pending | Executing | the executor starts the first step |
    /// | Pending | Cancelled | withdrawn before any step was sent |
    /// | Executing | Completed | every step completed |
    /// | Executing | Compensating | a step failed (its outcome known, none in doubt) |
    /// | Executing | Cancelled | an operator closes a *parked* saga, accepting what its completed steps did |
    /// | Compensating | Compensated | every completed step's compensation succeeded |
    /// | Compensating | Failed | compensation given up: parked, partially compensated (only through `park`) |
    /// | Compensating | Cancelled | an operator closes a *parked* saga |
    /// | Failed | Compensating | an operator retries the rollback (only through `unpark`) |
    /// | Failed | Cancelled | an operator closes it, accepting the partial rollback |
    ///
    /// Every other move is refused; in particular nothing leaves
    /// `Completed`, `Compensated` or `Cancelled`, and nothing goes back to
    /// `Pending` or from compensating to executing. The one way back,
    /// `Failed → Compensating`, needs an operator.
    pub const fn can_move_to(self, to: SagaState) -> bool {
        use SagaState::*;
        matches!(
            (self, to),
            (Pending, Executing | Cancelled)
                | (Executing, Completed | Compensating | Cancelled)
                | (Compensating, Compensated | Failed | Cancelled)
                | (Failed, Compensating | Cancelled)
        )
    }
}

impl fmt::Display for SagaState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A step's state, as FraiseQL names it. While its compensation runs a step
/// stays `Completed` (its effect stands until undone); the compensation's
/// progress is in [`StepRecord::compensation_attempt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StepState {
    /// Not sent yet.
    Pending,
    /// An attempt is (or, after a crash, may have been) sent: in doubt until
    /// its outcome is written.
    Executing,
    /// The subgraph answered with usable data.
    Completed,
    /// The step failed for good (no retry left, or an answer that retrying
    /// cannot change).
    Failed,
    /// Its compensation succeeded.
    Compensated,
}

impl StepState {
    /// Every state, in the order of the enum.
    pub const ALL: [StepState; 5] = [
        StepState::Pending,
        StepState::Executing,
        StepState::Completed,
        StepState::Failed,
        StepState::Compensated,
    ];

    /// The state's name.
    pub const fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "Pending",
            StepState::Executing => "Executing",
            StepState::Completed => "Completed",
            StepState::Failed => "Failed",
            StepState::Compensated => "Compensated",
        }
    }

    /// The state named `name` (exactly as [`as_str`](Self::as_str) spells it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// Whether the step can never move again. FraiseQL compensates the
    /// completed steps only, so a `Failed` step is final.
    pub const fn is_terminal(self) -> bool {
        matches!(self, StepState::Failed | StepState::Compensated)
    }

    /// The step transition table: whether a move from `self` to `to` exists.
    ///
    /// | from | to | when |
    /// |---|---|---|
    /// | Pending | Executing | attempt 1 is about to be sent |
    /// | Executing | Executing | another attempt (a retry, or recovery re-sending an in-doubt one with the same key); the attempt number grows by one |
    /// | Executing | Completed | the subgraph answered with usable data |
    /// | Executing | Failed | no retry left, or an answer retrying cannot change |
    /// | Completed | Compensated | its compensation succeeded |
    pub const fn can_move_to(self, to: StepState) -> bool {
        use StepState::*;
        matches!(
            (self, to),
            (Pending, Executing)
                | (Executing, Executing | Completed | Failed)
                | (Completed, Compensated)
        )
    }
}

impl fmt::Display for StepState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A saga's id: 128 random bits, written as 32 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SagaId([u8; 16]);

impl SagaId {
    /// A new random id (from the operating system's generator).
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut bytes = [0; 16];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        Self(bytes)
    }

    /// The id's bytes.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for SagaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SagaId({self})")
    }
}

/// Not a saga id (32 hex digits).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("not a saga id (32 hex digits): {0:?}")]
pub struct BadSagaId(pub String);

impl FromStr for SagaId {
    type Err = BadSagaId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BadSagaId(s.to_owned());
        if s.len() != 32 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut bytes = [0; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Self(bytes))
    }
}

/// A saga as submitted, before it has an id.
#[derive(Clone, Debug, PartialEq)]
pub struct NewSaga {
    /// The client's idempotency key (the API decides its scope, e.g. the
    /// caller's identity and the `Idempotency-Key` header).
    pub client_key: String,
    /// SHA-256 of the submitted body: the same key with another body is a
    /// conflict.
    pub body_sha256: [u8; 32],
    /// The identity headers forwarded to the subgraphs, as name/value pairs.
    pub identity_headers: Vec<(String, String)>,
    /// The steps, in the order they run.
    pub steps: Vec<NewStep>,
}

/// One step as submitted.
#[derive(Clone, Debug, PartialEq)]
pub struct NewStep {
    /// The subgraph the mutation goes to.
    pub subgraph: String,
    /// The mutation's document.
    pub mutation: String,
    /// The mutation's variables (a JSON object, or null).
    pub variables: Value,
    /// The compensating mutation's document.
    pub compensation: String,
    /// The compensating mutation's variables.
    pub compensation_variables: Value,
}

/// A saga as the log holds it (without its steps).
#[derive(Clone, Debug, PartialEq)]
pub struct SagaRecord {
    /// Its id.
    pub id: SagaId,
    /// The client's idempotency key.
    pub client_key: String,
    /// SHA-256 of the submitted body.
    pub body_sha256: [u8; 32],
    /// The identity headers forwarded to the subgraphs.
    pub identity_headers: Vec<(String, String)>,
    /// Where it is.
    pub state: SagaState,
    /// Left for an operator: no executor or recovery drives it until an
    /// operator retries (`unpark`) or cancels it.
    pub parked: bool,
    /// A rollback could not finish (only with [`SagaState::Failed`]).
    pub partially_compensated: bool,
    /// Why it was parked, or the error that made it fail.
    pub last_error: Option<String>,
    /// How many steps it has.
    pub step_count: u32,
    /// When it was written (Unix time, milliseconds).
    pub created_ms: u64,
    /// When it or one of its steps last changed (Unix time, milliseconds).
    pub updated_ms: u64,
}

/// One step as the log holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct StepRecord {
    /// Its saga.
    pub saga_id: SagaId,
    /// Its place in the saga, from 0.
    pub index: u32,
    /// The subgraph the mutation goes to.
    pub subgraph: String,
    /// The mutation's document.
    pub mutation: String,
    /// The mutation's variables.
    pub variables: Value,
    /// The compensating mutation's document.
    pub compensation: String,
    /// The compensating mutation's variables.
    pub compensation_variables: Value,
    /// Where it is.
    pub state: StepState,
    /// Attempts at the mutation written so far (0: never sent).
    pub attempt: u32,
    /// Attempts at the compensation written so far (0: never sent).
    pub compensation_attempt: u32,
    /// Why it (or its last compensation attempt) failed.
    pub last_error: Option<String>,
    /// The mutation's `data`, once completed.
    pub result: Option<Value>,
    /// When it last changed (Unix time, milliseconds).
    pub updated_ms: u64,
}

impl StepRecord {
    /// The `Idempotency-Key` every attempt at the mutation carries:
    /// `<saga-id>:<index>` (FraiseQL's step id).
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}", self.saga_id, self.index)
    }

    /// The `Idempotency-Key` every attempt at the compensation carries:
    /// `<saga-id>:<index>:compensate`.
    pub fn compensation_key(&self) -> String {
        format!("{}:{}:compensate", self.saga_id, self.index)
    }
}

/// A saga with its steps, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Saga {
    /// The saga.
    pub record: SagaRecord,
    /// Its steps, by index.
    pub steps: Vec<StepRecord>,
}

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_exactly() {
        for s in SagaState::ALL {
            assert_eq!(SagaState::parse(s.as_str()), Some(s));
            assert_eq!(s.to_string(), s.as_str());
        }
        for s in StepState::ALL {
            assert_eq!(StepState::parse(s.as_str()), Some(s));
        }
        assert_eq!(SagaState::parse("pending"), None);
        assert_eq!(SagaState::parse("PartiallyCompensated"), None);
        assert_eq!(StepState::parse("Compensating"), None);
    }

    #[test]
    fn the_saga_table_only_moves_forward() {
        use SagaState::*;
        let allowed: Vec<(SagaState, SagaState)> = SagaState::ALL
            .into_iter()
            .flat_map(|a| SagaState::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.can_move_to(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Pending, Executing),
                (Pending, Cancelled),
                (Executing, Completed),
                (Executing, Compensating),
                (Executing, Cancelled),
                (Failed, Compensating),
                (Failed, Cancelled),
                (Compensating, Failed),
                (Compensating, Compensated),
                (Compensating, Cancelled),
            ]
        );
        for s in [Completed, Compensated, Cancelled] {
            assert!(s.is_terminal());
            assert!(SagaState::ALL.iter().all(|t| !s.can_move_to(*t)), "{s}");
        }
        assert!(Failed.is_terminal());
        for s in [Pending, Executing, Compensating] {
            assert!(!s.is_terminal());
            assert!(!s.can_move_to(Pending));
        }
    }

    #[test]
    fn the_step_table() {
        use StepState::*;
        assert!(Pending.can_move_to(Executing));
        assert!(Executing.can_move_to(Executing));
        assert!(Executing.can_move_to(Completed));
        assert!(Executing.can_move_to(Failed));
        assert!(Completed.can_move_to(Compensated));
        assert!(!Pending.can_move_to(Completed));
        assert!(!Pending.can_move_to(Compensated));
        assert!(!Failed.can_move_to(Compensated));
        assert!(!Completed.can_move_to(Executing));
        for s in [Failed, Compensated] {
            assert!(s.is_terminal());
            assert!(StepState::ALL.iter().all(|t| !s.can_move_to(*t)), "{s}");
        }
    }

    #[test]
    fn ids_are_random_hex_and_parse_back() {
        let a = SagaId::random().unwrap();
        let b = SagaId::random().unwrap();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert!(
            text.bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
        );
        assert_eq!(text.parse::<SagaId>(), Ok(a));
        assert_eq!(text.to_uppercase().parse::<SagaId>(), Ok(a));
        assert!("abc".parse::<SagaId>().is_err());
        assert!("zz".repeat(16).parse::<SagaId>().is_err());
        assert!("é".repeat(16).parse::<SagaId>().is_err());
        assert!("+a".repeat(16).parse::<SagaId>().is_err());
    }

    #[test]
    fn idempotency_keys() {
        let id: SagaId = "000102030405060708090a0b0c0d0e0f".parse().unwrap();
        let step = StepRecord {
            saga_id: id,
            index: 2,
            subgraph: "orders".into(),
            mutation: "mutation { a }".into(),
            variables: Value::Null,
            compensation: "mutation { b }".into(),
            compensation_variables: Value::Null,
            state: StepState::Pending,
            attempt: 0,
            compensation_attempt: 0,
            last_error: None,
            result: None,
            updated_ms: 0,
        };
        assert_eq!(step.idempotency_key(), "000102030405060708090a0b0c0d0e0f:2");
        assert_eq!(
            step.compensation_key(),
            "000102030405060708090a0b0c0d0e0f:2:compensate"
        );
    }
}
