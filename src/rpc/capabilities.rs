//! What a worker's capabilities tell Sluice, from WorkerInit and again from an environment
//! reload. A reload either merges its capabilities into those from init (the default, and
//! what the Python runtimes send) or replaces them (`capabilities_update_strategy =
//! replace` in the public contract): then a capability the reload leaves out is gone.

use std::collections::HashMap;

use crate::proto::function_environment_reload_response::CapabilitiesUpdateStrategy;
use crate::proxy::{ProxyError, WorkerHttp};

/// The capabilities Sluice acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Capabilities {
    /// `WorkerStatus`: the worker answers health pings.
    pub(crate) answers_pings: bool,
    /// `HttpUri`: an http-v2 app; requests are forwarded to this server.
    pub(crate) http: Option<WorkerHttp>,
    /// `WorkerOpenTelemetryEnabled`: the worker emits its own telemetry for the app's
    /// logs and spans, so the host does not forward its RpcLogs as telemetry (they are
    /// still printed in Sluice's log, which is not telemetry).
    pub(crate) opentelemetry: bool,
}

impl Capabilities {
    /// Applies `reported` with `strategy`. Nothing changes when `HttpUri` is malformed.
    pub(crate) fn update(
        &mut self,
        reported: &HashMap<String, String>,
        strategy: CapabilitiesUpdateStrategy,
    ) -> Result<(), ProxyError> {
        let http = WorkerHttp::from_capabilities(reported)?;
        if strategy == CapabilitiesUpdateStrategy::Replace {
            *self = Capabilities::default();
        }
        if http.is_some() {
            self.http = http;
        }
        self.answers_pings |= reported.contains_key("WorkerStatus");
        self.opentelemetry |= reported.contains_key("WorkerOpenTelemetryEnabled");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn init() -> Capabilities {
        let mut c = Capabilities::default();
        c.update(
            &caps(&[
                ("WorkerStatus", "true"),
                ("HttpUri", "http://127.0.0.1:4000"),
                ("WorkerOpenTelemetryEnabled", "true"),
            ]),
            CapabilitiesUpdateStrategy::Merge,
        )
        .expect("valid");
        c
    }

    #[test]
    fn merge_keeps_what_the_reload_leaves_out() {
        let mut c = init();
        c.update(
            &caps(&[("RawHttpBodyBytes", "true")]),
            CapabilitiesUpdateStrategy::Merge,
        )
        .expect("valid");
        assert_eq!(c, init());
        c.update(
            &caps(&[("HttpUri", "http://127.0.0.1:5000")]),
            CapabilitiesUpdateStrategy::Merge,
        )
        .expect("valid");
        assert_eq!(
            c.http.as_ref().map(WorkerHttp::authority),
            Some("127.0.0.1:5000")
        );
    }

    #[test]
    fn replace_drops_what_the_reload_leaves_out() {
        let mut c = init();
        c.update(
            &caps(&[("WorkerStatus", "true")]),
            CapabilitiesUpdateStrategy::Replace,
        )
        .expect("valid");
        assert_eq!(
            c,
            Capabilities {
                answers_pings: true,
                ..Capabilities::default()
            }
        );
    }

    #[test]
    fn a_malformed_http_uri_changes_nothing() {
        let mut c = init();
        assert!(
            c.update(
                &caps(&[("HttpUri", "nonsense")]),
                CapabilitiesUpdateStrategy::Replace
            )
            .is_err()
        );
        assert_eq!(c, init());
    }
}
