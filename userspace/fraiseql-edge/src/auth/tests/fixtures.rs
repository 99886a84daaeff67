//! Generated keys, JWKS documents, token signing and a JWKS server.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{EncodingKey, Header};
use p256::elliptic_curve::{Generate as _, sec1::ToSec1Point as _};
use rsa::{
    pkcs1::EncodeRsaPrivateKey as _, pkcs8::EncodePublicKey as _, traits::PublicKeyParts as _,
};
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

/// A signing key and its public JWK.
pub struct TestKey {
    pub encoding: EncodingKey,
    pub jwk: Value,
}

pub struct Rsa {
    pub key: TestKey,
    /// SubjectPublicKeyInfo DER and PEM of the public key (attack material).
    pub public_der: Vec<u8>,
    pub public_pem: String,
}

/// One RSA key for the whole test binary: generation is slow unoptimised.
pub fn rsa() -> &'static Rsa {
    static KEY: OnceLock<Rsa> = OnceLock::new();
    KEY.get_or_init(|| {
        let private = rsa::PrivateKey::new(&mut getrandom::SysRng, 2048).expect("rsa keygen");
        let public = private.to_public_key();
        let der = private.to_pkcs1_der().expect("pkcs1");
        let public_der = public
            .to_public_key_der()
            .expect("spki")
            .as_bytes()
            .to_vec();
        let body = base64::engine::general_purpose::STANDARD.encode(&public_der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        let public_pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            lines.join("\n")
        );
        Rsa {
            key: TestKey {
                encoding: EncodingKey::from_rsa_der(der.as_bytes()),
                jwk: json!({
                    "kty": "RSA", "kid": "rsa", "use": "sig",
                    "n": b64(&public.n_bytes()), "e": b64(&public.e_bytes()),
                }),
            },
            public_der,
            public_pem,
        }
    })
}

pub fn p256(kid: &str) -> TestKey {
    use p256::pkcs8::EncodePrivateKey as _;
    let secret = p256::SecretKey::generate();
    let point = secret.public_key().to_sec1_point(false);
    TestKey {
        encoding: EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        }),
    }
}

pub fn p384(kid: &str) -> TestKey {
    use p384::pkcs8::EncodePrivateKey as _;
    let secret = p384::SecretKey::generate();
    let point = secret.public_key().to_sec1_point(false);
    TestKey {
        encoding: EncodingKey::from_ec_der(secret.to_pkcs8_der().expect("pkcs8").as_bytes()),
        jwk: json!({
            "kty": "EC", "crv": "P-384", "kid": kid,
            "x": b64(point.x().expect("x")), "y": b64(point.y().expect("y")),
        }),
    }
}

pub fn ed25519(kid: &str) -> TestKey {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).expect("random");
    let signing = ed25519_dalek::SigningKey::from_bytes(&seed);
    TestKey {
        encoding: EncodingKey::from_ed_der(signing.to_pkcs8_der().expect("pkcs8").as_bytes()),
        jwk: json!({
            "kty": "OKP", "crv": "Ed25519", "kid": kid,
            "x": b64(signing.verifying_key().as_bytes()),
        }),
    }
}

pub const HMAC_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test-secret";

pub fn jwks(keys: &[&Value]) -> String {
    json!({ "keys": keys }).to_string()
}

/// Claims valid for an hour, for issuer `https://issuer` and audience `edge`.
pub fn claims() -> Value {
    json!({
        "sub": "user-1",
        "iss": "https://issuer",
        "aud": "edge",
        "exp": now() + 3600,
        "iat": now(),
        "scope": "read write",
    })
}

pub fn sign(
    alg: jsonwebtoken::Algorithm,
    kid: Option<&str>,
    claims: &Value,
    key: &EncodingKey,
) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// A temporary directory holding key files.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn write(&self, name: &str, body: &[u8]) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).expect("write");
        path
    }
}

/// A JWKS server on 127.0.0.1:0 serving whatever `body` holds, counting requests.
pub struct JwksServer {
    pub addr: SocketAddr,
    pub body: Arc<Mutex<String>>,
    pub requests: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

impl JwksServer {
    pub async fn start(body: String) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let body = Arc::new(Mutex::new(body));
        let requests = Arc::new(AtomicUsize::new(0));
        let (b, r) = (body.clone(), requests.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (b, r) = (b.clone(), r.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        r.fetch_add(1, Ordering::SeqCst);
                        let body = b.lock().expect("lock").clone();
                        async move {
                            Ok::<_, Infallible>(
                                http::Response::builder()
                                    .header("content-type", "application/json")
                                    .body(Full::new(Bytes::from(body)))
                                    .expect("response"),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            body,
            requests,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/.well-known/jwks.json", self.addr)
    }

    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    pub fn serve(&self, body: String) {
        *self.body.lock().expect("lock") = body;
    }

    /// Stops accepting: later fetches get "connection refused".
    pub async fn stop(&self) {
        self.accept.abort();
        while !self.accept.is_finished() {
            tokio::task::yield_now().await;
        }
    }
}
