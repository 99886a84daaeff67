//! edgectl: the operator CLI of fraiseql-edge, over the daemon's gRPC
//! control API (`fraiseql.edge.v1.EdgeControl`).
//!
//! A run checks its arguments ([`commands::Call::prepare`]), reads the
//! token, connects ([`connect::Session`]), makes one call (or follows one
//! stream) and prints the answer ([`render`]). Every failure is one line on
//! stderr and an exit code from [`exit::Exit`].

#![forbid(unsafe_code)]

mod cli;
mod commands;
mod connect;
mod exit;
mod render;
mod validate;

use std::{process::ExitCode, time::Duration};

use clap::{CommandFactory, FromArgMatches};

use crate::{
    cli::Cli,
    commands::Call,
    connect::{Bearer, Session, Target},
    exit::{Error, Exit},
    render::Output,
};

fn main() -> ExitCode {
    let matches = Cli::command().after_help(Exit::help()).get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            return fail(&Error::new(
                Exit::Failure,
                format!("starting the runtime: {e}"),
            ));
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e),
    }
}

/// Checks, connects, calls, prints: in this order, so that a bad value
/// (exit 5) or a missing token (exit 4) is reported without a daemon.
async fn run(cli: Cli) -> Result<(), Error> {
    let call = Call::prepare(&cli.command)?;
    let target = Target::of(&cli.global)?;
    let token = Bearer::of(&cli.global)?;
    let timeout = Duration::from_secs(cli.global.timeout);
    let session = Session::connect(target, token, timeout).await?;
    call.run(
        &session,
        Output {
            json: cli.global.json,
        },
    )
    .await
}

fn fail(e: &Error) -> ExitCode {
    eprintln!("edgectl: {}", e.message);
    ExitCode::from(e.exit.code())
}
