//! CORS as the Functions host applies it (ASP.NET Core's CORS middleware with a policy of
//! the configured origins, any header, any method, and credentials when asked). Pure:
//! decides from request headers what a preflight answers and which headers an actual
//! response gets; does no I/O and knows nothing of functions.
//!
//! - A request without `Origin` is not a CORS request: nothing changes.
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) is answered
//!   here with 204 and never reaches a function; a disallowed origin gets the 204 without
//!   any `Access-Control-*` header, so the browser refuses.
//! - An actual request from an allowed origin gets `Access-Control-Allow-Origin` (and
//!   `-Credentials`) on whatever answers it.
//! - `Vary: Origin` only where the answer depends on which allowed origin asked: more than
//!   one origin, or a wildcard subdomain (the middleware's rule).
//! - Configured origins are lower-cased and a request's `Origin` is compared exactly
//!   (browsers send it lower-case), as the middleware does.
//!
//! Sluice is stricter than Core Tools where the host silently misbehaves: entries are
//! trimmed (the host keeps `" http://b"` and never matches it), a trailing `/` is dropped,
//! an entry that is not an origin is refused, and `*` beside other origins is refused (the
//! host takes it as a literal that matches nothing). Wildcard subdomains
//! (`https://*.example.com`) are Sluice's own addition.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};

/// The allowed origins and whether credentials are allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorsPolicy {
    origins: Origins,
    credentials: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Origins {
    /// `*`.
    Any,
    /// Exact origins (`scheme://host[:port]`, lower-cased) and wildcard subdomains
    /// (`https://*.example.com`, kept as scheme + `://` and the `.example.com` suffix).
    List {
        exact: Vec<String>,
        subdomains: Vec<(String, String)>,
    },
}

/// Why an origin list cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CorsError {
    #[error("the CORS origin list is empty")]
    Empty,
    #[error(
        "CORS origin {0:?} is not an origin: expected `*` or scheme://host[:port] (e.g. http://localhost:3000)"
    )]
    BadOrigin(String),
    #[error(
        "CORS credentials cannot be allowed for any origin (`*`): list the origins instead, as the CORS protocol requires"
    )]
    AnyWithCredentials,
    #[error("CORS origin `*` (any origin) must be the only entry of the list")]
    AnyAmongOthers,
}

impl CorsPolicy {
    /// A policy from a comma-separated origin list (`Host.CORS`, `--cors`).
    pub fn parse(list: &str, credentials: bool) -> Result<CorsPolicy, CorsError> {
        let entries: Vec<&str> = list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if entries.is_empty() {
            return Err(CorsError::Empty);
        }
        let origins = if entries == ["*"] {
            if credentials {
                return Err(CorsError::AnyWithCredentials);
            }
            Origins::Any
        } else {
            let mut exact = Vec::new();
            let mut subdomains = Vec::new();
            for entry in entries {
                if entry == "*" {
                    return Err(CorsError::AnyAmongOthers);
                }
                let origin = normalise(entry).ok_or_else(|| CorsError::BadOrigin(entry.into()))?;
                match origin.split_once("://*.") {
                    Some((scheme, suffix)) => {
                        subdomains.push((format!("{scheme}://"), format!(".{suffix}")))
                    }
                    None => exact.push(origin),
                }
            }
            Origins::List { exact, subdomains }
        };
        Ok(CorsPolicy {
            origins,
            credentials,
        })
    }

    /// The answer to a preflight request (its body is empty), or `None` when this is not one.
    pub fn preflight(&self, method: &Method, headers: &HeaderMap) -> Option<Response<()>> {
        if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let origin = headers.get(header::ORIGIN)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::NO_CONTENT;
        let Some(allowed) = self.allow_origin(origin) else {
            return Some(response);
        };
        let out = response.headers_mut();
        self.write_common(out, allowed);
        // Any header and any method are allowed: the requested ones are echoed.
        if let Some(requested) = joined(headers, header::ACCESS_CONTROL_REQUEST_HEADERS) {
            out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
        }
        if let Some(requested) = joined(headers, header::ACCESS_CONTROL_REQUEST_METHOD) {
            out.insert(header::ACCESS_CONTROL_ALLOW_METHODS, requested);
        }
        self.write_vary(out);
        Some(response)
    }

    /// The `Access-Control-Allow-Origin` value an actual request's response gets, decided
    /// before the request is consumed; `None` when it gets no CORS headers.
    pub fn actual(&self, headers: &HeaderMap) -> Option<HeaderValue> {
        self.allow_origin(headers.get(header::ORIGIN)?)
    }

    /// Adds the CORS headers for an allowed actual request to its response.
    pub fn decorate(&self, allowed: HeaderValue, out: &mut HeaderMap) {
        self.write_common(out, allowed);
        self.write_vary(out);
    }

    fn write_common(&self, out: &mut HeaderMap, allowed: HeaderValue) {
        out.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            out.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// An answer that depends on which allowed origin asked must say so to caches; with one
    /// exact origin (or any) every allowed answer is the same, and the host sends no Vary.
    fn write_vary(&self, out: &mut HeaderMap) {
        let varies = match &self.origins {
            Origins::Any => false,
            Origins::List { exact, subdomains } => exact.len() > 1 || !subdomains.is_empty(),
        };
        if varies {
            out.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }

    /// `*` for any origin, else the request's own origin when it is allowed.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        match &self.origins {
            Origins::Any => Some(HeaderValue::from_static("*")),
            Origins::List { exact, subdomains } => {
                let text = origin.to_str().ok()?;
                let allowed = exact.iter().any(|o| o == text)
                    || subdomains.iter().any(|(scheme, suffix)| {
                        text.strip_prefix(scheme.as_str())
                            .and_then(|host| host.split(':').next())
                            .is_some_and(|host| {
                                host.len() > suffix.len() && host.ends_with(suffix.as_str())
                            })
                    });
                allowed.then(|| origin.clone())
            }
        }
    }
}

impl std::fmt::Display for CorsPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origins {
            Origins::Any => f.write_str("any origin (*)")?,
            Origins::List { exact, subdomains } => {
                let wildcards = subdomains.iter().map(|(s, d)| format!("{s}*{d}"));
                let all: Vec<String> = exact.iter().cloned().chain(wildcards).collect();
                f.write_str(&all.join(", "))?
            }
        }
        if self.credentials {
            f.write_str("; credentials allowed")?;
        }
        Ok(())
    }
}

/// `scheme://host[:port]`, lower-cased, without a trailing slash; `None` if it is not one.
fn normalise(entry: &str) -> Option<String> {
    let lower = entry.trim_end_matches('/').to_ascii_lowercase();
    let (scheme, rest) = lower.split_once("://")?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    // An IPv6 literal keeps its colons inside brackets.
    let split_at = match rest.find(']') {
        Some(end) if rest.starts_with('[') => end + 1,
        _ => rest.rfind(':').unwrap_or(rest.len()),
    };
    let (host, port) = rest.split_at(split_at.min(rest.len()));
    let port = (!port.is_empty()).then(|| port.trim_start_matches(':'));
    let host_ok = !host.is_empty()
        && host
            .trim_start_matches("*.")
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '[' | ']' | ':'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    (scheme_ok && host_ok && port_ok).then_some(lower)
}

/// A request header's values joined with `,` (how ASP.NET Core writes echoed lists).
fn joined(headers: &HeaderMap, name: header::HeaderName) -> Option<HeaderValue> {
    let items: Vec<&str> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(",")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(
                header::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        map
    }

    fn preflight(policy: &CorsPolicy, origin: &str) -> Response<()> {
        policy
            .preflight(
                &Method::OPTIONS,
                &headers(&[
                    ("origin", origin),
                    ("access-control-request-method", "PUT"),
                    ("access-control-request-headers", "content-type, x-custom"),
                ]),
            )
            .expect("a preflight")
    }

    fn get(r: &Response<()>, name: &str) -> Option<String> {
        r.headers()
            .get(name)
            .map(|v| v.to_str().expect("ascii").to_owned())
    }

    #[test]
    fn preflight_from_an_allowed_origin_echoes_method_and_headers() {
        let policy = CorsPolicy::parse("http://localhost:3000, https://app.example.com", true)
            .expect("valid");
        let r = preflight(&policy, "http://localhost:3000");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            get(&r, "access-control-allow-origin").as_deref(),
            Some("http://localhost:3000")
        );
        assert_eq!(
            get(&r, "access-control-allow-methods").as_deref(),
            Some("PUT")
        );
        assert_eq!(
            get(&r, "access-control-allow-headers").as_deref(),
            Some("content-type,x-custom")
        );
        assert_eq!(
            get(&r, "access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(get(&r, "vary").as_deref(), Some("Origin"));
    }

    #[test]
    fn preflight_from_a_disallowed_origin_is_answered_without_cors_headers() {
        let policy = CorsPolicy::parse("http://localhost:3000", false).expect("valid");
        let r = preflight(&policy, "http://evil.example");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert!(r.headers().is_empty(), "{:?}", r.headers());
    }

    #[test]
    fn not_a_preflight_without_origin_or_requested_method() {
        let policy = CorsPolicy::parse("*", false).expect("valid");
        let options = &Method::OPTIONS;
        assert!(
            policy
                .preflight(options, &headers(&[("origin", "http://a")]))
                .is_none()
        );
        assert!(
            policy
                .preflight(
                    options,
                    &headers(&[("access-control-request-method", "GET")])
                )
                .is_none()
        );
        let get_request = headers(&[
            ("origin", "http://a"),
            ("access-control-request-method", "GET"),
        ]);
        assert!(policy.preflight(&Method::GET, &get_request).is_none());
    }

    #[test]
    fn any_origin_answers_star_without_vary() {
        let policy = CorsPolicy::parse("*", false).expect("valid");
        let r = preflight(&policy, "http://anything.example");
        assert_eq!(get(&r, "access-control-allow-origin").as_deref(), Some("*"));
        assert_eq!(get(&r, "vary"), None);
        assert_eq!(get(&r, "access-control-allow-credentials"), None);
        let allowed = policy
            .actual(&headers(&[("origin", "http://x")]))
            .expect("any origin");
        assert_eq!(allowed, "*");
    }

    #[test]
    fn actual_requests_match_the_lower_cased_origins_exactly() {
        let policy = CorsPolicy::parse("HTTPS://App.Example.com/", false).expect("valid");
        let allowed = policy
            .actual(&headers(&[("origin", "https://app.example.com")]))
            .expect("allowed");
        let mut out = HeaderMap::new();
        policy.decorate(allowed, &mut out);
        assert_eq!(
            out["access-control-allow-origin"],
            "https://app.example.com"
        );
        assert!(!out.contains_key("vary"), "one origin: no Vary");
        assert!(!out.contains_key("access-control-allow-credentials"));
        for other in [
            "https://app.example.com:8443",
            "http://app.example.com",
            "https://example.com",
            // The host compares ordinally against its lower-cased list.
            "https://App.example.com",
        ] {
            assert!(
                policy.actual(&headers(&[("origin", other)])).is_none(),
                "{other}"
            );
        }
        assert!(
            policy.actual(&HeaderMap::new()).is_none(),
            "no Origin, no CORS"
        );
    }

    #[test]
    fn wildcard_subdomains() {
        let policy = CorsPolicy::parse("https://*.example.com", false).expect("valid");
        for ok in ["https://a.example.com", "https://a.b.example.com:8443"] {
            assert!(policy.actual(&headers(&[("origin", ok)])).is_some(), "{ok}");
        }
        for no in [
            "https://example.com",
            "http://a.example.com",
            "https://aexample.com",
        ] {
            assert!(policy.actual(&headers(&[("origin", no)])).is_none(), "{no}");
        }
    }

    #[test]
    fn bad_lists_are_refused() {
        assert_eq!(CorsPolicy::parse(" , ", false), Err(CorsError::Empty));
        assert_eq!(
            CorsPolicy::parse("*", true),
            Err(CorsError::AnyWithCredentials)
        );
        assert_eq!(
            CorsPolicy::parse("*, http://a.example", false),
            Err(CorsError::AnyAmongOthers)
        );
        for bad in [
            "localhost:3000",
            "http://",
            "http://a b",
            "http://a:99999",
            "http://a/path",
        ] {
            assert!(
                matches!(CorsPolicy::parse(bad, false), Err(CorsError::BadOrigin(_))),
                "{bad}"
            );
        }
        assert!(CorsPolicy::parse("http://[::1]:8080,http://127.0.0.1", false).is_ok());
    }
}
