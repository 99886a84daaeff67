//! The W3C Trace Context `traceparent` header
//! (<https://www.w3.org/TR/trace-context/#traceparent-header>), parsed
//! strictly: a value that is not exactly right is no parent at all, and the
//! edge starts a new trace (a bad header never fails a request).
//!
//! `version "-" trace-id "-" parent-id "-" trace-flags`, lowercase hex only:
//!
//! * version `00`: exactly 55 characters. Version `ff` is invalid. A higher
//!   version is read as `00` when its first four fields have the `00` shape
//!   and whatever follows them starts with `-` (the spec's rule for versions
//!   the reader does not know);
//! * trace-id: 32 hex digits, not all zero; parent-id: 16, not all zero;
//! * trace-flags: 2 hex digits; only `sampled` (bit 0) is carried on.
//!
//! A request with more than one `traceparent` header has none.

use http::{HeaderMap, HeaderValue};
use opentelemetry::trace::{SpanId, TraceId};

/// The header's name.
pub const TRACEPARENT: &str = "traceparent";
/// The vendor-specific companion header, passed through with a valid parent.
pub const TRACESTATE: &str = "tracestate";

/// A valid `traceparent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace (never all zero).
    pub trace_id: TraceId,
    /// The caller's span (never all zero).
    pub parent_id: SpanId,
    /// Bit 0: the caller may have recorded its span.
    pub sampled: bool,
}

impl TraceParent {
    /// Parses one header value; `None` unless it is valid.
    pub fn parse(value: &str) -> Option<Self> {
        let b = value.as_bytes();
        if b.len() < 55 {
            return None;
        }
        let version = hex_u8(&b[0..2])?;
        if version == 0xff || (version == 0 && b.len() != 55) {
            return None;
        }
        if b.len() > 55 && b[55] != b'-' {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let trace_id = hex_u128(&b[3..35])?;
        let parent_id = hex_u64(&b[36..52])?;
        let flags = hex_u8(&b[53..55])?;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(Self {
            trace_id: TraceId::from(trace_id),
            parent_id: SpanId::from(parent_id),
            sampled: flags & 1 == 1,
        })
    }

    /// The request's parent: its one `traceparent` header, if valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let mut values = headers.get_all(TRACEPARENT).iter();
        let value = values.next()?;
        if values.next().is_some() {
            return None;
        }
        Self::parse(value.to_str().ok()?)
    }
}

/// The `traceparent` the edge sends: version 00, `trace_id`, the edge's
/// own span `span_id`, and the sampled flag.
pub fn format(trace_id: TraceId, span_id: SpanId, sampled: bool) -> HeaderValue {
    let value = format!("00-{trace_id}-{span_id}-{:02x}", u8::from(sampled));
    HeaderValue::try_from(value).expect("hex digits and dashes are a valid header value")
}

fn hex_digits(b: &[u8]) -> Option<u128> {
    b.iter().try_fold(0u128, |acc, &c| {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None, // uppercase too: the spec's HEXDIGLC
        };
        Some(acc << 4 | u128::from(d))
    })
}

fn hex_u8(b: &[u8]) -> Option<u8> {
    hex_digits(b).and_then(|v| u8::try_from(v).ok())
}

fn hex_u64(b: &[u8]) -> Option<u64> {
    hex_digits(b).and_then(|v| u64::try_from(v).ok())
}

fn hex_u128(b: &[u8]) -> Option<u128> {
    hex_digits(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_spec_example_parses() {
        let p = TraceParent::parse(VALID).unwrap();
        assert_eq!(p.trace_id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(p.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(p.sampled);
        let unsampled =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").unwrap();
        assert!(!unsampled.sampled);
        // Unknown flag bits are ignored, not carried on.
        let other =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-09").unwrap();
        assert!(other.sampled);
    }

    #[test]
    fn invalid_values_are_no_parent() {
        for bad in [
            "",
            "00",
            // all-zero ids
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // version ff, and version 00 with anything after it
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "0A-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // wrong lengths and separators
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e47366-0f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "004bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            // not hex
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x",
            " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            // a higher version must still be followed by `-`
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01.what",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_higher_version_is_read_as_00() {
        let p =
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(p, TraceParent::parse(VALID).unwrap());
        let p = TraceParent::parse(
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-the-future-holds",
        )
        .unwrap();
        assert_eq!(p.trace_id, TraceParent::parse(VALID).unwrap().trace_id);
    }

    #[test]
    fn two_headers_are_no_parent() {
        let mut h = HeaderMap::new();
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert!(TraceParent::from_headers(&h).is_some());
        h.append(TRACEPARENT, HeaderValue::from_static(VALID));
        assert_eq!(TraceParent::from_headers(&h), None);
        assert_eq!(TraceParent::from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn formatting_round_trips() {
        let p = TraceParent::parse(VALID).unwrap();
        let v = format(p.trace_id, p.parent_id, true);
        assert_eq!(v, VALID);
        let v = format(p.trace_id, SpanId::from(1u64), false);
        assert_eq!(v, "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000001-00");
    }
}
