//! The user-space limiter's counters and table sizes ([`LimiterStats`]),
//! kept under the limiter's lock and read by [`super::LimiterCollector`].

use super::{Admitted, Refusal};

/// What the limiter did since start, and how full its tables are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterStats {
    /// Connections and requests that passed every check.
    pub passed: u64,
    /// Passed by an allow override without any check.
    pub bypassed: u64,
    /// Refused by the token bucket.
    pub dropped_rate: u64,
    /// Connections refused by the connection cap.
    pub dropped_conn: u64,
    /// Connections refused because the connection table was full.
    pub dropped_conn_table_full: u64,
    /// Refused because the client is blocked.
    pub dropped_block: u64,
    /// Refused by a deny override.
    pub dropped_deny: u64,
    /// Clients evicted from the full client table.
    pub evicted: u64,
    /// Clients in the client table now.
    pub clients: u64,
    /// Clients holding live connections now.
    pub conn_clients: u64,
    /// Entries in the block list now (expired ones until the sweep).
    pub blocks: u64,
}

impl LimiterStats {
    pub(super) fn record(&mut self, verdict: Result<Admitted, Refusal>) {
        let counter = match verdict {
            Ok(Admitted::Bypassed) => &mut self.bypassed,
            Ok(Admitted::Passed) => &mut self.passed,
            Err(Refusal::Rate) => &mut self.dropped_rate,
            Err(Refusal::Conn) => &mut self.dropped_conn,
            Err(Refusal::ConnTableFull) => &mut self.dropped_conn_table_full,
            Err(Refusal::Block) => &mut self.dropped_block,
            Err(Refusal::Deny) => &mut self.dropped_deny,
        };
        *counter += 1;
    }
}
