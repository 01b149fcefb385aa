//! Request conversion: `to_rpc_http` never panics on any request `http` accepts, keeps
//! the method, URL, body and params, and gives lower-cased header names with repeated
//! values joined by ','; `parse_query` never panics on any string and never yields an
//! empty key or value.
#![no_main]

use std::collections::HashMap;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sluice::convert::{parse_query, to_rpc_http};
use sluice::proto::typed_data::Data;

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    method: &'a [u8],
    uri: &'a str,
    headers: Vec<(&'a [u8], &'a [u8])>,
    body: &'a [u8],
    params: Vec<(String, String)>,
    /// Any string, not only what `Uri` accepts as a query.
    query: &'a str,
}

fuzz_target!(|input: Input<'_>| {
    check_query(parse_query(Some(input.query)));

    // Inputs `http` rejects never reach Sluice: hyper refuses them first.
    let Ok(method) = Method::from_bytes(input.method) else {
        return;
    };
    let Ok(uri) = input.uri.parse::<Uri>() else {
        return;
    };
    let mut request = Request::new(());
    *request.method_mut() = method.clone();
    *request.uri_mut() = uri.clone();
    for (name, value) in &input.headers {
        if let (Ok(name), Ok(value)) =
            (HeaderName::from_bytes(name), HeaderValue::from_bytes(value))
        {
            request.headers_mut().append(name, value);
        }
    }
    let (parts, ()) = request.into_parts();
    let body = Bytes::copy_from_slice(input.body);
    let rpc = to_rpc_http(&parts, body.clone(), input.params.clone());

    assert_eq!(rpc.method, method.as_str());
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    assert!(
        rpc.url.starts_with("http://") && rpc.url.ends_with(path_and_query),
        "{}",
        rpc.url
    );
    assert_eq!(rpc.headers.len(), parts.headers.keys_len());
    for name in parts.headers.keys() {
        let joined: Vec<String> = parts
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        assert_eq!(rpc.headers.get(name.as_str()), Some(&joined.join(",")));
    }
    for name in rpc.headers.keys() {
        assert_eq!(name, &name.to_lowercase(), "header name not lower-cased");
    }
    check_query(rpc.query.clone());
    assert_eq!(rpc.query, parse_query(uri.query()));
    let params: HashMap<String, String> = input.params.into_iter().collect();
    assert_eq!(rpc.params, params);
    match rpc.body.and_then(|b| b.data) {
        None => assert!(body.is_empty()),
        Some(Data::Bytes(sent)) => assert_eq!(sent, body),
        Some(other) => panic!("body sent as {other:?}"),
    }
});

fn check_query(query: HashMap<String, String>) {
    for (key, value) in &query {
        assert!(!key.is_empty(), "empty query key (value {value:?})");
        assert!(!value.is_empty(), "empty query value for {key:?}");
    }
}
