//! Route templates and path matching: `Router::new` never panics on any template,
//! prefix, function name or method list; a router that builds never panics in `find`,
//! and every match is consistent with the spec it names (method allowed, non-empty and
//! distinct parameter names, first match in registration order).
//!
//! The input is text, so seeds and dictionary entries stay readable:
//!
//! ```text
//! <route prefix>
//! <route>[TAB<methods, comma-separated>[TAB<function name>]]   one line per function
//! <empty line>
//! [<METHOD> ]<path>                                           one line per request
//! ```
#![no_main]

use http::Method;
use libfuzzer_sys::fuzz_target;
use sluice::router::{AuthLevel, RouteSpec, Router};

/// Bounds keep one input cheap: the interesting structure is in the text, not the count.
const MAX_ROUTES: usize = 8;
const MAX_REQUESTS: usize = 16;
const LEVELS: [AuthLevel; 3] = [AuthLevel::Anonymous, AuthLevel::Function, AuthLevel::Admin];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (table, requests) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = table.split('\n');
    let prefix = lines.next().unwrap_or("");
    let specs: Vec<RouteSpec> = lines.take(MAX_ROUTES).enumerate().map(spec).collect();
    let Ok(router) = Router::new(prefix, specs.clone()) else {
        return;
    };
    assert_eq!(router.len(), specs.len());

    let mut requests: Vec<(Method, String)> = requests
        .split('\n')
        .take(MAX_REQUESTS)
        .map(request)
        .collect();
    // The templates themselves, as paths, reach the literal and parameter branches
    // even when the input has no request lines.
    for spec in &specs {
        let route = spec.route.as_deref().unwrap_or(&spec.function);
        requests.push((Method::GET, format!("/{prefix}/{route}")));
    }
    for (method, path) in &requests {
        check(prefix, &router, &specs, method, path);
    }
});

fn spec((i, line): (usize, &str)) -> RouteSpec {
    let mut fields = line.split('\t');
    let route = fields.next().unwrap_or("");
    let methods = fields
        .next()
        .map(|list| {
            list.split(',')
                .filter_map(|m| Method::from_bytes(m.as_bytes()).ok())
                .collect()
        })
        .unwrap_or_default();
    let function = fields
        .next()
        .map_or_else(|| format!("f{i}"), str::to_string);
    RouteSpec {
        function,
        // An empty route is the host's "no route": the function name is used.
        route: (!route.is_empty()).then(|| route.to_string()),
        methods,
        auth: LEVELS[i % LEVELS.len()],
    }
}

/// `GET /p`, or a bare path (GET), or anything else taken whole as a GET path.
fn request(line: &str) -> (Method, String) {
    match line.split_once(' ') {
        Some((method, path)) if !line.starts_with('/') => {
            match Method::from_bytes(method.as_bytes()) {
                Ok(method) => (method, path.to_string()),
                Err(_) => (Method::GET, line.to_string()),
            }
        }
        _ => (Method::GET, line.to_string()),
    }
}

fn check(prefix: &str, router: &Router, specs: &[RouteSpec], method: &Method, path: &str) {
    let Some(hit) = router.find(method, path) else {
        return;
    };
    let spec = &specs[hit.index];
    assert_eq!(hit.function, spec.function);
    assert_eq!(hit.auth, spec.auth);
    assert!(
        spec.methods.is_empty()
            || spec
                .methods
                .iter()
                .any(|m| m.as_str().eq_ignore_ascii_case(method.as_str())),
        "{method} matched a route that does not allow it"
    );
    let template = spec.route.as_deref().unwrap_or(&spec.function);
    for (i, (name, _)) in hit.params.iter().enumerate() {
        assert!(!name.is_empty(), "empty parameter name in {:?}", hit.params);
        assert!(
            template.contains(name.as_str()) || prefix.contains(name.as_str()),
            "parameter {name:?} is not in the template {prefix:?} + {template:?}"
        );
        assert!(
            hit.params[..i]
                .iter()
                .all(|(other, _)| !other.eq_ignore_ascii_case(name)),
            "parameter {name:?} returned twice: {:?}",
            hit.params
        );
    }
    // Matching one route does not depend on the others: alone, each earlier route still
    // refuses the request and the winning route gives the same parameters. (A spec that
    // was valid among others is valid alone: conflicts only come from pairs.)
    for (index, other) in specs.iter().enumerate().take(hit.index + 1) {
        let alone =
            Router::new(prefix, vec![other.clone()]).expect("valid among others, valid alone");
        let params = alone.find(method, path).map(|m| m.params);
        if index < hit.index {
            assert_eq!(
                params, None,
                "route {index} matches alone but lost to route {}",
                hit.index
            );
        } else {
            assert_eq!(params.as_ref(), Some(&hit.params));
        }
    }
}
