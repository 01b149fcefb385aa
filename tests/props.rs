//! Property tests for the pure parts of the request path: route templates and matching
//! (`router`), and the request side of `convert` (query decoding, header folding).
//! Generated inputs stay inside what the modules document (no dot segments, no `/`
//! inside a single parameter value); arbitrary inputs are the fuzz targets' job
//! (`fuzz/`, run by `scripts/fuzz.sh`).

use std::collections::HashMap;

use bytes::Bytes;
use http::Method;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use proptest::prelude::*;
use sluice::convert::{parse_query, to_rpc_http};
use sluice::router::{AuthLevel, RouteSpec, Router};

/// Everything but RFC 3986's unreserved characters is encoded in a generated path.
const PATH_SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `application/x-www-form-urlencoded` keeps these; a space becomes `+` separately.
const FORM: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'*')
    .remove(b'-')
    .remove(b'.')
    .remove(b'_');

/// One segment of a generated template, with the value a request puts there.
#[derive(Debug, Clone)]
enum Piece {
    Literal(String),
    /// `{name}` and its value (any text without `/`, never a dot segment).
    Param {
        name: String,
        value: String,
    },
    /// `{name:int}` and an `i32` value.
    Int {
        name: String,
        value: i32,
    },
}

/// A route template ending, optionally, in `{*name}` with its path segments.
#[derive(Debug, Clone)]
struct Template {
    pieces: Vec<Piece>,
    catch_all: Option<(String, Vec<String>)>,
    trailing_slash: bool,
}

impl Template {
    fn route(&self) -> String {
        let mut segments: Vec<String> = self
            .pieces
            .iter()
            .map(|piece| match piece {
                Piece::Literal(text) => text.clone(),
                Piece::Param { name, .. } => format!("{{{name}}}"),
                Piece::Int { name, .. } => format!("{{{name}:int}}"),
            })
            .collect();
        if let Some((name, _)) = &self.catch_all {
            segments.push(format!("{{*{name}}}"));
        }
        segments.join("/")
    }

    /// The request path under the `api` prefix, every segment percent-encoded.
    fn path(&self) -> String {
        let mut path = String::from("/api");
        let values = self.pieces.iter().map(|piece| match piece {
            Piece::Literal(text) => text.clone(),
            Piece::Param { value, .. } => value.clone(),
            Piece::Int { value, .. } => value.to_string(),
        });
        let rest = self
            .catch_all
            .iter()
            .flat_map(|(_, segments)| segments.iter().cloned());
        for segment in values.chain(rest) {
            path.push('/');
            path.extend(utf8_percent_encode(&segment, PATH_SEGMENT));
        }
        if self.trailing_slash {
            path.push('/');
        }
        path
    }

    /// The params a match must return: template order, values decoded; a catch-all
    /// keeps the request's trailing slash.
    fn expected(&self) -> Vec<(String, String)> {
        let mut params: Vec<(String, String)> = self
            .pieces
            .iter()
            .filter_map(|piece| match piece {
                Piece::Literal(_) => None,
                Piece::Param { name, value } => Some((name.clone(), value.clone())),
                Piece::Int { name, value } => Some((name.clone(), value.to_string())),
            })
            .collect();
        if let Some((name, segments)) = &self.catch_all {
            let mut value = segments.join("/");
            if self.trailing_slash {
                value.push('/');
            }
            params.push((name.clone(), value));
        }
        params
    }
}

fn spec(route: &str) -> RouteSpec {
    RouteSpec {
        function: "f".into(),
        route: Some(route.into()),
        methods: vec![],
        auth: AuthLevel::Anonymous,
    }
}

fn router(route: &str) -> Router {
    Router::new("api", vec![spec(route)]).expect("generated templates are valid")
}

fn find(route: &str, path: &str) -> Option<Vec<(String, String)>> {
    router(route).find(&Method::GET, path).map(|m| m.params)
}

/// Not `.`/`..` (removed as dot segments before matching, as Kestrel does).
fn not_dot_segment(s: &String) -> bool {
    s != "." && s != ".."
}

/// Literal segment text: ASCII and Latin-1 letters, digits and unreserved marks.
fn literal() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9à-þÀ-Þ._~-]{1,10}".prop_filter("dot segment", not_dot_segment)
}

/// Any text a single path segment can carry once percent-encoded.
fn segment_value() -> impl Strategy<Value = String> {
    "[^/]{1,12}".prop_filter("dot segment", not_dot_segment)
}

/// A parameter name made unique (ASCII case-insensitively) by its position suffix.
fn name(base: String, index: usize) -> String {
    format!("{base}_{index}")
}

fn piece() -> impl Strategy<Value = (u8, String, String, i32)> {
    (0u8..3, literal(), "[a-zA-Z][a-zA-Z0-9]{0,7}", any::<i32>())
}

fn template() -> impl Strategy<Value = Template> {
    (
        prop::collection::vec((piece(), segment_value()), 1..6),
        prop::option::of((
            "[a-zA-Z][a-zA-Z0-9]{0,7}",
            prop::collection::vec(segment_value(), 1..4),
        )),
        any::<bool>(),
    )
        .prop_map(|(raw, catch_all, trailing_slash)| {
            let count = raw.len();
            let pieces = raw
                .into_iter()
                .enumerate()
                .map(|(i, ((kind, text, base, int), value))| match kind {
                    0 => Piece::Literal(text),
                    1 => Piece::Param {
                        name: name(base, i),
                        value,
                    },
                    _ => Piece::Int {
                        name: name(base, i),
                        value: int,
                    },
                })
                .collect();
            Template {
                pieces,
                catch_all: catch_all.map(|(base, segments)| (name(base, count), segments)),
                trailing_slash,
            }
        })
        // Routes starting with admin/runtime are the host's own and refused at startup.
        .prop_filter("reserved route", |t| {
            let route = t.route().to_lowercase();
            !route.starts_with("admin") && !route.starts_with("runtime")
        })
}

/// Changes the case of some characters, keeping those whose other case is not one
/// character (ASP.NET's ordinal ignore-case uses simple case mapping, so `ß` ≠ `SS`).
fn flip_case(text: &str, flips: &[bool]) -> String {
    text.chars()
        .zip(flips.iter().cycle())
        .map(|(c, &flip)| {
            let other: Vec<char> = if c.is_lowercase() {
                c.to_uppercase().collect()
            } else {
                c.to_lowercase().collect()
            };
            match other.as_slice() {
                [single] if flip => *single,
                _ => c,
            }
        })
        .collect()
}

/// Form-encodes one key or value the way browsers write a query string.
fn form_encode(s: &str) -> String {
    s.split(' ')
        .map(|part| utf8_percent_encode(part, FORM).to_string())
        .collect::<Vec<_>>()
        .join("+")
}

proptest! {
    #[test]
    fn substituted_paths_match_with_exactly_their_params(t in template()) {
        let route = t.route();
        let path = t.path();
        prop_assert_eq!(find(&route, &path), Some(t.expected()), "route {:?}, path {:?}", route, path);
    }

    #[test]
    fn literal_routes_match_case_insensitively(
        literals in prop::collection::vec(literal(), 1..5),
        flips in prop::collection::vec(any::<bool>(), 1..16),
    ) {
        let route = literals.join("/");
        prop_assume!(!route.to_lowercase().starts_with("admin") && !route.to_lowercase().starts_with("runtime"));
        let requested: Vec<String> = literals
            .iter()
            .map(|l| utf8_percent_encode(&flip_case(l, &flips), PATH_SEGMENT).to_string())
            .collect();
        let path = format!("/{}/{}", flip_case("api", &flips), requested.join("/"));
        prop_assert_eq!(find(&route, &path), Some(vec![]), "route {:?}, path {:?}", route, path);
        // One segment more is no longer the same route.
        prop_assert_eq!(find(&route, &format!("{path}/extra")), None);
    }

    #[test]
    fn int_params_accept_every_i32(value in any::<i32>(), wide in any::<i64>()) {
        let expected = vec![("v".to_string(), value.to_string())];
        prop_assert_eq!(find("x/{v:int}", &format!("/api/x/{value}")), Some(expected));
        let fits = i32::try_from(wide).is_ok();
        prop_assert_eq!(find("x/{v:int}", &format!("/api/x/{wide}")).is_some(), fits);
    }

    #[test]
    fn int_params_reject_values_with_a_non_digit(
        value in "[^/]{0,6}[^/0-9+\\- \t\n\u{b}\u{c}\r][^/]{0,6}",
    ) {
        let path = format!("/api/x/{}", utf8_percent_encode(&value, PATH_SEGMENT));
        prop_assert_eq!(find("x/{v:int}", &path), None, "value {:?}", value);
    }

    #[test]
    fn parse_query_round_trips_form_encoded_pairs(
        pairs in prop::collection::vec(("[^\u{0}]{1,3}", "[^\u{0}]{0,8}"), 0..12),
    ) {
        let query = pairs
            .iter()
            .map(|(k, v)| format!("{}={}", form_encode(k), form_encode(v)))
            .collect::<Vec<_>>()
            .join("&");
        let mut expected: HashMap<String, String> = HashMap::new();
        for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
            expected
                .entry(k.clone())
                .and_modify(|joined| {
                    joined.push(',');
                    joined.push_str(v);
                })
                .or_insert_with(|| v.clone());
        }
        prop_assert_eq!(parse_query(Some(&query)), expected, "query {:?}", query);
    }

    #[test]
    fn rpc_headers_are_lower_cased_and_repeats_joined(
        names in prop::collection::vec("[a-z][a-z0-9-]{0,10}", 1..4),
        sent in prop::collection::vec((any::<prop::sample::Index>(), prop::collection::vec(any::<bool>(), 1..8), "[ -~]{0,12}"), 0..10),
    ) {
        let mut builder = http::Request::builder().method("GET").uri("/api/x");
        let mut expected: HashMap<String, Vec<String>> = HashMap::new();
        for (index, flips, value) in &sent {
            let name = &names[index.index(names.len())];
            builder = builder.header(flip_case(name, flips), value.as_str());
            expected.entry(name.clone()).or_default().push(value.clone());
        }
        let (parts, ()) = builder.body(()).expect("generated headers are valid").into_parts();
        let rpc = to_rpc_http(&parts, Bytes::new(), vec![]);
        let expected: HashMap<String, String> = expected
            .into_iter()
            .map(|(name, values)| (name, values.join(",")))
            .collect();
        prop_assert_eq!(rpc.headers, expected);
    }
}
