//! Checks of values that clap accepts as strings or numbers but the daemon
//! would refuse: each fails with exit code 5 before anything is sent, with
//! the value and what would be right.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::exit::Error;

/// The longest block the daemon accepts: a year.
pub const MAX_TTL_SECS: u64 = 365 * 24 * 3600;
/// The most clients `top` may ask for.
pub const MAX_TOP: u32 = 10_000;

/// A network without host bits, in its canonical form (`2001:db8::/32`);
/// a single address is its own network (`/32`, `/128`), as for the daemon.
pub fn cidr(text: &str) -> Result<IpNet, Error> {
    let text = text.trim();
    let net = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            Error::invalid(format!(
                "`{text}` is not a CIDR network (e.g. 10.0.0.0/8, 2001:db8::/32) or an address"
            ))
        })?;
    if net.trunc() != net {
        return Err(Error::invalid(format!(
            "`{text}` has host bits set (did you mean {}?)",
            net.trunc()
        )));
    }
    Ok(net)
}

/// A client address (no prefix, no port).
pub fn address(text: &str) -> Result<IpAddr, Error> {
    text.trim().parse().map_err(|_| {
        let hint = if text.contains('/') {
            " (a single address, not a network)"
        } else {
            ""
        };
        Error::invalid(format!("`{text}` is not an IP address{hint}"))
    })
}

/// A block's lifetime: 1 s to a year.
pub fn ttl(secs: u64) -> Result<u64, Error> {
    if (1..=MAX_TTL_SECS).contains(&secs) {
        Ok(secs)
    } else {
        Err(Error::invalid(format!(
            "--ttl {secs}: must be 1 to {MAX_TTL_SECS} seconds (a year); leave it out for no expiry"
        )))
    }
}

/// `top --limit`: 1 to 10000.
pub fn top_limit(n: u32) -> Result<u32, Error> {
    if (1..=MAX_TOP).contains(&n) {
        Ok(n)
    } else {
        Err(Error::invalid(format!(
            "--limit {n}: must be 1 to {MAX_TOP}"
        )))
    }
}

/// A subgraph name: not empty.
/// A saga id: 32 hex digits.
pub fn saga_id(id: &str) -> Result<String, Error> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(id.to_ascii_lowercase())
    } else {
        Err(Error::invalid(format!(
            "{id:?} is not a saga id (32 hex digits)"
        )))
    }
}

/// A saga state's name.
pub fn saga_state(name: &str) -> Result<String, Error> {
    const STATES: [&str; 7] = [
        "Pending",
        "Executing",
        "Completed",
        "Failed",
        "Compensating",
        "Compensated",
        "Cancelled",
    ];
    STATES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(name))
        .map(|s| (*s).to_string())
        .ok_or_else(|| {
            Error::invalid(format!(
                "unknown saga state {name:?}: one of {}",
                STATES.join(", ")
            ))
        })
}

pub fn subgraph(name: &str) -> Result<&str, Error> {
    if name.trim().is_empty() {
        Err(Error::invalid("the subgraph name is empty"))
    } else {
        Ok(name)
    }
}

/// `--addr HOST:PORT` as the `http://` URI tonic connects to.
pub fn tcp_uri(addr: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::invalid(format!("--addr `{addr}`: {why}"));
    if addr.contains("://") {
        return Err(bad("give HOST:PORT without a scheme"));
    }
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| bad("expected HOST:PORT"))?;
    if host.is_empty() || host.contains('/') {
        return Err(bad("expected HOST:PORT"));
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return Err(bad("write an IPv6 address in brackets, e.g. [::1]:50051"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => {}
        _ => return Err(bad("the port must be 1 to 65535")),
    }
    let uri = format!("http://{addr}");
    uri.parse::<tonic::transport::Uri>()
        .map_err(|e| bad(&e.to_string()))?;
    Ok(uri)
}

#[cfg(test)]
mod tests;
