//! HTTP/1.1 clients with a source address of their own on loopback
//! (127.0.0.2, 127.0.0.3, …: all of 127.0.0.0/8 is local on Linux), so one
//! unprivileged test process stands for several clients of the daemon's
//! listener without a network namespace.
//!
//! One connection per client, kept alive, one request at a time; each
//! answer is read whole (`Content-Length` or chunked) so the next request
//! can follow on the same connection. A connection the server closes
//! without answering shows as an I/O error (`UnexpectedEof`,
//! `ConnectionReset` or `BrokenPipe`), never as a reply.
//!
//! The same client works from a network namespace: connect inside
//! [`crate::netns::NetNs::run`] and the socket stays in the namespace.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use socket2::{Domain, Protocol, Socket, Type};

use crate::graphql::Reply;

/// A keep-alive HTTP/1.1 connection from a chosen source address.
pub struct LoopbackClient {
    stream: BufReader<TcpStream>,
    host: String,
}

impl LoopbackClient {
    /// Connects from `src` (any port) to `dst`. Reads and writes give up
    /// after `timeout` (`TimedOut`/`WouldBlock`), so a stuck test fails.
    pub fn connect(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<Self> {
        let socket = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
        socket.bind(&SocketAddr::new(src, 0).into())?;
        socket.connect_timeout(&dst.into(), timeout)?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream: BufReader::new(stream),
            host: dst.to_string(),
        })
    }

    /// POSTs `{"query": query}` to `path` and reads the answer.
    pub fn query(&mut self, path: &str, query: &str) -> io::Result<Reply> {
        self.query_with(path, query, &[])
    }

    /// As [`Self::query`], with extra request `headers` (`("authorization",
    /// "Bearer …")`).
    pub fn query_with(
        &mut self,
        path: &str,
        query: &str,
        headers: &[(&str, &str)],
    ) -> io::Result<Reply> {
        let body = serde_json::json!({ "query": query }).to_string();
        let extra: String = headers
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             {extra}Content-Length: {}\r\n\r\n{body}",
            self.host,
            body.len()
        );
        self.stream.get_mut().write_all(request.as_bytes())?;
        self.read_reply()
    }

    fn read_line(&mut self) -> io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line)? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "connection closed before a complete answer",
            ));
        }
        Ok(line.trim_end().to_string())
    }

    fn read_reply(&mut self) -> io::Result<Reply> {
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_string());
        let status_line = self.read_line()?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| bad(&format!("bad status line: {status_line}")))?;
        let (mut length, mut chunked, mut content_type) = (None, false, None);
        loop {
            let line = self.read_line()?;
            if line.is_empty() {
                break;
            }
            let Some((name, value)) = line.split_once(':') else {
                return Err(bad(&format!("bad header: {line}")));
            };
            let value = value.trim();
            match name.trim().to_ascii_lowercase().as_str() {
                "content-length" => length = value.parse::<usize>().ok(),
                "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                "content-type" => content_type = Some(value.to_string()),
                _ => {}
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let size_line = self.read_line()?;
                let size = usize::from_str_radix(size_line.split(';').next().unwrap_or(""), 16)
                    .map_err(|_| bad(&format!("bad chunk size: {size_line}")))?;
                if size == 0 {
                    while !self.read_line()?.is_empty() {}
                    break;
                }
                let start = body.len();
                body.resize(start + size, 0);
                self.stream.read_exact(&mut body[start..])?;
                self.read_line()?;
            }
        } else {
            let length = length.ok_or_else(|| bad("answer without a length"))?;
            body.resize(length, 0);
            self.stream.read_exact(&mut body)?;
        }
        Ok(Reply {
            status,
            content_type,
            body,
        })
    }
}
