//! One module per group of RPCs. A run has two steps: [`Call::prepare`]
//! checks the arguments and builds the request (nothing is sent, a bad
//! value is exit code 5), then [`Call::run`] sends it over a connected
//! [`Session`] and prints the answer.

mod blocks;
mod limits;
mod metrics;
mod overrides;
mod reload;
mod sagas;
mod slow;
mod status;
mod subgraphs;
mod top;
mod watch;

use fraiseql_edge_api::v1::{
    BlockRequest, BreakerAction, EventKind, ListSagasRequest, Override, OverrideAction,
    SetBreakerRequest, SetKernelLimitsRequest, SetRateLimitRequest,
};

use crate::{
    cli::{
        ActionArg, BreakerArg, Command, KindArg, LimitsCommand, OverridesCommand, SagasCommand,
        SetCommand,
    },
    connect::Session,
    exit::Error,
    render::Output,
    validate,
};

/// A checked request, ready to send.
#[derive(Debug, PartialEq)]
pub enum Call {
    Status,
    GetLimits,
    SetKernelLimits(SetKernelLimitsRequest),
    SetRateLimit(SetRateLimitRequest),
    ListOverrides,
    AddOverride(Override),
    RemoveOverride(String),
    Block(BlockRequest),
    Unblock(String),
    ListBlocks,
    Top(u32),
    Subgraphs,
    SetBreaker(SetBreakerRequest),
    Watch {
        kinds: Vec<EventKind>,
        count: Option<u64>,
    },
    Slow(u32),
    ListSagas(ListSagasRequest),
    GetSaga(String),
    CancelSaga(String),
    RetrySaga(String),
    Reload,
    Metrics(String),
}

impl Call {
    /// Checks `command`'s values and builds its request.
    pub fn prepare(command: &Command) -> Result<Self, Error> {
        Ok(match command {
            Command::Status => Self::Status,
            Command::Limits { command } => match command {
                LimitsCommand::Get => Self::GetLimits,
                LimitsCommand::Set { command } => set(command)?,
            },
            Command::Overrides { command } => match command {
                OverridesCommand::List => Self::ListOverrides,
                OverridesCommand::Add {
                    cidr,
                    action,
                    rate,
                    burst,
                    max_conns,
                } => {
                    let cidr = validate::cidr(cidr)?;
                    if *action != ActionArg::Limit
                        && (rate.is_some() || burst.is_some() || max_conns.is_some())
                    {
                        return Err(Error::invalid(
                            "--rate, --burst and --max-conns only apply to --action limit",
                        ));
                    }
                    Self::AddOverride(Override {
                        cidr: cidr.to_string(),
                        action: override_action(*action) as i32,
                        rate: *rate,
                        burst: *burst,
                        max_conns: *max_conns,
                    })
                }
                OverridesCommand::Remove { cidr } => {
                    Self::RemoveOverride(validate::cidr(cidr)?.to_string())
                }
            },
            Command::Block {
                address,
                ttl,
                reason,
            } => Self::Block(BlockRequest {
                address: validate::address(address)?.to_string(),
                ttl_seconds: ttl.map(validate::ttl).transpose()?,
                reason: reason.clone(),
            }),
            Command::Unblock { address } => Self::Unblock(validate::address(address)?.to_string()),
            Command::Blocks => Self::ListBlocks,
            Command::Top { limit } => Self::Top(validate::top_limit(*limit)?),
            Command::Subgraphs => Self::Subgraphs,
            Command::Breaker { subgraph, action } => Self::SetBreaker(SetBreakerRequest {
                subgraph: validate::subgraph(subgraph)?.to_string(),
                action: breaker_action(*action) as i32,
            }),
            Command::Watch { kinds, count } => {
                if *count == Some(0) {
                    return Err(Error::invalid("--count 0: give at least 1"));
                }
                let mut kinds: Vec<EventKind> = kinds.iter().map(|k| event_kind(*k)).collect();
                kinds.sort_unstable();
                kinds.dedup();
                Self::Watch {
                    kinds,
                    count: *count,
                }
            }
            Command::Slow { limit } => Self::Slow(limit.unwrap_or(0)),
            Command::Sagas { command } => match command {
                SagasCommand::List { state, limit } => Self::ListSagas(ListSagasRequest {
                    state: state
                        .as_deref()
                        .map(validate::saga_state)
                        .transpose()?
                        .unwrap_or_default(),
                    limit: match limit {
                        Some(0 | 1001..) => {
                            return Err(Error::invalid("--limit: between 1 and 1000"));
                        }
                        Some(n) => *n,
                        None => 0,
                    },
                }),
                SagasCommand::Show { id } => Self::GetSaga(validate::saga_id(id)?),
                SagasCommand::Cancel { id } => Self::CancelSaga(validate::saga_id(id)?),
                SagasCommand::Retry { id } => Self::RetrySaga(validate::saga_id(id)?),
            },
            Command::Reload => Self::Reload,
            Command::Metrics { prefix } => Self::Metrics(prefix.clone()),
        })
    }

    /// Sends the request and prints the answer.
    pub async fn run(self, session: &Session, out: Output) -> Result<(), Error> {
        match self {
            Self::Status => status::run(session, out).await,
            Self::GetLimits => limits::get(session, out).await,
            Self::SetKernelLimits(req) => limits::set_kernel(session, out, req).await,
            Self::SetRateLimit(req) => limits::set_rate(session, out, req).await,
            Self::ListOverrides => overrides::list(session, out).await,
            Self::AddOverride(o) => overrides::add(session, out, o).await,
            Self::RemoveOverride(cidr) => overrides::remove(session, out, cidr).await,
            Self::Block(req) => blocks::block(session, out, req).await,
            Self::Unblock(address) => blocks::unblock(session, out, address).await,
            Self::ListBlocks => blocks::list(session, out).await,
            Self::Top(limit) => top::run(session, out, limit).await,
            Self::Subgraphs => subgraphs::list(session, out).await,
            Self::SetBreaker(req) => subgraphs::set_breaker(session, out, req).await,
            Self::Watch { kinds, count } => watch::run(session, out, kinds, count).await,
            Self::Slow(limit) => slow::run(session, out, limit).await,
            Self::ListSagas(req) => sagas::list(session, out, req).await,
            Self::GetSaga(id) => sagas::show(session, out, id).await,
            Self::CancelSaga(id) => sagas::cancel(session, out, id).await,
            Self::RetrySaga(id) => sagas::retry(session, out, id).await,
            Self::Reload => reload::run(session, out).await,
            Self::Metrics(prefix) => metrics::run(session, out, prefix).await,
        }
    }
}

fn set(command: &SetCommand) -> Result<Call, Error> {
    Ok(match command {
        SetCommand::Kernel {
            rate,
            burst,
            max_conns,
        } => {
            if rate.is_none() && burst.is_none() && max_conns.is_none() {
                return Err(Error::invalid(
                    "nothing to change: give --rate, --burst or --max-conns",
                ));
            }
            Call::SetKernelLimits(SetKernelLimitsRequest {
                rate: *rate,
                burst: *burst,
                max_conns: *max_conns,
            })
        }
        SetCommand::Rate {
            subgraph,
            rpm,
            burst,
            inherit,
        } => {
            if rpm.is_none() && burst.is_none() && !inherit {
                return Err(Error::invalid(
                    "nothing to change: give --rpm, --burst or (with --subgraph) --inherit",
                ));
            }
            let subgraph = match subgraph {
                Some(name) => validate::subgraph(name)?.to_string(),
                None => String::new(),
            };
            Call::SetRateLimit(SetRateLimitRequest {
                subgraph,
                requests_per_minute: *rpm,
                burst: *burst,
                inherit: *inherit,
            })
        }
    })
}

fn override_action(action: ActionArg) -> OverrideAction {
    match action {
        ActionArg::Allow => OverrideAction::Allow,
        ActionArg::Deny => OverrideAction::Deny,
        ActionArg::Limit => OverrideAction::Limit,
    }
}

fn breaker_action(action: BreakerArg) -> BreakerAction {
    match action {
        BreakerArg::Open => BreakerAction::Open,
        BreakerArg::Close => BreakerAction::Close,
        BreakerArg::Auto => BreakerAction::Auto,
        BreakerArg::Reset => BreakerAction::Reset,
    }
}

fn event_kind(kind: KindArg) -> EventKind {
    match kind {
        KindArg::Drop => EventKind::Drop,
        KindArg::Block => EventKind::Block,
        KindArg::Unblock => EventKind::Unblock,
        KindArg::Escalation => EventKind::Escalation,
        KindArg::Breaker => EventKind::Breaker,
        KindArg::Health => EventKind::Health,
        KindArg::Reload => EventKind::Reload,
        KindArg::ConfigChange => EventKind::ConfigChange,
        KindArg::Lost => EventKind::Lost,
    }
}

#[cfg(test)]
mod tests;
