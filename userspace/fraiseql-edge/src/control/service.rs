//! `fraiseql.edge.v1.EdgeControl` over [`Live`].

use std::{net::IpAddr, pin::Pin, sync::Arc};

use fraiseql_edge_api::v1 as pb;
use ipnet::IpNet;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::{auth::admin, convert};
use crate::{
    breaker::Force,
    config::{OverrideActionConfig, OverrideConfig},
    live::{Live, LiveError},
};

/// Top clients listed at most.
pub const MAX_TOP: u32 = 10_000;

/// The service.
pub struct Service {
    live: Arc<Live>,
    /// Turns true when the daemon stops: event streams end then, so that
    /// the server's graceful shutdown does not wait on them.
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Service {
    /// The service over `live`, until `stop` turns true.
    pub fn new(live: Arc<Live>, stop: tokio::sync::watch::Receiver<bool>) -> Self {
        Self { live, stop }
    }
}

impl From<LiveError> for Status {
    fn from(e: LiveError) -> Self {
        match e {
            LiveError::InvalidArgument(m) => Status::invalid_argument(m),
            LiveError::NotFound(m) => Status::not_found(m),
            LiveError::FailedPrecondition(m) => Status::failed_precondition(m),
            LiveError::Exhausted(m) => Status::resource_exhausted(m),
            LiveError::Internal(m) => Status::internal(m),
        }
    }
}

fn address(s: &str) -> Result<IpAddr, Status> {
    s.trim()
        .parse()
        .map_err(|_| Status::invalid_argument(format!("`{s}` is not an IP address")))
}

fn cidr(s: &str) -> Result<IpNet, Status> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Status::invalid_argument(format!(
                "`{s}` is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32) or an address"
            ))
        })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl pb::edge_control_server::EdgeControl for Service {
    async fn get_status(
        &self,
        _: Request<pb::GetStatusRequest>,
    ) -> Result<Response<pb::Status>, Status> {
        Ok(Response::new(convert::status(&self.live.status())))
    }

    async fn get_limits(
        &self,
        _: Request<pb::GetLimitsRequest>,
    ) -> Result<Response<pb::Limits>, Status> {
        Ok(Response::new(convert::limits(&self.live.limits())))
    }

    async fn set_kernel_limits(
        &self,
        req: Request<pb::SetKernelLimitsRequest>,
    ) -> Result<Response<pb::Limits>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        if r.rate.is_none() && r.burst.is_none() && r.max_conns.is_none() {
            return Err(Status::invalid_argument(
                "nothing to change: set rate, burst or max_conns",
            ));
        }
        let limits = self
            .live
            .set_kernel_limits(who, r.rate, r.burst, r.max_conns)?;
        Ok(Response::new(convert::limits(&limits)))
    }

    async fn set_rate_limit(
        &self,
        req: Request<pb::SetRateLimitRequest>,
    ) -> Result<Response<pb::Limits>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        if r.requests_per_minute.is_none() && r.burst.is_none() && !r.inherit {
            return Err(Status::invalid_argument(
                "nothing to change: set requests_per_minute, burst or inherit",
            ));
        }
        let subgraph = (!r.subgraph.is_empty()).then_some(r.subgraph.as_str());
        let limits =
            self.live
                .set_rate_limit(who, subgraph, r.requests_per_minute, r.burst, r.inherit)?;
        Ok(Response::new(convert::limits(&limits)))
    }

    async fn list_overrides(
        &self,
        _: Request<pb::ListOverridesRequest>,
    ) -> Result<Response<pb::ListOverridesResponse>, Status> {
        let overrides = self
            .live
            .overrides()?
            .iter()
            .map(convert::override_)
            .collect();
        Ok(Response::new(pb::ListOverridesResponse { overrides }))
    }

    async fn add_override(
        &self,
        req: Request<pb::AddOverrideRequest>,
    ) -> Result<Response<pb::Override>, Status> {
        let who = admin(&req)?;
        let Some(o) = req.into_inner().r#override else {
            return Err(Status::invalid_argument("override is required"));
        };
        let action = match pb::OverrideAction::try_from(o.action) {
            Ok(pb::OverrideAction::Allow) => OverrideActionConfig::Allow,
            Ok(pb::OverrideAction::Deny) => OverrideActionConfig::Deny,
            Ok(pb::OverrideAction::Limit) => OverrideActionConfig::Limit,
            _ => {
                return Err(Status::invalid_argument(
                    "action must be ALLOW, DENY or LIMIT",
                ));
            }
        };
        if action != OverrideActionConfig::Limit
            && (o.rate.is_some() || o.burst.is_some() || o.max_conns.is_some())
        {
            return Err(Status::invalid_argument(
                "rate, burst and max_conns apply to LIMIT overrides only",
            ));
        }
        let added = self.live.add_override(
            who,
            OverrideConfig {
                cidr: cidr(&o.cidr)?,
                action,
                rate: o.rate,
                burst: o.burst,
                max_conns: o.max_conns,
            },
        )?;
        Ok(Response::new(convert::override_(&added)))
    }

    async fn remove_override(
        &self,
        req: Request<pb::RemoveOverrideRequest>,
    ) -> Result<Response<pb::RemoveOverrideResponse>, Status> {
        let who = admin(&req)?;
        let net = cidr(&req.get_ref().cidr)?;
        let removed = self.live.remove_override(who, net)?;
        Ok(Response::new(pb::RemoveOverrideResponse {
            removed: Some(convert::override_(&removed)),
        }))
    }

    async fn block(
        &self,
        req: Request<pb::BlockRequest>,
    ) -> Result<Response<pb::BlockEntry>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        let addr = address(&r.address)?;
        if r.reason.len() > 256 {
            return Err(Status::invalid_argument("reason: at most 256 bytes"));
        }
        let info = self.live.block(who, addr, r.ttl_seconds, &r.reason)?;
        Ok(Response::new(convert::block(
            &info,
            self.live.enforced_by(),
        )))
    }

    async fn unblock(
        &self,
        req: Request<pb::UnblockRequest>,
    ) -> Result<Response<pb::UnblockResponse>, Status> {
        let who = admin(&req)?;
        let addr = address(&req.get_ref().address)?;
        let removed = self.live.unblock(who, addr)?;
        Ok(Response::new(pb::UnblockResponse { removed }))
    }

    async fn list_blocks(
        &self,
        _: Request<pb::ListBlocksRequest>,
    ) -> Result<Response<pb::ListBlocksResponse>, Status> {
        let by = self.live.enforced_by();
        let blocks = self
            .live
            .blocks()?
            .iter()
            .map(|b| convert::block(b, by))
            .collect();
        Ok(Response::new(pb::ListBlocksResponse { blocks }))
    }

    async fn top_clients(
        &self,
        req: Request<pb::TopClientsRequest>,
    ) -> Result<Response<pb::TopClientsResponse>, Status> {
        let limit = match req.get_ref().limit {
            0 => 20,
            n if n > MAX_TOP => {
                return Err(Status::invalid_argument(format!(
                    "limit: at most {MAX_TOP}"
                )));
            }
            n => n,
        };
        let live = Arc::clone(&self.live);
        // Walking the kernel maps is a few thousand syscalls: off the runtime.
        let clients = tokio::task::spawn_blocking(move || live.top_clients(limit as usize))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::TopClientsResponse {
            clients: clients.iter().map(convert::client).collect(),
        }))
    }

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::MetricsSnapshot>, Status> {
        let prefix = req.into_inner().prefix;
        let live = Arc::clone(&self.live);
        let families = tokio::task::spawn_blocking(move || live.registry().gather())
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::MetricsSnapshot {
            families: families
                .iter()
                .filter(|f| f.name().starts_with(&prefix))
                .map(convert::family)
                .collect(),
        }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(
        &self,
        req: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let kinds = req
            .into_inner()
            .kinds
            .into_iter()
            .map(|k| {
                pb::EventKind::try_from(k)
                    .ok()
                    .and_then(convert::kind_from)
                    .ok_or_else(|| Status::invalid_argument(format!("unknown event kind {k}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut watcher = self.live.events().subscribe();
        let mut stop = self.stop.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let e = tokio::select! {
                    e = watcher.next() => e,
                    _ = stop.wait_for(|s| *s) => None,
                    // The watcher hung up.
                    () = tx.closed() => None,
                };
                let Some(e) = e else { break };
                if !kinds.is_empty()
                    && e.kind != crate::events::Kind::Lost
                    && !kinds.contains(&e.kind)
                {
                    continue;
                }
                // The watcher hung up.
                if tx.send(Ok(convert::event(&e))).await.is_err() {
                    break;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn list_subgraphs(
        &self,
        _: Request<pb::ListSubgraphsRequest>,
    ) -> Result<Response<pb::ListSubgraphsResponse>, Status> {
        let Some(proxy) = self.live.proxy() else {
            return Err(LiveError::FailedPrecondition(
                "no [proxy] is configured: there are no subgraphs".into(),
            )
            .into());
        };
        let subgraphs = proxy
            .subgraphs()
            .iter()
            .map(|sg| convert::subgraph(sg))
            .collect();
        Ok(Response::new(pb::ListSubgraphsResponse { subgraphs }))
    }

    async fn set_breaker(
        &self,
        req: Request<pb::SetBreakerRequest>,
    ) -> Result<Response<pb::Subgraph>, Status> {
        let who = admin(&req)?;
        let r = req.into_inner();
        let action = match pb::BreakerAction::try_from(r.action) {
            Ok(pb::BreakerAction::Open) => Some(Force::Open),
            Ok(pb::BreakerAction::Close) => Some(Force::Closed),
            Ok(pb::BreakerAction::Auto) => Some(Force::None),
            Ok(pb::BreakerAction::Reset) => None,
            _ => {
                return Err(Status::invalid_argument(
                    "action must be OPEN, CLOSE, AUTO or RESET",
                ));
            }
        };
        let sg = self.live.set_breaker(who, &r.subgraph, action)?;
        Ok(Response::new(convert::subgraph(&sg)))
    }

    async fn list_slow_queries(
        &self,
        req: Request<pb::ListSlowQueriesRequest>,
    ) -> Result<Response<pb::ListSlowQueriesResponse>, Status> {
        let Some(proxy) = self.live.proxy() else {
            return Err(LiveError::FailedPrecondition(
                "no [proxy] is configured: there are no queries".into(),
            )
            .into());
        };
        let log = proxy.slow_queries();
        let limit = match req.get_ref().limit {
            0 => usize::MAX,
            n => n as usize,
        };
        Ok(Response::new(pb::ListSlowQueriesResponse {
            queries: log.recent(limit).iter().map(convert::slow_query).collect(),
            threshold_seconds: log.threshold().as_secs_f64(),
        }))
    }

    async fn list_sagas(
        &self,
        req: Request<pb::ListSagasRequest>,
    ) -> Result<Response<pb::ListSagasResponse>, Status> {
        let sagas = self.sagas()?;
        let r = req.get_ref();
        let state = match r.state.as_str() {
            "" => None,
            name => Some(crate::saga::SagaState::parse(name).ok_or_else(|| {
                let names: Vec<&str> = crate::saga::SagaState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect();
                Status::invalid_argument(format!(
                    "unknown saga state {name:?}: one of {}",
                    names.join(", ")
                ))
            })?),
        };
        let limit = match r.limit {
            0 => 100,
            n => n.min(1000) as usize,
        };
        let records = sagas.list(state, limit).await.map_err(saga_status)?;
        Ok(Response::new(pb::ListSagasResponse {
            sagas: records
                .iter()
                .map(|r| convert::saga(r, &[], sagas.is_running(r.id)))
                .collect(),
        }))
    }

    async fn get_saga(
        &self,
        req: Request<pb::GetSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let sagas = self.sagas()?;
        let id = saga_id(&req.get_ref().id)?;
        self.saga_reply(sagas, id).await
    }

    async fn cancel_saga(
        &self,
        req: Request<pb::CancelSagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let who = admin(&req)?;
        let sagas = self.sagas()?;
        let id = saga_id(&req.get_ref().id)?;
        sagas.cancel(id).await.map_err(coordinator_status)?;
        tracing::info!(saga = %id, by = who, "saga cancelled over the control API");
        self.saga_reply(sagas, id).await
    }

    async fn retry_saga(
        &self,
        req: Request<pb::RetrySagaRequest>,
    ) -> Result<Response<pb::Saga>, Status> {
        let who = admin(&req)?;
        let sagas = self.sagas()?;
        let id = saga_id(&req.get_ref().id)?;
        sagas.retry(id).await.map_err(coordinator_status)?;
        tracing::info!(saga = %id, by = who, "parked saga retried over the control API");
        self.saga_reply(sagas, id).await
    }

    async fn reload(
        &self,
        req: Request<pb::ReloadRequest>,
    ) -> Result<Response<pb::ReloadResponse>, Status> {
        let who = admin(&req)?;
        let live = Arc::clone(&self.live);
        let report = tokio::task::spawn_blocking(move || live.reload(who))
            .await
            .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(pb::ReloadResponse {
            applied: report.applied,
            needs_restart: report.needs_restart,
        }))
    }
}

impl Service {
    /// The coordinator, or why there is none.
    fn sagas(&self) -> Result<&Arc<crate::saga::Coordinator>, Status> {
        self.live.sagas().ok_or_else(|| {
            Status::failed_precondition("no [sagas] section is configured: there are no sagas")
        })
    }

    async fn saga_reply(
        &self,
        sagas: &Arc<crate::saga::Coordinator>,
        id: crate::saga::SagaId,
    ) -> Result<Response<pb::Saga>, Status> {
        let saga = sagas.get(id).await.map_err(saga_status)?;
        Ok(Response::new(convert::saga(
            &saga.record,
            &saga.steps,
            sagas.is_running(id),
        )))
    }
}

fn saga_id(id: &str) -> Result<crate::saga::SagaId, Status> {
    id.parse()
        .map_err(|e: crate::saga::model::BadSagaId| Status::invalid_argument(e.to_string()))
}

fn saga_status(e: crate::saga::StoreError) -> Status {
    use crate::saga::StoreError as E;
    match e {
        E::NotFound { .. } => Status::not_found(e.to_string()),
        E::StateChanged { .. }
        | E::IllegalTransition { .. }
        | E::Conflict { .. }
        | E::LeaseLost { .. } => Status::failed_precondition(e.to_string()),
        E::Locked { .. } | E::Storage(_) => {
            tracing::error!(error = %e, "saga log");
            Status::internal(e.to_string())
        }
    }
}

fn coordinator_status(e: crate::saga::coordinator::CoordinatorError) -> Status {
    use crate::saga::coordinator::CoordinatorError as E;
    match e {
        E::Store(e) => saga_status(e),
        E::Busy(_) => Status::resource_exhausted(e.to_string()),
        E::Refused(why) => Status::failed_precondition(why),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    /// The RPCs of `fraiseql.edge.v1.EdgeControl`.
    fn in_proto() -> BTreeSet<String> {
        include_str!("../../../../proto/fraiseql/edge/v1/control.proto")
            .lines()
            .filter_map(|l| l.trim().strip_prefix("rpc "))
            .filter_map(|l| l.split('(').next())
            .map(|name| name.trim().to_string())
            .collect()
    }

    /// The RPCs the reference lists: the first column of the RPC table
    /// under "Control API (gRPC)".
    fn in_reference() -> BTreeSet<String> {
        let doc = include_str!("../../../../docs/reference.md");
        let section = doc
            .split("## Control API (gRPC)")
            .nth(1)
            .expect("the reference has a Control API section");
        section
            .lines()
            .skip_while(|l| !l.starts_with("| RPC |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'))
            .flat_map(|l| {
                let first = l.split('|').nth(1).unwrap_or("");
                first
                    .split(',')
                    .map(|n| n.trim().trim_matches('`').to_string())
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn the_reference_lists_every_rpc_and_nothing_else() {
        let proto = in_proto();
        assert!(proto.len() >= 17, "{proto:?}");
        assert_eq!(in_reference(), proto, "docs/reference.md, Control API");
    }
}
