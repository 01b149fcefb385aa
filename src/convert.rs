//! Every HTTP ⇄ RpcHttp conversion, following the platform host (platform-facts §2):
//! the request becomes an `RpcHttp` with lower-cased headers, decoded query (empty
//! values dropped), route params and the body as bytes; the worker's output becomes
//! the HTTP response exactly as the host would write it.

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderName, HeaderValue, SET_COOKIE};
use http::{Response, StatusCode};
use std::collections::HashMap;

use crate::body::{self, Body};
use crate::functions::HttpOutput;
use crate::proto::rpc_http_cookie::SameSite;
use crate::proto::typed_data::Data;
use crate::proto::{InvocationResponse, RpcHttp, RpcHttpCookie, TypedData};

const TEXT_PLAIN: &str = "text/plain; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("status code {0:?} is not a valid HTTP status")]
    Status(String),
    #[error("response header {0:?} is not valid")]
    Header(String),
}

/// The request as the host hands it to a Python worker.
pub fn to_rpc_http(
    parts: &http::request::Parts,
    body: Bytes,
    params: Vec<(String, String)>,
) -> RpcHttp {
    let host = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("localhost");
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers: HashMap<String, String> = HashMap::with_capacity(parts.headers.keys_len());
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert_with(|| value.into_owned());
    }
    RpcHttp {
        method: parts.method.as_str().to_owned(),
        url: format!("http://{host}{path_and_query}"),
        headers,
        query: parse_query(parts.uri.query()),
        params: params.into_iter().collect(),
        // The host fills the body only when there is one; the SDK then reads b"".
        body: (!body.is_empty()).then(|| {
            Box::new(TypedData {
                data: Some(Data::Bytes(body)),
            })
        }),
        ..Default::default()
    }
}

/// The request as the host hands it to an http-v2 worker: route parameters only (the
/// request itself is forwarded over HTTP).
pub fn route_params_only(params: Vec<(String, String)>) -> RpcHttp {
    RpcHttp {
        params: params.into_iter().collect(),
        ..Default::default()
    }
}

/// Decoded query: `+` is a space, repeated keys are joined with commas, and keys whose
/// value is empty are dropped (as the host does).
pub fn parse_query(raw: Option<&str>) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = HashMap::new();
    for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (k, v) = (form_decode(k), form_decode(v));
        if v.is_empty() || k.is_empty() {
            continue;
        }
        out.entry(k)
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out
}

fn form_decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8_lossy()
        .into_owned()
}

/// The HTTP response for a successful invocation. `streamed`, when given, is the body of
/// its HTTP value, which then holds only a placeholder.
pub fn to_response(
    response: InvocationResponse,
    output: &HttpOutput,
    streamed: Option<Body>,
) -> Result<Response<Body>, ConvertError> {
    let data = match output {
        HttpOutput::Return => response.return_value.and_then(|t| t.data),
        HttpOutput::Named(name) => response
            .output_data
            .into_iter()
            .find(|p| &p.name == name)
            .and_then(|p| p.rpc_data)
            .and_then(|d| match d {
                crate::proto::parameter_binding::RpcData::Data(t) => t.data,
            }),
        HttpOutput::Absent => None,
    };
    match data {
        // No response object (no HTTP output binding, or a named one left unset): the host
        // writes a null result, which ASP.NET Core answers 204 with an empty body.
        None => Ok(simple(StatusCode::NO_CONTENT, None, Bytes::new())),
        Some(Data::Http(http)) => from_rpc_http(*http, streamed),
        Some(other) => {
            let (content_type, body) = scalar_body(other);
            Ok(simple(StatusCode::OK, Some(content_type), body))
        }
    }
}

fn simple(status: StatusCode, content_type: Option<&'static str>, body: Bytes) -> Response<Body> {
    let mut response = Response::new(body::full(body));
    *response.status_mut() = status;
    if let Some(ct) = content_type {
        response
            .headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    response
}

/// A non-HTTP value written as a body, with the content type the host's formatters pick.
fn scalar_body(data: Data) -> (&'static str, Bytes) {
    match data {
        Data::String(s) => (TEXT_PLAIN, Bytes::from(s)),
        Data::Json(s) => ("application/json; charset=utf-8", Bytes::from(s)),
        Data::Bytes(b) | Data::Stream(b) => ("application/octet-stream", b),
        Data::Int(i) => (TEXT_PLAIN, Bytes::from(i.to_string())),
        Data::Double(d) => (TEXT_PLAIN, Bytes::from(d.to_string())),
        Data::Http(_)
        | Data::CollectionBytes(_)
        | Data::CollectionString(_)
        | Data::CollectionDouble(_)
        | Data::CollectionSint64(_) => ("application/json; charset=utf-8", Bytes::new()),
    }
}

fn body_bytes(body: Option<TypedData>) -> Bytes {
    match body.and_then(|t| t.data) {
        None => Bytes::new(),
        Some(data) => scalar_body(data).1,
    }
}

fn from_rpc_http(http: RpcHttp, streamed: Option<Body>) -> Result<Response<Body>, ConvertError> {
    let status = if http.status_code.trim().is_empty() {
        StatusCode::OK
    } else {
        http.status_code
            .trim()
            .parse::<u16>()
            .ok()
            .and_then(|s| StatusCode::from_u16(s).ok())
            .ok_or_else(|| ConvertError::Status(http.status_code.clone()))?
    };
    let body = streamed.unwrap_or_else(|| body::full(body_bytes(http.body.map(|b| *b))));
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in http.headers {
        let header_name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| ConvertError::Header(name.clone()))?;
        let header_value =
            HeaderValue::from_str(&value).map_err(|_| ConvertError::Header(name.clone()))?;
        // Content-Type replaces; others accumulate (the host appends duplicate keys).
        if header_name == CONTENT_TYPE {
            headers.insert(header_name, header_value);
        } else {
            headers.append(header_name, header_value);
        }
    }
    for cookie in &http.cookies {
        let value = set_cookie(cookie);
        let value =
            HeaderValue::from_str(&value).map_err(|_| ConvertError::Header(value.clone()))?;
        headers.append(SET_COOKIE, value);
    }
    Ok(response)
}

/// One `Set-Cookie` value as the host writes an `RpcHttpCookie`: the value percent-encoded
/// (`Uri.EscapeDataString`), attributes in ASP.NET Core's order and spelling. An attribute
/// the worker sent is written even when empty — the SDK sends unset `domain`/`path` as
/// empty strings, so the host writes `domain=; path=` — and a cookie without a path gets
/// ASP.NET Core's default `path=/`.
pub fn set_cookie(c: &RpcHttpCookie) -> String {
    let mut out = format!("{}={}", c.name, escape_data_string(&c.value));
    if let Some(ts) = c.expires.as_ref().and_then(|e| e.timestamp.as_ref()) {
        let crate::proto::nullable_timestamp::Timestamp::Value(ts) = ts;
        out.push_str("; expires=");
        out.push_str(&http_date(ts.seconds));
    }
    if let Some(crate::proto::nullable_double::Double::Value(max_age)) =
        c.max_age.as_ref().and_then(|m| m.double)
    {
        // TimeSpan.TotalSeconds cast to long: truncated toward zero.
        out.push_str(&format!("; max-age={}", max_age as i64));
    }
    if let Some(domain) = sent(&c.domain) {
        out.push_str("; domain=");
        out.push_str(domain);
    }
    out.push_str("; path=");
    out.push_str(sent(&c.path).unwrap_or("/"));
    if let Some(crate::proto::nullable_bool::Bool::Value(true)) =
        c.secure.as_ref().and_then(|s| s.bool)
    {
        out.push_str("; secure");
    }
    match SameSite::try_from(c.same_site).unwrap_or(SameSite::None) {
        SameSite::Lax => out.push_str("; samesite=lax"),
        SameSite::Strict => out.push_str("; samesite=strict"),
        SameSite::ExplicitNone => out.push_str("; samesite=none"),
        // The contract's default: unspecified, not written.
        SameSite::None => {}
    }
    if let Some(crate::proto::nullable_bool::Bool::Value(true)) =
        c.http_only.as_ref().and_then(|h| h.bool)
    {
        out.push_str("; httponly");
    }
    out
}

/// A nullable string the worker sent (a set wrapper with no value reads as "", as in C#).
fn sent(value: &Option<crate::proto::NullableString>) -> Option<&str> {
    Some(match value.as_ref()?.string.as_ref() {
        Some(crate::proto::nullable_string::String::Value(v)) => v,
        None => "",
    })
}

/// RFC 3986 percent-encoding of everything but the unreserved characters, upper-case hex
/// (.NET's `Uri.EscapeDataString`).
fn escape_data_string(value: &str) -> std::borrow::Cow<'_, str> {
    let unreserved = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
    if value.bytes().all(unreserved) {
        return std::borrow::Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() * 3);
    for b in value.bytes() {
        if unreserved(b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    std::borrow::Cow::Owned(out)
}

/// RFC 1123 date (`Thu, 01 Jan 1970 00:00:00 GMT`) from Unix seconds.
fn http_date(secs: i64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm), valid for the proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[days.rem_euclid(7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{
        NullableBool, NullableString, ParameterBinding, nullable_bool, nullable_string,
    };
    use http_body_util::BodyExt;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method("POST").uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).expect("valid request").into_parts().0
    }

    #[test]
    fn request_headers_query_params_and_body() {
        let p = parts(
            "/api/x/1?a=1&empty=&b=hello+world&a=2&c=%2F",
            &[("Host", "example.com"), ("X-Two", "1"), ("x-two", "2")],
        );
        let http = to_rpc_http(
            &p,
            Bytes::from_static(b"abc"),
            vec![("id".into(), "1".into())],
        );
        assert_eq!(
            http.url,
            "http://example.com/api/x/1?a=1&empty=&b=hello+world&a=2&c=%2F"
        );
        assert_eq!(http.headers["x-two"], "1,2");
        assert_eq!(http.query["a"], "1,2");
        assert_eq!(http.query["b"], "hello world");
        assert_eq!(http.query["c"], "/");
        assert!(!http.query.contains_key("empty"));
        assert_eq!(http.params["id"], "1");
        assert_eq!(
            http.body.and_then(|b| b.data),
            Some(Data::Bytes(Bytes::from_static(b"abc")))
        );
    }

    #[test]
    fn empty_body_is_not_sent() {
        let http = to_rpc_http(&parts("/", &[]), Bytes::new(), vec![]);
        assert!(http.body.is_none());
        assert_eq!(http.url, "http://localhost/");
    }

    async fn body_of(r: Response<Body>) -> Bytes {
        r.into_body().collect().await.expect("full body").to_bytes()
    }

    #[tokio::test]
    async fn string_return_is_text_plain_200() {
        let resp = InvocationResponse {
            return_value: Some(TypedData {
                data: Some(Data::String("hi".into())),
            }),
            ..Default::default()
        };
        let r = to_response(resp, &HttpOutput::Return, None).expect("valid");
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()[CONTENT_TYPE], TEXT_PLAIN);
        assert_eq!(body_of(r).await, "hi");
    }

    #[tokio::test]
    async fn no_output_is_empty_204() {
        for output in [HttpOutput::Absent, HttpOutput::Named("res".into())] {
            let r = to_response(InvocationResponse::default(), &output, None).expect("valid");
            assert_eq!(r.status(), 204, "{output:?}");
            assert!(body_of(r).await.is_empty());
        }
    }

    #[tokio::test]
    async fn http_output_by_name_with_status_headers_and_cookies() {
        let http = RpcHttp {
            status_code: "201".into(),
            headers: [
                ("content-type".to_string(), "application/json".to_string()),
                ("x-a".into(), "b".into()),
            ]
            .into_iter()
            .collect(),
            body: Some(Box::new(TypedData {
                data: Some(Data::Bytes(Bytes::from_static(b"{}"))),
            })),
            cookies: vec![RpcHttpCookie {
                name: "s".into(),
                value: "v".into(),
                path: Some(NullableString {
                    string: Some(nullable_string::String::Value("/".into())),
                }),
                http_only: Some(NullableBool {
                    bool: Some(nullable_bool::Bool::Value(true)),
                }),
                same_site: SameSite::Lax as i32,
                ..Default::default()
            }],
            ..Default::default()
        };
        let resp = InvocationResponse {
            output_data: vec![ParameterBinding {
                name: "res".into(),
                rpc_data: Some(crate::proto::parameter_binding::RpcData::Data(TypedData {
                    data: Some(Data::Http(Box::new(http))),
                })),
            }],
            ..Default::default()
        };
        let r = to_response(resp, &HttpOutput::Named("res".into()), None).expect("valid");
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "b");
        assert_eq!(
            r.headers()[SET_COOKIE],
            "s=v; path=/; samesite=lax; httponly"
        );
        assert_eq!(body_of(r).await, "{}");
    }

    #[test]
    fn cookies_render_as_the_host_writes_them() {
        let text = |v: &str| {
            Some(NullableString {
                string: Some(nullable_string::String::Value(v.into())),
            })
        };
        let yes = Some(NullableBool {
            bool: Some(nullable_bool::Bool::Value(true)),
        });
        // What the SDK sends for `plain=1`: empty domain and path, nothing else.
        let plain = RpcHttpCookie {
            name: "plain".into(),
            value: "1".into(),
            domain: text(""),
            path: text(""),
            ..Default::default()
        };
        assert_eq!(set_cookie(&plain), "plain=1; domain=; path=");
        let full = RpcHttpCookie {
            name: "s".into(),
            value: "a b/c=d~é".into(),
            domain: text("example.com"),
            path: text("/x"),
            expires: Some(crate::proto::NullableTimestamp {
                timestamp: Some(crate::proto::nullable_timestamp::Timestamp::Value(
                    prost_types::Timestamp {
                        seconds: 1_812_190_694,
                        nanos: 0,
                    },
                )),
            }),
            max_age: Some(crate::proto::NullableDouble {
                double: Some(crate::proto::nullable_double::Double::Value(59.9)),
            }),
            secure: yes,
            http_only: yes,
            same_site: SameSite::ExplicitNone as i32,
        };
        assert_eq!(
            set_cookie(&full),
            "s=a%20b%2Fc%3Dd~%C3%A9; expires=Sat, 05 Jun 2027 10:18:14 GMT; max-age=59; \
             domain=example.com; path=/x; secure; samesite=none; httponly"
        );
        // No wrapper at all: ASP.NET Core's default path.
        let bare = RpcHttpCookie {
            name: "n".into(),
            value: "v".into(),
            ..Default::default()
        };
        assert_eq!(set_cookie(&bare), "n=v; path=/");
    }

    #[test]
    fn bad_status_code_is_an_error() {
        let resp = InvocationResponse {
            return_value: Some(TypedData {
                data: Some(Data::Http(Box::new(RpcHttp {
                    status_code: "abc".into(),
                    ..Default::default()
                }))),
            }),
            ..Default::default()
        };
        assert!(matches!(
            to_response(resp, &HttpOutput::Return, None),
            Err(ConvertError::Status(_))
        ));
    }

    #[test]
    fn http_dates() {
        assert_eq!(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(http_date(1_700_000_000), "Tue, 14 Nov 2023 22:13:20 GMT");
    }
}
