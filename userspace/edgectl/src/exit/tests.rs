use tonic::{Code, Status};

use super::{Error, Exit, chain};

#[test]
fn codes_are_stable_and_distinct() {
    let codes: Vec<u8> = Exit::ALL.iter().map(|(e, _)| e.code()).collect();
    assert_eq!(codes, [0, 1, 2, 3, 4, 5, 6, 7]);
}

#[test]
fn status_codes_map_to_their_exit_code() {
    let cases = [
        (Code::Ok, Exit::Ok),
        (Code::Unavailable, Exit::Unreachable),
        (Code::Unauthenticated, Exit::Auth),
        (Code::PermissionDenied, Exit::Auth),
        (Code::InvalidArgument, Exit::InvalidArgument),
        (Code::OutOfRange, Exit::InvalidArgument),
        (Code::NotFound, Exit::NotFound),
        (Code::FailedPrecondition, Exit::FailedPrecondition),
        (Code::Internal, Exit::Failure),
        (Code::Unknown, Exit::Failure),
        (Code::Unimplemented, Exit::Failure),
        (Code::DeadlineExceeded, Exit::Failure),
        (Code::ResourceExhausted, Exit::Failure),
    ];
    for (code, exit) in cases {
        assert_eq!(Exit::of_status(code), exit, "{code:?}");
    }
}

#[test]
fn unreachable_names_the_target() {
    let e = Error::from_status(&Status::unavailable("connection refused"), &"127.0.0.1:1");
    assert_eq!(e.exit, Exit::Unreachable);
    assert_eq!(
        e.message,
        "daemon unreachable at 127.0.0.1:1: connection refused"
    );
}

#[test]
fn a_broken_connection_is_unreachable_whatever_its_code() {
    let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset");
    let mut status = Status::unknown("h2 protocol error: error reading a body from connection");
    status.set_source(std::sync::Arc::new(io));
    let e = Error::from_status(&status, &"unix socket /run/x.sock");
    assert_eq!(e.exit, Exit::Unreachable);
    assert_eq!(
        e.message,
        "lost the connection to the daemon at unix socket /run/x.sock: \
         h2 protocol error: error reading a body from connection"
    );
    // The same code sent by the daemon (no source) is its own answer.
    let e = Error::from_status(&Status::unknown("boom"), &"x");
    assert_eq!((e.exit, e.message.as_str()), (Exit::Failure, "boom"));
}

#[test]
fn server_messages_are_kept() {
    let e = Error::from_status(&Status::not_found("no subgraph `nope`"), &"x");
    assert_eq!(
        (e.exit, e.message.as_str()),
        (Exit::NotFound, "no subgraph `nope`")
    );
    let e = Error::from_status(&Status::permission_denied("read-only token"), &"x");
    assert_eq!(e.exit, Exit::Auth);
    assert_eq!(e.message, "permission denied: read-only token");
    let e = Error::from_status(&Status::internal(""), &"x");
    assert_eq!(e.message, "Internal error");
}

#[test]
fn help_lists_every_code() {
    let help = Exit::help();
    for (exit, meaning) in Exit::ALL {
        assert!(
            help.contains(&format!("  {}  {meaning}\n", exit.code())),
            "{help}"
        );
    }
}

#[test]
fn readme_documents_every_code() {
    let readme = include_str!("../../README.md");
    for (exit, meaning) in Exit::ALL {
        let row = format!("| {} | {meaning} |", exit.code());
        assert!(readme.contains(&row), "README.md lacks the row `{row}`");
    }
}

#[test]
fn chain_shows_the_cause_once() {
    let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
    #[derive(Debug, thiserror::Error)]
    #[error("transport error")]
    struct Outer(#[source] std::io::Error);
    assert_eq!(
        chain(&Outer(io)),
        "transport error: No such file or directory"
    );
}
