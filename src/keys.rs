//! Host keys and the per-request auth check, with the Functions host's rules: the key
//! comes from `x-functions-key` (which wins) or the `code` query parameter; the master
//! key is Admin and passes every level, function keys pass Function, system keys pass
//! neither. It owns reading the host secrets JSON and comparing keys in constant time.
//! It must not log or print key values (`Debug` is redacted), decide HTTP statuses, or
//! know about routes beyond the required [`AuthLevel`].

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::router::AuthLevel;

/// The app's host keys. `Default` holds no keys, which is the platform's "secrets
/// disabled" state: every request to a non-anonymous function is refused.
#[derive(Debug, Default, Clone)]
pub struct KeyStore {
    master: Option<Secret>,
    system: Vec<Secret>,
    function: Vec<Secret>,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read host secrets file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("host secrets file {path} is not valid secrets JSON: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

/// A key value; never shown by `Debug`, so a logged `KeyStore` leaks nothing.
#[derive(Clone)]
struct Secret(String);

/// The level a presented key grants (the host's `AuthorizationLevel` subset in use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Granted {
    Admin,
    System,
    Function,
}

/// The platform's host secrets file (`host.json` in the secrets directory).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSecrets {
    master_key: Option<RawKey>,
    #[serde(default)]
    function_keys: Option<Vec<RawKey>>,
    #[serde(default)]
    system_keys: Option<Vec<RawKey>>,
}

#[derive(Deserialize)]
struct RawKey {
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    encrypted: bool,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl KeyStore {
    /// Reads and parses the host secrets file.
    pub fn load(path: &Path) -> Result<KeyStore, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&text).map_err(|source| KeyError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Parses host secrets JSON. Unknown fields are ignored and missing key lists are
    /// empty. Keys with an empty value, and keys marked `encrypted` (sealed with the
    /// platform's machine key, which Sluice does not have), are dropped: they can
    /// never match.
    pub fn from_json(text: &str) -> Result<KeyStore, serde_json::Error> {
        let raw: RawSecrets = serde_json::from_str(text)?;
        let usable = |key: RawKey| match key.value {
            Some(value) if !key.encrypted && !value.is_empty() => Some(Secret(value)),
            _ => None,
        };
        let list =
            |keys: Option<Vec<RawKey>>| keys.into_iter().flatten().filter_map(usable).collect();
        Ok(KeyStore {
            master: raw.master_key.and_then(usable),
            system: list(raw.system_keys),
            function: list(raw.function_keys),
        })
    }

    /// Whether a request may invoke a function that requires `required`. Anonymous
    /// always passes. Otherwise the key is the first `x-functions-key` header value if
    /// that header is present at all (even when it is wrong or empty), else the first
    /// `code` query parameter (name case-insensitive, value form-decoded). The master
    /// key passes every level; function keys pass Function only; system keys pass
    /// neither, since the host requires the exact level or Admin.
    pub fn authorize(
        &self,
        required: AuthLevel,
        headers: &http::HeaderMap,
        raw_query: Option<&str>,
    ) -> bool {
        if required == AuthLevel::Anonymous {
            return true;
        }
        let presented = match headers.get("x-functions-key") {
            // A header that is not visible ASCII cannot equal a stored key.
            Some(value) => value.to_str().map(str::to_string).unwrap_or_default(),
            None => match raw_query.and_then(code_parameter) {
                Some(code) => code,
                None => return false,
            },
        };
        match self.level_of(presented.as_bytes()) {
            Some(Granted::Admin) => true,
            Some(Granted::Function) => required == AuthLevel::Function,
            Some(Granted::System) | None => false,
        }
    }

    /// True when no usable key is stored (every non-anonymous request is refused).
    pub fn is_empty(&self) -> bool {
        self.master.is_none() && self.system.is_empty() && self.function.is_empty()
    }

    /// The host's lookup order: master, then system keys, then function keys. Every
    /// stored key is compared, so timing does not reveal which one matched.
    fn level_of(&self, presented: &[u8]) -> Option<Granted> {
        if presented.is_empty() {
            return None;
        }
        let any = |keys: &[Secret]| {
            keys.iter().fold(false, |hit, key| {
                constant_time_eq(key.0.as_bytes(), presented) | hit
            })
        };
        let master = self
            .master
            .as_ref()
            .is_some_and(|key| constant_time_eq(key.0.as_bytes(), presented));
        let system = any(&self.system);
        let function = any(&self.function);
        if master {
            Some(Granted::Admin)
        } else if system {
            Some(Granted::System)
        } else if function {
            Some(Granted::Function)
        } else {
            None
        }
    }
}

/// The first `code` parameter of a raw query string, decoded like ASP.NET's query
/// parser (`+` is a space, then percent-decoding). A bare `code` gives "".
fn code_parameter(raw_query: &str) -> Option<String> {
    let query = raw_query.strip_prefix('?').unwrap_or(raw_query);
    query.split('&').find_map(|pair| {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        form_decode(name)
            .eq_ignore_ascii_case("code")
            .then(|| form_decode(value))
    })
}

fn form_decode(s: &str) -> String {
    let spaced = s.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Compares in time that depends only on the longer input's length, not on where the
/// inputs differ, so a caller cannot find a key byte by byte from response times.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = a.len() ^ b.len();
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderMap, HeaderValue};

    const SECRETS: &str = r#"{
        "masterKey": {"name": "master", "value": "MASTER", "encrypted": false},
        "functionKeys": [{"name": "default", "value": "FUNC==", "encrypted": false},
                         {"name": "other", "value": "a b+c", "encrypted": false}],
        "systemKeys": [{"name": "durabletask_extension", "value": "SYSTEM", "encrypted": false}],
        "hostName": "example", "instanceId": "0000", "source": "runtime", "decryptionKeyId": ""
    }"#;

    fn store() -> KeyStore {
        KeyStore::from_json(SECRETS).expect("valid secrets JSON")
    }

    fn header(key: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-functions-key",
            HeaderValue::from_str(key).expect("ASCII header"),
        );
        headers
    }

    const NONE: Option<&str> = None;

    #[test]
    fn anonymous_always_passes_even_without_keys() {
        assert!(KeyStore::default().authorize(AuthLevel::Anonymous, &HeaderMap::new(), NONE));
        assert!(KeyStore::default().authorize(
            AuthLevel::Anonymous,
            &header("wrong"),
            Some("code=bad")
        ));
    }

    #[test]
    fn no_keys_refuses_every_non_anonymous_request() {
        let keys = KeyStore::default();
        assert!(keys.is_empty());
        assert!(!keys.authorize(AuthLevel::Function, &header("anything"), NONE));
        assert!(!keys.authorize(AuthLevel::Admin, &HeaderMap::new(), Some("code=anything")));
        assert!(!keys.authorize(AuthLevel::Function, &HeaderMap::new(), NONE));
    }

    #[test]
    fn master_key_passes_admin_and_function() {
        let keys = store();
        assert!(keys.authorize(AuthLevel::Admin, &header("MASTER"), NONE));
        assert!(keys.authorize(AuthLevel::Function, &header("MASTER"), NONE));
        assert!(keys.authorize(AuthLevel::Admin, &HeaderMap::new(), Some("code=MASTER")));
    }

    #[test]
    fn function_key_passes_function_but_not_admin() {
        let keys = store();
        assert!(keys.authorize(AuthLevel::Function, &header("FUNC=="), NONE));
        assert!(!keys.authorize(AuthLevel::Admin, &header("FUNC=="), NONE));
    }

    #[test]
    fn system_key_passes_neither_function_nor_admin() {
        let keys = store();
        assert!(!keys.authorize(AuthLevel::Function, &header("SYSTEM"), NONE));
        assert!(!keys.authorize(AuthLevel::Admin, &header("SYSTEM"), NONE));
    }

    #[test]
    fn wrong_missing_or_case_changed_key_is_refused() {
        let keys = store();
        assert!(!keys.authorize(AuthLevel::Function, &header("nope"), NONE));
        assert!(!keys.authorize(AuthLevel::Function, &header("func=="), NONE));
        assert!(!keys.authorize(AuthLevel::Function, &header("FUNC="), NONE));
        assert!(!keys.authorize(AuthLevel::Function, &HeaderMap::new(), NONE));
        assert!(!keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("other=FUNC%3D%3D")
        ));
    }

    #[test]
    fn header_wins_over_code_even_when_the_header_is_wrong() {
        let keys = store();
        assert!(!keys.authorize(
            AuthLevel::Function,
            &header("wrong"),
            Some("code=FUNC%3D%3D")
        ));
        assert!(!keys.authorize(AuthLevel::Function, &header(""), Some("code=MASTER")));
        assert!(keys.authorize(AuthLevel::Function, &header("FUNC=="), Some("code=wrong")));
    }

    #[test]
    fn code_is_found_among_other_query_parameters() {
        let keys = store();
        assert!(keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("a=1&code=FUNC==&b=2")
        ));
        assert!(keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("a=1&CODE=FUNC==")
        ));
        assert!(keys.authorize(AuthLevel::Function, &HeaderMap::new(), Some("?code=FUNC==")));
        // The first `code` is the one used, as in ASP.NET's `Query["code"].First()`.
        assert!(!keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("code=x&code=FUNC==")
        ));
        assert!(!keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("code&x=FUNC==")
        ));
        assert!(!keys.authorize(AuthLevel::Function, &HeaderMap::new(), Some("xcode=FUNC==")));
    }

    #[test]
    fn code_is_percent_and_plus_decoded() {
        let keys = store();
        assert!(keys.authorize(
            AuthLevel::Function,
            &HeaderMap::new(),
            Some("code=FUNC%3D%3D")
        ));
        // `+` is a space in a query string, so a literal `+` must arrive as %2B.
        assert!(keys.authorize(AuthLevel::Function, &HeaderMap::new(), Some("code=a+b%2Bc")));
        assert!(!keys.authorize(AuthLevel::Function, &HeaderMap::new(), Some("code=a+b+c")));
    }

    #[test]
    fn empty_and_encrypted_keys_never_match() {
        let keys = KeyStore::from_json(
            r#"{"masterKey": {"name": "master", "value": "", "encrypted": false},
                "functionKeys": [{"name": "default", "value": "SEALED", "encrypted": true}]}"#,
        )
        .expect("valid JSON");
        assert!(keys.is_empty());
        assert!(!keys.authorize(AuthLevel::Function, &header(""), NONE));
        assert!(!keys.authorize(AuthLevel::Function, &HeaderMap::new(), Some("code=")));
        assert!(!keys.authorize(AuthLevel::Function, &header("SEALED"), NONE));
    }

    #[test]
    fn missing_or_null_key_lists_are_tolerated() {
        let keys = KeyStore::from_json(r#"{"masterKey": {"value": "M"}, "functionKeys": null}"#)
            .expect("valid");
        assert!(!keys.is_empty());
        assert!(keys.authorize(AuthLevel::Admin, &header("M"), NONE));
        let empty = KeyStore::from_json("{}").expect("valid");
        assert!(empty.is_empty());
        assert!(KeyStore::from_json("[1]").is_err());
    }

    #[test]
    fn debug_output_does_not_reveal_keys() {
        let shown = format!("{:?}", store());
        assert!(
            !shown.contains("MASTER") && !shown.contains("FUNC"),
            "{shown}"
        );
    }

    #[test]
    fn load_reports_read_and_parse_errors_with_the_path() {
        let dir = std::env::temp_dir().join(format!("sluice-keys-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let good = dir.join("host.json");
        std::fs::write(&good, SECRETS).expect("write");
        assert!(KeyStore::load(&good).expect("loads").authorize(
            AuthLevel::Admin,
            &header("MASTER"),
            NONE
        ));
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{").expect("write");
        assert!(matches!(KeyStore::load(&bad), Err(KeyError::Parse { path, .. }) if path == bad));
        let missing = dir.join("missing.json");
        assert!(
            matches!(KeyStore::load(&missing), Err(KeyError::Read { path, .. }) if path == missing)
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn constant_time_eq_compares_whole_inputs() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"abc\0", b"abc"));
        assert!(constant_time_eq(b"", b""));
    }
}
