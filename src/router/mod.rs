//! Pure routing: (method, path) → function, route parameters and required auth level,
//! with the Functions host's semantics (ASP.NET Core route templates in a plain
//! `RouteCollection`: first match in registration order, method mismatch = no match).
//! It owns template parsing and inline constraints (`template.rs`, with the value checks in
//! `values.rs`), path matching and the host's startup validation
//! (reserved `admin`/`runtime` routes, conflicting routes, duplicate names). It does
//! no I/O, knows nothing about keys or workers, and never builds an HTTP response:
//! "no match" is `None`, and the caller decides that this means 404.

use std::borrow::Cow;
use std::str::FromStr;

use http::Method;

mod template;
mod values;

use template::{Segment, TemplateError, parse_template};

/// The `authLevel` of an HTTP trigger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthLevel {
    Anonymous,
    Function,
    Admin,
}

/// One HTTP function as registered: `route` is the trigger's route (without the
/// host's prefix); `None` means the function name is the route. An empty `methods`
/// list accepts every method.
#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub function: String,
    pub route: Option<String>,
    pub methods: Vec<Method>,
    pub auth: AuthLevel,
}

/// The routing table, in registration order.
#[derive(Debug)]
pub struct Router {
    routes: Vec<Route>,
}

/// A successful lookup. `index` is the position of the spec given to [`Router::new`];
/// `params` are the route values in template order (percent-decoded; absent optional
/// parameters left out, defaults filled in).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteMatch<'a> {
    pub function: &'a str,
    pub index: usize,
    pub params: Vec<(String, String)>,
    pub auth: AuthLevel,
}

/// Why the routing table could not be built (all are startup errors).
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("function {function}: route template {template:?} is invalid: {reason}")]
    BadTemplate {
        function: String,
        template: String,
        reason: String,
    },
    #[error(
        "function {function}: route {route:?} conflicts with one or more built-in routes (admin…, runtime…)"
    )]
    ReservedRoute { function: String, route: String },
    #[error(
        "function {second}: route {route:?} conflicts with the route of function {first} (same route, overlapping methods)"
    )]
    Conflict {
        first: String,
        second: String,
        route: String,
    },
    #[error(
        "function {function}: route template {template:?} uses unknown constraint {constraint:?}"
    )]
    UnknownConstraint {
        function: String,
        template: String,
        constraint: String,
    },
    #[error(
        "function {function}: route template {template:?}: constraint {constraint:?} is invalid: {reason}"
    )]
    BadConstraint {
        function: String,
        template: String,
        constraint: String,
        reason: String,
    },
    #[error("function name {function:?} is not unique within the app")]
    DuplicateFunction { function: String },
    #[error("unknown auth level {0:?} (expected anonymous, function or admin)")]
    BadAuthLevel(String),
}

#[derive(Debug)]
struct Route {
    function: String,
    methods: Vec<Method>,
    auth: AuthLevel,
    segments: Vec<Segment>,
}

/// The request path split the way Kestrel + ASP.NET's `PathTokenizer` see it.
struct PathSegments {
    /// Percent-decoded (except `%2F`, which Kestrel leaves encoded), dot segments removed.
    segments: Vec<String>,
    /// A trailing slash is ignored for matching but kept in a catch-all value.
    trailing_slash: bool,
}

impl FromStr for AuthLevel {
    type Err = RouteError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("anonymous") {
            Ok(AuthLevel::Anonymous)
        } else if s.eq_ignore_ascii_case("function") {
            Ok(AuthLevel::Function)
        } else if s.eq_ignore_ascii_case("admin") {
            Ok(AuthLevel::Admin)
        } else {
            Err(RouteError::BadAuthLevel(s.to_string()))
        }
    }
}

impl Router {
    /// Validates every spec the way the host does at startup and parses its template
    /// (`<prefix>/<route>`, slashes trimmed). Errors: a route starting with `admin` or
    /// `runtime`, two functions with the same route and overlapping methods, a repeated
    /// function name, an invalid template, an unknown or malformed constraint.
    pub fn new(route_prefix: &str, specs: Vec<RouteSpec>) -> Result<Router, RouteError> {
        let prefix = route_prefix.trim_matches('/');
        let mut routes: Vec<Route> = Vec::with_capacity(specs.len());
        let mut seen: Vec<(String, String, Vec<Method>)> = Vec::with_capacity(specs.len());
        for spec in specs {
            // The host substitutes the name for a null or whitespace route.
            let route = match spec.route.as_deref() {
                Some(r) if !r.trim().is_empty() => r,
                _ => spec.function.as_str(),
            };
            let route = route.trim_matches('/').to_string();
            // The host's check is a plain StartsWith on the lower-cased route, so
            // `administrators/x` is refused too.
            let lower = route.to_lowercase();
            if lower.starts_with("admin") || lower.starts_with("runtime") {
                return Err(RouteError::ReservedRoute {
                    function: spec.function,
                    route,
                });
            }
            for (other, other_route, other_methods) in &seen {
                if other_route.to_lowercase() == lower
                    && methods_overlap(other_methods, &spec.methods)
                {
                    return Err(RouteError::Conflict {
                        first: other.clone(),
                        second: spec.function,
                        route,
                    });
                }
            }
            if seen
                .iter()
                .any(|(name, _, _)| name.eq_ignore_ascii_case(&spec.function))
            {
                return Err(RouteError::DuplicateFunction {
                    function: spec.function,
                });
            }
            let template = match (prefix.is_empty(), route.is_empty()) {
                (true, _) => route.clone(),
                (false, true) => prefix.to_string(),
                (false, false) => format!("{prefix}/{route}"),
            };
            let segments = parse_template(&template).map_err(|e| match e {
                TemplateError::Bad(reason) => RouteError::BadTemplate {
                    function: spec.function.clone(),
                    template: template.clone(),
                    reason,
                },
                TemplateError::Unknown(constraint) => RouteError::UnknownConstraint {
                    function: spec.function.clone(),
                    template: template.clone(),
                    constraint,
                },
                TemplateError::BadConstraint { constraint, reason } => RouteError::BadConstraint {
                    function: spec.function.clone(),
                    template: template.clone(),
                    constraint,
                    reason,
                },
            })?;
            seen.push((spec.function.clone(), route, spec.methods.clone()));
            routes.push(Route {
                function: spec.function,
                methods: spec.methods,
                auth: spec.auth,
                segments,
            });
        }
        Ok(Router { routes })
    }

    /// First route, in registration order, whose methods and template (constraints
    /// included) accept the request. `path` is the raw request path, without query.
    pub fn find(&self, method: &Method, path: &str) -> Option<RouteMatch<'_>> {
        let path = PathSegments::new(path);
        self.routes.iter().enumerate().find_map(|(index, route)| {
            let method_ok = route.methods.is_empty()
                || route
                    .methods
                    .iter()
                    .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str()));
            if !method_ok {
                return None;
            }
            let params = route.match_path(&path)?;
            Some(RouteMatch {
                function: &route.function,
                index,
                params,
                auth: route.auth,
            })
        })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// The host's rule: no methods means all methods, which overlaps with anything.
fn methods_overlap(a: &[Method], b: &[Method]) -> bool {
    a.is_empty() || b.is_empty() || a.iter().any(|m| b.contains(m))
}

impl Route {
    /// ASP.NET's `RoutePatternMatcher`, restricted to simple (one-part) segments.
    fn match_path(&self, path: &PathSegments) -> Option<Vec<(String, String)>> {
        let segs = &path.segments;
        let ends_in_catch_all =
            matches!(self.segments.last(), Some(Segment::Param(p)) if p.catch_all);
        if segs.len() > self.segments.len() && !ends_in_catch_all {
            return None;
        }
        let mut params = Vec::new();
        for (i, segment) in self.segments.iter().enumerate() {
            let actual = segs.get(i).map(String::as_str);
            let param = match segment {
                Segment::Literal(literal) => {
                    if !actual.is_some_and(|a| eq_ignore_case(a, literal)) {
                        return None;
                    }
                    continue;
                }
                Segment::Param(param) => param,
            };
            let captured: Option<Cow<'_, str>> = if param.catch_all {
                // Everything from here on, slashes and a trailing slash included.
                (i < segs.len()).then(|| {
                    let mut rest = segs[i..].join("/");
                    if path.trailing_slash {
                        rest.push('/');
                    }
                    Cow::Owned(rest)
                })
            } else {
                actual.filter(|a| !a.is_empty()).map(Cow::Borrowed)
            };
            let value = captured.or_else(|| param.default.as_deref().map(Cow::Borrowed));
            if value.is_none() && !param.optional && !param.catch_all {
                return None;
            }
            if !param.accepts(value.as_deref()) {
                return None;
            }
            if let Some(value) = value {
                params.push((param.name.clone(), value.into_owned()));
            }
        }
        Some(params)
    }
}

impl PathSegments {
    /// Kestrel decodes the path (leaving `%2F` encoded) and then removes dot segments;
    /// ASP.NET's tokenizer then splits on `/` and ignores one trailing slash.
    fn new(path: &str) -> PathSegments {
        let path = path.strip_prefix('/').unwrap_or(path);
        let mut segments: Vec<String> = Vec::new();
        let mut trailing_slash = false;
        if path.is_empty() {
            return PathSegments {
                segments,
                trailing_slash,
            };
        }
        let raw: Vec<&str> = path.split('/').collect();
        let last = raw.len() - 1;
        for (i, raw) in raw.into_iter().enumerate() {
            let decoded = decode_segment(raw);
            match decoded.as_ref() {
                "." => trailing_slash = i == last,
                ".." => {
                    segments.pop();
                    trailing_slash = i == last;
                }
                "" if i == last => trailing_slash = true,
                _ => segments.push(decoded.into_owned()),
            }
        }
        PathSegments {
            segments,
            trailing_slash,
        }
    }
}

/// Percent-decodes one path segment, keeping `%2F` as is (Kestrel never turns it into
/// a separator). A segment that does not decode to UTF-8 is kept raw.
fn decode_segment(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let hex = |i: usize| bytes.get(i).and_then(|&b| (b as char).to_digit(16));
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(h), Some(l)) => {
                let byte = (h * 16 + l) as u8;
                if byte == b'/' {
                    out.extend_from_slice(&bytes[i..i + 3]);
                } else {
                    out.push(byte);
                }
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(_) => Cow::Borrowed(raw),
    }
}

/// Ordinal case-insensitive comparison (simple per-character case folding).
fn eq_ignore_case(a: &str, b: &str) -> bool {
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests;
