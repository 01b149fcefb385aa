//! Route templates as ASP.NET Core parses them: segments of literals and `{parameters}`
//! (optional `?`, catch-all `*`, defaults), and the inline constraint map with what each
//! constraint accepts. Parsing reports problems without the function's context; the router
//! attaches it.

use regex::{Regex, RegexBuilder};

use super::values::{
    is_datetime, is_decimal, is_file_name, is_float, is_guid, is_net_space, parse_integer,
    utf16_len,
};

#[derive(Debug)]
pub(super) enum Segment {
    /// Matched case-insensitively (ordinal, like ASP.NET).
    Literal(String),
    Param(Param),
}

#[derive(Debug)]
pub(super) struct Param {
    pub(super) name: String,
    pub(super) optional: bool,
    pub(super) catch_all: bool,
    pub(super) default: Option<String>,
    pub(super) constraints: Vec<Constraint>,
}

/// ASP.NET Core's default inline constraint map (.NET 8): every name it resolves.
#[derive(Debug)]
pub(super) enum Constraint {
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
pub(super) enum Part {
    Literal(String),
    Param(String),
}

/// Template problems before the function/template context is attached.
pub(super) enum TemplateError {
    Bad(String),
    Unknown(String),
    BadConstraint { constraint: String, reason: String },
}

impl Param {
    /// ASP.NET wraps the constraints of an optional parameter so that an absent value
    /// passes; otherwise each constraint sees the absent value and (except `nonfile`)
    /// refuses it.
    pub(super) fn accepts(&self, value: Option<&str>) -> bool {
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
    pub(super) fn accepts(&self, v: &str) -> bool {
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

/// Splits a template into segments the way ASP.NET's `RoutePatternParser` does:
/// `/` separates segments only outside `{…}`; `{{` and `}}` are literal braces.
pub(super) fn parse_template(template: &str) -> Result<Vec<Segment>, TemplateError> {
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
pub(super) fn parse_parameter(text: &str) -> Result<Param, TemplateError> {
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
pub(super) fn split_constraint(s: &str) -> Result<(&str, &str), TemplateError> {
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
