//! The `[auth]` configuration: where the token comes from, which keys verify
//! it, and which claims it must carry.

use std::path::PathBuf;

use serde::Deserialize;

/// JWT identification settings.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Where the token is read from: a header with a scheme, or a cookie.
    pub token_source: TokenSource,
    /// Key sources; a token must verify against one of their keys.
    pub keys: Vec<KeySource>,
    /// Accepted `iss` values; empty = `iss` is not checked. When set, a token
    /// without `iss` is refused (`MISSING_CLAIM`).
    pub issuers: Vec<String>,
    /// Accepted `aud` values (a token matches if one of its audiences is
    /// listed); empty = `aud` is not checked. When set, `aud` is required.
    pub audiences: Vec<String>,
    /// Refuse tokens without an `exp` claim.
    pub require_exp: bool,
    /// Clock skew tolerated on `exp` and `nbf`, in seconds.
    pub leeway_secs: u64,
    /// Claim holding the scopes: a space-separated string or an array of strings.
    pub scope_claim: String,
    /// Verified tokens remembered (by hash) so repeated signatures are not
    /// re-verified; 0 disables the cache.
    pub cache_size: usize,
    /// Longest token accepted, in bytes; longer ones are refused unparsed.
    pub max_token_bytes: usize,
    /// Claims sent to subgraphs as headers; clients' copies of these
    /// headers are always removed.
    pub forward_claims: Vec<super::forward::ForwardClaim>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            // RFC 6750: `Authorization: Bearer <token>` is what every client sends.
            token_source: TokenSource::default(),
            // No key is configured until the operator names one; `validate` refuses that.
            keys: Vec::new(),
            // Issuer and audience are deployment-specific: there is no safe guess.
            issuers: Vec::new(),
            audiences: Vec::new(),
            // A token without expiry is valid forever once leaked.
            require_exp: true,
            // One minute of clock skew, as Apollo Router, Cosmo and Grafbase allow.
            leeway_secs: 60,
            // RFC 8693 §4.2: `scope` is a space-separated string.
            scope_claim: "scope".to_owned(),
            // Ten thousand active tokens: about 10–20 MiB with typical
            // ~1 KiB tokens (up to ~100 MiB if all were at the 8 KiB limit).
            cache_size: 10_000,
            // 8 KiB is the usual header-line limit of servers and proxies; a
            // larger token is an attack or a mistake.
            max_token_bytes: 8 * 1024,
            // Which claims a subgraph wants is its own business.
            forward_claims: Vec::new(),
        }
    }
}

/// Where the token is read from.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "from", rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenSource {
    /// A request header, e.g. `Authorization: Bearer <token>`.
    Header {
        /// Header name (case-insensitive).
        name: String,
        /// Scheme before the token (compared case-insensitively, followed by
        /// one space); empty = the whole header value is the token.
        #[serde(default)]
        scheme: String,
    },
    /// A cookie holding the bare token.
    Cookie {
        /// Cookie name (case-sensitive).
        name: String,
    },
}

impl Default for TokenSource {
    fn default() -> Self {
        // RFC 6750 §2.1, the form every OAuth client library sends.
        Self::Header {
            name: "authorization".to_owned(),
            scheme: "Bearer".to_owned(),
        }
    }
}

/// One source of verification keys.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum KeySource {
    /// A JWKS document on disk, read once at start.
    JwksFile(JwksFileConfig),
    /// A JWKS document fetched over plain `http://`, refreshed in the background.
    JwksUrl(JwksUrlConfig),
    /// A shared secret for HMAC (HS256/384/512).
    HmacSecretFile(HmacSecretConfig),
}

/// A JWKS file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JwksFileConfig {
    /// Path of the JWKS JSON document (`{"keys": [...]}`).
    pub path: PathBuf,
    /// Algorithms its keys may verify (asymmetric only).
    pub algorithms: Vec<Algorithm>,
}

/// A JWKS URL.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct JwksUrlConfig {
    /// `http://host[:port]/path` of the JWKS document. Plain HTTP only: put
    /// the identity provider's JWKS behind a local sidecar or on a trusted
    /// network.
    pub url: String,
    /// Algorithms its keys may verify (asymmetric only).
    pub algorithms: Vec<Algorithm>,
    /// Background refresh period, in seconds.
    pub refresh_secs: u64,
    /// Least time between two refetches triggered by an unknown `kid`, in seconds.
    pub unknown_kid_refetch_secs: u64,
    /// Timeout of one fetch (connect + response), in seconds.
    pub fetch_timeout_secs: u64,
    /// Largest JWKS document accepted, in bytes.
    pub max_bytes: usize,
}

impl Default for JwksUrlConfig {
    fn default() -> Self {
        Self {
            // No sensible default location; `validate` requires one.
            url: String::new(),
            // Must be chosen per issuer; `validate` requires at least one.
            algorithms: Vec::new(),
            // Five minutes: rotations are announced well ahead, and unknown
            // `kid`s trigger an early refetch anyway.
            refresh_secs: 300,
            // Cosmo's limiter interval: a flood of forged `kid`s costs the
            // identity provider at most one request per 30 s.
            unknown_kid_refetch_secs: 30,
            // Apollo Router's JWKS fetch timeout.
            fetch_timeout_secs: 15,
            // Real key sets are a few KiB; 1 MiB bounds a misbehaving server.
            max_bytes: 1024 * 1024,
        }
    }
}

/// An HMAC secret file.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HmacSecretConfig {
    /// File holding the raw secret (one trailing newline is ignored); at
    /// least 32 bytes.
    pub path: PathBuf,
    /// HMAC algorithms the secret may verify (HS256/HS384/HS512).
    pub algorithms: Vec<Algorithm>,
    /// `kid` that tokens signed with this secret carry; none = the secret
    /// only verifies tokens without a `kid`.
    #[serde(default)]
    pub kid: Option<String>,
}

/// A JWS algorithm that may be allow-listed, named as in tokens (JWA).
/// `none` has no variant: it cannot be configured.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// HMAC SHA-256.
    HS256,
    /// HMAC SHA-384.
    HS384,
    /// HMAC SHA-512.
    HS512,
    /// RSASSA-PKCS1-v1_5 SHA-256.
    RS256,
    /// RSASSA-PKCS1-v1_5 SHA-384.
    RS384,
    /// RSASSA-PKCS1-v1_5 SHA-512.
    RS512,
    /// RSASSA-PSS SHA-256.
    PS256,
    /// RSASSA-PSS SHA-384.
    PS384,
    /// RSASSA-PSS SHA-512.
    PS512,
    /// ECDSA P-256 SHA-256.
    ES256,
    /// ECDSA P-384 SHA-384.
    ES384,
    /// Ed25519.
    EdDSA,
}

impl Algorithm {
    /// Parses a token header's `alg`; `None` for `none` and anything unknown.
    pub fn from_jws(alg: &str) -> Option<Self> {
        Some(match alg {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "ES384" => Self::ES384,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    /// True for HS256/384/512.
    pub fn is_hmac(self) -> bool {
        matches!(self, Self::HS256 | Self::HS384 | Self::HS512)
    }

    /// The same algorithm in `jsonwebtoken`'s terms.
    pub(crate) fn to_jwt(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as J;
        match self {
            Self::HS256 => J::HS256,
            Self::HS384 => J::HS384,
            Self::HS512 => J::HS512,
            Self::RS256 => J::RS256,
            Self::RS384 => J::RS384,
            Self::RS512 => J::RS512,
            Self::PS256 => J::PS256,
            Self::PS384 => J::PS384,
            Self::PS512 => J::PS512,
            Self::ES256 => J::ES256,
            Self::ES384 => J::ES384,
            Self::EdDSA => J::EdDSA,
        }
    }
}

impl AuthConfig {
    /// Checks the settings; `at` is the path of this table (e.g. `auth`), and
    /// the error names the bad key below it.
    pub fn validate(&self, at: &str) -> Result<(), String> {
        if self.keys.is_empty() {
            return Err(format!("{at}.keys: at least one key source is required"));
        }
        match &self.token_source {
            TokenSource::Header { name, .. } => {
                if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                    return Err(format!(
                        "{at}.token_source.name: not a header name: {name:?}"
                    ));
                }
            }
            TokenSource::Cookie { name } => {
                if name.is_empty() || name.contains([';', '=', ' ']) {
                    return Err(format!(
                        "{at}.token_source.name: not a cookie name: {name:?}"
                    ));
                }
            }
        }
        for (i, key) in self.keys.iter().enumerate() {
            let at = format!("{at}.keys[{i}]");
            key.validate(&at)?;
        }
        if self.scope_claim.is_empty() {
            return Err(format!("{at}.scope_claim: must not be empty"));
        }
        if self.max_token_bytes < 64 {
            return Err(format!("{at}.max_token_bytes: must be at least 64"));
        }
        if self.issuers.iter().any(String::is_empty) {
            return Err(format!("{at}.issuers: empty issuer"));
        }
        if self.audiences.iter().any(String::is_empty) {
            return Err(format!("{at}.audiences: empty audience"));
        }
        super::forward::validate(&self.forward_claims, &format!("{at}.forward_claims"))
    }
}

impl KeySource {
    fn validate(&self, at: &str) -> Result<(), String> {
        let (algorithms, hmac) = match self {
            Self::JwksFile(c) => {
                if c.path.as_os_str().is_empty() {
                    return Err(format!("{at}.path: must not be empty"));
                }
                (&c.algorithms, false)
            }
            Self::JwksUrl(c) => {
                crate::auth::jwks::parse_http_url(&c.url).map_err(|e| format!("{at}.url: {e}"))?;
                if c.refresh_secs == 0 {
                    return Err(format!("{at}.refresh_secs: must be at least 1"));
                }
                if c.fetch_timeout_secs == 0 {
                    return Err(format!("{at}.fetch_timeout_secs: must be at least 1"));
                }
                if c.max_bytes == 0 {
                    return Err(format!("{at}.max_bytes: must be at least 1"));
                }
                (&c.algorithms, false)
            }
            Self::HmacSecretFile(c) => {
                if c.path.as_os_str().is_empty() {
                    return Err(format!("{at}.path: must not be empty"));
                }
                (&c.algorithms, true)
            }
        };
        if algorithms.is_empty() {
            return Err(format!(
                "{at}.algorithms: at least one algorithm is required"
            ));
        }
        for alg in algorithms {
            // An HMAC algorithm on a public-key source is the RS256→HS256
            // confusion; an asymmetric one on a secret cannot verify.
            if alg.is_hmac() != hmac {
                let kind = if hmac {
                    "an HMAC secret"
                } else {
                    "a JWKS (public keys)"
                };
                return Err(format!(
                    "{at}.algorithms: {alg:?} is not allowed for {kind}"
                ));
            }
        }
        Ok(())
    }
}
