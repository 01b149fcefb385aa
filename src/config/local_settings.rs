//! The app's `local.settings.json`, as the Functions tooling (`func start`) reads it:
//! `Values` become environment variables (a variable already set wins), `ConnectionStrings`
//! become `ConnectionStrings:<name>` variables, and `Host` holds the local HTTP port and
//! CORS. Pure parsing: [`LocalSettings::load`] reads the file, nothing is applied here.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The file name the tooling creates in every project.
pub const FILE_NAME: &str = "local.settings.json";

/// What the file says (each section's keys sorted by name).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalSettings {
    pub path: PathBuf,
    /// `Values`: app settings, each an environment variable for the host and its workers.
    pub values: Vec<(String, String)>,
    /// `ConnectionStrings`, already named as the tooling exposes them (`ConnectionStrings:<name>`).
    pub connection_strings: Vec<(String, String)>,
    /// `Host.LocalHttpPort`.
    pub port: Option<u16>,
    /// `Host.CORS`: the comma-separated origin list, as written.
    pub cors: Option<String>,
    /// `Host.CORSCredentials`.
    pub cors_credentials: Option<bool>,
}

/// Why the file cannot be used. Each names the file.
#[derive(Debug, thiserror::Error)]
pub enum LocalSettingsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: invalid JSON at line {line}, column {column}: {source}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        source: serde_json::Error,
    },
    #[error(
        "{path} is encrypted (\"IsEncrypted\": true); Sluice cannot decrypt it: run `func settings decrypt` and start again"
    )]
    Encrypted { path: PathBuf },
    #[error("{path}: {key} {reason}")]
    Setting {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl LocalSettings {
    /// Reads the file at `path`; `Ok(None)` when it does not exist.
    pub fn load(path: &Path) -> Result<Option<LocalSettings>, LocalSettingsError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(LocalSettingsError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        Self::parse(path, &text).map(Some)
    }

    pub fn parse(path: &Path, text: &str) -> Result<LocalSettings, LocalSettingsError> {
        let path = path.to_path_buf();
        // The tooling writes a UTF-8 byte order mark on some systems.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let root: Value =
            serde_json::from_str(text).map_err(|source| LocalSettingsError::Json {
                path: path.clone(),
                line: source.line(),
                column: source.column(),
                source,
            })?;
        let setting = |key: &str, reason: &str| LocalSettingsError::Setting {
            path: path.clone(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        let root = root
            .as_object()
            .ok_or_else(|| setting("the file", "must hold a JSON object"))?;
        if root.get("IsEncrypted").is_some_and(is_true) {
            return Err(LocalSettingsError::Encrypted { path });
        }
        let mut settings = LocalSettings {
            path: path.clone(),
            ..LocalSettings::default()
        };
        for (key, value) in object(root, "Values").map_err(|r| setting("Values", r))? {
            if let Some(text) = scalar(value).map_err(|r| setting(&format!("Values.{key}"), r))? {
                settings.values.push((key.clone(), text));
            }
        }
        for (name, entry) in
            object(root, "ConnectionStrings").map_err(|r| setting("ConnectionStrings", r))?
        {
            let key = format!("ConnectionStrings.{name}");
            // Either a plain string or {"ConnectionString": "...", "ProviderName": "..."}.
            let text = match entry {
                Value::Object(fields) => fields
                    .get("ConnectionString")
                    .map(scalar)
                    .transpose()
                    .map_err(|r| setting(&key, r))?
                    .flatten(),
                other => scalar(other).map_err(|r| setting(&key, r))?,
            };
            if let Some(text) = text {
                settings
                    .connection_strings
                    .push((format!("ConnectionStrings:{name}"), text));
            }
        }
        let host = object(root, "Host").map_err(|r| setting("Host", r))?;
        for (key, value) in host {
            match key.as_str() {
                "LocalHttpPort" => {
                    let port = scalar(value)
                        .ok()
                        .flatten()
                        .and_then(|p| p.trim().parse::<u16>().ok())
                        .ok_or_else(|| setting("Host.LocalHttpPort", "must be a port number"))?;
                    settings.port = Some(port);
                }
                "CORS" => {
                    settings.cors = scalar(value).map_err(|r| setting("Host.CORS", r))?;
                }
                "CORSCredentials" => {
                    settings.cors_credentials = Some(match value {
                        Value::Bool(b) => *b,
                        Value::String(s) if s.eq_ignore_ascii_case("true") => true,
                        Value::String(s) if s.eq_ignore_ascii_case("false") => false,
                        _ => return Err(setting("Host.CORSCredentials", "must be true or false")),
                    });
                }
                // Other Host keys of the tooling (e.g. LocalHttpsPort) have no meaning here.
                _ => {}
            }
        }
        Ok(settings)
    }
}

/// A section that must be an object when present (absent or null = empty).
fn object<'a>(
    root: &'a serde_json::Map<String, Value>,
    key: &str,
) -> Result<Vec<(&'a String, &'a Value)>, &'static str> {
    match root.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Object(map)) => Ok(map.iter().collect()),
        Some(_) => Err("must be a JSON object"),
    }
}

/// A setting's text, as the tooling's string dictionary reads it: strings as they are,
/// numbers and booleans in their JSON spelling, null as unset.
fn scalar(value: &Value) -> Result<Option<String>, &'static str> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        Value::Bool(_) | Value::Number(_) => Ok(Some(value.to_string())),
        Value::Array(_) | Value::Object(_) => Err("must be a string, number or boolean"),
    }
}

fn is_true(value: &Value) -> bool {
    match value {
        Value::Bool(b) => *b,
        Value::String(s) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<LocalSettings, LocalSettingsError> {
        LocalSettings::parse(Path::new("/app/local.settings.json"), text)
    }

    #[test]
    fn the_tooling_template_parses() {
        let s = parse(
            r#"{
  "IsEncrypted": false,
  "Values": {
    "FUNCTIONS_WORKER_RUNTIME": "python",
    "AzureWebJobsStorage": "",
    "MY_SETTING": "hello world",
    "COUNT": 3,
    "FLAG": true,
    "GONE": null
  },
  "Host": { "LocalHttpPort": 7072, "CORS": "http://localhost:3000,https://app.example.com", "CORSCredentials": true },
  "ConnectionStrings": {
    "Plain": "Server=a",
    "Typed": { "ConnectionString": "Server=b", "ProviderName": "System.Data.SqlClient" }
  }
}"#,
        )
        .expect("valid");
        assert_eq!(
            s.values,
            vec![
                ("AzureWebJobsStorage".into(), "".into()),
                ("COUNT".into(), "3".into()),
                ("FLAG".into(), "true".into()),
                ("FUNCTIONS_WORKER_RUNTIME".into(), "python".into()),
                ("MY_SETTING".into(), "hello world".into()),
            ]
        );
        assert_eq!(
            s.connection_strings,
            vec![
                ("ConnectionStrings:Plain".into(), "Server=a".into()),
                ("ConnectionStrings:Typed".into(), "Server=b".into()),
            ]
        );
        assert_eq!(s.port, Some(7072));
        assert_eq!(
            s.cors.as_deref(),
            Some("http://localhost:3000,https://app.example.com")
        );
        assert_eq!(s.cors_credentials, Some(true));
        assert_eq!(s.values.len() + s.connection_strings.len(), 7);
    }

    #[test]
    fn a_bom_and_missing_sections_are_fine() {
        let s = parse("\u{feff}{}").expect("empty object");
        assert_eq!(s.values, vec![]);
        assert_eq!(s.port, None);
    }

    #[test]
    fn malformed_json_names_the_file_and_line() {
        let err =
            parse("{\n  \"Values\": {\n    \"A\": \"1\",\n  }\n}").expect_err("trailing comma");
        let text = err.to_string();
        assert!(text.contains("/app/local.settings.json"), "{text}");
        assert!(text.contains("line 4"), "{text}");
    }

    #[test]
    fn encrypted_files_are_refused_by_name() {
        let err =
            parse(r#"{"IsEncrypted": true, "Values": {"A": "xyz=="}}"#).expect_err("encrypted");
        assert!(matches!(err, LocalSettingsError::Encrypted { .. }));
        assert!(err.to_string().contains("local.settings.json"), "{err}");
    }

    #[test]
    fn wrong_shapes_name_the_key() {
        for (text, key) in [
            (r#"{"Values": []}"#, "Values"),
            (r#"{"Values": {"A": {"b": 1}}}"#, "Values.A"),
            (
                r#"{"Host": {"LocalHttpPort": "http"}}"#,
                "Host.LocalHttpPort",
            ),
            (
                r#"{"Host": {"LocalHttpPort": 70000}}"#,
                "Host.LocalHttpPort",
            ),
            (
                r#"{"Host": {"CORSCredentials": "yes"}}"#,
                "Host.CORSCredentials",
            ),
            (r#"[1]"#, "the file"),
        ] {
            let err = parse(text).expect_err(text);
            assert!(err.to_string().contains(key), "{text}: {err}");
        }
    }
}
