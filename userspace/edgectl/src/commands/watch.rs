//! `edgectl watch`: WatchEvents, one line per event (one JSON object per
//! line with `--json`), until Ctrl-C, `--count` events, or the reader of
//! stdout goes away (all exit 0). Only the start of the stream has a
//! deadline. A stream that the daemon ends or that breaks (the daemon
//! stopped or crashed) is exit code 3, so a supervisor can reconnect.

use std::collections::BTreeMap;

use fraiseql_edge_api::v1::{Event, EventKind, WatchEventsRequest};
use serde::Serialize;

use crate::{
    connect::Session,
    exit::{Error, Exit},
    render::{Output, View, format},
};

/// One event in `--json` (one per line).
#[derive(Debug, Serialize)]
pub struct EventView {
    pub seq: u64,
    pub unix_ms: u64,
    /// `drop`, `block`, `unblock`, `escalation`, `breaker`, `health`,
    /// `reload`, `config_change`, `lost` or `unspecified`.
    pub kind: &'static str,
    pub subject: String,
    pub message: String,
    pub actor: String,
    pub attributes: BTreeMap<String, String>,
}

pub async fn run(
    session: &Session,
    out: Output,
    kinds: Vec<EventKind>,
    count: Option<u64>,
) -> Result<(), Error> {
    let req = WatchEventsRequest {
        kinds: kinds.into_iter().map(|k| k as i32).collect(),
    };
    let mut client = session.client();
    let mut stream = session.unary(client.watch_events(req)).await?;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut seen = 0;
    loop {
        let event = tokio::select! {
            _ = &mut ctrl_c => return Ok(()),
            message = stream.message() => match message {
                Ok(Some(event)) => event,
                Ok(None) => {
                    return Err(Error::new(
                        Exit::Unreachable,
                        format!("the daemon at {} ended the event stream", session.target()),
                    ));
                }
                Err(status) => return Err(session.error(&status)),
            },
        };
        if out.line(&EventView::from(event))?.is_err() {
            return Ok(());
        }
        seen += 1;
        if count == Some(seen) {
            return Ok(());
        }
    }
}

impl From<Event> for EventView {
    fn from(e: Event) -> Self {
        Self {
            kind: kind(e.kind()),
            seq: e.seq,
            unix_ms: e.unix_ms,
            subject: e.subject,
            message: e.message,
            actor: e.actor,
            attributes: e.attributes.into_iter().collect(),
        }
    }
}

/// The `--kind` spelling of an event kind.
pub fn kind(k: EventKind) -> &'static str {
    match k {
        EventKind::Drop => "drop",
        EventKind::Block => "block",
        EventKind::Unblock => "unblock",
        EventKind::Escalation => "escalation",
        EventKind::Breaker => "breaker",
        EventKind::Health => "health",
        EventKind::Reload => "reload",
        EventKind::ConfigChange => "config_change",
        EventKind::Lost => "lost",
        EventKind::Unspecified => "unspecified",
    }
}

impl View for EventView {
    /// `TIME  KIND  SUBJECT  MESSAGE  [ACTOR]  key=value …`
    fn human(&self) -> String {
        let mut line = format!("{}  {:<13}", format::unix_ms(self.unix_ms), self.kind);
        for part in [&self.subject, &self.message] {
            if !part.is_empty() {
                line += "  ";
                line += part;
            }
        }
        if !self.actor.is_empty() {
            line += &format!("  [{}]", self.actor);
        }
        for (key, value) in &self.attributes {
            if value.contains(char::is_whitespace) || value.is_empty() {
                line += &format!("  {key}={value:?}");
            } else {
                line += &format!("  {key}={value}");
            }
        }
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::EventView;
    use crate::render::View;

    #[test]
    fn one_line_per_event() {
        let e = EventView {
            seq: 7,
            unix_ms: 1_796_530_210_123,
            kind: "block",
            subject: "192.0.2.7".into(),
            message: "blocked for 1m".into(),
            actor: "operator:admin".into(),
            attributes: [
                ("reason".to_string(), "too many logins".to_string()),
                ("ttl_seconds".to_string(), "60".to_string()),
            ]
            .into(),
        };
        assert_eq!(
            e.human(),
            "2026-12-06 04:10:10.123Z  block          192.0.2.7  blocked for 1m  \
             [operator:admin]  reason=\"too many logins\"  ttl_seconds=60\n"
        );
    }
}
