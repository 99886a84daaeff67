//! `[control]`: the gRPC control API.

use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use super::ConfigError;

/// `[control]`: where the gRPC control API listens and which tokens it takes.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Unix socket path (mode 0600, created at start); empty: no socket.
    pub socket: PathBuf,
    /// TCP address as well, e.g. `127.0.0.1:50051`; unset: socket only.
    pub listen: Option<SocketAddr>,
    /// File holding the admin token (every call).
    pub admin_token_file: Option<PathBuf>,
    /// File holding the read-only token (status, lists, metrics, events).
    pub read_token_file: Option<PathBuf>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        Self {
            // Only processes on the node with the right to the file reach it.
            socket: PathBuf::from("/run/fraiseql-edge/control.sock"),
            listen: None,
            admin_token_file: None,
            read_token_file: None,
        }
    }
}

impl ControlConfig {
    /// Checks combinations; `at` is the section's path for the error.
    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.socket.as_os_str().is_empty() && self.listen.is_none() {
            return Err(ConfigError::invalid(
                format!("{at}.socket"),
                "the control API needs a socket or a listen address",
            ));
        }
        if self.admin_token_file.is_none() && self.read_token_file.is_none() {
            return Err(ConfigError::invalid(
                format!("{at}.admin_token_file"),
                "the control API needs at least one token file (admin_token_file, read_token_file)",
            ));
        }
        if self.admin_token_file.is_some() && self.admin_token_file == self.read_token_file {
            return Err(ConfigError::invalid(
                format!("{at}.read_token_file"),
                "must not be the admin token file: the read-only token would be an admin token",
            ));
        }
        Ok(())
    }
}
