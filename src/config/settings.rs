//! What components get from the configuration instead of all of it: the dispatcher's and
//! the worker slots' settings, and the environment variables read once, here.

use std::time::Duration;

use super::{HostJson, ServeConfig};

/// What the request dispatcher needs from the configuration.
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    pub body_limit: u64,
    /// Request bodies held in memory at once, across requests.
    pub body_budget: u64,
    /// How long a request waits for the first worker to become ready.
    pub startup_timeout: Duration,
    pub access_log: bool,
    pub otlp_endpoint: Option<String>,
}

/// What starting and supervising worker slots needs from the configuration: the app's
/// host.json part (route prefix, functionTimeout) and Sluice's start-up timeout.
#[derive(Debug, Clone)]
pub struct SlotSettings {
    pub route_prefix: String,
    pub startup_timeout: Duration,
    /// host.json functionTimeout: bounds how long a recycle waits for other invocations.
    pub function_timeout: Option<Duration>,
}

/// What logging reads from the environment, before (and whether or not) the rest of the
/// configuration resolves: SLUICE_LOG's filter and NO_COLOR.
#[derive(Debug, Default)]
pub struct LogEnv {
    pub filter: Option<String>,
    pub no_color: Option<std::ffi::OsString>,
}

impl LogEnv {
    pub fn from_process() -> LogEnv {
        LogEnv {
            filter: std::env::var("SLUICE_LOG").ok(),
            no_color: std::env::var_os("NO_COLOR"),
        }
    }
}

/// Environment variables read once, here, for the components that need them.
#[derive(Debug, Clone, Default)]
pub struct Captured(Vec<(String, String)>);

impl Captured {
    /// All of `vars` (Sluice's whole environment).
    pub(super) fn all(vars: impl Iterator<Item = (String, String)>) -> Captured {
        Captured(vars.collect())
    }

    /// `names` as `env` has them (unset ones left out).
    pub fn of(names: &[&str], env: &dyn Fn(&str) -> Option<String>) -> Captured {
        Captured(
            names
                .iter()
                .filter_map(|n| env(n).map(|v| ((*n).to_owned(), v)))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.iter().any(|(k, _)| k == name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &(String, String)> {
        self.0.iter()
    }
}

impl ServeConfig {
    pub fn dispatch_settings(&self) -> DispatchSettings {
        DispatchSettings {
            body_limit: self.body_limit,
            body_budget: self.body_budget,
            startup_timeout: self.startup_timeout,
            access_log: self.access_log,
            otlp_endpoint: self.otlp_endpoint.clone(),
        }
    }

    /// The slot settings for an app with this host.json (the configured app's, or one
    /// assigned to a placeholder).
    pub fn slot_settings(&self, host: &HostJson) -> SlotSettings {
        SlotSettings {
            route_prefix: host.route_prefix.clone(),
            startup_timeout: self.startup_timeout,
            function_timeout: host.function_timeout,
        }
    }
}
