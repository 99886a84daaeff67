//! Persisted queries: automatic persisted queries (APQ) and a safelist.
//!
//! * **APQ** (Apollo's protocol): a client sends
//!   `extensions.persistedQuery = {version: 1, sha256Hash}` without `query`;
//!   the edge answers from its cache of documents it saw with that hash, or
//!   `PERSISTED_QUERY_NOT_FOUND` (HTTP 200, so that clients resend the
//!   document with its hash, which registers it). A document sent with a
//!   hash must hash to it (`PERSISTED_QUERY_HASH_MISMATCH`).
//! * **Safelist**: a manifest of the operations first-party clients may
//!   run (Apollo's `apollo-persisted-query-manifest` format, or a plain
//!   `{"<id>": "<document>"}` map as Relay and GraphQL Code Generator
//!   write). Clients may send an operation by its `id` (in
//!   `extensions.persistedQuery.sha256Hash`). In `enforce` mode a document
//!   that is not in the list, byte for byte, is refused
//!   (`QUERY_NOT_IN_SAFELIST`), so is an unknown id
//!   (`PERSISTED_QUERY_NOT_IN_LIST`), and the APQ cache is not used (a
//!   client could register anything in it); in `log` mode such requests
//!   pass and are logged and counted, to roll a safelist out.
//!
//! The subgraph always receives the full document: the edge resolves the
//! hash and removes `extensions.persistedQuery` before forwarding
//! ([`crate::proxy::documents::rebuild`]).

use std::{
    collections::{HashMap, HashSet},
    num::NonZeroUsize,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use lru::LruCache;
use serde::Deserialize;
use sha2::{Digest, Sha256};

/// `[persisted_queries]`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct PersistedQueriesConfig {
    /// Automatic persisted queries: remember documents by their SHA-256.
    pub apq: bool,
    /// Documents the APQ cache holds (least recently used evicted first).
    pub apq_cache_size: usize,
    /// The safelist manifest; none = no safelist.
    pub safelist: Option<PathBuf>,
    /// What happens to an operation that is not in the safelist.
    pub safelist_mode: SafelistMode,
}

impl Default for PersistedQueriesConfig {
    fn default() -> Self {
        Self {
            // On by default, as in Apollo Router: it only saves bandwidth,
            // every document is still checked.
            apq: true,
            // As many as the document cache: a working set of operations.
            apq_cache_size: 10_000,
            // A safelist is specific to the deployment's clients.
            safelist: None,
            // A safelist that is configured is meant to be enforced; `log`
            // is the explicit choice while rolling one out.
            safelist_mode: SafelistMode::Enforce,
        }
    }
}

impl PersistedQueriesConfig {
    /// Checks ranges; `at` is the section's path for the error.
    pub fn validate(&self, at: &str) -> Result<(), (String, String)> {
        if self.apq && self.apq_cache_size == 0 {
            return Err((
                format!("{at}.apq_cache_size"),
                "must be at least 1 when apq is on".into(),
            ));
        }
        Ok(())
    }
}

/// What a safelist does with operations not on it.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SafelistMode {
    /// Refuse them.
    #[default]
    Enforce,
    /// Let them pass; log and count them.
    Log,
}

/// The `extensions.persistedQuery` of a request.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct PersistedQueryExt {
    /// Protocol version; only 1 exists.
    pub version: u64,
    /// The document's SHA-256 (hex), or a safelist id.
    #[serde(rename = "sha256Hash")]
    pub sha256_hash: String,
}

/// Why a persisted-query request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PersistedError {
    /// APQ: the hash is not known (the client should send the document).
    #[error("PersistedQueryNotFound")]
    NotFound,
    /// The document does not hash to the `sha256Hash` sent with it.
    #[error("provided sha does not match query")]
    HashMismatch,
    /// A hash was sent without the document, and neither APQ nor a
    /// safelist can resolve it.
    #[error("persisted queries are not supported")]
    NotSupported,
    /// A `persistedQuery` version other than 1.
    #[error("persisted query version {0} is not supported")]
    UnsupportedVersion(u64),
    /// Safelist (enforce): the id is not in the list.
    #[error("the persisted query id is not in the safelist")]
    NotInList,
    /// Safelist (enforce): the document is not in the list.
    #[error("the operation is not in the safelist")]
    NotInSafelist,
}

impl PersistedError {
    /// Every variant, for documentation checks.
    pub const ALL: [Self; 6] = [
        Self::NotFound,
        Self::HashMismatch,
        Self::NotSupported,
        Self::UnsupportedVersion(2),
        Self::NotInList,
        Self::NotInSafelist,
    ];

    /// The stable code (`extensions.code`), Apollo Router's where it has one.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::HashMismatch => "PERSISTED_QUERY_HASH_MISMATCH",
            Self::NotSupported => "PERSISTED_QUERY_NOT_SUPPORTED",
            Self::UnsupportedVersion(_) => "PERSISTED_QUERY_VERSION_NOT_SUPPORTED",
            Self::NotInList => "PERSISTED_QUERY_NOT_IN_LIST",
            Self::NotInSafelist => "QUERY_NOT_IN_SAFELIST",
        }
    }

    /// The HTTP status: 200 for an APQ miss (clients read it as "send the
    /// document"), 400 otherwise.
    pub fn status(&self) -> http::StatusCode {
        match self {
            Self::NotFound => http::StatusCode::OK,
            _ => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// How a request's document was found; the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// APQ: answered from the cache.
    ApqHit,
    /// APQ: a document sent with its hash, now remembered.
    ApqRegistered,
    /// Sent by safelist id.
    SafelistId,
    /// A document found in the safelist.
    SafelistDocument,
    /// Not in the safelist, passed in `log` mode.
    NotInSafelistLogged,
    /// A plain document; nothing persisted involved.
    Plain,
}

impl Outcome {
    /// The outcomes `persisted_queries_total` counts (not [`Outcome::Plain`]).
    pub const COUNTED: [Self; 5] = [
        Self::ApqHit,
        Self::ApqRegistered,
        Self::SafelistId,
        Self::SafelistDocument,
        Self::NotInSafelistLogged,
    ];

    /// The `outcome` label of `persisted_queries_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ApqHit => "apq_hit",
            Self::ApqRegistered => "apq_registered",
            Self::SafelistId => "safelist_id",
            Self::SafelistDocument => "safelist_document",
            Self::NotInSafelistLogged => "not_in_safelist_logged",
            Self::Plain => "plain",
        }
    }
}

/// A document resolved for checking and forwarding.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    /// The document: the one sent, or the one the hash stands for (`None`:
    /// the one sent, unchanged).
    pub document: Option<Arc<str>>,
    /// How it was found.
    pub outcome: Outcome,
}

/// A loaded safelist.
#[derive(Debug)]
struct Safelist {
    by_id: HashMap<String, Arc<str>>,
    /// SHA-256 of every listed document.
    documents: HashSet<[u8; 32]>,
    mode: SafelistMode,
}

/// APQ cache and safelist.
pub struct PersistedQueries {
    apq: Option<Mutex<LruCache<[u8; 32], Arc<str>>>>,
    safelist: Option<Safelist>,
    config: PersistedQueriesConfig,
}

/// A safelist manifest that cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("safelist {path}: {reason}")]
pub struct ManifestError {
    path: String,
    reason: String,
}

impl PersistedQueries {
    /// Builds the cache and loads the safelist manifest.
    pub fn new(cfg: &PersistedQueriesConfig) -> Result<Self, ManifestError> {
        let safelist = match &cfg.safelist {
            Some(path) => Some(load_manifest(path, cfg.safelist_mode)?),
            None => None,
        };
        let enforce = safelist
            .as_ref()
            .is_some_and(|s| s.mode == SafelistMode::Enforce);
        let apq = (cfg.apq && !enforce).then(|| {
            Mutex::new(LruCache::new(
                NonZeroUsize::new(cfg.apq_cache_size).unwrap_or(NonZeroUsize::MIN),
            ))
        });
        Ok(Self {
            apq,
            safelist,
            config: cfg.clone(),
        })
    }

    /// The `[persisted_queries]` table it was built from.
    pub fn config(&self) -> &PersistedQueriesConfig {
        &self.config
    }

    /// Operations in the safelist (0 without one).
    pub fn safelist_len(&self) -> usize {
        self.safelist.as_ref().map_or(0, |s| s.by_id.len())
    }

    /// Resolves one request's document from `query` and
    /// `extensions.persistedQuery`, and holds it to the safelist. A request
    /// with neither is the caller's concern (`missing query`).
    pub fn resolve(
        &self,
        query: Option<&str>,
        ext: Option<&PersistedQueryExt>,
    ) -> Result<Resolved, PersistedError> {
        let resolved = match (query, ext) {
            (_, Some(ext)) if ext.version != 1 => {
                return Err(PersistedError::UnsupportedVersion(ext.version));
            }
            (Some(query), Some(ext)) => {
                let digest = sha256(query);
                let listed_id = self
                    .safelist
                    .as_ref()
                    .and_then(|s| s.by_id.get(&ext.sha256_hash))
                    .is_some_and(|doc| **doc == *query);
                if !listed_id && !hex_eq(&ext.sha256_hash, &digest) {
                    return Err(PersistedError::HashMismatch);
                }
                let outcome = match &self.apq {
                    Some(apq) => {
                        lock(apq).put(digest, Arc::from(query));
                        Outcome::ApqRegistered
                    }
                    None => Outcome::Plain,
                };
                Resolved {
                    document: None,
                    outcome,
                }
            }
            (None, Some(ext)) => return self.by_hash(&ext.sha256_hash),
            (_, None) => Resolved {
                document: None,
                outcome: Outcome::Plain,
            },
        };
        match (&self.safelist, query) {
            (Some(list), Some(query)) => list.admit(query, resolved),
            _ => Ok(resolved),
        }
    }

    /// A request sent by hash (or safelist id) only.
    fn by_hash(&self, hash: &str) -> Result<Resolved, PersistedError> {
        if let Some(doc) = self.safelist.as_ref().and_then(|s| s.by_id.get(hash)) {
            return Ok(Resolved {
                document: Some(Arc::clone(doc)),
                outcome: Outcome::SafelistId,
            });
        }
        let enforce = self
            .safelist
            .as_ref()
            .is_some_and(|s| s.mode == SafelistMode::Enforce);
        if enforce {
            return Err(PersistedError::NotInList);
        }
        let Some(apq) = &self.apq else {
            return Err(PersistedError::NotSupported);
        };
        let found = parse_hex(hash).and_then(|digest| lock(apq).get(&digest).cloned());
        let Some(doc) = found else {
            return Err(PersistedError::NotFound);
        };
        let resolved = Resolved {
            document: Some(Arc::clone(&doc)),
            outcome: Outcome::ApqHit,
        };
        match &self.safelist {
            Some(list) => list.admit(&doc, resolved),
            None => Ok(resolved),
        }
    }
}

impl Safelist {
    /// Holds a document to the list.
    fn admit(&self, doc: &str, resolved: Resolved) -> Result<Resolved, PersistedError> {
        if resolved.outcome == Outcome::SafelistId || self.documents.contains(&sha256(doc)) {
            let outcome = match resolved.outcome {
                Outcome::Plain | Outcome::ApqRegistered => Outcome::SafelistDocument,
                other => other,
            };
            return Ok(Resolved {
                outcome,
                ..resolved
            });
        }
        match self.mode {
            SafelistMode::Enforce => Err(PersistedError::NotInSafelist),
            SafelistMode::Log => {
                tracing::info!(
                    sha256 = hex(&sha256(doc)),
                    "operation not in the safelist (log mode: passed)"
                );
                Ok(Resolved {
                    outcome: Outcome::NotInSafelistLogged,
                    ..resolved
                })
            }
        }
    }
}

/// The manifest formats.
#[derive(Deserialize)]
#[serde(untagged)]
enum Manifest {
    /// `{"format": "apollo-persisted-query-manifest", "version": 1, "operations": [...]}`.
    Apollo {
        format: String,
        version: u64,
        operations: Vec<ManifestOperation>,
    },
    /// `{"<id>": "<document>", ...}`.
    Map(HashMap<String, String>),
}

#[derive(Deserialize)]
struct ManifestOperation {
    id: String,
    body: String,
}

fn load_manifest(path: &Path, mode: SafelistMode) -> Result<Safelist, ManifestError> {
    let err = |reason: String| ManifestError {
        path: path.display().to_string(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|_| {
        err("not a persisted query manifest (expected Apollo's `apollo-persisted-query-manifest` format or a JSON object of id → document)".into())
    })?;
    let operations: Vec<(String, String)> = match manifest {
        Manifest::Apollo {
            format,
            version,
            operations,
        } => {
            if format != "apollo-persisted-query-manifest" || version != 1 {
                return Err(err(format!(
                    "unsupported manifest format `{format}` version {version}"
                )));
            }
            operations.into_iter().map(|o| (o.id, o.body)).collect()
        }
        Manifest::Map(map) => map.into_iter().collect(),
    };
    let mut by_id = HashMap::with_capacity(operations.len());
    let mut documents = HashSet::with_capacity(operations.len());
    for (id, body) in operations {
        if body.trim().is_empty() {
            return Err(err(format!("operation `{id}` has an empty body")));
        }
        documents.insert(sha256(&body));
        if by_id.insert(id.clone(), Arc::from(body)).is_some() {
            return Err(err(format!("operation id `{id}` appears twice")));
        }
    }
    Ok(Safelist {
        by_id,
        documents,
        mode,
    })
}

/// The SHA-256 of a document.
pub fn sha256(doc: &str) -> [u8; 32] {
    Sha256::digest(doc.as_bytes()).into()
}

/// Lowercase hex of a digest.
pub fn hex(digest: &[u8; 32]) -> String {
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Parses 64 hex digits (either case).
fn parse_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        out[i] = u8::try_from(digit(pair[0])? * 16 + digit(pair[1])?).ok()?;
    }
    Some(out)
}

fn hex_eq(s: &str, digest: &[u8; 32]) -> bool {
    parse_hex(s).is_some_and(|d| d == *digest)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The cache holds no invariant a panic could break.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "{ users { id } }";

    fn ext(hash: &str) -> PersistedQueryExt {
        PersistedQueryExt {
            version: 1,
            sha256_hash: hash.into(),
        }
    }

    fn manifest(json: &str, mode: SafelistMode) -> (tempfile::NamedTempFile, PersistedQueries) {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), json).unwrap();
        let pq = PersistedQueries::new(&PersistedQueriesConfig {
            safelist: Some(file.path().into()),
            safelist_mode: mode,
            ..Default::default()
        })
        .unwrap();
        (file, pq)
    }

    #[test]
    fn the_hash_is_the_documents_sha256_in_hex() {
        // FIPS 180-2, appendix B.1.
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(hex(&sha256("abc")), abc);
        assert_eq!(parse_hex(&abc.to_uppercase()), Some(sha256("abc")));
        assert_eq!(parse_hex(&abc[1..]), None);
        assert_eq!(parse_hex(&abc.replace('a', "g")), None);
    }

    #[test]
    fn apq_miss_then_register_then_hit() {
        let pq = PersistedQueries::new(&PersistedQueriesConfig::default()).unwrap();
        let hash = hex(&sha256(DOC));
        assert_eq!(
            pq.resolve(None, Some(&ext(&hash))),
            Err(PersistedError::NotFound)
        );
        assert_eq!(
            pq.resolve(Some(DOC), Some(&ext(&hash))).unwrap().outcome,
            Outcome::ApqRegistered
        );
        let hit = pq.resolve(None, Some(&ext(&hash.to_uppercase()))).unwrap();
        assert_eq!(hit.outcome, Outcome::ApqHit);
        assert_eq!(hit.document.as_deref(), Some(DOC));
    }

    #[test]
    fn a_document_must_hash_to_the_hash_sent_with_it() {
        let pq = PersistedQueries::new(&PersistedQueriesConfig::default()).unwrap();
        let other = hex(&sha256("{ secrets }"));
        assert_eq!(
            pq.resolve(Some(DOC), Some(&ext(&other))),
            Err(PersistedError::HashMismatch)
        );
        assert_eq!(
            pq.resolve(Some(DOC), Some(&ext("not-hex"))),
            Err(PersistedError::HashMismatch)
        );
        // Nothing was registered under the wrong hash.
        assert_eq!(
            pq.resolve(None, Some(&ext(&other))),
            Err(PersistedError::NotFound)
        );
    }

    #[test]
    fn versions_and_disabled_apq() {
        let pq = PersistedQueries::new(&PersistedQueriesConfig {
            apq: false,
            ..Default::default()
        })
        .unwrap();
        let hash = hex(&sha256(DOC));
        assert_eq!(
            pq.resolve(None, Some(&ext(&hash))),
            Err(PersistedError::NotSupported)
        );
        let v2 = PersistedQueryExt {
            version: 2,
            sha256_hash: hash,
        };
        assert_eq!(
            pq.resolve(Some(DOC), Some(&v2)),
            Err(PersistedError::UnsupportedVersion(2))
        );
        assert_eq!(pq.resolve(Some(DOC), None).unwrap().outcome, Outcome::Plain);
    }

    #[test]
    fn apq_cache_is_bounded() {
        let pq = PersistedQueries::new(&PersistedQueriesConfig {
            apq_cache_size: 2,
            ..Default::default()
        })
        .unwrap();
        let docs = ["{ a }", "{ b }", "{ c }"];
        for d in docs {
            pq.resolve(Some(d), Some(&ext(&hex(&sha256(d))))).unwrap();
        }
        let first = ext(&hex(&sha256(docs[0])));
        assert_eq!(
            pq.resolve(None, Some(&first)),
            Err(PersistedError::NotFound)
        );
        let last = ext(&hex(&sha256(docs[2])));
        assert_eq!(
            pq.resolve(None, Some(&last)).unwrap().outcome,
            Outcome::ApqHit
        );
    }

    #[test]
    fn safelist_enforce_refuses_what_is_not_listed() {
        let json = format!(
            r#"{{"format":"apollo-persisted-query-manifest","version":1,
               "operations":[{{"id":"op-users","name":"Users","type":"query","body":"{DOC}"}}]}}"#
        );
        let (_f, pq) = manifest(&json, SafelistMode::Enforce);
        assert_eq!(pq.safelist_len(), 1);
        let by_id = pq.resolve(None, Some(&ext("op-users"))).unwrap();
        assert_eq!(
            (by_id.outcome, by_id.document.as_deref()),
            (Outcome::SafelistId, Some(DOC))
        );
        assert_eq!(
            pq.resolve(Some(DOC), None).unwrap().outcome,
            Outcome::SafelistDocument
        );
        assert_eq!(
            pq.resolve(Some("{ users { id email } }"), None),
            Err(PersistedError::NotInSafelist)
        );
        assert_eq!(
            pq.resolve(None, Some(&ext("op-unknown"))),
            Err(PersistedError::NotInList)
        );
        // APQ cannot be used to sneak a document in.
        let other = "{ users { id email } }";
        let hash = hex(&sha256(other));
        assert_eq!(
            pq.resolve(Some(other), Some(&ext(&hash))),
            Err(PersistedError::NotInSafelist)
        );
        assert_eq!(
            pq.resolve(None, Some(&ext(&hash))),
            Err(PersistedError::NotInList)
        );
    }

    #[test]
    fn safelist_log_mode_passes_and_says_so() {
        let json = format!(r#"{{"abc123": "{DOC}"}}"#);
        let (_f, pq) = manifest(&json, SafelistMode::Log);
        assert_eq!(
            pq.resolve(Some("{ other }"), None).unwrap().outcome,
            Outcome::NotInSafelistLogged
        );
        assert_eq!(
            pq.resolve(None, Some(&ext("abc123"))).unwrap().outcome,
            Outcome::SafelistId
        );
    }

    #[test]
    fn bad_manifests_are_clear_errors() {
        for (json, expect) in [
            ("not json", "not a persisted query manifest"),
            (
                r#"{"format":"other","version":1,"operations":[]}"#,
                "unsupported manifest format",
            ),
            (r#"{"a": ""}"#, "empty body"),
        ] {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), json).unwrap();
            let e = PersistedQueries::new(&PersistedQueriesConfig {
                safelist: Some(file.path().into()),
                ..Default::default()
            })
            .err()
            .unwrap()
            .to_string();
            assert!(e.contains(expect), "{json}: {e}");
        }
        let missing = PersistedQueries::new(&PersistedQueriesConfig {
            safelist: Some("/nonexistent/manifest.json".into()),
            ..Default::default()
        })
        .err()
        .unwrap()
        .to_string();
        assert!(missing.contains("cannot read"), "{missing}");
    }
}
