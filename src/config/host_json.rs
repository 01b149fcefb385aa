//! The parts of the app's `host.json` Sluice honours, with the platform's defaults.

use std::path::Path;
use std::time::Duration;

use super::ConfigError;

/// Sluice's default functionTimeout (the platform's Premium/Dedicated default).
pub const DEFAULT_FUNCTION_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// Cap on queued + executing function requests when host.json sets none: the
/// platform leaves it unbounded, Sluice bounds it so overload cannot grow memory.
pub const DEFAULT_MAX_OUTSTANDING: usize = 4096;

/// The parts of the app's host.json Sluice honours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostJson {
    pub route_prefix: String,
    /// `None` when host.json says `-1` (unbounded).
    pub function_timeout: Option<Duration>,
    /// `extensions.http.maxConcurrentRequests`; `None` = unbounded.
    pub max_concurrent_requests: Option<usize>,
    /// `extensions.http.maxOutstandingRequests`; `None` = unset (Sluice's default cap applies).
    pub max_outstanding_requests: Option<usize>,
}

impl Default for HostJson {
    fn default() -> Self {
        HostJson {
            route_prefix: "api".to_owned(),
            function_timeout: Some(DEFAULT_FUNCTION_TIMEOUT),
            max_concurrent_requests: None,
            max_outstanding_requests: None,
        }
    }
}

impl HostJson {
    /// Reads `APP_DIR/host.json`; a missing file means platform defaults.
    pub fn load(app_dir: &Path) -> Result<HostJson, ConfigError> {
        let path = app_dir.join("host.json");
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(HostJson::default()),
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        Self::parse(&text).map_err(|source| ConfigError::HostJson { path, source })
    }

    pub fn parse(text: &str) -> Result<HostJson, HostJsonError> {
        let value: serde_json::Value = serde_json::from_str(text)?;
        let mut host = HostJson::default();
        if let Some(prefix) = value
            .pointer("/extensions/http/routePrefix")
            .and_then(|v| v.as_str())
        {
            host.route_prefix = prefix.to_owned();
        }
        if let Some(timeout) = value.get("functionTimeout").filter(|v| !v.is_null()) {
            host.function_timeout = parse_timeout(timeout)?;
        }
        // The platform treats -1 (its default) as "no limit".
        let limit = |key: &str| -> Result<Option<usize>, HostJsonError> {
            match value.pointer(&format!("/extensions/http/{key}")) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => match v.as_i64() {
                    Some(n) if n < 0 => Ok(None),
                    Some(n) => Ok(Some(n as usize)),
                    None => Err(HostJsonError::Setting {
                        key: key.to_owned(),
                        value: v.to_string(),
                    }),
                },
            }
        };
        host.max_concurrent_requests = limit("maxConcurrentRequests")?;
        host.max_outstanding_requests = limit("maxOutstandingRequests")?;
        Ok(host)
    }
}

/// Why host.json cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HostJsonError {
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{key} = {value} is not valid")]
    Setting { key: String, value: String },
}

/// `functionTimeout`: a TimeSpan string `[d.]hh:mm:ss[.fff]`, or -1 / "-1" for unbounded.
fn parse_timeout(value: &serde_json::Value) -> Result<Option<Duration>, HostJsonError> {
    let bad = || HostJsonError::Setting {
        key: "functionTimeout".into(),
        value: value.to_string(),
    };
    let text = match value {
        serde_json::Value::Number(n) if n.as_i64() == Some(-1) => return Ok(None),
        serde_json::Value::String(s) => s.trim(),
        _ => return Err(bad()),
    };
    if text == "-1" {
        return Ok(None);
    }
    let (days, clock) = match text.split_once('.') {
        Some((d, rest)) if !d.contains(':') => (d.parse::<u64>().map_err(|_| bad())?, rest),
        _ => (0, text),
    };
    let parts: Vec<&str> = clock.split(':').collect();
    let [h, m, s] = parts.as_slice() else {
        return Err(bad());
    };
    let hours: u64 = h.parse().map_err(|_| bad())?;
    let minutes: u64 = m.parse().map_err(|_| bad())?;
    let seconds: f64 = s.parse().map_err(|_| bad())?;
    if minutes >= 60 || !(0.0..60.0).contains(&seconds) {
        return Err(bad());
    }
    let whole = (days * 24 + hours) * 3600 + minutes * 60;
    Ok(Some(
        Duration::from_secs(whole) + Duration::from_secs_f64(seconds),
    ))
}

impl HostJson {
    /// The outstanding-request cap in force: host.json's, else Sluice's default.
    pub fn outstanding_cap(&self) -> usize {
        self.max_outstanding_requests
            .unwrap_or(DEFAULT_MAX_OUTSTANDING)
    }
}
