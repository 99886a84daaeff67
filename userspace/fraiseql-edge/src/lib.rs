//! fraiseql-edge: the daemon's library.
//!
//! * [`config`] — the TOML configuration, one struct per subsystem.
//! * [`kernel`] — loading, attaching, adopting and driving the XDP layer.
//! * [`fallback`] — the same limits enforced in user space when BPF is unavailable.
//! * [`proxy`] — the GraphQL data path: routing, pools, health, failover.
//! * [`admin`] — `/metrics`, `/healthz`, `/readyz` and the operator API on the admin port.
//! * [`blocklist`] — the block list, in the kernel or (degraded mode) in user space.
//! * [`breaker`] — the per-subgraph circuit breaker (used by the data path).
//! * [`telemetry`] — trace context (W3C `traceparent`), spans, OTLP export.
//! * [`saga`] — sagas across subgraphs: the model and the durable log.
//! * [`cluster`] — what the nodes share through Redis: global limits.
//! * [`slowlog`] — the slow-query log.
//! * [`cli`] — the command line (`run`, and local `kernel …` admin commands).

pub mod admin;
pub mod auth;
pub mod authz;
pub mod blocklist;
pub mod breaker;
pub mod cli;
pub mod client_key;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod control;
pub mod daemon;
pub mod events;
pub mod fallback;
pub mod graphql;
pub mod kernel;
pub mod live;
pub mod metrics;
pub mod proxy;
pub mod ratelimit;
pub mod saga;
pub mod slowlog;
pub mod telemetry;
