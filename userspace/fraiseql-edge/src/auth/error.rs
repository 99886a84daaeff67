//! Why a token was refused. Messages are for clients and logs: they never
//! echo the token or a claim value.

/// Why a presented token was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token source is present but empty (or a required token is absent).
    #[error("no bearer token")]
    MissingToken,
    /// Not a compact JWS: wrong scheme, bad base64, bad JSON, wrong shape.
    #[error("malformed token")]
    MalformedToken,
    /// Longer than `max_token_bytes`.
    #[error("token too large")]
    TokenTooLarge,
    /// `alg` is `none`, unknown, or not allowed for the selected key.
    #[error("unsupported algorithm")]
    UnsupportedAlgorithm,
    /// The key's type cannot verify `alg` (e.g. an EC key for RS256).
    #[error("key type does not match the algorithm")]
    KeyAlgorithmMismatch,
    /// No configured key has the token's `kid` (after a refetch, for URLs).
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("invalid signature")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
    /// `iss` is not an accepted issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// No `aud` is an accepted audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim (`exp`, `iss`, `aud`) is absent.
    #[error("missing required claim")]
    MissingClaim,
    /// The header has `crit`: no extension is understood here.
    #[error("unsupported critical header")]
    CriticalHeader,
}

/// The authenticator could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid (the text names the key).
    #[error("invalid auth config: {0}")]
    Config(String),
    /// A key source failed or yielded no key (the text says which and why).
    #[error("auth key source {0}")]
    KeySource(String),
}

impl AuthError {
    /// Every reason, for the reference page's test and metric set-up.
    pub const ALL: [AuthError; 13] = [
        Self::MissingToken,
        Self::MalformedToken,
        Self::TokenTooLarge,
        Self::UnsupportedAlgorithm,
        Self::KeyAlgorithmMismatch,
        Self::UnknownKey,
        Self::InvalidSignature,
        Self::Expired,
        Self::NotYetValid,
        Self::WrongIssuer,
        Self::WrongAudience,
        Self::MissingClaim,
        Self::CriticalHeader,
    ];

    /// Stable code for GraphQL `extensions.code` and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "MISSING_TOKEN",
            Self::MalformedToken => "MALFORMED_TOKEN",
            Self::TokenTooLarge => "TOKEN_TOO_LARGE",
            Self::UnsupportedAlgorithm => "UNSUPPORTED_ALGORITHM",
            Self::KeyAlgorithmMismatch => "KEY_ALGORITHM_MISMATCH",
            Self::UnknownKey => "UNKNOWN_KEY",
            Self::InvalidSignature => "INVALID_SIGNATURE",
            Self::Expired => "EXPIRED",
            Self::NotYetValid => "NOT_YET_VALID",
            Self::WrongIssuer => "WRONG_ISSUER",
            Self::WrongAudience => "WRONG_AUDIENCE",
            Self::MissingClaim => "MISSING_CLAIM",
            Self::CriticalHeader => "CRITICAL_HEADER",
        }
    }

    /// Metric label (`reason="…"`): the code in lower case.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingToken => "missing_token",
            Self::MalformedToken => "malformed_token",
            Self::TokenTooLarge => "token_too_large",
            Self::UnsupportedAlgorithm => "unsupported_algorithm",
            Self::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            Self::UnknownKey => "unknown_key",
            Self::InvalidSignature => "invalid_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim => "missing_claim",
            Self::CriticalHeader => "critical_header",
        }
    }

    /// The `WWW-Authenticate` value for a 401 (RFC 6750 §3). A missing token
    /// gets the bare challenge, as the RFC asks; the description is the
    /// fixed message, never token content.
    pub fn www_authenticate(&self) -> http::HeaderValue {
        let value = match self {
            Self::MissingToken => "Bearer".to_owned(),
            other => format!(r#"Bearer error="invalid_token", error_description="{other}""#),
        };
        http::HeaderValue::from_str(&value).unwrap_or(http::HeaderValue::from_static("Bearer"))
    }

    /// Maps a `jsonwebtoken` verification error.
    pub(crate) fn from_jwt(e: &jsonwebtoken::errors::Error) -> Self {
        use jsonwebtoken::errors::ErrorKind as K;
        match e.kind() {
            K::InvalidToken | K::Base64(_) | K::Json(_) | K::Utf8(_) | K::InvalidClaimFormat(_) => {
                Self::MalformedToken
            }
            K::ExpiredSignature => Self::Expired,
            K::ImmatureSignature => Self::NotYetValid,
            K::InvalidIssuer => Self::WrongIssuer,
            K::InvalidAudience => Self::WrongAudience,
            K::MissingRequiredClaim(_) => Self::MissingClaim,
            K::InvalidAlgorithm
            | K::UnsupportedAlgorithm
            | K::InvalidAlgorithmName
            | K::MissingAlgorithm => Self::UnsupportedAlgorithm,
            // Signature mismatch, a signature of the wrong shape for the key,
            // or anything newer: refuse as unverified.
            _ => Self::InvalidSignature,
        }
    }
}
