//! Generates the message types, the server trait and the client of
//! `fraiseql.edge.v1` from `proto/`, with the `protoc` of
//! `protoc-bin-vendored` (a fresh machine needs nothing installed), and the
//! file descriptor set that the daemon serves over gRPC reflection.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let proto = root.join("fraiseql/edge/v1/control.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("fraiseql_edge_v1_descriptor.bin"))
        .compile_with_config(config, &[proto], &[root])?;
    Ok(())
}
