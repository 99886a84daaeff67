//! Phase 2 of the request path, **identify**: who is calling, from a JWT.
//!
//! [`Authenticator::authenticate`] reads the token from the configured
//! header or cookie and returns:
//! * `Ok(None)` — no token presented; the caller decides whether anonymous
//!   requests are allowed (and answers [`AuthError::MissingToken`] if not);
//! * `Ok(Some(identity))` — a verified token;
//! * `Err(e)` — a refused token, with a stable [`AuthError::code`] and
//!   [`AuthError::www_authenticate`] for the 401.
//!
//! Checks, in order: size ([`config::AuthConfig::max_token_bytes`]) → shape
//! and header (`alg` allow-listed, never `none`; no `crit`) → the verified
//! token cache → key selection by `kid` (an unknown `kid` triggers one
//! rate-limited JWKS refetch) → key type matches `alg` → `alg` allowed for
//! that key → signature → `exp`/`nbf` (with leeway), `iss`, `aud`.
//!
//! * [`config`] — `AuthConfig`, the `[auth]` table.
//! * [`error`] — `AuthError` (per-request refusals) and `StartError`.
//! * [`token`] — finding the token and pre-checking its header.
//! * [`keys`] — key types, JWKS parsing, HMAC secrets.
//! * [`jwks`] — the JWKS URL source and its refresh.
//! * [`metrics`] — the JWKS sources' refresh age and failures, at scrape time.
//! * [`cache`] — verified tokens by hash.
//! * [`forward`] — claims forwarded to subgraphs as headers.

pub mod cache;
pub mod config;
pub mod error;
pub mod forward;
pub mod jwks;
pub mod keys;
pub mod metrics;
pub mod token;

#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonwebtoken::Validation;
use serde_json::{Map, Value};

use self::{
    cache::TokenCache,
    config::Algorithm,
    jwks::{AbortOnDrop, JwksUrl},
    keys::Key,
};
pub use self::{
    config::{AuthConfig, KeySource},
    error::{AuthError, StartError},
};

/// Who is calling, from a verified token.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identity {
    /// The `sub` claim, when it is a string.
    pub subject: Option<String>,
    /// Scopes from the configured claim (space-separated string or array).
    pub scopes: BTreeSet<String>,
    /// Every claim of the token.
    pub claims: Map<String, Value>,
}

impl Identity {
    /// The claim at `path`: the claim of that exact name, else the dotted
    /// path walked through nested objects (`realm_access.roles`).
    pub fn claim(&self, path: &str) -> Option<&Value> {
        if let Some(value) = self.claims.get(path) {
            return Some(value);
        }
        let mut parts = path.split('.');
        let mut value = self.claims.get(parts.next()?)?;
        for part in parts {
            value = value.as_object()?.get(part)?;
        }
        Some(value)
    }

    fn from_claims(claims: Map<String, Value>, scope_claim: &str) -> Self {
        let subject = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
        let scopes = match claims.get(scope_claim) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            // Non-string elements grant nothing.
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => BTreeSet::new(),
        };
        Self {
            subject,
            scopes,
            claims,
        }
    }
}

/// Counters, for metrics and tests.
#[derive(Debug, Default)]
pub struct AuthStats {
    /// Tokens answered from the cache.
    pub cache_hits: AtomicU64,
    /// Signature verifications performed.
    pub verifications: AtomicU64,
}

/// Verifies tokens against the configured keys. Not `Clone`: share it in an
/// `Arc`. Dropping it stops the JWKS refresh tasks.
pub struct Authenticator {
    config: AuthConfig,
    /// Keys from JWKS files and HMAC secrets, fixed at start.
    static_keys: Vec<Arc<Key>>,
    urls: Vec<Arc<JwksUrl>>,
    /// One validation per allowed algorithm.
    validations: BTreeMap<Algorithm, Validation>,
    cache: TokenCache,
    /// Bumped when a key set changes; cached entries from before are void.
    epoch: Arc<AtomicU64>,
    stats: AuthStats,
    claim_headers: forward::ClaimHeaders,
    _refresh: Vec<AbortOnDrop>,
}

impl Authenticator {
    /// The `[auth]` table it was built from.
    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Validates the config, loads every key source (fetching JWKS URLs
    /// once) and starts the background refreshes. Fails if the config is
    /// invalid, if any source fails (a JWKS URL that is down at start), or
    /// if no key at all was loaded.
    pub async fn new(config: AuthConfig) -> Result<Self, StartError> {
        config.validate("auth").map_err(StartError::Config)?;
        let epoch = Arc::new(AtomicU64::new(0));
        let mut static_keys = Vec::new();
        let mut urls = Vec::new();
        let mut allowed = BTreeSet::new();
        for (i, source) in config.keys.iter().enumerate() {
            let at = format!("auth.keys[{i}]");
            match source {
                KeySource::JwksFile(c) => {
                    let keys = keys::load_jwks_file(&c.path, &c.algorithms)
                        .map_err(|e| StartError::KeySource(format!("{at}: {e}")))?;
                    if keys.is_empty() {
                        return Err(StartError::KeySource(format!(
                            "{at}: {}: no usable signing key",
                            c.path.display()
                        )));
                    }
                    static_keys.extend(keys.into_iter().map(Arc::new));
                    allowed.extend(c.algorithms.iter().copied());
                }
                KeySource::JwksUrl(c) => {
                    let source = JwksUrl::start(c.clone(), epoch.clone())
                        .await
                        .map_err(|e| StartError::KeySource(format!("{at}: {}: {e}", c.url)))?;
                    urls.push(source);
                    allowed.extend(c.algorithms.iter().copied());
                }
                KeySource::HmacSecretFile(c) => {
                    let key = keys::load_hmac_secret(c)
                        .map_err(|e| StartError::KeySource(format!("{at}: {e}")))?;
                    static_keys.push(Arc::new(key));
                    allowed.extend(c.algorithms.iter().copied());
                }
            }
        }
        let validations = allowed
            .iter()
            .map(|alg| (*alg, validation(&config, *alg)))
            .collect();
        let refresh = urls
            .iter()
            .map(|u| AbortOnDrop(tokio::spawn(Arc::clone(u).refresh_loop())))
            .collect();
        Ok(Self {
            cache: TokenCache::new(config.cache_size),
            claim_headers: forward::ClaimHeaders::new(&config.forward_claims),
            config,
            static_keys,
            urls,
            validations,
            epoch,
            stats: AuthStats::default(),
            _refresh: refresh,
        })
    }

    /// Sets the `auth.forward_claims` headers of an upstream request from
    /// `identity`, after removing the client's copies of them.
    pub fn forward_claims(&self, identity: Option<&Identity>, headers: &mut http::HeaderMap) {
        self.claim_headers.apply(identity, headers);
    }

    /// The identity of the request's token; `None` when no token is presented.
    pub async fn authenticate(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Option<Identity>, AuthError> {
        let Some(token) = token::extract(
            headers,
            &self.config.token_source,
            self.config.max_token_bytes,
        )?
        else {
            return Ok(None);
        };
        self.verify(token).await.map(Some)
    }

    /// Verifies one token (without the `Bearer ` scheme).
    pub async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.len() > self.config.max_token_bytes {
            return Err(AuthError::TokenTooLarge);
        }
        let now = jsonwebtoken::get_current_timestamp();
        if let Some(identity) = self
            .cache
            .get(token, now, self.epoch.load(Ordering::Acquire))
        {
            self.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(identity);
        }
        let header = token::parse_header(token)?;
        let Some(validation) = self.validations.get(&header.alg) else {
            return Err(AuthError::UnsupportedAlgorithm);
        };
        // Read before the keys: a key change racing this verification
        // leaves an entry that is already void, never a stale valid one.
        let epoch = self.epoch.load(Ordering::Acquire);
        let candidates = match self.candidates(&header) {
            Err(AuthError::UnknownKey) if header.kid.is_some() && !self.urls.is_empty() => {
                for url in &self.urls {
                    url.refetch_for_unknown_kid().await;
                }
                self.candidates(&header)?
            }
            other => other?,
        };
        let mut outcome = Err(AuthError::UnknownKey);
        for key in &candidates {
            self.stats.verifications.fetch_add(1, Ordering::Relaxed);
            match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
                Ok(data) => {
                    outcome = Ok(data.claims);
                    break;
                }
                Err(e) => {
                    outcome = Err(AuthError::from_jwt(&e));
                    // Any other refusal comes after the signature matched.
                    if outcome != Err(AuthError::InvalidSignature) {
                        break;
                    }
                }
            }
        }
        let claims = outcome?;
        let exp = claims.get("exp").and_then(Value::as_u64);
        let identity = Identity::from_claims(claims, &self.config.scope_claim);
        if let Some(exp) = exp {
            self.cache.insert(token, identity.clone(), exp, epoch);
        }
        Ok(identity)
    }

    /// Keys that may verify this token, or why there are none.
    fn candidates(&self, header: &token::Header) -> Result<Vec<Arc<Key>>, AuthError> {
        let url_keys: Vec<_> = self.urls.iter().map(|u| u.keys()).collect();
        let all = self
            .static_keys
            .iter()
            .chain(url_keys.iter().flat_map(|k| k.iter()));
        let alg = header.alg;
        let usable = |k: &&Arc<Key>| k.kind.can_verify(alg) && k.algorithms.contains(&alg);
        match &header.kid {
            Some(kid) => {
                let named: Vec<&Arc<Key>> = all.filter(|k| k.kid.as_ref() == Some(kid)).collect();
                if named.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                if !named.iter().any(|k| k.kind.can_verify(alg)) {
                    return Err(AuthError::KeyAlgorithmMismatch);
                }
                let keys: Vec<Arc<Key>> = named.into_iter().filter(usable).cloned().collect();
                if keys.is_empty() {
                    return Err(AuthError::UnsupportedAlgorithm);
                }
                Ok(keys)
            }
            None => {
                let keys: Vec<Arc<Key>> = all.filter(usable).cloned().collect();
                if keys.is_empty() {
                    return Err(AuthError::UnknownKey);
                }
                Ok(keys)
            }
        }
    }

    /// Counters.
    pub fn stats(&self) -> &AuthStats {
        &self.stats
    }

    /// Verified tokens currently cached.
    pub fn cached_tokens(&self) -> usize {
        self.cache.len()
    }

    /// The collector of the JWKS URL sources' refresh metrics; register it
    /// into the daemon's registry.
    pub fn jwks_collector(&self) -> prometheus::Result<metrics::JwksCollector> {
        metrics::JwksCollector::new(self.urls.clone())
    }
}

/// The claim checks for one algorithm.
fn validation(config: &AuthConfig, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg.to_jwt());
    v.leeway = config.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required: Vec<&str> = Vec::new();
    if config.require_exp {
        required.push("exp");
    }
    if !config.issuers.is_empty() {
        v.set_issuer(&config.issuers);
        required.push("iss");
    }
    v.validate_aud = !config.audiences.is_empty();
    if v.validate_aud {
        v.set_audience(&config.audiences);
        required.push("aud");
    }
    v.set_required_spec_claims(&required);
    v
}
