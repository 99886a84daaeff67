//! End-to-end tests: one binary, one shared harness (`fraiseql_edge_tests`).
//! Kernel tests run as root against real programs, real maps and real
//! interfaces in network namespaces they create.

mod authorization;
mod cluster_redis;
mod cluster_xdp;
mod config_errors;
mod control_e2e;
mod data_path;
mod degraded_e2e;
mod edgectl_e2e;
mod escalation_e2e;
mod graphql_http_audit;
mod hardening;
mod jwt_e2e;
mod kernel_cli;
mod kernel_e2e;
mod metrics_catalogue;
mod ops_docs;
mod ops_live;
mod program;
mod proxy_e2e;
mod saga_pg_store;
mod sagas_e2e;
mod sagas_pg_e2e;
mod security;
mod testbed;
mod tracing_e2e;
