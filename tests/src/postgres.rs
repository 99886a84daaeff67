//! A real PostgreSQL server (Debian's `postgresql`, installed by
//! `cargo xtask setup`) for the saga store's tests: each `Postgres` is its
//! own cluster, made by `initdb` in a temporary directory, listening on
//! 127.0.0.1 on a free port with `trust` authentication and `fsync` on, and
//! stopped (immediate shutdown) on drop. Debian's own cluster and service
//! are never used.
//!
//! PostgreSQL refuses to run as root: as root (CI) the server runs as the
//! package's `postgres` user, which owns the directory; as anyone else, as
//! that user.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::Duration,
};

use nix::{
    sys::signal::{Signal, kill},
    unistd::{Pid, User, chown},
};

use crate::{free_port, wait::eventually};

/// A running PostgreSQL cluster, stopped on drop.
pub struct Postgres {
    child: Child,
    addr: SocketAddr,
    bin: PathBuf,
    user: Option<User>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Postgres {
    /// Starts a fresh cluster. Returns `None` (after printing why) when
    /// PostgreSQL's server binaries are missing outside CI; under `CI=true`
    /// that is a failure, since setup installs them.
    pub fn start() -> Option<Self> {
        let Some(bin) = server_bin() else {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!(
                    "PostgreSQL is needed: no /usr/lib/postgresql/*/bin/postgres \
                     (cargo xtask setup installs Debian's postgresql)"
                );
            }
            eprintln!(
                "SKIP: no PostgreSQL server binaries under /usr/lib/postgresql; run `cargo xtask setup`"
            );
            return None;
        };
        let user = if nix::unistd::geteuid().is_root() {
            let user = User::from_name("postgres")
                .ok()
                .flatten()
                .expect("running as root needs the `postgres` user that Debian's package creates");
            Some(user)
        } else {
            None
        };
        // The server's user must reach its directory: as root, not under a
        // `TMPDIR` that may be private to root, but under /tmp.
        let dir = match &user {
            Some(_) => tempfile::Builder::new()
                .prefix("fe-postgres-")
                .tempdir_in("/tmp"),
            None => tempfile::tempdir(),
        }
        .expect("temp dir");
        if let Some(user) = &user {
            chown(dir.path(), Some(user.uid), Some(user.gid)).expect("chown the cluster dir");
        }
        let data = dir.path().join("data");
        let log = dir.path().join("postgres.log");
        let initdb = as_user(&user, Command::new(bin.join("initdb")))
            .arg("--pgdata")
            .arg(&data)
            .args([
                "--username=postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ])
            .stdin(Stdio::null())
            .output()
            .expect("running initdb");
        assert!(initdb.status.success(), "initdb failed:\n{}", text(&initdb));
        let addr = free_port();
        let child = as_user(&user, Command::new(bin.join("postgres")))
            .arg("-D")
            .arg(&data)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-p", &addr.port().to_string()])
            .arg("-c")
            .arg(format!("unix_socket_directories={}", dir.path().display()))
            .args(["-c", "fsync=on", "-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("starting postgres");
        let pg = Postgres {
            child,
            addr,
            bin,
            user,
            log,
            _dir: dir,
        };
        let ready = eventually(Duration::from_secs(60), || {
            pg.psql("postgres", "SELECT 1")
                .is_ok_and(|out| out.trim() == "1")
        });
        assert!(ready, "postgres never accepted connections:\n{}", pg.log());
        Some(pg)
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_of("postgres")
    }

    /// The URL of database `db`.
    pub fn url_of(&self, db: &str) -> String {
        format!("postgres://postgres@{}/{db}", self.addr)
    }

    /// Creates database `name` (a plain identifier) and returns its URL.
    pub fn create_database(&self, name: &str) -> String {
        assert!(
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
            "database names here are lowercase identifiers: {name:?}"
        );
        self.psql("postgres", &format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url_of(name)
    }

    /// Runs `sql` in database `db` with `psql`; its unaligned, tuples-only
    /// output (`|` between columns), or the error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, String> {
        let out = as_user(&self.user, Command::new(self.bin.join("psql")))
            .args(["-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", &self.addr.ip().to_string()])
            .args(["-p", &self.addr.port().to_string()])
            .args(["-U", "postgres", "-d", db, "-c", sql])
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running psql: {e}"))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text(&out))
        }
    }

    /// The server's log.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        // SIGQUIT: immediate shutdown; the postmaster takes its backends
        // down with it (SIGKILL would leave them behind for a while).
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGQUIT);
        }
        let stopped = eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `cmd`, run as `user` when one is given.
fn as_user(user: &Option<User>, mut cmd: Command) -> Command {
    if let Some(user) = user {
        use std::os::unix::process::CommandExt as _;
        // Running as root, `uid` also drops the supplementary groups.
        cmd.uid(user.uid.as_raw()).gid(user.gid.as_raw());
        cmd.env("HOME", &user.dir).env("USER", &user.name);
        // Where the user may not be able to look (the test's directory).
        cmd.current_dir("/");
    }
    cmd
}

/// The newest `/usr/lib/postgresql/<version>/bin` holding a `postgres`.
fn server_bin() -> Option<PathBuf> {
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_starts_takes_databases_and_stops_on_drop() {
        let Some(pg) = Postgres::start() else { return };
        let url = pg.create_database("fixture_check");
        assert_eq!(
            url,
            format!("postgres://postgres@{}/fixture_check", pg.addr())
        );
        assert_eq!(pg.psql("fixture_check", "SHOW fsync").unwrap().trim(), "on");
        assert_eq!(
            pg.psql("fixture_check", "SELECT current_database()")
                .unwrap()
                .trim(),
            "fixture_check"
        );
        assert!(pg.psql("fixture_check", "SELECT nonsense").is_err());
        let addr = pg.addr();
        drop(pg);
        assert!(
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
            "the server still listens after drop"
        );
    }
}
