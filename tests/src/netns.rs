//! A network namespace joined to the root namespace by a veth pair: clients
//! live in the namespace, the daemon's XDP program and the test servers live
//! on the host (root-namespace) side.
//!
//! ```text
//!  root namespace                      namespace fe-<tag>-<pid>
//!  fe<net>h<pid>  10.201.<net>.1  ──── fe<net>p<pid>  10.201.<net>.10, .11, …
//!                 fd00:fe:0:<net>::1                  fd00:fe:0:<net>::10, …
//! ```
//!
//! Every test passes its own `net` number, so tests run in parallel without
//! sharing an address, an interface or a namespace. Neighbours are static
//! (`nud permanent`, fixed MACs): no ARP or neighbour discovery delays or
//! drops the first packets, and addresses are added with `nodad`.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    thread::JoinHandle,
};

use nix::sched::{CloneFlags, setns};

/// Runs `ip` with `args`; panics with its stderr if it fails.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("running `ip` (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Runs `ip` with `args`, ignoring failure (cleanup of what may not exist).
fn ip_quiet(args: &[&str]) {
    let _ = Command::new("ip").args(args).output();
}

/// A namespace with `clients` client addresses behind a veth pair; removed on drop.
pub struct NetNs {
    name: String,
    host_if: String,
    peer_if: String,
    net: u8,
    clients: u8,
    /// Transmit and receive queues of each end of the veth pair.
    queues: u8,
}

impl NetNs {
    /// Creates namespace `fe-<tag>-<pid>` with a veth pair whose host side
    /// has 10.201.`net`.1 and whose namespace side has `clients` addresses
    /// from 10.201.`net`.10 (and the same in IPv6). `net` must be unique
    /// among the tests running at once. Leftovers of an earlier run with
    /// the same names are removed first.
    pub fn new(tag: &str, net: u8, clients: u8) -> Self {
        Self::with_queues(tag, net, clients, 1)
    }

    /// As [`NetNs::new`], with `queues` transmit and receive queues on each
    /// end of the veth pair: flows hashed to different queues are received
    /// (and run through XDP) on the CPUs that sent them, at the same time.
    pub fn with_queues(tag: &str, net: u8, clients: u8, queues: u8) -> Self {
        assert!(
            (1..=100).contains(&clients),
            "1..=100 client addresses per namespace"
        );
        let pid = std::process::id();
        let ns = Self {
            name: format!("fe-{tag}-{pid}"),
            // IFNAMSIZ is 16: "fe" + 3 + 1 + 7 (pid_max 4194304) = 13.
            host_if: format!("fe{net}h{pid}"),
            peer_if: format!("fe{net}p{pid}"),
            net,
            clients,
            queues: queues.max(1),
        };
        ns.remove();
        ns.create();
        ns
    }

    fn create(&self) {
        let (name, host, peer) = (&self.name, &self.host_if, &self.peer_if);
        let host_mac = format!("02:fe:00:{:02x}:00:01", self.net);
        let peer_mac = format!("02:fe:00:{:02x}:00:02", self.net);
        ip(&["netns", "add", name]);
        let q = self.queues.to_string();
        ip(&[
            "link",
            "add",
            host,
            "address",
            &host_mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "type",
            "veth",
            "peer",
            "name",
            peer,
            "address",
            &peer_mac,
            "numtxqueues",
            &q,
            "numrxqueues",
            &q,
            "netns",
            name,
        ]);
        let host_v4 = format!("{}/24", self.host_v4());
        let host_v6 = format!("{}/64", self.host_v6());
        ip(&["addr", "add", &host_v4, "dev", host]);
        ip(&["addr", "add", &host_v6, "dev", host, "nodad"]);
        ip(&["link", "set", host, "up"]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        for i in 0..self.clients {
            let v4 = self.client_v4(i).to_string();
            let v6 = self.client_v6(i).to_string();
            ip(&["-n", name, "addr", "add", &format!("{v4}/24"), "dev", peer]);
            ip(&[
                "-n",
                name,
                "addr",
                "add",
                &format!("{v6}/64"),
                "dev",
                peer,
                "nodad",
            ]);
            // Static neighbours on the host side: replies (SYN-ACKs) leave at once.
            for addr in [&v4, &v6] {
                ip(&[
                    "neigh",
                    "replace",
                    addr,
                    "lladdr",
                    &peer_mac,
                    "dev",
                    host,
                    "nud",
                    "permanent",
                ]);
            }
        }
        ip(&["-n", name, "link", "set", peer, "up"]);
        for addr in [self.host_v4().to_string(), self.host_v6().to_string()] {
            ip(&[
                "-n",
                name,
                "neigh",
                "replace",
                &addr,
                "lladdr",
                &host_mac,
                "dev",
                peer,
                "nud",
                "permanent",
            ]);
        }
    }

    fn remove(&self) {
        // Deleting one end of a veth deletes both; the namespace may outlive
        // the `ip netns del` while sockets still reference it.
        ip_quiet(&["link", "del", &self.host_if]);
        ip_quiet(&["netns", "del", &self.name]);
    }

    /// Namespace name (as in `ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host-side interface, in the root namespace: where XDP attaches.
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The host-side IPv4 address (servers bind here).
    pub fn host_v4(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 201, self.net, 1)
    }

    /// The host-side IPv6 address.
    pub fn host_v6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd00, 0xfe, 0, u16::from(self.net), 0, 0, 0, 1)
    }

    /// Client address `i` (0-based) in IPv4.
    pub fn client_v4(&self, i: u8) -> Ipv4Addr {
        assert!(i < self.clients, "client {i} of {}", self.clients);
        Ipv4Addr::new(10, 201, self.net, 10 + i)
    }

    /// Client address `i` (0-based) in IPv6.
    pub fn client_v6(&self, i: u8) -> Ipv6Addr {
        assert!(i < self.clients, "client {i} of {}", self.clients);
        Ipv6Addr::new(
            0xfd00,
            0xfe,
            0,
            u16::from(self.net),
            0,
            0,
            0,
            0x10 + u16::from(i),
        )
    }

    /// Client address `i` as an `IpAddr`, IPv4.
    pub fn client(&self, i: u8) -> IpAddr {
        IpAddr::V4(self.client_v4(i))
    }

    /// Runs `f` on a thread inside the namespace and returns its result.
    /// Sockets created by `f` stay in the namespace wherever they are used.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = self.ns_path();
        std::thread::scope(|s| {
            s.spawn(|| {
                enter(&path);
                f()
            })
            .join()
            .expect("thread in the namespace panicked")
        })
    }

    /// Spawns a thread inside the namespace running `f`.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = self.ns_path();
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    fn ns_path(&self) -> String {
        format!("/run/netns/{}", self.name)
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    let fd = File::open(path).unwrap_or_else(|e| panic!("opening {path}: {e}"));
    setns(&fd, CloneFlags::CLONE_NEWNET).unwrap_or_else(|e| panic!("setns {path}: {e}"));
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.remove();
    }
}
