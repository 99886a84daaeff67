//! Verification keys: what each can verify, loaded from JWKS documents and
//! HMAC secret files.
//!
//! A key verifies a token only if the token's `alg` is (1) of the key's type
//! ([`KeyKind::can_verify`]: an RSA key never verifies HS256, a P-256 key
//! never ES384), (2) in its source's allow-list, and (3) equal to the JWK's
//! own `alg` when the JWK pins one. Symmetric (`oct`) keys in a JWKS are
//! ignored: shared secrets come only from secret files, so a public key's
//! bytes can never become an HMAC secret.

use std::path::Path;

use jsonwebtoken::{
    DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, PublicKeyUse},
};

use super::config::{Algorithm, HmacSecretConfig};

/// Shortest HMAC secret accepted (RFC 7518 §3.2: at least the hash size; 32
/// bytes for HS256).
pub const MIN_HMAC_SECRET_BYTES: usize = 32;

/// The type of a key, which fixes the algorithms it can verify.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyKind {
    /// A shared secret.
    Hmac,
    /// An RSA public key.
    Rsa,
    /// An ECDSA P-256 public key.
    EcP256,
    /// An ECDSA P-384 public key.
    EcP384,
    /// An Ed25519 public key.
    Ed25519,
}

impl KeyKind {
    /// Whether a key of this type can verify `alg` at all.
    pub fn can_verify(self, alg: Algorithm) -> bool {
        use Algorithm as A;
        match self {
            Self::Hmac => matches!(alg, A::HS256 | A::HS384 | A::HS512),
            Self::Rsa => matches!(
                alg,
                A::RS256 | A::RS384 | A::RS512 | A::PS256 | A::PS384 | A::PS512
            ),
            Self::EcP256 => alg == A::ES256,
            Self::EcP384 => alg == A::ES384,
            Self::Ed25519 => alg == A::EdDSA,
        }
    }
}

/// One verification key.
#[derive(Clone)]
pub struct Key {
    /// The `kid` tokens name it by, if any.
    pub kid: Option<String>,
    /// Its type.
    pub kind: KeyKind,
    /// Algorithms it may verify: the source's allow-list, narrowed to the
    /// JWK's `alg` when present.
    pub algorithms: Vec<Algorithm>,
    /// The key material.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("kind", &self.kind)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

/// Parses a JWKS document. Keys that are unusable here (encryption keys,
/// symmetric keys, unsupported curves, malformed) are skipped and counted in
/// the second value; an unparsable document is an error.
pub fn parse_jwks(body: &[u8], allowed: &[Algorithm]) -> Result<(Vec<Key>, usize), String> {
    #[derive(serde::Deserialize)]
    struct Set {
        keys: Vec<serde_json::Value>,
    }
    let set: Set = serde_json::from_slice(body).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = Vec::with_capacity(set.keys.len());
    let mut skipped = 0;
    for value in set.keys {
        match serde_json::from_value::<Jwk>(value)
            .ok()
            .and_then(|jwk| from_jwk(&jwk, allowed))
        {
            Some(key) => keys.push(key),
            None => skipped += 1,
        }
    }
    Ok((keys, skipped))
}

fn from_jwk(jwk: &Jwk, allowed: &[Algorithm]) -> Option<Key> {
    if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
        return None;
    }
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return None,
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            KeyKind::Ed25519
        }
        // `oct` (shared secrets) and anything else.
        _ => return None,
    };
    let pinned = match jwk.common.key_algorithm {
        // An `alg` we cannot use (e.g. RSA-OAEP): an encryption key.
        Some(a) => Some(Algorithm::from_jws(&a.to_string())?),
        None => None,
    };
    let algorithms = allowed
        .iter()
        .copied()
        .filter(|a| pinned.is_none_or(|p| p == *a))
        .collect();
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(Key {
        kid: jwk.common.key_id.clone(),
        kind,
        algorithms,
        key,
    })
}

/// Reads a JWKS file.
pub fn load_jwks_file(path: &Path, allowed: &[Algorithm]) -> Result<Vec<Key>, String> {
    let body = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let (keys, skipped) =
        parse_jwks(&body, allowed).map_err(|e| format!("{}: {e}", path.display()))?;
    if skipped > 0 {
        tracing::warn!(path = %path.display(), skipped, "JWKS keys skipped (unusable for signatures here)");
    }
    Ok(keys)
}

/// Reads an HMAC secret file.
pub fn load_hmac_secret(config: &HmacSecretConfig) -> Result<Key, String> {
    let path = &config.path;
    let mut secret = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if secret.last() == Some(&b'\n') {
        secret.pop();
        if secret.last() == Some(&b'\r') {
            secret.pop();
        }
    }
    if secret.len() < MIN_HMAC_SECRET_BYTES {
        return Err(format!(
            "{}: HMAC secret shorter than {MIN_HMAC_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    let key = DecodingKey::from_secret(&secret).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Key {
        kid: config.kid.clone(),
        kind: KeyKind::Hmac,
        algorithms: config.algorithms.clone(),
        key,
    })
}
