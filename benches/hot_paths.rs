//! Criterion benchmarks for the per-request pure paths: route matching, the key check,
//! HTTP → RpcHttp conversion, response conversion and admission. Run with
//! `cargo bench --bench hot_paths`; compare runs side by side with criterion's baselines.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::Method;
use sluice::admission::Admission;
use sluice::convert;
use sluice::functions::HttpOutput;
use sluice::keys::KeyStore;
use sluice::proto::typed_data::Data;
use sluice::proto::{InvocationResponse, RpcHttp, TypedData};
use sluice::router::{AuthLevel, RouteSpec, Router};

fn router() -> Router {
    let routes = [
        ("hello", Some("hello"), AuthLevel::Anonymous),
        ("get_item", Some("items/{id:int}"), AuthLevel::Anonymous),
        (
            "by_name",
            Some("people/{name:alpha}/{*rest}"),
            AuthLevel::Function,
        ),
        ("echo", None, AuthLevel::Anonymous),
    ];
    let specs = (0..10)
        .flat_map(|i| {
            routes.iter().map(move |(name, route, auth)| RouteSpec {
                function: format!("{name}{i}"),
                route: route.map(|r| format!("v{i}/{r}")),
                methods: vec![Method::GET],
                auth: *auth,
            })
        })
        .collect();
    Router::new("api", specs).expect("valid routes")
}

fn routing(c: &mut Criterion) {
    let router = router();
    c.bench_function("route/literal_last", |b| {
        b.iter(|| router.find(&Method::GET, black_box("/api/v9/hello")))
    });
    c.bench_function("route/int_param", |b| {
        b.iter(|| router.find(&Method::GET, black_box("/api/v5/items/12345")))
    });
    c.bench_function("route/miss", |b| {
        b.iter(|| router.find(&Method::GET, black_box("/api/nowhere/at/all")))
    });
}

fn keys(c: &mut Criterion) {
    let keys = KeyStore::from_json(
        r#"{"masterKey":{"name":"master","value":"m-0123456789abcdef"},"functionKeys":[{"name":"default","value":"f-0123456789abcdef"}]}"#,
    )
    .expect("valid secrets");
    let mut headers = http::HeaderMap::new();
    headers.insert(
        "x-functions-key",
        "f-0123456789abcdef".parse().expect("header"),
    );
    c.bench_function("keys/function_key_header", |b| {
        b.iter(|| keys.authorize(AuthLevel::Function, black_box(&headers), None))
    });
}

fn conversion(c: &mut Criterion) {
    let (parts, ()) = http::Request::builder()
        .method("POST")
        .uri("/api/items/42?name=sluice&flag=1")
        .header("host", "127.0.0.1:7071")
        .header("user-agent", "bench")
        .header("accept", "*/*")
        .header("content-type", "application/json")
        .body(())
        .expect("request")
        .into_parts();
    let body = Bytes::from_static(br#"{"hello":"world"}"#);
    c.bench_function("convert/request_to_rpc_http", |b| {
        b.iter(|| {
            convert::to_rpc_http(
                black_box(&parts),
                body.clone(),
                vec![("id".into(), "42".into())],
            )
        })
    });
    let response = InvocationResponse {
        return_value: Some(TypedData {
            data: Some(Data::Http(Box::new(RpcHttp {
                status_code: "200".into(),
                headers: [("content-type".to_string(), "text/plain".to_string())]
                    .into_iter()
                    .collect(),
                body: Some(Box::new(TypedData {
                    data: Some(Data::Bytes(Bytes::from_static(b"Hello, world!"))),
                })),
                ..Default::default()
            }))),
        }),
        ..Default::default()
    };
    c.bench_function("convert/http_response", |b| {
        b.iter(|| convert::to_response(black_box(response.clone()), &HttpOutput::Return, None))
    });
}

fn admission(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let bounded = Admission::new(Some(64), 4096);
    c.bench_function("admission/admit_release", |b| {
        b.iter(|| runtime.block_on(async { drop(bounded.admit().await) }))
    });
}

/// What trace context costs a request: reading the caller's `traceparent` (or starting a
/// trace), and the `RpcTraceContext` the worker gets, encoded.
fn trace_context(c: &mut Criterion) {
    use prost::Message as _;
    let mut with = http::HeaderMap::new();
    with.insert(
        "traceparent",
        http::HeaderValue::from_static("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
    );
    let without = http::HeaderMap::new();
    let invocation = "8a0b7f7e-1c7e-4a8e-9d4e-3f2b5c6d7e8f";
    c.bench_function("trace_context_child_span_to_rpc_encoded", |b| {
        b.iter(|| {
            let trace = sluice::trace::TraceContext::for_request(black_box(&with));
            black_box(trace.to_rpc(invocation).encode_to_vec())
        })
    });
    c.bench_function("trace_context_fresh_trace_to_rpc_encoded", |b| {
        b.iter(|| {
            let trace = sluice::trace::TraceContext::for_request(black_box(&without));
            black_box(trace.to_rpc(invocation).encode_to_vec())
        })
    });
}

criterion_group!(benches, routing, keys, conversion, admission, trace_context);
criterion_main!(benches);
