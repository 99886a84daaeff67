//! Sagas at the edge: ordered mutations across subgraphs, each with a
//! compensation, run from a durable log.

pub mod answer;
pub mod backoff;
pub mod config;
