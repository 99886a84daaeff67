//! Bearer tokens of the control API: an admin token (every call) and a
//! read-only token (status, lists, metrics, events), each read from a file
//! at start and again at every reload (rotation without a restart). A
//! token nobody knows also makes the interceptor read the files again (at
//! most once a second): a rotated Kubernetes Secret is in force for the
//! first call that presents the new token, before any reload.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use arc_swap::ArcSwap;
use tonic::{Request, Status};

use crate::config::ControlConfig;

/// Tokens shorter than this are refused: a token is a secret, not a password.
pub const MIN_TOKEN_LEN: usize = 16;

/// What a caller may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read-only calls.
    Read,
    /// Every call.
    Admin,
}

/// Who made a call, as the interceptor found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// Its role.
    pub role: Role,
}

impl Caller {
    /// The actor of logs and events: `operator:admin` or `operator:read-only`.
    pub fn actor(&self) -> &'static str {
        match self.role {
            Role::Admin => "operator:admin",
            Role::Read => "operator:read-only",
        }
    }
}

/// The tokens in force, and the files they came from.
#[derive(Default)]
pub struct Tokens {
    admin: Option<Vec<u8>>,
    read: Option<Vec<u8>>,
    admin_file: Option<PathBuf>,
    read_file: Option<PathBuf>,
}

impl Tokens {
    /// Reads the token files of `cfg`.
    pub fn load(cfg: &ControlConfig) -> Result<Self, String> {
        Self::from_files(cfg.admin_token_file.clone(), cfg.read_token_file.clone())
    }

    fn from_files(admin_file: Option<PathBuf>, read_file: Option<PathBuf>) -> Result<Self, String> {
        let read = |f: &Option<PathBuf>| f.as_deref().map(read_token).transpose();
        Ok(Self {
            admin: read(&admin_file)?,
            read: read(&read_file)?,
            admin_file,
            read_file,
        })
    }

    /// The same files read again, if what they hold now differs and is
    /// valid.
    fn reread(&self) -> Option<Self> {
        let fresh = Self::from_files(self.admin_file.clone(), self.read_file.clone());
        match fresh {
            Ok(t) if t.admin != self.admin || t.read != self.read => Some(t),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "control token files changed but cannot be used; the tokens in force stay");
                None
            }
        }
    }

    /// The role of `token`, compared in constant time.
    pub fn role(&self, token: &[u8]) -> Option<Role> {
        // Both are compared, whatever the first gives.
        let admin = self.admin.as_deref().is_some_and(|t| same(t, token));
        let read = self.read.as_deref().is_some_and(|t| same(t, token));
        if admin {
            Some(Role::Admin)
        } else if read {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// Equality that takes as long whatever the position of the first difference.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A token file: the token is its content without surrounding whitespace.
fn read_token(path: &Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read token file {}: {e}", path.display()))?;
    let token = text.trim();
    if token.len() < MIN_TOKEN_LEN || token.chars().any(char::is_whitespace) {
        return Err(format!(
            "token file {} must hold one token of at least {MIN_TOKEN_LEN} characters without spaces",
            path.display()
        ));
    }
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o077 != 0
    {
        tracing::warn!(
            file = %path.display(),
            "control token file is readable by group or others; chmod 600 it"
        );
    }
    Ok(token.as_bytes().to_vec())
}

/// Token files are read again for an unknown token at most this often.
const REREAD_EVERY: Duration = Duration::from_secs(1);

/// The interceptor: every call needs `authorization: Bearer <token>` with
/// a known token; the caller's role goes into the request's extensions.
#[derive(Clone)]
pub struct Authenticate {
    tokens: Arc<ArcSwap<Tokens>>,
    last_reread: Arc<Mutex<Option<Instant>>>,
}

impl Authenticate {
    /// Checks calls against `tokens` (which reloads replace).
    pub fn new(tokens: Arc<ArcSwap<Tokens>>) -> Self {
        Self {
            tokens,
            last_reread: Arc::new(Mutex::new(None)),
        }
    }

    /// The role of `token`; for an unknown one, the token files are read
    /// again (rate-limited) in case they were rotated.
    fn role(&self, token: &[u8]) -> Option<Role> {
        let current = self.tokens.load();
        if let Some(role) = current.role(token) {
            return Some(role);
        }
        {
            let mut last = self.last_reread.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some_and(|at| at.elapsed() < REREAD_EVERY) {
                return None;
            }
            *last = Some(Instant::now());
        }
        let fresh = current.reread()?;
        tracing::info!("control token files changed: the new tokens are in force");
        let role = fresh.role(token);
        self.tokens.store(Arc::new(fresh));
        role
    }
}

impl tonic::service::Interceptor for Authenticate {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        let Some(value) = req.metadata().get(fraiseql_edge_api::AUTHORIZATION) else {
            return Err(Status::unauthenticated(
                "missing `authorization: Bearer <token>` metadata",
            ));
        };
        let token = value
            .as_bytes()
            .strip_prefix(b"Bearer ")
            .or_else(|| value.as_bytes().strip_prefix(b"bearer "))
            .ok_or_else(|| Status::unauthenticated("authorization must be `Bearer <token>`"))?;
        let Some(role) = self.role(token) else {
            tracing::warn!("control API call with an unknown token refused");
            return Err(Status::unauthenticated("unknown token"));
        };
        req.extensions_mut().insert(Caller { role });
        Ok(req)
    }
}

/// The caller of `req`, which must be an admin.
pub fn admin<T>(req: &Request<T>) -> Result<&'static str, Status> {
    match req.extensions().get::<Caller>() {
        Some(c) if c.role == Role::Admin => Ok(c.actor()),
        Some(_) => Err(Status::permission_denied(
            "this call changes the daemon: it needs the admin token, not the read-only one",
        )),
        None => Err(Status::unauthenticated("no caller")),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use tonic::service::Interceptor as _;

    use super::*;

    fn token_file(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
        let path = dir.join(name);
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(content.as_bytes()).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    fn tokens() -> (tempfile::TempDir, Authenticate) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ControlConfig {
            admin_token_file: Some(token_file(dir.path(), "a", "admin-token-0123456789\n")),
            read_token_file: Some(token_file(dir.path(), "r", "  read-token-0123456789 ")),
            ..ControlConfig::default()
        };
        let t = Tokens::load(&cfg).unwrap();
        (dir, Authenticate::new(Arc::new(ArcSwap::from_pointee(t))))
    }

    fn call(auth: &mut Authenticate, header: Option<&str>) -> Result<Role, tonic::Code> {
        let mut req = Request::new(());
        if let Some(h) = header {
            req.metadata_mut()
                .insert("authorization", h.parse().unwrap());
        }
        auth.call(req)
            .map(|r| r.extensions().get::<Caller>().unwrap().role)
            .map_err(|s| s.code())
    }

    #[test]
    fn tokens_give_their_role_and_anything_else_is_unauthenticated() {
        let (_dir, mut auth) = tokens();
        assert_eq!(
            call(&mut auth, Some("Bearer admin-token-0123456789")),
            Ok(Role::Admin)
        );
        assert_eq!(
            call(&mut auth, Some("Bearer read-token-0123456789")),
            Ok(Role::Read)
        );
        for bad in [
            None,
            Some("Bearer admin-token-012345678"),
            Some("Bearer admin-token-01234567890"),
            Some("admin-token-0123456789"),
            Some("Basic admin-token-0123456789"),
            Some("Bearer "),
        ] {
            assert_eq!(
                call(&mut auth, bad),
                Err(tonic::Code::Unauthenticated),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_rotated_token_file_is_in_force_without_a_reload() {
        let (dir, mut auth) = tokens();
        // Written the way Kubernetes updates a Secret volume: a new file
        // renamed over the old one.
        let fresh = token_file(dir.path(), "a.new", "rotated-admin-token-42\n");
        std::fs::rename(fresh, dir.path().join("a")).unwrap();
        assert_eq!(
            call(&mut auth, Some("Bearer rotated-admin-token-42")),
            Ok(Role::Admin)
        );
        assert_eq!(
            call(&mut auth, Some("Bearer admin-token-0123456789")),
            Err(tonic::Code::Unauthenticated),
            "the old admin token is gone"
        );
        assert_eq!(
            call(&mut auth, Some("Bearer read-token-0123456789")),
            Ok(Role::Read)
        );
    }

    #[test]
    fn unknown_tokens_read_the_files_at_most_once_a_second_and_keep_bad_files_out() {
        let (dir, mut auth) = tokens();
        assert_eq!(
            call(&mut auth, Some("Bearer nobody-knows-this-token")),
            Err(tonic::Code::Unauthenticated)
        );
        // Rotated just after a re-read: not seen until a second has passed.
        token_file(dir.path(), "a", "rotated-admin-token-42");
        assert_eq!(
            call(&mut auth, Some("Bearer rotated-admin-token-42")),
            Err(tonic::Code::Unauthenticated)
        );
        std::thread::sleep(REREAD_EVERY);
        assert_eq!(
            call(&mut auth, Some("Bearer rotated-admin-token-42")),
            Ok(Role::Admin)
        );
        // A file rotated to something unusable leaves the tokens in force.
        token_file(dir.path(), "a", "short");
        std::thread::sleep(REREAD_EVERY);
        assert_eq!(
            call(&mut auth, Some("Bearer short")),
            Err(tonic::Code::Unauthenticated)
        );
        assert_eq!(
            call(&mut auth, Some("Bearer rotated-admin-token-42")),
            Ok(Role::Admin)
        );
    }

    #[test]
    fn read_only_callers_cannot_change_anything() {
        let mut req = Request::new(());
        req.extensions_mut().insert(Caller { role: Role::Read });
        assert_eq!(
            admin(&req).unwrap_err().code(),
            tonic::Code::PermissionDenied
        );
        req.extensions_mut().insert(Caller { role: Role::Admin });
        assert_eq!(admin(&req).unwrap(), "operator:admin");
    }

    #[test]
    fn short_empty_or_missing_token_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["", "short", "two tokens-0123456789 here"] {
            let cfg = ControlConfig {
                admin_token_file: Some(token_file(dir.path(), "t", content)),
                ..ControlConfig::default()
            };
            let err = Tokens::load(&cfg).err().unwrap();
            assert!(err.contains("at least 16 characters"), "{err}");
        }
        let cfg = ControlConfig {
            admin_token_file: Some(dir.path().join("absent")),
            ..ControlConfig::default()
        };
        assert!(
            Tokens::load(&cfg)
                .err()
                .unwrap()
                .contains("cannot read token file")
        );
    }
}
