//! The daemon's event stream: sampled kernel drops, blocks and unblocks,
//! escalations, breaker and health transitions, reloads and configuration
//! changes. Whoever changes something publishes it here; the control API's
//! `WatchEvents` streams it to operators.
//!
//! Publishing never blocks and costs one atomic increment when nobody
//! watches. A watcher that falls behind the bounded buffer loses the oldest
//! events and is told how many ([`Kind::Lost`]).

use std::{
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{SystemTime, UNIX_EPOCH},
};

use tokio::sync::broadcast;

/// Events buffered per watcher before the oldest are dropped for it.
pub const BUFFER: usize = 1024;

/// What an event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A sampled packet drop of the kernel program.
    Drop,
    /// A client was blocked.
    Block,
    /// A block was lifted or expired.
    Unblock,
    /// A client kept being refused and was escalated to the block list.
    Escalation,
    /// A subgraph's circuit breaker changed state.
    Breaker,
    /// An endpoint became healthy or unhealthy.
    Health,
    /// The configuration was reloaded (or a reload was rejected).
    Reload,
    /// A limit, override or breaker was changed by an operator.
    ConfigChange,
    /// A watcher fell behind and skipped events.
    Lost,
}

/// One event.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Increases by one per published event.
    pub seq: u64,
    /// Unix time in milliseconds.
    pub unix_ms: u64,
    /// What it is about.
    pub kind: Kind,
    /// The client address, subgraph or endpoint concerned.
    pub subject: String,
    /// One line for humans.
    pub message: String,
    /// Who did it: `operator:<token>`, `escalation`, `kernel`, `health`,
    /// `breaker`, `expiry`, `signal`.
    pub actor: String,
    /// Kind-specific details.
    pub attributes: Vec<(String, String)>,
}

impl Event {
    /// An event of `kind` about `subject`, to be completed with the builder
    /// methods and [`EventBus::publish`]ed.
    pub fn new(kind: Kind, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            seq: 0,
            unix_ms: 0,
            kind,
            subject: subject.into(),
            message: message.into(),
            actor: String::new(),
            attributes: Vec::new(),
        }
    }

    /// Sets who caused it.
    #[must_use]
    pub fn by(mut self, actor: impl Into<String>) -> Self {
        self.actor = actor.into();
        self
    }

    /// Adds a detail.
    #[must_use]
    pub fn with(mut self, key: &str, value: impl ToString) -> Self {
        self.attributes.push((key.to_string(), value.to_string()));
        self
    }

    /// The value of detail `key`.
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// The publishing side, cheap to clone.
#[derive(Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    seq: Arc<AtomicU64>,
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("published", &self.seq.load(Ordering::Relaxed))
            .field("watchers", &self.tx.receiver_count())
            .finish()
    }
}

impl EventBus {
    /// A bus with nobody watching yet.
    pub fn new() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            seq: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Numbers, stamps and sends `event` to every watcher.
    pub fn publish(&self, mut event: Event) {
        event.seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        event.unix_ms = unix_ms();
        // No watcher is not an error.
        let _ = self.tx.send(event);
    }

    /// A new watcher; it sees events published from now on.
    pub fn subscribe(&self) -> Watcher {
        Watcher {
            rx: self.tx.subscribe(),
        }
    }

    /// Publishes a block of `client`.
    pub fn block(&self, client: IpAddr, ttl_secs: Option<u64>, actor: &str, reason: &str) {
        let ttl = ttl_secs.map_or_else(|| "no expiry".to_string(), |t| format!("{t} s"));
        let mut e = Event::new(Kind::Block, client.to_string(), format!("blocked ({ttl})"))
            .by(actor)
            .with(
                "ttl_seconds",
                ttl_secs.map_or(String::new(), |t| t.to_string()),
            );
        if !reason.is_empty() {
            e = e.with("reason", reason);
        }
        self.publish(e);
    }

    /// Publishes that the block of `client` was lifted (`actor` "expiry"
    /// when its TTL ran out).
    pub fn unblock(&self, client: IpAddr, actor: &str) {
        let msg = if actor == "expiry" {
            "block expired"
        } else {
            "unblocked"
        };
        self.publish(Event::new(Kind::Unblock, client.to_string(), msg).by(actor));
    }
}

/// The receiving side of one watcher.
pub struct Watcher {
    rx: broadcast::Receiver<Event>,
}

impl Watcher {
    /// The next event; a [`Kind::Lost`] event when this watcher fell
    /// behind; `None` when the daemon shuts down.
    pub async fn next(&mut self) -> Option<Event> {
        match self.rx.recv().await {
            Ok(e) => Some(e),
            Err(broadcast::error::RecvError::Lagged(n)) => {
                let mut e = Event::new(Kind::Lost, "", format!("{n} events skipped: too slow"))
                    .with("skipped", n);
                e.unix_ms = unix_ms();
                Some(e)
            }
            Err(broadcast::error::RecvError::Closed) => None,
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn watchers_see_events_in_order_with_increasing_numbers() {
        let bus = EventBus::new();
        let mut w = bus.subscribe();
        bus.block(
            "192.0.2.1".parse().unwrap(),
            Some(30),
            "operator:admin",
            "abuse",
        );
        bus.unblock("192.0.2.1".parse().unwrap(), "expiry");
        let a = w.next().await.unwrap();
        let b = w.next().await.unwrap();
        assert_eq!((a.kind, b.kind), (Kind::Block, Kind::Unblock));
        assert_eq!(b.seq, a.seq + 1);
        assert_eq!(a.attribute("ttl_seconds"), Some("30"));
        assert_eq!(a.attribute("reason"), Some("abuse"));
        assert_eq!(a.actor, "operator:admin");
        assert_eq!(b.message, "block expired");
        assert!(a.unix_ms > 0);
    }

    #[tokio::test]
    async fn a_slow_watcher_is_told_what_it_lost() {
        let bus = EventBus::new();
        let mut w = bus.subscribe();
        for i in 0..BUFFER + 10 {
            bus.publish(Event::new(Kind::Health, format!("e{i}"), "x"));
        }
        let first = w.next().await.unwrap();
        assert_eq!(first.kind, Kind::Lost);
        assert_eq!(first.attribute("skipped"), Some("10"));
        // Then the oldest event still buffered.
        assert_eq!(w.next().await.unwrap().subject, "e10");
    }

    #[test]
    fn publishing_without_watchers_is_fine() {
        let bus = EventBus::new();
        bus.publish(Event::new(Kind::Reload, "", "ok"));
        assert_eq!(bus.seq.load(Ordering::Relaxed), 1);
    }
}
