//! `pg-server`: a private PostgreSQL cluster ([`fraiseql_edge_tests::postgres`])
//! for `cargo xtask bench sagas`. Prints `pg-server ready URL` (database
//! `bench`) once it accepts connections, then runs until SIGTERM or SIGINT
//! and stops the cluster on the way out.

use fraiseql_edge_tests::postgres::Postgres;
use nix::sys::signal::{SigSet, Signal};

fn main() {
    // Blocked before anything starts, so the signal is waited for below
    // instead of killing the process with the cluster still running.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    if let Err(e) = signals.thread_block() {
        eprintln!("pg-server: blocking signals: {e}");
        std::process::exit(1);
    }
    let Some(pg) = Postgres::start() else {
        eprintln!("pg-server: no PostgreSQL server binaries (run `cargo xtask setup` as root)");
        std::process::exit(1);
    };
    let url = pg.create_database("bench");
    println!("pg-server ready {url}");
    let got = signals.wait();
    eprintln!("pg-server: {got:?}: stopping the cluster");
    drop(pg);
}
