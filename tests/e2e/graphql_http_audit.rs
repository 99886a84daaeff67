//! The graphql-http server audit (GraphQL-over-HTTP conformance, the npm
//! package run by `tests/audit/audit.mjs`) through a real edge in front of a
//! real demo subgraph, and directly against the subgraph for comparison.
//!
//! Through the edge: no `error`; every `warn` is in [`ALLOWED_WARNINGS`]
//! with the reason the edge cannot fix it; and no audit is worse through the
//! edge than directly (that difference is the edge's doing).
//!
//! Five of the audits send `__type(name:)`, an introspection query, which the
//! edge refuses by default (`[graphql] introspection = false`, a policy, not
//! a protocol matter). The audited edge allows introspection so that those
//! audits judge the protocol; a second edge with the default policy must
//! differ from it only by `INTROSPECTION_DISABLED` refusals.

use std::collections::BTreeMap;

use fraiseql_edge_tests::{
    http_audit::{AuditResult, Auditor, Status},
    subgraphs::{DemoSubgraph, Edge, ProxySetup, SubgraphSpec},
};

use crate::proxy_e2e::serial;

/// Warnings through the edge that the edge cannot fix: (audit id, why),
/// e.g. `("22EB", "the subgraph answers application/json whatever the Accept;
/// the edge forwards its answer and content type as they are")`. Empty: the
/// demo subgraph passes every audit's SHOULD. An entry that stops warning
/// fails the test, so the list stays true.
const ALLOWED_WARNINGS: &[(&str, &str)] = &[];

/// The audit results by id.
fn by_id(results: &[AuditResult]) -> BTreeMap<&str, &AuditResult> {
    results.iter().map(|r| (r.id.as_str(), r)).collect()
}

fn print_report(what: &str, results: &[AuditResult]) {
    let count = |s: Status| results.iter().filter(|r| r.status == s).count();
    eprintln!(
        "graphql-http audit {what}: {} ok, {} notice, {} warn, {} error",
        count(Status::Ok),
        count(Status::Notice),
        count(Status::Warn),
        count(Status::Error)
    );
    for r in results.iter().filter(|r| r.status != Status::Ok) {
        eprintln!("  {r}");
    }
}

/// What is wrong with the results through the edge, one line per finding.
fn findings(via_edge: &[AuditResult], direct: &[AuditResult]) -> Vec<String> {
    let direct = by_id(direct);
    let allowed: BTreeMap<&str, &str> = ALLOWED_WARNINGS.iter().copied().collect();
    let mut out = Vec::new();
    for r in via_edge {
        let before = direct.get(r.id.as_str()).map_or(Status::Ok, |d| d.status);
        if r.status >= Status::Warn && r.status > before {
            out.push(format!(
                "{} through the edge but {before} directly (the edge's doing): {r}",
                r.status
            ));
        } else if r.status == Status::Error {
            out.push(format!("error through the edge: {r}"));
        } else if r.status == Status::Warn && !allowed.contains_key(r.id.as_str()) {
            out.push(format!("warn not in ALLOWED_WARNINGS: {r}"));
        }
    }
    let edge = by_id(via_edge);
    for (id, why) in ALLOWED_WARNINGS {
        if edge.get(id).is_none_or(|r| r.status != Status::Warn) {
            out.push(format!(
                "{id} no longer warns through the edge: remove it from ALLOWED_WARNINGS ({why})"
            ));
        }
    }
    out
}

#[test]
fn graphql_http_audit_through_the_edge_finds_nothing_the_edge_can_fix() {
    const TEST: &str = "graphql_http_audit_through_the_edge_finds_nothing_the_edge_can_fix";
    let Some(auditor) = Auditor::get(TEST) else {
        return;
    };
    let _serial = serial();
    let users = DemoSubgraph::start("users");
    let setup = ProxySetup::one(SubgraphSpec::new("users", [&users]));
    let edge = Edge::start_toml(&(setup.to_toml() + "\n[graphql]\nintrospection = true\n"));
    let default_edge = Edge::start(&setup);

    let direct = auditor.run(&users.url());
    let via_edge = auditor.run(&edge.route("users"));
    let via_default_edge = auditor.run(&default_edge.route("users"));
    print_report(&format!("direct ({})", users.url()), &direct);
    print_report(
        &format!("through the edge ({})", edge.route("users")),
        &via_edge,
    );
    print_report("through the edge, introspection off", &via_default_edge);

    assert_eq!(
        by_id(&direct).keys().collect::<Vec<_>>(),
        by_id(&via_edge).keys().collect::<Vec<_>>(),
        "both runs audit the same list"
    );
    let mut problems = findings(&via_edge, &direct);
    let introspection_on = by_id(&via_edge);
    for r in &via_default_edge {
        let on = introspection_on.get(r.id.as_str()).map(|o| o.status);
        let refused = r
            .response
            .as_ref()
            .is_some_and(|v| v.to_string().contains("INTROSPECTION_DISABLED"));
        if on != Some(r.status) && !refused {
            problems.push(format!(
                "with introspection off, {} differs from the audited edge ({on:?}) \
                 without an INTROSPECTION_DISABLED refusal: {r}",
                r.id
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "graphql-http audit through the edge:\n{}",
        problems.join("\n")
    );
}
