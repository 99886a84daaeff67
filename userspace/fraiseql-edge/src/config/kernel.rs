//! `[kernel]`: the XDP enforcement layer.

use std::path::PathBuf;

use fraiseql_edge_common::{Limits, bucket::LimitError};
use ipnet::IpNet;
use serde::Deserialize;

use super::ConfigError;

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum XdpModeConfig {
    /// Native (driver) mode where the driver supports it, else generic (SKB) mode.
    #[default]
    Auto,
    /// Native mode only; fail if the driver lacks XDP support.
    Native,
    /// Generic (SKB) mode: works on every interface, after the SKB is allocated.
    Skb,
}

/// What an override does.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OverrideActionConfig {
    /// Bypass all limits.
    Allow,
    /// Drop all packets to protected ports.
    Deny,
    /// Apply this override's `rate`, `burst` and `max_conns`.
    Limit,
}

/// A CIDR override.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct OverrideConfig {
    /// The network, e.g. `10.0.0.0/8` or `2001:db8::/32`; the longest match wins.
    pub cidr: IpNet,
    /// `allow`, `deny` or `limit`.
    pub action: OverrideActionConfig,
    /// Packets per second per client (`limit` only; 0 = no rate limit).
    pub rate: Option<u64>,
    /// Bucket size in packets (`limit` only).
    pub burst: Option<u64>,
    /// Live TCP connections per client (`limit` only; 0 = no cap).
    pub max_conns: Option<u32>,
}

/// `[kernel]` section.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct KernelConfig {
    /// Run the kernel layer. `false` is an explicit opt-out (for example when
    /// another layer filters in front): the daemon then enforces nothing at L3/L4.
    pub enabled: bool,
    /// Interfaces to attach the XDP program to. Each must exist at start-up.
    pub interfaces: Vec<String>,
    /// Destination ports (TCP and UDP) the limits apply to; other traffic passes untouched.
    pub protected_ports: Vec<u16>,
    /// Packets per second per client on protected ports; 0 disables the packet-rate limit.
    pub rate: u64,
    /// Token-bucket size: packets a client may send back to back.
    pub burst: u64,
    /// Live TCP connections per client; a SYN beyond it is dropped. 0 = no cap.
    pub max_conns: u32,
    /// Key IPv6 clients by their /64 (`64`) or by the full address (`128`).
    pub ipv6_prefix: u8,
    /// `auto`, `native` or `skb`.
    pub xdp_mode: XdpModeConfig,
    /// bpffs directory where maps and program links are pinned; a restarted
    /// daemon adopts what it finds there.
    pub pin_path: PathBuf,
    /// Report 1 of every N drops per reason and CPU as an event (power of two; 0 = none).
    pub drop_event_sampling: u64,
    /// Enable the eBPF programs' debug logging (costly: never in production).
    pub ebpf_debug_log: bool,
    /// CIDR overrides.
    pub overrides: Vec<OverrideConfig>,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interfaces: Vec::new(),
            // The daemon's GraphQL listener port.
            protected_ports: vec![8080],
            // A GraphQL client rarely needs more than a few hundred packets a
            // second; 1000 leaves headroom for large responses' ACKs.
            rate: 1000,
            // Two seconds' worth: page loads fan out.
            burst: 2000,
            // Browsers open 6 per host, HTTP/2 clients 1; NATed offices more.
            max_conns: 256,
            // One host usually owns a whole /64: keying by /128 lets a single
            // attacker rotate through 2^64 addresses.
            ipv6_prefix: 64,
            xdp_mode: XdpModeConfig::Auto,
            pin_path: PathBuf::from("/sys/fs/bpf/fraiseql-edge"),
            // Enough to see who is dropped without flooding the ring buffer.
            drop_event_sampling: 64,
            ebpf_debug_log: false,
            overrides: Vec::new(),
        }
    }
}

impl KernelConfig {
    /// The default limits in kernel form.
    pub fn default_limits(&self) -> Limits {
        // Validated in `validate`, so this cannot fail afterwards.
        Limits::new(self.rate, self.burst, self.max_conns).unwrap_or_default()
    }

    /// `drop_event_sampling` as the kernel's shift (32 = events off).
    pub fn event_sample_shift(&self) -> u32 {
        match self.drop_event_sampling {
            0 => 32,
            n => n.trailing_zeros(),
        }
    }

    pub(super) fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if !self.enabled {
            return Ok(());
        }
        if self.interfaces.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.interfaces"),
                "at least one interface is required",
            ));
        }
        for (i, name) in self.interfaces.iter().enumerate() {
            if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
                return Err(ConfigError::invalid(
                    format!("{at}.interfaces[{i}]"),
                    format!("`{name}` is not a valid interface name"),
                ));
            }
        }
        if self.protected_ports.is_empty() {
            return Err(ConfigError::invalid(
                format!("{at}.protected_ports"),
                "at least one port is required",
            ));
        }
        if let Some(i) = self.protected_ports.iter().position(|p| *p == 0) {
            return Err(ConfigError::invalid(
                format!("{at}.protected_ports[{i}]"),
                "port 0 cannot be protected",
            ));
        }
        checked_limits(at, self.rate, self.burst, self.max_conns)?;
        if self.ipv6_prefix != 64 && self.ipv6_prefix != 128 {
            return Err(ConfigError::invalid(
                format!("{at}.ipv6_prefix"),
                "must be 64 or 128",
            ));
        }
        if self.drop_event_sampling != 0 && !self.drop_event_sampling.is_power_of_two() {
            return Err(ConfigError::invalid(
                format!("{at}.drop_event_sampling"),
                "must be 0 or a power of two",
            ));
        }
        if !self.pin_path.is_absolute() {
            return Err(ConfigError::invalid(
                format!("{at}.pin_path"),
                "must be an absolute path on a bpffs mount",
            ));
        }
        for (i, ov) in self.overrides.iter().enumerate() {
            ov.validate(&format!("{at}.overrides[{i}]"))?;
            if let Some(j) = self.overrides[..i].iter().position(|o| o.cidr == ov.cidr) {
                return Err(ConfigError::invalid(
                    format!("{at}.overrides[{i}].cidr"),
                    format!("{} is already used by overrides[{j}]", ov.cidr),
                ));
            }
        }
        Ok(())
    }
}

impl OverrideConfig {
    /// The override's own limits (for `limit`); unset fields are 0.
    pub fn limits(&self) -> Limits {
        Limits::new(
            self.rate.unwrap_or(0),
            self.burst.unwrap_or(0),
            self.max_conns.unwrap_or(0),
        )
        .unwrap_or_default()
    }

    fn validate(&self, at: &str) -> Result<(), ConfigError> {
        if self.cidr.trunc() != self.cidr {
            return Err(ConfigError::invalid(
                format!("{at}.cidr"),
                format!(
                    "{} has host bits set (did you mean {}?)",
                    self.cidr,
                    self.cidr.trunc()
                ),
            ));
        }
        let has_limits = self.rate.is_some() || self.burst.is_some() || self.max_conns.is_some();
        match self.action {
            OverrideActionConfig::Limit => {
                if self.rate.is_none() && self.max_conns.is_none() {
                    return Err(ConfigError::invalid(
                        format!("{at}.rate"),
                        "a `limit` override needs `rate` (with `burst`) or `max_conns`",
                    ));
                }
                checked_limits(
                    at,
                    self.rate.unwrap_or(0),
                    self.burst.unwrap_or(0),
                    self.max_conns.unwrap_or(0),
                )?;
            }
            _ if has_limits => {
                return Err(ConfigError::invalid(
                    format!("{at}.action"),
                    "`rate`, `burst` and `max_conns` only apply to `limit` overrides",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// `Limits::new` with the failing key's path in the error.
fn checked_limits(at: &str, rate: u64, burst: u64, max_conns: u32) -> Result<Limits, ConfigError> {
    Limits::new(rate, burst, max_conns).map_err(|e| {
        let key = match e {
            LimitError::RateTooHigh => "rate",
            LimitError::BurstZero | LimitError::BurstTooHigh => "burst",
        };
        ConfigError::invalid(format!("{at}.{key}"), e.as_str())
    })
}

/// Start-up checks against the host: every configured interface exists.
pub fn check_interfaces(config: &KernelConfig) -> Result<(), ConfigError> {
    if !config.enabled {
        return Ok(());
    }
    for (i, name) in config.interfaces.iter().enumerate() {
        if nix::net::if_::if_nametoindex(name.as_str()).is_err() {
            return Err(ConfigError::invalid(
                format!("kernel.interfaces[{i}]"),
                format!("no interface named `{name}` on this host"),
            ));
        }
    }
    Ok(())
}
