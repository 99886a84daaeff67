//! A real gRPC client of a running daemon's control API
//! (`fraiseql.edge.v1.EdgeControl`), for tests that are otherwise blocking:
//! it owns a small runtime and runs each call on it.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::OnceLock,
};

use fraiseql_edge_api::v1::{self as pb, edge_control_client::EdgeControlClient};
use tonic::{
    Request, Status,
    metadata::MetadataValue,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

/// The admin token of the tests' token files.
pub const ADMIN_TOKEN: &str = "e2e-admin-token-0123456789abcdef";
/// The read-only token of the tests' token files.
pub const READ_TOKEN: &str = "e2e-read-token-0123456789abcdef";

/// The token files, written once per test process (mode 0600).
pub struct TokenFiles {
    _dir: tempfile::TempDir,
    /// Holds [`ADMIN_TOKEN`].
    pub admin: PathBuf,
    /// Holds [`READ_TOKEN`].
    pub read: PathBuf,
}

/// The shared token files.
pub fn token_files() -> &'static TokenFiles {
    static FILES: OnceLock<TokenFiles> = OnceLock::new();
    FILES.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, token: &str| -> PathBuf {
            let path = dir.path().join(name);
            std::fs::write(&path, format!("{token}\n")).expect("writing a token file");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .expect("chmod 600");
            path
        };
        let (admin, read) = (
            write("admin.token", ADMIN_TOKEN),
            write("read.token", READ_TOKEN),
        );
        TokenFiles {
            _dir: dir,
            admin,
            read,
        }
    })
}

/// A `[control]` section on an ephemeral loopback port, no socket, with the
/// shared token files.
pub fn section() -> String {
    let files = token_files();
    format!(
        "[control]\nsocket = \"\"\nlisten = \"127.0.0.1:0\"\nadmin_token_file = {:?}\nread_token_file = {:?}\n",
        files.admin, files.read
    )
}

/// A `[control]` section on the unix socket `path`, with the shared token files.
pub fn socket_section(path: &Path) -> String {
    let files = token_files();
    format!(
        "[control]\nsocket = {path:?}\nadmin_token_file = {:?}\nread_token_file = {:?}\n",
        files.admin, files.read
    )
}

/// Adds `authorization: Bearer <token>` to every call (none for `None`).
#[derive(Clone)]
pub struct Bearer(Option<String>);

impl Bearer {
    /// Sends `token`.
    pub fn new(token: &str) -> Self {
        Self(Some(token.to_string()))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        if let Some(t) = &self.0 {
            let value: MetadataValue<_> = format!("Bearer {t}")
                .parse()
                .map_err(|_| Status::internal("bad token"))?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }
}

/// The generated client with a token.
pub type Client = EdgeControlClient<InterceptedService<Channel, Bearer>>;

/// A client of one daemon's control API.
pub struct Control {
    rt: tokio::runtime::Runtime,
    channel: Channel,
}

impl Control {
    /// Connects to the control API at `addr` (TCP).
    pub fn connect(addr: SocketAddr) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let channel = rt
            .block_on(
                tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .expect("endpoint")
                    .connect(),
            )
            .unwrap_or_else(|e| panic!("connecting to the control API at {addr}: {e}"));
        Self { rt, channel }
    }

    /// A client sending `token` (`None`: no authorization metadata).
    pub fn with_token(&self, token: Option<&str>) -> Client {
        EdgeControlClient::with_interceptor(self.channel.clone(), Bearer(token.map(String::from)))
    }

    /// A client with the admin token.
    pub fn admin(&self) -> Client {
        self.with_token(Some(ADMIN_TOKEN))
    }

    /// A client with the read-only token.
    pub fn reader(&self) -> Client {
        self.with_token(Some(READ_TOKEN))
    }

    /// Runs `f` (a call) to completion.
    pub fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// `Block` with the admin token.
    pub fn block(&self, address: &str, ttl: Option<u64>) -> Result<pb::BlockEntry, Status> {
        let mut c = self.admin();
        self.run(c.block(pb::BlockRequest {
            address: address.to_string(),
            ttl_seconds: ttl,
            reason: "e2e test".into(),
        }))
        .map(tonic::Response::into_inner)
    }

    /// `Unblock` with the admin token: whether it was blocked.
    pub fn unblock(&self, address: &str) -> Result<bool, Status> {
        let mut c = self.admin();
        self.run(c.unblock(pb::UnblockRequest {
            address: address.to_string(),
        }))
        .map(|r| r.into_inner().removed)
    }

    /// `GetLimits` with the read-only token.
    pub fn limits(&self) -> Result<pb::Limits, Status> {
        let mut c = self.reader();
        self.run(c.get_limits(pb::GetLimitsRequest {}))
            .map(tonic::Response::into_inner)
    }

    /// `GetStatus` with the read-only token.
    pub fn status(&self) -> Result<pb::Status, Status> {
        let mut c = self.reader();
        self.run(c.get_status(pb::GetStatusRequest {}))
            .map(tonic::Response::into_inner)
    }

    /// `ListBlocks` with the read-only token.
    pub fn blocks(&self) -> Result<Vec<pb::BlockEntry>, Status> {
        let mut c = self.reader();
        self.run(c.list_blocks(pb::ListBlocksRequest {}))
            .map(|r| r.into_inner().blocks)
    }

    /// `SetBreaker` with the admin token.
    pub fn breaker(
        &self,
        subgraph: &str,
        action: pb::BreakerAction,
    ) -> Result<pb::Subgraph, Status> {
        let mut c = self.admin();
        self.run(c.set_breaker(pb::SetBreakerRequest {
            subgraph: subgraph.to_string(),
            action: action as i32,
        }))
        .map(tonic::Response::into_inner)
    }

    /// `ListSubgraphs` with the read-only token.
    pub fn subgraphs(&self) -> Result<Vec<pb::Subgraph>, Status> {
        let mut c = self.reader();
        self.run(c.list_subgraphs(pb::ListSubgraphsRequest {}))
            .map(|r| r.into_inner().subgraphs)
    }
}
