//! The demo's network: namespace `fedemo` holding the clients, joined to the
//! root namespace by the veth pair `fedemo0` (host, XDP) / `fedemo1` (clients).

use std::path::Path;
use std::process::Command;

use anyhow::Result;

use crate::cmd;

pub const NAME: &str = "fedemo";
pub const HOST_IF: &str = "fedemo0";
const PEER_IF: &str = "fedemo1";
pub const HOST_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 203, 0, 1);

/// The namespace's handle for `setns`.
pub fn path() -> String {
    format!("/run/netns/{NAME}")
}

/// The demo namespace; dropping it deletes the namespace, which removes the
/// veth pair with it.
pub struct Netns(());

impl Netns {
    /// Removes what a crashed run left, then builds the network with the
    /// client addresses `clients` on the namespace side.
    pub fn create(clients: &[std::net::Ipv4Addr]) -> Result<Self> {
        remove_leftovers()?;
        println!("demo: creating namespace {NAME} with veth {HOST_IF} <-> {PEER_IF}");
        ip(&["netns", "add", NAME])?;
        let netns = Netns(());
        ip(&[
            "link", "add", HOST_IF, "type", "veth", "peer", "name", PEER_IF, "netns", NAME,
        ])?;
        ip(&["addr", "add", &format!("{HOST_ADDR}/24"), "dev", HOST_IF])?;
        ip(&["link", "set", HOST_IF, "up"])?;
        for addr in clients {
            ip(&[
                "-n",
                NAME,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                PEER_IF,
            ])?;
        }
        ip(&["-n", NAME, "link", "set", "lo", "up"])?;
        ip(&["-n", NAME, "link", "set", PEER_IF, "up"])?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        super::say(format_args!("deleting namespace {NAME}"));
        if let Err(e) = ip(&["netns", "del", NAME]) {
            super::warn(&e);
        }
    }
}

fn remove_leftovers() -> Result<()> {
    if Path::new(&path()).exists() {
        println!("demo: removing namespace {NAME} left by an earlier run");
        ip(&["netns", "del", NAME])?;
    }
    if cmd::succeeds(Command::new("ip").args(["link", "show", "dev", HOST_IF])) {
        println!("demo: removing interface {HOST_IF} left by an earlier run");
        ip(&["link", "del", "dev", HOST_IF])?;
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    cmd::output(Command::new("ip").args(args)).map(drop)
}
