//! W3C trace context for one request, as the platform host makes it (platform-facts,
//! "Trace context and OpenTelemetry"): the incoming `traceparent`/`tracestate` are read
//! (invalid or absent → a new trace), and Sluice's own span for the request is a child of
//! the incoming one, with a new span id. Its `traceparent` is what the worker gets in
//! `RpcTraceContext` (and an http-v2 worker's server in the forwarded headers), so the
//! function's own spans are children of Sluice's span, as they are of the host's.
//!
//! Pure and cheap: ids come from the thread-local generator, and the one string made per
//! invocation is the 55-byte `traceparent`. Knows nothing about routing or workers.

use std::fmt;

use http::HeaderMap;
use http::header::{HeaderName, HeaderValue};

use crate::proto::RpcTraceContext;

pub(crate) const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
pub(crate) const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// `00-` + 32 + `-` + 16 + `-` + 2.
const TRACEPARENT_LEN: usize = 55;

/// A `tracestate` longer than this is dropped: the spec asks participants to carry at
/// least 512 bytes, and keeping it bounded keeps the per-request cost bounded.
const MAX_TRACESTATE: usize = 512;
/// At most 32 list members (W3C): a longer `tracestate` is discarded whole.
const MAX_TRACESTATE_MEMBERS: usize = 32;

/// The "sampled" trace flag; the only one the host (.NET `ActivityTraceFlags`) propagates.
const SAMPLED: u8 = 0x01;

/// A 16-byte trace id, printed as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceId(pub(crate) u128);

/// An 8-byte span id, printed as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanId(pub(crate) u64);

/// Sluice's span for one request: its ids, its parent (the caller's span, if the request
/// carried a valid `traceparent`), the trace flags and the caller's `tracestate`.
#[derive(Debug, Clone)]
pub struct TraceContext {
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    /// The incoming span; `None` when this request starts a trace.
    pub(crate) parent: Option<SpanId>,
    flags: u8,
    /// Passed on unchanged (a `HeaderValue` clone shares its bytes).
    tracestate: Option<HeaderValue>,
}

impl TraceContext {
    /// The span for a request with these headers: a child of a valid incoming
    /// `traceparent` (its `tracestate` kept), else the root of a new trace.
    pub fn for_request(headers: &HeaderMap) -> TraceContext {
        match incoming(headers) {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: SpanId::random(),
                parent: Some(parent),
                flags: flags & SAMPLED,
                tracestate: tracestate(headers),
            },
            None => TraceContext::root(),
        }
    }

    /// A new trace. Sluice has no sampler: its spans are recorded, so the flag says so.
    pub(crate) fn root() -> TraceContext {
        TraceContext {
            trace_id: TraceId::random(),
            span_id: SpanId::random(),
            parent: None,
            flags: SAMPLED,
            tracestate: None,
        }
    }

    pub(crate) fn sampled(&self) -> bool {
        self.flags & SAMPLED != 0
    }

    /// This span as a version-00 `traceparent`.
    pub(crate) fn traceparent(&self) -> String {
        let mut out = [0u8; TRACEPARENT_LEN];
        out[..3].copy_from_slice(b"00-");
        hex_into(&self.trace_id.0.to_be_bytes(), &mut out[3..35]);
        out[35] = b'-';
        hex_into(&self.span_id.0.to_be_bytes(), &mut out[36..52]);
        out[52] = b'-';
        hex_into(&[self.flags], &mut out[53..55]);
        // Only ASCII hex digits and dashes were written: borrowed as is, copied once.
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The caller's `tracestate`, if it came with a valid `traceparent`.
    #[cfg(test)]
    pub(crate) fn tracestate(&self) -> Option<&HeaderValue> {
        self.tracestate.as_ref()
    }

    /// What the worker gets in `InvocationRequest.trace_context`: this span's
    /// `traceparent`, the `tracestate`, and the invocation id as an attribute.
    pub fn to_rpc(&self, invocation_id: &str) -> RpcTraceContext {
        let trace_state = self
            .tracestate
            .as_ref()
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        RpcTraceContext {
            trace_parent: self.traceparent(),
            trace_state,
            // One attribute: each costs the host and the worker a few allocations per
            // request, and the function already knows its own name and trigger.
            attributes: [("faas.invocation_id".to_owned(), invocation_id.to_owned())].into(),
        }
    }

    /// Sets `traceparent` (and `tracestate`, or removes a stale one) on a request that
    /// Sluice forwards on behalf of this span.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        if let Ok(value) = HeaderValue::try_from(self.traceparent()) {
            headers.insert(TRACEPARENT, value);
        }
        match &self.tracestate {
            Some(state) => {
                headers.insert(TRACESTATE, state.clone());
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

impl TraceId {
    fn random() -> TraceId {
        loop {
            let id = fastrand::u128(..);
            if id != 0 {
                return TraceId(id);
            }
        }
    }
}

impl SpanId {
    fn random() -> SpanId {
        loop {
            let id = fastrand::u64(..);
            if id != 0 {
                return SpanId(id);
            }
        }
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// `(trace id, parent span id, flags)` of the one valid `traceparent` header.
fn incoming(headers: &HeaderMap) -> Option<(TraceId, SpanId, u8)> {
    let mut values = headers.get_all(TRACEPARENT).iter();
    let value = values.next()?;
    // Several traceparent headers: no way to tell which one is right.
    if values.next().is_some() {
        return None;
    }
    parse_traceparent(value.as_bytes())
}

/// W3C Trace Context: `version-traceid-parentid-flags`, lowercase hex. Version `ff` is
/// invalid; version 00 is exactly 55 bytes; a later version may append `-…` fields,
/// which are ignored. All-zero ids are invalid.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, u8)> {
    let value = value.trim_ascii();
    if value.len() < TRACEPARENT_LEN {
        return None;
    }
    let version = hex_value(&value[0..2])?;
    match version {
        0xff => return None,
        0x00 if value.len() != TRACEPARENT_LEN => return None,
        _ if value.len() > TRACEPARENT_LEN && value[TRACEPARENT_LEN] != b'-' => return None,
        _ => {}
    }
    if value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let trace_id = hex_value(&value[3..35])?;
    let span_id = u64::try_from(hex_value(&value[36..52])?).ok()?;
    let flags = u8::try_from(hex_value(&value[53..55])?).ok()?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some((TraceId(trace_id), SpanId(span_id), flags))
}

/// The incoming `tracestate` (several headers joined with commas, as HTTP allows), or
/// `None` when it is empty, too long, has too many members or is not visible ASCII.
fn tracestate(headers: &HeaderMap) -> Option<HeaderValue> {
    let mut values = headers.get_all(TRACESTATE).iter();
    let first = values.next()?;
    let joined = match values.next() {
        None => first.clone(),
        Some(second) => {
            let mut all = first.as_bytes().to_vec();
            for value in std::iter::once(second).chain(values) {
                all.push(b',');
                all.extend_from_slice(value.as_bytes());
            }
            HeaderValue::from_bytes(&all).ok()?
        }
    };
    let bytes = joined.as_bytes();
    let members = bytes
        .split(|&b| b == b',')
        .filter(|m| !m.trim_ascii().is_empty())
        .count();
    let valid = !bytes.trim_ascii().is_empty()
        && bytes.len() <= MAX_TRACESTATE
        && members <= MAX_TRACESTATE_MEMBERS
        && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
    valid.then_some(joined)
}

/// The value of at most 32 lowercase hex digits (W3C forbids upper case).
fn hex_value(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &d| {
        let nibble = match d {
            b'0'..=b'9' => d - b'0',
            b'a'..=b'f' => d - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(nibble))
    })
}

fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in bytes.iter().enumerate() {
        out[2 * i] = DIGITS[usize::from(b >> 4)];
        out[2 * i + 1] = DIGITS[usize::from(b & 0x0f)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLIENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).expect("valid name"),
                HeaderValue::from_str(v).expect("valid value"),
            );
        }
        map
    }

    fn is_valid_traceparent(s: &str) -> bool {
        parse_traceparent(s.as_bytes()).is_some() && s.len() == TRACEPARENT_LEN
    }

    #[test]
    fn a_valid_traceparent_makes_a_child_span_in_the_same_trace() {
        let trace = TraceContext::for_request(&headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "congo=t61rcWkgMzE"),
        ]));
        assert_eq!(
            trace.trace_id.to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(
            trace.parent.map(|p| p.to_string()).as_deref(),
            Some("b7ad6b7169203331")
        );
        assert_ne!(trace.span_id, SpanId(0xb7ad6b7169203331));
        assert!(trace.sampled());
        let tp = trace.traceparent();
        assert!(is_valid_traceparent(&tp), "{tp}");
        assert!(
            tp.starts_with("00-0af7651916cd43dd8448eb211c80319c-"),
            "{tp}"
        );
        assert!(tp.ends_with("-01"), "{tp}");
        assert_eq!(&tp[36..52], trace.span_id.to_string());
        let rpc = trace.to_rpc("inv-1");
        assert_eq!(rpc.trace_parent, tp);
        assert_eq!(rpc.trace_state, "congo=t61rcWkgMzE");
        assert_eq!(rpc.attributes["faas.invocation_id"], "inv-1");
        assert_eq!(rpc.attributes.len(), 1);
    }

    #[test]
    fn the_sampled_flag_is_kept_and_other_flags_are_not() {
        let not_sampled = TraceContext::for_request(&headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
        )]));
        assert!(!not_sampled.sampled());
        assert!(not_sampled.traceparent().ends_with("-00"));
        let more = TraceContext::for_request(&headers(&[(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-03",
        )]));
        assert!(more.traceparent().ends_with("-01"));
    }

    #[test]
    fn invalid_or_missing_traceparents_start_a_fresh_valid_trace() {
        let bad = [
            "",
            "garbage",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "0x-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0g",
            "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01x",
        ];
        for value in bad {
            let trace = TraceContext::for_request(&headers(&[
                ("traceparent", value),
                ("tracestate", "congo=t61rcWkgMzE"),
            ]));
            assert!(trace.parent.is_none(), "{value:?} was accepted");
            assert_ne!(trace.trace_id.0, 0x0af7651916cd43dd8448eb211c80319c);
            assert!(
                trace.tracestate().is_none(),
                "{value:?} kept its tracestate"
            );
            assert!(is_valid_traceparent(&trace.traceparent()));
            assert!(trace.sampled());
        }
        let none = TraceContext::for_request(&HeaderMap::new());
        assert!(none.parent.is_none() && is_valid_traceparent(&none.traceparent()));
        // Two traceparent headers: which one is meant cannot be known.
        let two = TraceContext::for_request(&headers(&[
            ("traceparent", CLIENT),
            ("traceparent", CLIENT),
        ]));
        assert!(two.parent.is_none());
    }

    #[test]
    fn later_versions_are_read_as_version_00() {
        let trace = TraceContext::for_request(&headers(&[(
            "traceparent",
            "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-the-future-holds",
        )]));
        assert_eq!(trace.trace_id.0, 0x0af7651916cd43dd8448eb211c80319c);
        assert!(trace.traceparent().starts_with("00-"));
    }

    #[test]
    fn fresh_traces_differ() {
        let a = TraceContext::root();
        let b = TraceContext::root();
        assert_ne!(a.trace_id, b.trace_id);
        assert_ne!(a.span_id, b.span_id);
    }

    #[test]
    fn tracestate_is_joined_and_bounded() {
        let joined = TraceContext::for_request(&headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "a=1"),
            ("tracestate", "b=2"),
        ]));
        assert_eq!(
            joined.tracestate().map(|v| v.as_bytes()),
            Some(&b"a=1,b=2"[..])
        );
        let long = "k=".to_owned() + &"v".repeat(MAX_TRACESTATE);
        let too_long =
            TraceContext::for_request(&headers(&[("traceparent", CLIENT), ("tracestate", &long)]));
        assert!(too_long.tracestate().is_none());
        let many = (0..33)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join(",");
        let too_many =
            TraceContext::for_request(&headers(&[("traceparent", CLIENT), ("tracestate", &many)]));
        assert!(too_many.tracestate().is_none());
    }

    #[test]
    fn inject_replaces_the_callers_headers() {
        let trace = TraceContext::for_request(&headers(&[
            ("traceparent", CLIENT),
            ("tracestate", "congo=1"),
        ]));
        let mut forwarded = headers(&[("traceparent", CLIENT), ("tracestate", "congo=1")]);
        trace.inject(&mut forwarded);
        assert_eq!(forwarded.get_all(TRACEPARENT).iter().count(), 1);
        assert_eq!(forwarded[TRACEPARENT], trace.traceparent().as_str());
        assert_eq!(forwarded[TRACESTATE], "congo=1");

        let fresh = TraceContext::for_request(&headers(&[("traceparent", "garbage")]));
        let mut forwarded = headers(&[("traceparent", "garbage"), ("tracestate", "congo=1")]);
        fresh.inject(&mut forwarded);
        assert_eq!(forwarded[TRACEPARENT], fresh.traceparent().as_str());
        assert!(!forwarded.contains_key(TRACESTATE));
    }
}
