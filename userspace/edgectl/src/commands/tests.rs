use clap::Parser;
use fraiseql_edge_api::v1::{
    BlockRequest, BreakerAction, EventKind, Override, OverrideAction, SetBreakerRequest,
    SetKernelLimitsRequest, SetRateLimitRequest,
};

use super::Call;
use crate::{cli::Cli, exit::Exit};

fn parse(args: &[&str]) -> Cli {
    Cli::try_parse_from(std::iter::once("edgectl").chain(args.iter().copied()))
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn prepare(args: &[&str]) -> Result<Call, crate::exit::Error> {
    Call::prepare(&parse(args).command)
}

#[track_caller]
fn invalid(args: &[&str], needle: &str) {
    match prepare(args) {
        Ok(call) => panic!("{args:?} accepted: {call:?}"),
        Err(e) => {
            assert_eq!(e.exit, Exit::InvalidArgument, "{args:?}: {e}");
            assert!(e.message.contains(needle), "{args:?}: {e}");
        }
    }
}

/// A mistake in the shape of the command line: clap's exit code 2.
#[track_caller]
fn usage(args: &[&str]) {
    let e = Cli::try_parse_from(std::iter::once("edgectl").chain(args.iter().copied()))
        .expect_err("a usage error");
    assert_eq!(
        e.exit_code(),
        i32::from(Exit::Usage.code()),
        "{args:?}: {e}"
    );
}

#[test]
fn requests_carry_the_checked_values() {
    assert_eq!(prepare(&["status"]).unwrap(), Call::Status);
    assert_eq!(
        prepare(&["block", "192.0.2.7", "--ttl", "60", "--reason", "abuse"]).unwrap(),
        Call::Block(BlockRequest {
            address: "192.0.2.7".into(),
            ttl_seconds: Some(60),
            reason: "abuse".into(),
        })
    );
    assert_eq!(
        prepare(&[
            "overrides",
            "add",
            "2001:DB8::/32",
            "--action",
            "limit",
            "--rate",
            "5"
        ])
        .unwrap(),
        Call::AddOverride(Override {
            cidr: "2001:db8::/32".into(),
            action: OverrideAction::Limit as i32,
            rate: Some(5),
            burst: None,
            max_conns: None,
        })
    );
    assert_eq!(
        prepare(&["limits", "set", "kernel", "--max-conns", "0"]).unwrap(),
        Call::SetKernelLimits(SetKernelLimitsRequest {
            rate: None,
            burst: None,
            max_conns: Some(0),
        })
    );
    assert_eq!(
        prepare(&["limits", "set", "rate", "--rpm", "120"]).unwrap(),
        Call::SetRateLimit(SetRateLimitRequest {
            subgraph: String::new(),
            requests_per_minute: Some(120),
            burst: None,
            inherit: false,
        })
    );
    assert_eq!(
        prepare(&["limits", "set", "rate", "--subgraph", "users", "--inherit"]).unwrap(),
        Call::SetRateLimit(SetRateLimitRequest {
            subgraph: "users".into(),
            requests_per_minute: None,
            burst: None,
            inherit: true,
        })
    );
    assert_eq!(
        prepare(&["breaker", "users", "open"]).unwrap(),
        Call::SetBreaker(SetBreakerRequest {
            subgraph: "users".into(),
            action: BreakerAction::Open as i32,
        })
    );
    assert_eq!(
        prepare(&[
            "watch", "--kind", "block", "--kind", "drop", "--kind", "block", "--count", "2"
        ])
        .unwrap(),
        Call::Watch {
            kinds: vec![EventKind::Drop, EventKind::Block],
            count: Some(2),
        }
    );
    for spelling in ["config_change", "config-change"] {
        assert_eq!(
            prepare(&["watch", "--kind", spelling]).unwrap(),
            Call::Watch {
                kinds: vec![EventKind::ConfigChange],
                count: None,
            }
        );
    }
    assert_eq!(
        prepare(&["overrides", "remove", "192.0.2.7"]).unwrap(),
        Call::RemoveOverride("192.0.2.7/32".into())
    );
    assert_eq!(prepare(&["top"]).unwrap(), Call::Top(20));
    assert_eq!(prepare(&["slow"]).unwrap(), Call::Slow(0));
    assert_eq!(
        prepare(&["metrics", "--prefix", "fraiseql_edge_"]).unwrap(),
        Call::Metrics("fraiseql_edge_".into())
    );
}

#[test]
fn bad_values_are_refused_before_connecting() {
    invalid(&["block", "10.0.0.0/8"], "not a network");
    invalid(&["block", "nope"], "is not an IP address");
    invalid(&["block", "192.0.2.7", "--ttl", "0"], "--ttl 0");
    invalid(&["unblock", "192.0.2"], "is not an IP address");
    invalid(
        &["overrides", "add", "10.0.0.0/33", "--action", "deny"],
        "not a CIDR",
    );
    invalid(
        &["overrides", "add", "10.0.0.1/8", "--action", "deny"],
        "host bits",
    );
    invalid(
        &[
            "overrides",
            "add",
            "10.0.0.0/8",
            "--action",
            "allow",
            "--rate",
            "5",
        ],
        "only apply to --action limit",
    );
    invalid(&["overrides", "remove", "banana"], "not a CIDR");
    invalid(&["top", "--limit", "0"], "--limit 0");
    invalid(&["top", "--limit", "10001"], "--limit 10001");
    invalid(&["limits", "set", "kernel"], "nothing to change");
    invalid(&["limits", "set", "rate"], "nothing to change");
    invalid(&["breaker", "", "open"], "subgraph name is empty");
    invalid(&["watch", "--count", "0"], "--count 0");
}

#[test]
fn shape_mistakes_are_usage_errors() {
    usage(&[]);
    usage(&["frobnicate"]);
    usage(&["limits", "set", "rate", "--inherit"]);
    usage(&[
        "limits",
        "set",
        "rate",
        "--subgraph",
        "users",
        "--inherit",
        "--rpm",
        "1",
    ]);
    usage(&["breaker", "users", "sideways"]);
    usage(&["overrides", "add", "10.0.0.0/8"]);
    usage(&["watch", "--kind", "everything"]);
    usage(&["block", "192.0.2.7", "--ttl", "-1"]);
    usage(&["status", "--timeout", "0"]);
}

#[test]
fn global_options_go_anywhere() {
    let cli = parse(&[
        "--json",
        "blocks",
        "--addr",
        "127.0.0.1:50051",
        "--timeout",
        "3",
    ]);
    assert!(cli.global.json);
    assert_eq!(cli.global.addr.as_deref(), Some("127.0.0.1:50051"));
    assert_eq!(cli.global.timeout, 3);
}

#[test]
fn the_cli_definition_is_consistent() {
    use clap::CommandFactory;
    Cli::command().debug_assert();
}

/// Every RPC of the proto has a subcommand, listed in the README's table
/// (a new RPC fails this test until edgectl and its README cover it).
#[test]
fn every_rpc_has_a_subcommand() {
    let proto = include_str!("../../../../proto/fraiseql/edge/v1/control.proto");
    let readme = include_str!("../../README.md");
    let rpcs: Vec<&str> = proto
        .lines()
        .filter_map(|l| l.trim().strip_prefix("rpc "))
        .filter_map(|l| l.split('(').next())
        .collect();
    assert_eq!(rpcs.len(), 21, "{rpcs:?}");
    for rpc in rpcs {
        assert!(
            readme.contains(&format!("` | {rpc} |")),
            "README.md has no subcommand row for {rpc}"
        );
    }
}

#[test]
fn saga_commands_check_their_ids_and_states() {
    let id = "0123456789abcdef0123456789ABCDEF";
    assert_eq!(
        prepare(&["sagas", "show", id]).unwrap(),
        Call::GetSaga(id.to_ascii_lowercase())
    );
    assert_eq!(
        prepare(&["sagas", "retry", id]).unwrap(),
        Call::RetrySaga(id.to_ascii_lowercase())
    );
    assert_eq!(
        prepare(&["sagas", "cancel", id]).unwrap(),
        Call::CancelSaga(id.to_ascii_lowercase())
    );
    assert_eq!(
        prepare(&["sagas", "list", "--state", "failed", "--limit", "5"]).unwrap(),
        Call::ListSagas(fraiseql_edge_api::v1::ListSagasRequest {
            state: "Failed".into(),
            limit: 5
        })
    );
    invalid(&["sagas", "show", "1234"], "not a saga id");
    invalid(
        &["sagas", "cancel", "zz23456789abcdef0123456789abcdef"],
        "not a saga id",
    );
    invalid(&["sagas", "list", "--state", "Done"], "unknown saga state");
    invalid(&["sagas", "list", "--limit", "0"], "--limit");
    usage(&["sagas", "show"]);
    usage(&["sagas", "purge"]);
}
