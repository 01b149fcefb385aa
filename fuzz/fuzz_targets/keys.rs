//! Host keys: `KeyStore::from_json` never panics on any text, and `authorize` never
//! panics on any header or query. When the input names keys, the documented levels hold:
//! the master key passes Admin and Function, a function key passes Function only, a
//! system key passes neither, whether sent as `x-functions-key` or as `code`.
#![no_main]

use http::{HeaderMap, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use sluice::keys::KeyStore;
use sluice::router::AuthLevel;

const LEVELS: [AuthLevel; 3] = [AuthLevel::Anonymous, AuthLevel::Function, AuthLevel::Admin];

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    /// Raw secrets text, parsed as is.
    json: &'a str,
    header: Option<&'a [u8]>,
    query: Option<&'a str>,
    /// Keys written into a well-formed secrets file, for the level checks.
    master: String,
    function: String,
    system: String,
}

fuzz_target!(|input: Input<'_>| {
    let mut headers = HeaderMap::new();
    if let Some(value) = input.header.and_then(|h| HeaderValue::from_bytes(h).ok()) {
        headers.insert("x-functions-key", value);
    }
    if let Ok(store) = KeyStore::from_json(input.json) {
        for level in LEVELS {
            let passed = store.authorize(level, &headers, input.query);
            assert!(passed || level != AuthLevel::Anonymous);
        }
    }

    let secrets = serde_json::json!({
        "masterKey": {"name": "master", "value": input.master, "encrypted": false},
        "functionKeys": [{"name": "default", "value": input.function, "encrypted": false}],
        "systemKeys": [{"name": "system", "value": input.system, "encrypted": false}],
    });
    let store = KeyStore::from_json(&secrets.to_string()).expect("well-formed secrets");
    assert_eq!(
        store.is_empty(),
        input.master.is_empty() && input.function.is_empty() && input.system.is_empty()
    );
    let distinct = input.master != input.function
        && input.master != input.system
        && input.function != input.system;
    if !distinct {
        return;
    }
    for (key, function_ok, admin_ok) in [
        (&input.master, true, true),
        (&input.function, true, false),
        (&input.system, false, false),
    ] {
        if key.is_empty() {
            continue;
        }
        let query = format!("code={}", form_encode(key));
        let by_query = |level| store.authorize(level, &HeaderMap::new(), Some(&query));
        assert_eq!(by_query(AuthLevel::Function), function_ok, "code={key:?}");
        assert_eq!(by_query(AuthLevel::Admin), admin_ok, "code={key:?}");
        // Only visible ASCII survives as a header a client can send and compare.
        if let Ok(value) = HeaderValue::from_str(key)
            && value.to_str().is_ok()
        {
            let mut headers = HeaderMap::new();
            headers.insert("x-functions-key", value);
            assert_eq!(
                store.authorize(AuthLevel::Function, &headers, None),
                function_ok
            );
            assert_eq!(store.authorize(AuthLevel::Admin, &headers, None), admin_ok);
        }
    }
});

/// `application/x-www-form-urlencoded`: unreserved bytes as is, space as `+`, the rest `%XX`.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
