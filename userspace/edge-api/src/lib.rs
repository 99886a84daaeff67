//! `fraiseql.edge.v1`: the operator API of a fraiseql-edge daemon
//! (`proto/fraiseql/edge/v1/control.proto`), shared by the daemon (server)
//! and `edgectl` (client).

#![allow(missing_docs, clippy::doc_markdown, clippy::pedantic)]

/// Messages, `edge_control_server` and `edge_control_client`.
pub mod v1 {
    tonic::include_proto!("fraiseql.edge.v1");

    /// The encoded file descriptor set, for gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("fraiseql_edge_v1_descriptor");
}

/// The metadata key of the bearer token.
pub const AUTHORIZATION: &str = "authorization";
