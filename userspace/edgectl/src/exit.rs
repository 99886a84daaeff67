//! The exit codes of `edgectl` and the one error type every command
//! returns. The mapping from gRPC status codes to exit codes lives here and
//! nowhere else; `edgectl --help` and the README print [`Exit::ALL`].

use std::fmt;

use tonic::Code;

/// What an `edgectl` run ended with. The numbers are a stable interface:
/// scripts branch on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Done.
    Ok = 0,
    /// Any failure without a code of its own.
    Failure = 1,
    /// Bad command line (clap's own exit code).
    Usage = 2,
    /// The daemon could not be reached: connect failure or UNAVAILABLE.
    Unreachable = 3,
    /// No usable token, UNAUTHENTICATED or PERMISSION_DENIED.
    Auth = 4,
    /// A value the client or the daemon refused (INVALID_ARGUMENT).
    InvalidArgument = 5,
    /// No such subgraph, override or block (NOT_FOUND).
    NotFound = 6,
    /// The part of the daemon the call needs is not running
    /// (FAILED_PRECONDITION, e.g. no kernel layer).
    FailedPrecondition = 7,
}

impl Exit {
    /// Every exit code, in order, with its one-line meaning.
    pub const ALL: [(Exit, &'static str); 8] = [
        (Exit::Ok, "ok"),
        (Exit::Failure, "other failure"),
        (Exit::Usage, "usage error (bad command line)"),
        (
            Exit::Unreachable,
            "daemon unreachable (connect failure or UNAVAILABLE)",
        ),
        (
            Exit::Auth,
            "authentication or permission (no or unreadable token, UNAUTHENTICATED, PERMISSION_DENIED)",
        ),
        (
            Exit::InvalidArgument,
            "invalid argument (refused by edgectl before connecting, or INVALID_ARGUMENT)",
        ),
        (
            Exit::NotFound,
            "not found (NOT_FOUND, e.g. unknown subgraph)",
        ),
        (
            Exit::FailedPrecondition,
            "failed precondition (FAILED_PRECONDITION, e.g. no kernel layer)",
        ),
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code of a gRPC status the daemon returned.
    pub fn of_status(code: Code) -> Self {
        match code {
            Code::Ok => Exit::Ok,
            Code::Unavailable => Exit::Unreachable,
            Code::Unauthenticated | Code::PermissionDenied => Exit::Auth,
            Code::InvalidArgument | Code::OutOfRange => Exit::InvalidArgument,
            Code::NotFound => Exit::NotFound,
            Code::FailedPrecondition => Exit::FailedPrecondition,
            Code::Cancelled
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::AlreadyExists
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Unimplemented
            | Code::Internal
            | Code::DataLoss => Exit::Failure,
        }
    }

    /// The "Exit codes" section of `edgectl --help`.
    pub fn help() -> String {
        let mut text = String::from("Exit codes:\n");
        for (exit, meaning) in Self::ALL {
            text += &format!("  {}  {meaning}\n", exit.code());
        }
        text
    }
}

/// Why a run failed: the exit code and the one line printed after
/// `edgectl: ` on stderr.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    /// The exit code.
    pub exit: Exit,
    /// What went wrong, for the operator.
    pub message: String,
}

impl Error {
    /// An error with `exit` and `message`.
    pub fn new(exit: Exit, message: impl fmt::Display) -> Self {
        Self {
            exit,
            message: message.to_string(),
        }
    }

    /// A value refused before anything is sent.
    pub fn invalid(message: impl fmt::Display) -> Self {
        Self::new(Exit::InvalidArgument, message)
    }

    /// A failed call: `status` from the daemon at `target` (named when the
    /// daemon is unreachable, so the operator sees what was tried).
    ///
    /// A status that wraps a transport error was made by the client when
    /// the connection broke (the daemon exited or crashed mid-call, an
    /// `h2 protocol error`), not sent by the daemon: that is "unreachable"
    /// too, whatever code tonic gave it.
    pub fn from_status(status: &tonic::Status, target: &dyn fmt::Display) -> Self {
        let what = status.message();
        let broken = std::error::Error::source(status).is_some()
            && matches!(
                status.code(),
                Code::Unknown | Code::Unavailable | Code::Cancelled
            );
        if broken {
            return Self::new(
                Exit::Unreachable,
                format!("lost the connection to the daemon at {target}: {what}"),
            );
        }
        let exit = Exit::of_status(status.code());
        let message = match status.code() {
            Code::Unavailable => format!("daemon unreachable at {target}: {what}"),
            Code::Unauthenticated => format!("authentication failed: {what}"),
            Code::PermissionDenied => format!("permission denied: {what}"),
            Code::Unimplemented => {
                format!("not implemented by this daemon: {what}")
            }
            Code::DeadlineExceeded => format!("the daemon did not answer in time: {what}"),
            _ if what.is_empty() => format!("{}", status.code()),
            _ => what.to_string(),
        };
        Self::new(exit, message)
    }
}

/// `err` and every error it wraps, joined with `: ` (tonic's transport
/// errors hide the cause, e.g. "No such file or directory", in the chain).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let next = e.to_string();
        if !text.contains(&next) {
            text += ": ";
            text += &next;
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests;
