//! `[sagas]`: where the durable log lives and how steps and compensations
//! are timed and retried.

use std::path::PathBuf;

use serde::Deserialize;

use super::backoff::Backoff;

/// Which durable log the coordinator writes.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A SQLite file (`path`): one node.
    #[default]
    Sqlite,
    /// A PostgreSQL database (`postgres_url`) several nodes share; each
    /// drives the sagas it leased and takes over a dead node's.
    Postgres,
}

/// `[sagas]` (absent: no saga coordinator runs).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct SagasConfig {
    /// The log: `"sqlite"` (one node, `path`) or `"postgres"` (several
    /// nodes, `postgres_url`).
    pub store: StoreKind,
    /// The SQLite log (one daemon per file: it is locked while open).
    pub path: PathBuf,
    /// The PostgreSQL log, as a `postgres://user:password@host:port/db`
    /// URL (or libpq's `key=value` form); required with
    /// `store = "postgres"`. The password never appears in messages.
    pub postgres_url: Option<String>,
    /// This node's name in sagas' leases (PostgreSQL); unique per daemon
    /// sharing the database. Default: the host name.
    pub node: Option<String>,
    /// How long a node's lease on a saga lasts without a heartbeat
    /// (PostgreSQL; heartbeats come every third of it): a dead node's sagas
    /// are taken over this long after it died.
    pub lease_ttl_secs: u64,
    /// Most steps in one saga.
    pub max_steps: usize,
    /// One try of a step or a compensation must answer within this.
    pub step_timeout_ms: u64,
    /// Tries of a step after the first, with the same key, for answers
    /// whose outcome is unknown (transport, timeout, 5xx).
    pub step_retries: u32,
    /// Tries of a compensation after the first; then the saga is parked.
    pub compensation_retries: u32,
    /// First retry gap; each next one doubles, up to `backoff_max_ms`.
    pub backoff_base_ms: u64,
    /// Largest retry gap.
    pub backoff_max_ms: u64,
    /// How often non-terminal sagas are looked for and driven on.
    pub recovery_interval_secs: u64,
    /// Most sagas driven at once on this node; a submission beyond it is
    /// refused (503 `SAGAS_BUSY`) and recovery leaves the rest for its next
    /// round.
    pub max_in_flight: usize,
}

impl Default for SagasConfig {
    fn default() -> Self {
        Self {
            // One node needs no database server.
            store: StoreKind::Sqlite,
            path: PathBuf::from("/var/lib/fraiseql-edge/sagas.db"),
            postgres_url: None,
            // The host name: unique per pod or machine.
            node: None,
            // A dead node's sagas wait this long; three missed heartbeats
            // (5 s apart) before a live node loses one.
            lease_ttl_secs: 15,
            // A saga is a handful of mutations; more is a batch job.
            max_steps: 16,
            // A mutation slower than this is better retried or compensated.
            step_timeout_ms: 10_000,
            // With the backoff below: 0.1, 0.2, 0.4 s — a restarting pod.
            step_retries: 3,
            // Compensations matter more than steps: about 5 minutes of
            // tries (gaps capped at 30 s) before an operator is asked.
            compensation_retries: 15,
            backoff_base_ms: 100,
            backoff_max_ms: 30_000,
            recovery_interval_secs: 10,
            // Each saga in flight is a task and at most one upstream
            // request; the pools (100 per endpoint) bound the rest.
            max_in_flight: 1024,
        }
    }
}

impl SagasConfig {
    /// Checks what serde cannot; `Err((key, reason))`.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        let bad = |key: &str, reason: &str| Err((format!("{at}.{key}"), reason.to_string()));
        if !self.path.is_absolute() {
            return bad("path", "must be an absolute path");
        }
        if !(1..=256).contains(&self.max_steps) {
            return bad("max_steps", "must be between 1 and 256");
        }
        if !(1..=600_000).contains(&self.step_timeout_ms) {
            return bad("step_timeout_ms", "must be between 1 and 600000");
        }
        if self.step_retries > 100 || self.compensation_retries > 1_000 {
            return bad(
                "step_retries",
                "step_retries must be at most 100 and compensation_retries at most 1000",
            );
        }
        if self.backoff_base_ms == 0 || self.backoff_base_ms > self.backoff_max_ms {
            return bad(
                "backoff_base_ms",
                "must be at least 1 and at most backoff_max_ms",
            );
        }
        if self.backoff_max_ms > 3_600_000 {
            return bad("backoff_max_ms", "must be at most 3600000 (an hour)");
        }
        if !(1..=3_600).contains(&self.recovery_interval_secs) {
            return bad("recovery_interval_secs", "must be between 1 and 3600");
        }
        if !(1..=1_000_000).contains(&self.max_in_flight) {
            return bad("max_in_flight", "must be between 1 and 1000000");
        }
        match (self.store, &self.postgres_url) {
            (StoreKind::Postgres, None) => {
                return bad("postgres_url", "is required with store = \"postgres\"");
            }
            (_, Some(url)) => {
                if let Err(e) = url.parse::<tokio_postgres::Config>() {
                    return Err((
                        format!("{at}.postgres_url"),
                        format!(
                            "not a PostgreSQL URL ({}): {e}",
                            super::postgres::redact_url(url)
                        ),
                    ));
                }
            }
            (StoreKind::Sqlite, None) => {}
        }
        if let Some(node) = &self.node {
            let fine = |c: char| c.is_ascii_alphanumeric() || "-_.:".contains(c);
            if node.is_empty() || node.len() > 253 || !node.chars().all(fine) {
                return bad(
                    "node",
                    "must be 1 to 253 characters: letters, digits, '-', '_', '.', ':'",
                );
            }
        }
        if !(2..=3_600).contains(&self.lease_ttl_secs) {
            return bad("lease_ttl_secs", "must be between 2 and 3600");
        }
        Ok(())
    }

    /// This node's name: `node`, or the host name.
    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(crate::config::host_name)
    }

    /// How long a lease lasts without a heartbeat.
    pub fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_ttl_secs)
    }

    /// The retry gaps this configuration asks for.
    pub fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_base_ms, self.backoff_max_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<SagasConfig, String> {
        let c: SagasConfig = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        c.validate("sagas").map_err(|(k, r)| format!("{k}: {r}"))?;
        Ok(c)
    }

    #[test]
    fn defaults_are_valid_and_keys_are_read() {
        assert_eq!(parse("").unwrap(), SagasConfig::default());
        let c = parse("path = \"/tmp/s.db\"\nstep_retries = 5\nbackoff_base_ms = 50\n").unwrap();
        assert_eq!(c.path, PathBuf::from("/tmp/s.db"));
        assert_eq!((c.step_retries, c.backoff_base_ms), (5, 50));
        assert_eq!(c.store, StoreKind::Sqlite);
        let c = parse(
            "store = \"postgres\"\npostgres_url = \"postgres://edge:pw@db:5432/sagas\"\n\
             node = \"edge-1\"\nlease_ttl_secs = 3\n",
        )
        .unwrap();
        assert_eq!(c.store, StoreKind::Postgres);
        assert_eq!(c.node_name(), "edge-1");
        assert_eq!(c.lease_ttl(), std::time::Duration::from_secs(3));
        assert!(!SagasConfig::default().node_name().is_empty());
    }

    #[test]
    fn bad_values_name_their_key() {
        for (text, key) in [
            ("path = \"relative.db\"", "sagas.path"),
            ("max_steps = 0", "sagas.max_steps"),
            ("step_timeout_ms = 0", "sagas.step_timeout_ms"),
            ("backoff_base_ms = 0", "sagas.backoff_base_ms"),
            (
                "backoff_base_ms = 10\nbackoff_max_ms = 5",
                "sagas.backoff_base_ms",
            ),
            ("recovery_interval_secs = 0", "sagas.recovery_interval_secs"),
            ("max_in_flight = 0", "sagas.max_in_flight"),
            ("store = \"postgres\"", "sagas.postgres_url"),
            ("postgres_url = \"mysql://x\"", "sagas.postgres_url"),
            ("node = \"\"", "sagas.node"),
            ("node = \"has space\"", "sagas.node"),
            ("lease_ttl_secs = 1", "sagas.lease_ttl_secs"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(key), "{text}: {err}");
        }
        assert!(parse("unknown = 1").unwrap_err().contains("unknown field"));
        assert!(
            parse("store = \"mysql\"")
                .unwrap_err()
                .contains("unknown variant")
        );
        let err = parse("postgres_url = \"postgres://u:s3cret@h:notaport/db\"").unwrap_err();
        assert!(!err.contains("s3cret"), "{err}");
    }
}
