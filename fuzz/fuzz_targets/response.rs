//! Response conversion: any `InvocationResponse` a worker could send (arbitrary protobuf
//! bytes that prost accepts) goes through `to_response` for every kind of HTTP output
//! binding without panicking; errors are values. Without an output binding the answer
//! is always an empty 204 (the host's answer to a null result).
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use sluice::convert::{set_cookie, to_response};
use sluice::functions::HttpOutput;
use sluice::proto::parameter_binding::RpcData;
use sluice::proto::typed_data::Data;
use sluice::proto::{InvocationResponse, TypedData};

fuzz_target!(|data: &[u8]| {
    let Ok(response) = InvocationResponse::decode(data) else {
        return;
    };
    let mut outputs = vec![HttpOutput::Return, HttpOutput::Named("res".into())];
    outputs.extend(
        response
            .output_data
            .iter()
            .map(|binding| HttpOutput::Named(binding.name.clone())),
    );
    for output in &outputs {
        if let Ok(http) = to_response(response.clone(), output, None) {
            // A response that was built must be writable as is.
            for (name, value) in http.headers() {
                assert!(!name.as_str().is_empty());
                let _ = value.as_bytes();
            }
        }
    }
    let absent =
        to_response(response.clone(), &HttpOutput::Absent, None).expect("no binding is never an error");
    assert_eq!(absent.status(), http::StatusCode::NO_CONTENT);

    // Every cookie anywhere in the response formats without panicking.
    let typed = response.return_value.iter().chain(
        response
            .output_data
            .iter()
            .filter_map(|b| b.rpc_data.as_ref())
            .map(|RpcData::Data(t)| t),
    );
    for TypedData { data } in typed {
        if let Some(Data::Http(http)) = data {
            for cookie in &http.cookies {
                let line = set_cookie(cookie);
                assert!(line.starts_with(&format!("{}=", cookie.name)));
                // The value is percent-encoded: it cannot end the cookie or add attributes.
                let value = line[cookie.name.len() + 1..].split(';').next().unwrap_or_default();
                assert!(value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)));
                assert!(line.contains("; path="));
            }
        }
    }
});
