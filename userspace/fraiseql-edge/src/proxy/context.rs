//! The one per-request context every phase reads and fills in (DESIGN's
//! "one request context, phases as functions").

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{client_addr::ClientAddr, operation::OperationKind, subgraph::Subgraph};

/// What is known about a request so far.
pub struct RequestContext {
    /// The TCP peer.
    pub peer: SocketAddr,
    /// The client (the peer, or the address a trusted proxy vouched for)
    /// and the forwarding chain; the address every phase uses.
    pub client: ClientAddr,
    /// When the request's headers were in.
    pub started: Instant,
    /// The request path.
    pub path: String,
    /// The subgraph the path routes to (`None`: no route).
    pub subgraph: Option<Arc<Subgraph>>,
    /// The operation type, once the accept phase has read it.
    pub operation: Option<OperationKind>,
    /// Whether the document is a federation entity fetch.
    pub entity_fetch: bool,
    /// The client accepts `application/graphql-response+json` (refusals of
    /// the graphql phase are then sent with that media type).
    pub graphql_response: bool,
    /// Who the token says the caller is (`None`: anonymous).
    pub identity: Option<crate::auth::Identity>,
    /// Filter mode: what to do to the subgraph's response for the fields
    /// authorization removed.
    pub patch: Option<crate::authz::ResponsePatch>,
    /// The trace context (`None` outside [`super::Proxy::handle`]).
    pub trace: Option<crate::telemetry::RequestTrace>,
    /// The (first) operation's name, once the graphql phase has read it.
    pub operation_name: Option<String>,
    /// The (first) operation's document, for the slow-query log (kept only
    /// while the log is on).
    pub document: Option<DocumentKey>,
}

/// How the slow-query log names a document.
#[derive(Clone, Debug)]
pub enum DocumentKey {
    /// It came as a persisted-query hash (or safelist id).
    Persisted(String),
    /// Its text (hashed only if the request turns out slow).
    Text(Arc<str>),
}

impl DocumentKey {
    /// The SHA-256 (hex) of the text, or the persisted-query hash.
    pub fn hash(&self) -> String {
        match self {
            Self::Persisted(h) => h.clone(),
            Self::Text(t) => crate::slowlog::document_hash(t),
        }
    }
}

impl RequestContext {
    /// A context for a request from `peer` to `path`, started now.
    pub fn new(peer: SocketAddr, client: ClientAddr, path: String) -> Self {
        Self {
            peer,
            client,
            started: Instant::now(),
            path,
            subgraph: None,
            operation: None,
            entity_fetch: false,
            identity: None,
            graphql_response: false,
            patch: None,
            trace: None,
            operation_name: None,
            document: None,
        }
    }

    /// The client's address.
    pub fn client_ip(&self) -> IpAddr {
        self.client.client
    }

    /// The subgraph's name, or `none` (the metric label).
    pub fn subgraph_label(&self) -> &str {
        self.subgraph.as_deref().map_or("none", Subgraph::name)
    }

    /// The moment the request must be answered by: the routed subgraph's
    /// overall timeout after the start (`None` before routing).
    pub fn deadline(&self) -> Option<Instant> {
        self.subgraph
            .as_ref()
            .map(|sg| self.started + Duration::from_millis(sg.cfg.timeouts.overall_ms))
    }
}
