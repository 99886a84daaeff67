//! Reaching the daemon: the unix socket or a TCP address, the bearer token
//! on every call, and the deadlines.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use fraiseql_edge_api::{AUTHORIZATION, v1::edge_control_client::EdgeControlClient};
use hyper_util::rt::TokioIo;
use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::{Interceptor, interceptor::InterceptedService},
    transport::{Channel, Endpoint, Uri},
};

use crate::{
    cli::Global,
    exit::{Error, Exit, chain},
    validate,
};

/// The gRPC client with the token attached.
pub type Client = EdgeControlClient<InterceptedService<Channel, Bearer>>;

/// Where the daemon listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A unix domain socket.
    Socket(PathBuf),
    /// `http://HOST:PORT`.
    Tcp(String),
}

impl Target {
    /// `--addr` when given (checked), else `--socket`.
    pub fn of(global: &Global) -> Result<Self, Error> {
        match global.addr.as_deref() {
            Some(addr) if !addr.is_empty() => Ok(Self::Tcp(validate::tcp_uri(addr)?)),
            _ => Ok(Self::Socket(global.socket.clone())),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Socket(path) => write!(f, "unix socket {}", path.display()),
            Self::Tcp(uri) => write!(f, "{}", uri.trim_start_matches("http://")),
        }
    }
}

/// Sends `authorization: Bearer <token>` with every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert(AUTHORIZATION, self.0.clone());
        Ok(request)
    }
}

impl Bearer {
    /// `--token`, else the content of `--token-file` (trimmed). Every way
    /// this fails is exit code 4 and says which.
    pub fn of(global: &Global) -> Result<Self, Error> {
        let auth = |message: String| Error::new(Exit::Auth, message);
        // An empty FRAISEQL_EDGE_TOKEN (exported but unset) does not hide
        // the token file.
        let flag = global
            .token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let file = global
            .token_file
            .as_deref()
            .filter(|p| !p.as_os_str().is_empty());
        let (token, source) = match (flag, file) {
            (Some(token), _) => (token.to_string(), "--token".to_string()),
            (None, Some(path)) => (read_token(path)?, format!("token file {}", path.display())),
            (None, None) => {
                return Err(auth(
                    "no token: pass --token-file PATH or --token TOKEN \
                     (or set FRAISEQL_EDGE_TOKEN_FILE / FRAISEQL_EDGE_TOKEN)"
                        .into(),
                ));
            }
        };
        if token.is_empty() {
            return Err(auth(format!("the {source} is empty")));
        }
        let mut value: MetadataValue<Ascii> = format!("Bearer {token}")
            .parse()
            .map_err(|_| auth(format!("the {source} holds characters a token cannot have")))?;
        value.set_sensitive(true);
        Ok(Self(value))
    }
}

fn read_token(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path)
        .map(|text| text.trim().to_string())
        .map_err(|e| {
            Error::new(
                Exit::Auth,
                format!("cannot read token file {}: {e}", path.display()),
            )
        })
}

/// A connected client and the deadline of each answer.
pub struct Session {
    client: Client,
    target: Target,
    timeout: Duration,
}

impl Session {
    /// Connects to `target` within `timeout`; a failure is exit code 3 and
    /// names the target.
    pub async fn connect(target: Target, token: Bearer, timeout: Duration) -> Result<Self, Error> {
        let endpoint = match &target {
            // The URI is not used: the connector dials the socket.
            Target::Socket(_) => Endpoint::from_static("http://[::]:50051"),
            Target::Tcp(uri) => Endpoint::from_shared(uri.clone())
                .map_err(|e| Error::invalid(format!("--addr: {}", chain(&e))))?,
        }
        .connect_timeout(timeout);
        let connecting = async {
            match &target {
                Target::Socket(path) => {
                    let path = path.clone();
                    endpoint
                        .connect_with_connector(tower::service_fn(move |_: Uri| {
                            let path = path.clone();
                            async move {
                                Ok::<_, std::io::Error>(TokioIo::new(
                                    tokio::net::UnixStream::connect(path).await?,
                                ))
                            }
                        }))
                        .await
                }
                Target::Tcp(_) => endpoint.connect().await,
            }
        };
        let channel = match tokio::time::timeout(timeout, connecting).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(Error::new(
                    Exit::Unreachable,
                    format!("cannot reach the daemon at {target}: {}", chain(&e)),
                ));
            }
            Err(_) => {
                return Err(Error::new(
                    Exit::Unreachable,
                    format!(
                        "cannot reach the daemon at {target}: no connection within {} s",
                        timeout.as_secs()
                    ),
                ));
            }
        };
        Ok(Self {
            client: EdgeControlClient::with_interceptor(channel, token),
            target,
            timeout,
        })
    }

    /// A handle for one call (clones share the connection).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The answer of `call` within the timeout, or the error it maps to.
    pub async fn unary<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, Error> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(self.error(&status)),
            Err(_) => Err(Error::new(
                Exit::Failure,
                format!(
                    "no answer from the daemon at {} within {} s",
                    self.target,
                    self.timeout.as_secs()
                ),
            )),
        }
    }

    /// Where the daemon is.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// `status` as an error, naming the target when it is unreachable.
    pub fn error(&self, status: &Status) -> Error {
        Error::from_status(status, &self.target)
    }
}
