//! The app's HTTP functions as the first ready worker indexed them: for each, its
//! trigger parameter, where its HTTP response comes from, and its route. Pure: builds
//! the [`Router`] from the metadata and validates it; does no I/O.

use std::sync::Arc;

use serde::Deserialize;
use tracing::info;

use crate::proto::RpcFunctionMetadata;
use crate::router::{AuthLevel, RouteError, RouteSpec, Router};

/// One routable HTTP function.
#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub name: Arc<str>,
    /// Name of the trigger binding: the invocation's first input is sent under it.
    pub trigger_param: String,
    pub output: HttpOutput,
    /// For display (`sluice check`): the route template as declared, methods, auth level.
    pub route: String,
    pub methods: Vec<http::Method>,
    pub auth: AuthLevel,
}

/// Where the function's HTTP response travels back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpOutput {
    /// `InvocationResponse.return_value` (the `$return` binding, the v2 default).
    Return,
    /// `InvocationResponse.output_data` entry with this name.
    Named(String),
    /// The function has no HTTP output binding: the platform answers 204, empty body.
    Absent,
}

impl HttpOutput {
    /// Whether the value of `binding` (None: the return value) is this output.
    pub fn is(&self, binding: Option<&str>) -> bool {
        match (self, binding) {
            (HttpOutput::Return, None) => true,
            (HttpOutput::Named(name), Some(binding)) => name == binding,
            _ => false,
        }
    }
}

/// The routing table and the functions it leads to (router index = function index).
pub struct Catalog {
    pub router: Router,
    pub functions: Vec<FunctionInfo>,
    /// The app's workers serve HTTP themselves (http-v2: they advertised `HttpUri`), so
    /// requests are forwarded to them rather than read and sent over gRPC.
    pub streams_http: bool,
    /// Functions with another trigger (timer, queue…): indexed by the worker, not served.
    pub unrouted: Vec<UnroutedFunction>,
}

/// A function Sluice does not serve, and its trigger type (for `sluice check`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnroutedFunction {
    pub name: String,
    pub trigger: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("function {function}: binding {binding:?} is not valid JSON: {source}")]
    BadBinding {
        function: String,
        binding: String,
        source: serde_json::Error,
    },
    #[error("function {function}: {source}")]
    AuthLevel {
        function: String,
        source: RouteError,
    },
    #[error(transparent)]
    Route(#[from] RouteError),
}

/// The fields of a raw binding (function.json or the v2 indexer's JSON) Sluice reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawBinding {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    direction: String,
    #[serde(default)]
    name: String,
    route: Option<String>,
    methods: Option<Vec<String>>,
    auth_level: Option<String>,
}

impl Catalog {
    pub fn build(
        route_prefix: &str,
        metadata: &[RpcFunctionMetadata],
        streams_http: bool,
    ) -> Result<Catalog, CatalogError> {
        let mut specs = Vec::new();
        let mut functions = Vec::new();
        let mut unrouted = Vec::new();
        for meta in metadata {
            let bindings = meta
                .raw_bindings
                .iter()
                .map(|raw| {
                    serde_json::from_str::<RawBinding>(raw).map_err(|source| {
                        CatalogError::BadBinding {
                            function: meta.name.clone(),
                            binding: raw.clone(),
                            source,
                        }
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let Some(trigger) = bindings.iter().find(|b| {
                b.kind.eq_ignore_ascii_case("httpTrigger")
                    && !b.direction.eq_ignore_ascii_case("out")
            }) else {
                let trigger = bindings
                    .iter()
                    .find(|b| b.kind.to_ascii_lowercase().ends_with("trigger"))
                    .map_or_else(|| "no trigger".to_owned(), |b| b.kind.clone());
                info!(function = %meta.name, %trigger, "not an HTTP function; not routed");
                unrouted.push(UnroutedFunction {
                    name: meta.name.clone(),
                    trigger,
                });
                continue;
            };
            let output = bindings
                .iter()
                .find(|b| {
                    b.kind.eq_ignore_ascii_case("http") && b.direction.eq_ignore_ascii_case("out")
                })
                .map_or(HttpOutput::Absent, |b| {
                    if b.name == "$return" {
                        HttpOutput::Return
                    } else {
                        HttpOutput::Named(b.name.clone())
                    }
                });
            // function.json's default authLevel is "function".
            let auth = match trigger.auth_level.as_deref() {
                None => AuthLevel::Function,
                Some(level) => level.parse().map_err(|source| CatalogError::AuthLevel {
                    function: meta.name.clone(),
                    source,
                })?,
            };
            let methods: Vec<http::Method> = trigger
                .methods
                .iter()
                .flatten()
                .filter_map(|m| http::Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                .collect();
            let route = trigger.route.clone().filter(|r| !r.is_empty());
            functions.push(FunctionInfo {
                name: Arc::from(meta.name.as_str()),
                trigger_param: trigger.name.clone(),
                output,
                route: full_route(route_prefix, route.as_deref().unwrap_or(&meta.name)),
                methods: methods.clone(),
                auth,
            });
            specs.push(RouteSpec {
                function: meta.name.clone(),
                route,
                methods,
                auth,
            });
        }
        let router = Router::new(route_prefix, specs)?;
        Ok(Catalog {
            router,
            functions,
            streams_http,
            unrouted,
        })
    }
}

/// `/<prefix>/<route>` as a caller would write it.
fn full_route(prefix: &str, route: &str) -> String {
    let parts = [prefix.trim_matches('/'), route.trim_matches('/')];
    let joined: Vec<&str> = parts.into_iter().filter(|p| !p.is_empty()).collect();
    format!("/{}", joined.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(name: &str, bindings: &[&str]) -> RpcFunctionMetadata {
        RpcFunctionMetadata {
            name: name.into(),
            raw_bindings: bindings.iter().map(|b| b.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn v2_http_function_is_routed_with_its_trigger_and_return() {
        let m = meta(
            "hello",
            &[
                r#"{"direction": "IN", "type": "httpTrigger", "name": "req", "methods": ["get"], "route": "hi/{name}", "authLevel": "ANONYMOUS"}"#,
                r#"{"direction": "OUT", "type": "http", "name": "$return"}"#,
            ],
        );
        let catalog = Catalog::build("api", &[m], false).expect("valid");
        let hit = catalog
            .router
            .find(&http::Method::GET, "/api/hi/bob")
            .expect("routed");
        assert_eq!(hit.auth, AuthLevel::Anonymous);
        assert_eq!(hit.params, vec![("name".to_string(), "bob".to_string())]);
        let f = &catalog.functions[hit.index];
        assert_eq!(f.trigger_param, "req");
        assert_eq!(f.output, HttpOutput::Return);
        assert!(
            catalog
                .router
                .find(&http::Method::POST, "/api/hi/bob")
                .is_none()
        );
    }

    #[test]
    fn named_output_missing_auth_level_and_non_http_functions() {
        let http = meta(
            "named",
            &[
                r#"{"direction": "in", "type": "httpTrigger", "name": "r"}"#,
                r#"{"direction": "out", "type": "http", "name": "res"}"#,
            ],
        );
        let timer = meta(
            "tick",
            &[r#"{"direction": "in", "type": "timerTrigger", "name": "t"}"#],
        );
        let catalog = Catalog::build("", &[http, timer], false).expect("valid");
        assert_eq!(catalog.functions.len(), 1);
        let hit = catalog
            .router
            .find(&http::Method::DELETE, "/named")
            .expect("route = name");
        assert_eq!(hit.auth, AuthLevel::Function);
        assert_eq!(catalog.functions[0].output, HttpOutput::Named("res".into()));
        assert_eq!(
            catalog.unrouted,
            vec![UnroutedFunction {
                name: "tick".into(),
                trigger: "timerTrigger".into()
            }]
        );
    }

    #[test]
    fn invalid_binding_json_is_an_error() {
        let m = meta("bad", &["{not json"]);
        assert!(matches!(
            Catalog::build("api", &[m], false),
            Err(CatalogError::BadBinding { .. })
        ));
    }
}
