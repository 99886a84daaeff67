//! The benchmark's identity provider: an RSA key made with `openssl`, its
//! JWKS (for the edge) and public key PEM (for HAProxy), and RS256 tokens
//! signed with it. A bad token has a well-formed header and payload and the
//! signature of other claims, so only the signature check refuses it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use serde_json::json;

/// `iss` of every token; the edge and HAProxy both require it.
pub const ISSUER: &str = "https://issuer.bench.example";
/// `aud` of every token; the edge and HAProxy both require it.
pub const AUDIENCE: &str = "bench";
/// `sub` of the good token: the rate limit's key.
pub const SUBJECT: &str = "bench-user";
const KID: &str = "bench-rs256";

/// The key files and the tokens.
pub struct Tokens {
    /// `{"keys":[…]}` with the public key as an RSA JWK.
    pub jwks: PathBuf,
    /// The public key as SubjectPublicKeyInfo PEM.
    pub public_pem: PathBuf,
    /// A valid RS256 token, for a day.
    pub good: String,
    /// `good`'s header and payload with another token's signature.
    pub bad: String,
}

/// Makes a 2048-bit RSA key in `dir` and signs the tokens with it.
pub fn make(dir: &Path) -> Result<Tokens> {
    let private = dir.join("jwt-private.pem");
    let public_pem = dir.join("jwt-public.pem");
    openssl(&[
        "genpkey",
        "-algorithm",
        "RSA",
        "-pkeyopt",
        "rsa_keygen_bits:2048",
        "-out",
        path(&private)?,
    ])?;
    openssl(&[
        "pkey",
        "-in",
        path(&private)?,
        "-pubout",
        "-out",
        path(&public_pem)?,
    ])?;
    let modulus = openssl(&["rsa", "-in", path(&private)?, "-noout", "-modulus"])?;
    let modulus = modulus
        .trim()
        .strip_prefix("Modulus=")
        .with_context(|| format!("unexpected `openssl rsa -modulus` output {modulus:?}"))?;
    let n = hex(modulus)?;
    let jwk = json!({
        "kty": "RSA", "kid": KID, "use": "sig", "alg": "RS256",
        "n": b64(&n),
        // `openssl genpkey` uses 65537 unless told otherwise.
        "e": b64(&[1, 0, 1]),
    });
    let jwks = dir.join("jwks.json");
    std::fs::write(&jwks, json!({ "keys": [jwk] }).to_string())
        .with_context(|| format!("writing {}", jwks.display()))?;

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("clock before 1970")?
        .as_secs();
    let claims = |sub: &str| {
        json!({
            "sub": sub, "iss": ISSUER, "aud": AUDIENCE,
            "iat": now, "exp": now + 86_400, "scope": "read",
        })
    };
    let good = sign(&private, &claims(SUBJECT))?;
    let other = sign(&private, &claims("someone-else"))?;
    let (signed, _) = good.rsplit_once('.').context("a JWT has three parts")?;
    let (_, signature) = other.rsplit_once('.').context("a JWT has three parts")?;
    Ok(Tokens {
        jwks,
        public_pem,
        bad: format!("{signed}.{signature}"),
        good,
    })
}

/// `header.payload.signature` with RS256 (RSASSA-PKCS1-v1_5, SHA-256).
fn sign(private: &Path, claims: &serde_json::Value) -> Result<String> {
    let header = json!({ "alg": "RS256", "typ": "JWT", "kid": KID });
    let signed = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha256", "-sign", path(private)?])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("running openssl (apt-get install openssl)")?;
    child
        .stdin
        .take()
        .context("openssl's stdin")?
        .write_all(signed.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() || out.stdout.len() != 256 {
        bail!(
            "`openssl dgst -sha256 -sign` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(format!("{signed}.{}", b64(&out.stdout)))
}

/// Runs `openssl args…` and returns its stdout.
fn openssl(args: &[&str]) -> Result<String> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .context("running openssl (apt-get install openssl)")?;
    if !out.status.success() {
        bail!(
            "`openssl {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn path(p: &Path) -> Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn hex(text: &str) -> Result<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        bail!("odd-length hex {text:?}");
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            u8::from_str_radix(&text[i..i + 2], 16).with_context(|| format!("bad hex {text:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base64url() {
        assert_eq!(hex("00FF10").unwrap(), [0, 255, 16]);
        assert!(hex("0").is_err());
        assert_eq!(b64(&[1, 0, 1]), "AQAB");
    }
}
