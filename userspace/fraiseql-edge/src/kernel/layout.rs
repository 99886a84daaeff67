//! Where the connection tracker finds what it reads, taken from the running
//! kernel instead of compiled in:
//!
//! * the fields of the `sock/inet_sock_set_state` tracepoint, from its
//!   `format` file under tracefs (name, offset and size of each field);
//! * the socket's network namespace (`sock.__sk_common.skc_net.net` and
//!   `net.ns.inum`), from the kernel's BTF (`/sys/kernel/btf/vmlinux`),
//!   read by the small reader below: it only walks types and struct members.
//!
//! The daemon writes the result into the tracker's configuration map before
//! attaching it, with the inode number of its own network namespace.

use std::{collections::HashMap, os::unix::fs::MetadataExt as _};

use fraiseql_edge_common::TrackerConfig;

/// The tracepoint's format file.
pub const FORMAT: &str = "/sys/kernel/tracing/events/sock/inet_sock_set_state/format";
/// The kernel's own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

/// Why the layout could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// A field is missing or has an unexpected size.
    #[error("{0}")]
    Field(String),
    /// The BTF could not be parsed or lacks a type.
    #[error("kernel BTF: {0}")]
    Btf(String),
}

fn read(path: &str) -> Result<Vec<u8>, LayoutError> {
    std::fs::read(path).map_err(|source| LayoutError::Read {
        path: path.to_owned(),
        source,
    })
}

/// Field name → (offset, size) from a tracepoint `format` file.
pub fn parse_format(text: &str) -> HashMap<String, (u32, u32)> {
    let mut fields = HashMap::new();
    for line in text.lines() {
        let line = line.trim();
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let parts: Vec<&str> = rest.split(';').map(str::trim).collect();
        // "const void * skaddr", "offset:8", "size:8", …; arrays: "__u8 saddr_v6[16]".
        let Some(decl) = parts.first() else { continue };
        let name = decl
            .rsplit([' ', '*'])
            .next()
            .unwrap_or("")
            .split('[')
            .next()
            .unwrap_or("");
        let number = |key: &str| {
            parts
                .iter()
                .find_map(|p| p.strip_prefix(key))
                .and_then(|v| v.parse::<u32>().ok())
        };
        if let (Some(offset), Some(size)) = (number("offset:"), number("size:")) {
            fields.insert(name.to_owned(), (offset, size));
        }
    }
    fields
}

/// The tracker's configuration for the running kernel and the calling
/// process's network namespace. Without the tracepoint's format file the
/// tracker cannot run (an error); without usable BTF it counts sockets of
/// every namespace, and the second value says why.
pub fn tracker_config() -> Result<(TrackerConfig, Option<LayoutError>), LayoutError> {
    let format = String::from_utf8_lossy(&read(FORMAT)?).into_owned();
    let mut cfg = tracepoint_fields(&parse_format(&format))?;
    cfg.ready = 1;
    let netns = read(VMLINUX_BTF)
        .and_then(|btf| netns_offsets(&btf))
        .and_then(|offsets| Ok((offsets, own_netns_inum()?)));
    match netns {
        Ok(((sk_net, net_inum), inum)) => {
            cfg.sk_net = sk_net;
            cfg.net_inum = net_inum;
            cfg.netns_inum = inum;
            Ok((cfg, None))
        }
        Err(e) => Ok((cfg, Some(e))),
    }
}

/// The inode number of the calling process's network namespace.
pub fn own_netns_inum() -> Result<u32, LayoutError> {
    let path = "/proc/self/ns/net";
    let meta = std::fs::metadata(path).map_err(|source| LayoutError::Read {
        path: path.to_owned(),
        source,
    })?;
    u32::try_from(meta.ino()).map_err(|_| LayoutError::Field(format!("{path}: inode too large")))
}

/// The tracepoint offsets, each checked for the size the tracker reads.
pub fn tracepoint_fields(
    fields: &HashMap<String, (u32, u32)>,
) -> Result<TrackerConfig, LayoutError> {
    let field = |name: &str, size: u32| -> Result<u32, LayoutError> {
        match fields.get(name) {
            Some((offset, s)) if *s == size => Ok(*offset),
            Some((_, s)) => Err(LayoutError::Field(format!(
                "{FORMAT}: field {name} is {s} bytes, the tracker reads {size}"
            ))),
            None => Err(LayoutError::Field(format!("{FORMAT}: no field {name}"))),
        }
    };
    Ok(TrackerConfig {
        ready: 0,
        skaddr: field("skaddr", 8)?,
        oldstate: field("oldstate", 4)?,
        newstate: field("newstate", 4)?,
        sport: field("sport", 2)?,
        dport: field("dport", 2)?,
        protocol: field("protocol", 2)?,
        saddr_v6: field("saddr_v6", 16)?,
        daddr_v6: field("daddr_v6", 16)?,
        sk_net: u32::MAX,
        net_inum: 0,
        netns_inum: 0,
    })
}

/// (offset of the `struct net *` in `struct sock`, offset of the inode
/// number in `struct net`).
pub fn netns_offsets(btf: &[u8]) -> Result<(u32, u32), LayoutError> {
    let btf = Btf::parse(btf)?;
    let sk_net = btf.member_offset("sock", &["__sk_common", "skc_net", "net"])?;
    let inum = btf.member_offset("net", &["ns", "inum"])?;
    Ok((sk_net, inum))
}

const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_TYPE_TAG: u32 = 18;

struct Member {
    name: u32,
    ty: u32,
    /// Offset in bits.
    bits: u32,
}

struct Type {
    name: u32,
    kind: u32,
    /// For modifiers and typedefs: the type referred to.
    refers: u32,
    members: Vec<Member>,
}

/// Just enough of BTF to find struct members: every type with its kind,
/// name and (for structs and unions) members.
struct Btf<'a> {
    strings: &'a [u8],
    /// Index = type id; id 0 is `void`.
    types: Vec<Type>,
}

impl<'a> Btf<'a> {
    fn parse(data: &'a [u8]) -> Result<Self, LayoutError> {
        let err = |m: &str| LayoutError::Btf(m.to_owned());
        let u32_at = |off: usize| -> Result<u32, LayoutError> {
            data.get(off..off + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or_else(|| err("truncated"))
        };
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(err("not little-endian BTF"));
        }
        let hdr_len = u32_at(4)? as usize;
        let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
        let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
        let types_start = hdr_len + type_off;
        let strings = data
            .get(hdr_len + str_off..hdr_len + str_off + str_len)
            .ok_or_else(|| err("string section out of bounds"))?;
        let mut types = vec![Type {
            name: 0,
            kind: 0,
            refers: 0,
            members: Vec::new(),
        }];
        let mut off = types_start;
        let end = types_start + type_len;
        while off < end {
            let name = u32_at(off)?;
            let info = u32_at(off + 4)?;
            let size_or_type = u32_at(off + 8)?;
            off += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kflag = info >> 31 == 1;
            let mut members = Vec::new();
            let extra = match kind {
                1 | 14 | 17 => 4, // int, var, decl tag
                3 => 12,          // array
                4 | 5 => {
                    for i in 0..vlen {
                        let m = off + i * 12;
                        let raw = u32_at(m + 8)?;
                        members.push(Member {
                            name: u32_at(m)?,
                            ty: u32_at(m + 4)?,
                            bits: if kflag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    vlen * 12
                }
                6 | 13 => vlen * 8,   // enum, func proto
                15 | 19 => vlen * 12, // datasec, enum64
                _ => 0,
            };
            off += extra;
            types.push(Type {
                name,
                kind,
                refers: size_or_type,
                members,
            });
        }
        Ok(Self { strings, types })
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or(&[]);
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Option<&Type> {
        for _ in 0..16 {
            let t = self.types.get(id as usize)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.refers;
                }
                _ => return Some(t),
            }
        }
        None
    }

    /// Byte offset of `path` (member names, each inside the previous one's
    /// struct or union type) in struct `root`. Members of anonymous structs
    /// and unions are found as if they were the parent's.
    fn member_offset(&self, root: &str, path: &[&str]) -> Result<u32, LayoutError> {
        let mut ty = self
            .types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && self.name(t.name) == root)
            .ok_or_else(|| LayoutError::Btf(format!("no struct {root}")))?;
        let mut bits = 0u32;
        for name in path {
            let (off, member_ty) = self.find_member(ty, name, 0).ok_or_else(|| {
                LayoutError::Btf(format!("struct {root}: no member {}", path.join(".")))
            })?;
            bits += off;
            ty = self
                .resolve(member_ty)
                .ok_or_else(|| LayoutError::Btf(format!("unresolvable type of {name}")))?;
        }
        if !bits.is_multiple_of(8) {
            return Err(LayoutError::Btf(format!(
                "{root}.{} is a bitfield",
                path.join(".")
            )));
        }
        Ok(bits / 8)
    }

    fn find_member(&self, ty: &Type, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        for m in &ty.members {
            if self.name(m.name) == name {
                return Some((m.bits, m.ty));
            }
        }
        for m in ty.members.iter().filter(|m| self.name(m.name).is_empty()) {
            let inner = self.resolve(m.ty)?;
            if (inner.kind == KIND_STRUCT || inner.kind == KIND_UNION)
                && let Some((off, t)) = self.find_member(inner, name, depth + 1)
            {
                return Some((m.bits + off, t));
            }
        }
        None
    }
}

/// The layout of the running kernel, for tests and the daemon's log.
pub fn describe(cfg: &TrackerConfig) -> String {
    format!(
        "skaddr@{} oldstate@{} newstate@{} sport@{} dport@{} protocol@{} saddr_v6@{} daddr_v6@{} \
         sock.net@{} net.inum@{} netns {}",
        cfg.skaddr,
        cfg.oldstate,
        cfg.newstate,
        cfg.sport,
        cfg.dport,
        cfg.protocol,
        cfg.saddr_v6,
        cfg.daddr_v6,
        cfg.sk_net,
        cfg.net_inum,
        cfg.netns_inum
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const FORMAT_6_18: &str = "name: inet_sock_set_state
ID: 1234
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:int oldstate;\toffset:16;\tsize:4;\tsigned:1;
\tfield:int newstate;\toffset:20;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:24;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:26;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 protocol;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:32;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:36;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:40;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:56;\tsize:16;\tsigned:0;
";

    #[test]
    fn format_file_fields_and_offsets() {
        let cfg = tracepoint_fields(&parse_format(FORMAT_6_18)).unwrap();
        assert_eq!(
            (
                cfg.skaddr,
                cfg.oldstate,
                cfg.newstate,
                cfg.sport,
                cfg.dport,
                cfg.protocol,
                cfg.saddr_v6,
                cfg.daddr_v6
            ),
            (8, 16, 20, 24, 26, 30, 40, 56)
        );
    }

    #[test]
    fn moved_fields_are_followed_and_wrong_sizes_refused() {
        let moved = FORMAT_6_18.replace("offset:24;\tsize:2", "offset:72;\tsize:2");
        assert_eq!(tracepoint_fields(&parse_format(&moved)).unwrap().sport, 72);
        let wrong = FORMAT_6_18.replace(
            "__u16 dport;\toffset:26;\tsize:2",
            "__u32 dport;\toffset:26;\tsize:4",
        );
        let e = tracepoint_fields(&parse_format(&wrong)).unwrap_err();
        assert!(e.to_string().contains("field dport is 4 bytes"), "{e}");
        let missing = FORMAT_6_18.replace("field:int newstate", "field:int state");
        let e = tracepoint_fields(&parse_format(&missing)).unwrap_err();
        assert!(e.to_string().contains("no field newstate"), "{e}");
    }

    #[test]
    fn this_kernels_btf_has_the_namespace_fields() {
        let btf = match std::fs::read(VMLINUX_BTF) {
            Ok(btf) => btf,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipping: {VMLINUX_BTF} is not readable on this machine: {e}");
                return;
            }
            Err(e) => panic!("{VMLINUX_BTF}: {e}"),
        };
        let (sk_net, inum) = netns_offsets(&btf).unwrap();
        // sock_common is the first member of sock; skc_net sits in its
        // first cache line, inum somewhere inside ns_common.
        assert!(
            sk_net > 0 && sk_net < 128,
            "sock.__sk_common.skc_net.net at {sk_net}"
        );
        assert!(inum < 4096, "net.ns.inum at {inum}");
        assert!(netns_offsets(b"not btf").is_err());
    }
}
