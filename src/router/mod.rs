//! Pure routing: (method, path) → function, route parameters and required auth level,
//! with the Functions host's semantics (ASP.NET Core route templates in a plain
//! `RouteCollection`: first match in registration order, method mismatch = no match).
//! It owns template parsing, inline constraints and the host's startup validation
//! (reserved `admin`/`runtime` routes, conflicting routes, duplicate names). It does
//! no I/O, knows nothing about keys or workers, and never builds an HTTP response:
//! "no match" is `None`, and the caller decides that this means 404.

use std::borrow::Cow;
use std::str::FromStr;

use http::Method;
use regex::{Regex, RegexBuilder};

mod values;

use values::{
    is_datetime, is_decimal, is_file_name, is_float, is_guid, is_net_space, parse_integer,
    utf16_len,
};

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

#[derive(Debug)]
enum Segment {
    /// Matched case-insensitively (ordinal, like ASP.NET).
    Literal(String),
    Param(Param),
}

#[derive(Debug)]
struct Param {
    name: String,
    optional: bool,
    catch_all: bool,
    default: Option<String>,
    constraints: Vec<Constraint>,
}

/// ASP.NET Core's default inline constraint map (.NET 8): every name it resolves.
#[derive(Debug)]
enum Constraint {
    Int,
    Long,
    Bool,
    DateTime,
    Decimal,
    /// `double` and `float`: since .NET Core 3.0 both accept the same syntax (overflow
    /// becomes infinity instead of failing), so one check serves both.
    Float,
    Guid,
    Alpha,
    Min(i64),
    Max(i64),
    Range(i64, i64),
    Length(usize, usize),
    MinLength(usize),
    MaxLength(usize),
    Regex(Regex),
    Required,
    File,
    NonFile,
}

/// One section of a template segment, before parsing: literal text (braces
/// unescaped) or the text between `{` and `}`.
enum Part {
    Literal(String),
    Param(String),
}

/// Template problems before the function/template context is attached.
enum TemplateError {
    Bad(String),
    Unknown(String),
    BadConstraint { constraint: String, reason: String },
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

impl Param {
    /// ASP.NET wraps the constraints of an optional parameter so that an absent value
    /// passes; otherwise each constraint sees the absent value and (except `nonfile`)
    /// refuses it.
    fn accepts(&self, value: Option<&str>) -> bool {
        match value {
            None => {
                self.optional
                    || self
                        .constraints
                        .iter()
                        .all(|c| matches!(c, Constraint::NonFile))
            }
            Some(v) => self.constraints.iter().all(|c| c.accepts(v)),
        }
    }
}

impl Constraint {
    fn accepts(&self, v: &str) -> bool {
        match self {
            Constraint::Int => parse_integer::<i32>(v).is_some(),
            Constraint::Long => parse_integer::<i64>(v).is_some(),
            Constraint::Bool => {
                let t = v.trim_matches(|c| is_net_space(c) || c == '\0');
                t.eq_ignore_ascii_case("true") || t.eq_ignore_ascii_case("false")
            }
            Constraint::DateTime => is_datetime(v),
            Constraint::Decimal => is_decimal(v),
            Constraint::Float => is_float(v),
            Constraint::Guid => is_guid(v),
            Constraint::Alpha => v.chars().all(|c| c.is_ascii_alphabetic()),
            Constraint::Min(min) => parse_integer::<i64>(v).is_some_and(|n| n >= *min),
            Constraint::Max(max) => parse_integer::<i64>(v).is_some_and(|n| n <= *max),
            Constraint::Range(min, max) => {
                parse_integer::<i64>(v).is_some_and(|n| (*min..=*max).contains(&n))
            }
            // .NET string lengths count UTF-16 code units.
            Constraint::Length(min, max) => (*min..=*max).contains(&utf16_len(v)),
            Constraint::MinLength(min) => utf16_len(v) >= *min,
            Constraint::MaxLength(max) => utf16_len(v) <= *max,
            // ASP.NET Core does not anchor the expression: `regex(abc)` matches `xabcx`.
            Constraint::Regex(re) => re.is_match(v),
            Constraint::Required => !v.is_empty(),
            Constraint::File => is_file_name(v),
            Constraint::NonFile => !is_file_name(v),
        }
    }

    /// Resolves `name` or `name(args)` like ASP.NET's `DefaultInlineConstraintResolver`:
    /// names are case-insensitive, arguments are comma-separated and trimmed (except
    /// for `regex`, which takes the whole text).
    fn parse(text: &str) -> Result<Constraint, TemplateError> {
        let (name, args) = match text.find('(') {
            Some(open) if text.ends_with(')') => {
                (&text[..open], Some(&text[open + 1..text.len() - 1]))
            }
            Some(_) => {
                return Err(TemplateError::BadConstraint {
                    constraint: text.to_string(),
                    reason: "unbalanced parentheses".into(),
                });
            }
            None => (text, None),
        };
        let bad = |reason: &str| TemplateError::BadConstraint {
            constraint: text.to_string(),
            reason: reason.to_string(),
        };
        let lname = name.to_ascii_lowercase();
        if lname == "regex" {
            let pattern = args.ok_or_else(|| bad("regex needs a pattern: regex(expr)"))?;
            let re = RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| bad(&format!("pattern does not compile: {e}")))?;
            return Ok(Constraint::Regex(re));
        }
        let args: Vec<&str> = args
            .map(|a| a.split(',').map(str::trim).collect())
            .unwrap_or_default();
        let long = |s: &str| {
            s.parse::<i64>()
                .map_err(|_| bad("argument must be an integer"))
        };
        let count = |s: &str| {
            s.parse::<usize>()
                .map_err(|_| bad("argument must be a non-negative integer"))
        };
        let constraint = match (lname.as_str(), args.as_slice()) {
            ("int", []) => Constraint::Int,
            ("long", []) => Constraint::Long,
            ("bool", []) => Constraint::Bool,
            ("datetime", []) => Constraint::DateTime,
            ("decimal", []) => Constraint::Decimal,
            ("double" | "float", []) => Constraint::Float,
            ("guid", []) => Constraint::Guid,
            ("alpha", []) => Constraint::Alpha,
            ("required", []) => Constraint::Required,
            ("file", []) => Constraint::File,
            ("nonfile", []) => Constraint::NonFile,
            ("min", [n]) => Constraint::Min(long(n)?),
            ("max", [n]) => Constraint::Max(long(n)?),
            ("range", [a, b]) => {
                let (a, b) = (long(a)?, long(b)?);
                if a > b {
                    return Err(bad("min must not exceed max"));
                }
                Constraint::Range(a, b)
            }
            ("length", [n]) => {
                let n = count(n)?;
                Constraint::Length(n, n)
            }
            ("length", [a, b]) => {
                let (a, b) = (count(a)?, count(b)?);
                if a > b {
                    return Err(bad("min length must not exceed max length"));
                }
                Constraint::Length(a, b)
            }
            ("minlength", [n]) => Constraint::MinLength(count(n)?),
            ("maxlength", [n]) => Constraint::MaxLength(count(n)?),
            (
                "int" | "long" | "bool" | "datetime" | "decimal" | "double" | "float" | "guid"
                | "alpha" | "required" | "file" | "nonfile" | "min" | "max" | "range" | "length"
                | "minlength" | "maxlength",
                _,
            ) => return Err(bad("wrong number of arguments")),
            _ => return Err(TemplateError::Unknown(name.to_string())),
        };
        Ok(constraint)
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

/// Splits a template into segments the way ASP.NET's `RoutePatternParser` does:
/// `/` separates segments only outside `{…}`; `{{` and `}}` are literal braces.
fn parse_template(template: &str) -> Result<Vec<Segment>, TemplateError> {
    let bad = |reason: &str| Err(TemplateError::Bad(reason.to_string()));
    let mut raw_segments: Vec<Vec<Part>> = Vec::new();
    let mut parts: Vec<Part> = Vec::new();
    let mut literal = String::new();
    let chars: Vec<char> = template.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' => {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                if parts.is_empty() {
                    return bad("the separator '/' cannot appear consecutively");
                }
                raw_segments.push(std::mem::take(&mut parts));
                i += 1;
            }
            '{' if chars.get(i + 1) == Some(&'{') => {
                literal.push('{');
                i += 2;
            }
            '}' if chars.get(i + 1) == Some(&'}') => {
                literal.push('}');
                i += 2;
            }
            '}' => return bad("unmatched '}' (write '}}' for a literal brace)"),
            '?' => return bad("literal sections cannot contain '?'"),
            '{' => {
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                let mut text = String::new();
                i += 1;
                loop {
                    match (chars.get(i), chars.get(i + 1)) {
                        (None, _) => return bad("unterminated parameter: missing '}'"),
                        (Some('}'), Some('}')) | (Some('{'), Some('{')) => {
                            text.push(chars[i]);
                            i += 2;
                        }
                        (Some('}'), _) => {
                            i += 1;
                            break;
                        }
                        (Some('{'), _) => {
                            return bad("unescaped '{' inside a parameter (write '{{')");
                        }
                        (Some(&c), _) => {
                            text.push(c);
                            i += 1;
                        }
                    }
                }
                parts.push(Part::Param(text));
            }
            c => {
                literal.push(c);
                i += 1;
            }
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    if !parts.is_empty() {
        raw_segments.push(parts);
    } else if !raw_segments.is_empty() {
        return bad("the template cannot end with '/'");
    }

    let mut segments = Vec::with_capacity(raw_segments.len());
    let count = raw_segments.len();
    for (index, mut parts) in raw_segments.into_iter().enumerate() {
        if parts.len() != 1 {
            return bad(
                "complex segments (a literal and a parameter, or several parameters, in one segment) are not supported",
            );
        }
        let segment = match parts.pop() {
            Some(Part::Literal(text)) => Segment::Literal(text),
            Some(Part::Param(text)) => {
                let param = parse_parameter(&text)?;
                if param.catch_all && index + 1 != count {
                    return bad("a catch-all parameter must be the last segment");
                }
                let duplicate = segments.iter().any(
                    |s| matches!(s, Segment::Param(p) if p.name.eq_ignore_ascii_case(&param.name)),
                );
                if duplicate {
                    return Err(TemplateError::Bad(format!(
                        "parameter {:?} appears more than once",
                        param.name
                    )));
                }
                Segment::Param(param)
            }
            None => return bad("empty segment"),
        };
        segments.push(segment);
    }
    Ok(segments)
}

/// Parses the inside of `{…}`: `[*|**]name[:constraint[(args)]]…[=default|?]`.
fn parse_parameter(text: &str) -> Result<Param, TemplateError> {
    let bad = |reason: String| Err(TemplateError::Bad(reason));
    let (catch_all, rest) = match text.strip_prefix("**").or_else(|| text.strip_prefix('*')) {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (optional, rest) = match rest.strip_suffix('?') {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let name_end = rest.find([':', '=']).unwrap_or(rest.len());
    let name = &rest[..name_end];
    if name.is_empty() || name.contains(['{', '}', '/', '?', '*']) {
        return bad(format!(
            "parameter name {name:?} is invalid: it must be non-empty and cannot contain '{{', '}}', '/', '?' or '*'"
        ));
    }
    let mut rest = &rest[name_end..];
    let mut constraints = Vec::new();
    while let Some(after) = rest.strip_prefix(':') {
        let (constraint, remaining) = split_constraint(after)?;
        if constraint.is_empty() {
            return bad(format!("parameter {name:?} has an empty constraint"));
        }
        constraints.push(Constraint::parse(constraint)?);
        rest = remaining;
    }
    let default = rest.strip_prefix('=').map(str::to_string);
    if optional && default.is_some() {
        return bad(format!(
            "optional parameter {name:?} cannot have a default value"
        ));
    }
    if optional && catch_all {
        return bad(format!(
            "catch-all parameter {name:?} cannot be marked optional"
        ));
    }
    Ok(Param {
        name: name.to_string(),
        optional,
        catch_all,
        default,
        constraints,
    })
}

/// Takes one constraint off the front of `s`. Inside `(…)` the text may contain `:`,
/// `=` and `)`; the argument list ends at the first `)` followed by `:`, `=` or the end.
fn split_constraint(s: &str) -> Result<(&str, &str), TemplateError> {
    let delimiter = s.find([':', '=']).unwrap_or(s.len());
    match s.find('(') {
        Some(open) if open < delimiter => {
            let close = s[open..]
                .match_indices(')')
                .map(|(j, _)| open + j)
                .find(|&j| matches!(s.as_bytes().get(j + 1), None | Some(b':' | b'=')))
                .ok_or_else(|| TemplateError::BadConstraint {
                    constraint: s.to_string(),
                    reason: "unbalanced parentheses".into(),
                })?;
            Ok((&s[..=close], &s[close + 1..]))
        }
        _ => Ok((&s[..delimiter], &s[delimiter..])),
    }
}

#[cfg(test)]
mod tests;
