use super::values::is_datetime;
use super::*;

fn spec(function: &str, route: Option<&str>, methods: &[Method]) -> RouteSpec {
    RouteSpec {
        function: function.into(),
        route: route.map(str::to_string),
        methods: methods.to_vec(),
        auth: AuthLevel::Function,
    }
}

fn router(routes: &[(&str, &str)]) -> Router {
    let specs = routes.iter().map(|(f, r)| spec(f, Some(r), &[])).collect();
    Router::new("api", specs).expect("valid routes")
}

/// The params of a GET to `path` against a single route, or None for no match.
fn params(route: &str, path: &str) -> Option<Vec<(String, String)>> {
    router(&[("f", route)])
        .find(&Method::GET, path)
        .map(|m| m.params)
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn accepts(route: &str, value: &str) -> bool {
    params(route, &format!("/api/x/{value}")).is_some()
}

fn build_error(prefix: &str, specs: Vec<RouteSpec>) -> RouteError {
    match Router::new(prefix, specs) {
        Ok(_) => panic!("expected a startup error"),
        Err(e) => e,
    }
}

fn template_error(route: &str) -> RouteError {
    build_error("api", vec![spec("f", Some(route), &[])])
}

#[test]
fn auth_level_parses_case_insensitively() {
    assert_eq!(
        "ANONYMOUS".parse::<AuthLevel>().ok(),
        Some(AuthLevel::Anonymous)
    );
    assert_eq!(
        "Function".parse::<AuthLevel>().ok(),
        Some(AuthLevel::Function)
    );
    assert_eq!("admin".parse::<AuthLevel>().ok(), Some(AuthLevel::Admin));
    assert!(
        matches!("system".parse::<AuthLevel>(), Err(RouteError::BadAuthLevel(s)) if s == "system")
    );
}

#[test]
fn params_are_extracted_and_percent_decoded() {
    assert_eq!(
        params(
            "users/{id}/posts/{post}",
            "/api/users/42/posts/hello%20world"
        ),
        Some(pairs(&[("id", "42"), ("post", "hello world")]))
    );
    assert_eq!(
        params("p/{name}", "/api/p/caf%C3%A9"),
        Some(pairs(&[("name", "café")]))
    );
    // Kestrel never decodes %2F into a separator; the value keeps it encoded.
    assert_eq!(
        params("p/{name}", "/api/p/a%2Fb"),
        Some(pairs(&[("name", "a%2Fb")]))
    );
    // Invalid UTF-8 after decoding keeps the raw text.
    assert_eq!(
        params("p/{name}", "/api/p/%FF"),
        Some(pairs(&[("name", "%FF")]))
    );
    assert_eq!(params("p/{name}", "/api/p"), None);
    assert_eq!(params("p/{name}", "/api/p/a/b"), None);
}

#[test]
fn literals_match_case_insensitively() {
    assert!(params("Hello/World", "/API/hello/WORLD").is_some());
    assert!(params("café", "/api/CAFÉ").is_some());
    assert!(params("hello", "/api/hell").is_none());
}

#[test]
fn route_none_uses_the_function_name() {
    let r = Router::new("api", vec![spec("HttpTrigger1", None, &[])]).expect("valid");
    assert_eq!(
        r.find(&Method::GET, "/api/httptrigger1")
            .map(|m| m.function),
        Some("HttpTrigger1")
    );
    assert!(r.find(&Method::GET, "/HttpTrigger1").is_none());
}

#[test]
fn empty_and_custom_prefixes() {
    let r = Router::new("", vec![spec("f", Some("/items/{id}/"), &[])]).expect("valid");
    assert_eq!(
        r.find(&Method::GET, "/items/7").map(|m| m.params),
        Some(pairs(&[("id", "7")]))
    );
    assert!(r.find(&Method::GET, "/api/items/7").is_none());
    let r = Router::new("/v1/public/", vec![spec("f", Some("items"), &[])]).expect("valid");
    assert!(r.find(&Method::GET, "/v1/public/items").is_some());
    assert!(r.find(&Method::GET, "/api/items").is_none());
    // A route of "/" is the prefix itself.
    let r = Router::new("api", vec![spec("root", Some("/"), &[])]).expect("valid");
    assert!(r.find(&Method::GET, "/api").is_some());
    assert!(r.find(&Method::GET, "/api/").is_some());
}

#[test]
fn trailing_slash_dot_segments_and_empty_segments() {
    assert!(params("x", "/api/x/").is_some());
    assert!(params("x", "/api/./y/../x").is_some());
    assert!(params("x", "/api/y/%2E%2E/x").is_some());
    assert!(params("x", "/api/x//").is_none());
    // An empty segment gives a required parameter no value.
    assert!(params("a/{b}/c", "/api/a//c").is_none());
    assert_eq!(params("a/{b=z}/c", "/api/a//c"), Some(pairs(&[("b", "z")])));
}

#[test]
fn optional_params_are_left_out_when_absent() {
    assert_eq!(params("items/{id?}", "/api/items"), Some(vec![]));
    assert_eq!(params("items/{id?}", "/api/items/"), Some(vec![]));
    assert_eq!(
        params("items/{id?}", "/api/items/5"),
        Some(pairs(&[("id", "5")]))
    );
    assert_eq!(
        params("items/{a?}/{b?}", "/api/items/1"),
        Some(pairs(&[("a", "1")]))
    );
    // The docs' example: the constraint of an absent optional parameter is skipped.
    let route = "products/{category:alpha}/{id:int?}";
    assert_eq!(
        params(route, "/api/products/shoes"),
        Some(pairs(&[("category", "shoes")]))
    );
    assert_eq!(
        params(route, "/api/products/shoes/3"),
        Some(pairs(&[("category", "shoes"), ("id", "3")]))
    );
    assert_eq!(params(route, "/api/products/shoes/x"), None);
}

#[test]
fn defaults_are_filled_in_and_constrained() {
    assert_eq!(
        params("page/{n=1}", "/api/page"),
        Some(pairs(&[("n", "1")]))
    );
    assert_eq!(
        params("page/{n=1}", "/api/page/9"),
        Some(pairs(&[("n", "9")]))
    );
    assert_eq!(
        params("page/{n:int=1}", "/api/page"),
        Some(pairs(&[("n", "1")]))
    );
    assert_eq!(params("page/{n:int=one}", "/api/page"), None);
}

#[test]
fn catch_all_takes_the_rest_of_the_path() {
    for route in ["files/{*path}", "files/{**path}"] {
        assert_eq!(
            params(route, "/api/files/a/b%20c/d.txt"),
            Some(pairs(&[("path", "a/b c/d.txt")]))
        );
        assert_eq!(
            params(route, "/api/files/a/b/"),
            Some(pairs(&[("path", "a/b/")]))
        );
        assert_eq!(params(route, "/api/files/a"), Some(pairs(&[("path", "a")])));
        // Empty catch-all: matches, with no value (as ASP.NET gives null).
        assert_eq!(params(route, "/api/files"), Some(vec![]));
        assert_eq!(params(route, "/api/files/"), Some(vec![]));
        assert_eq!(params(route, "/api/other"), None);
    }
    // The ASGI/WSGI wrappers' route.
    assert_eq!(
        params("/{*route}", "/api/x/y"),
        Some(pairs(&[("route", "x/y")]))
    );
    assert_eq!(
        params("files/{*path=index.html}", "/api/files"),
        Some(pairs(&[("path", "index.html")]))
    );
}

#[test]
fn catch_all_with_constraints() {
    assert!(params("f/{*p:nonfile}", "/api/f").is_some());
    assert!(params("f/{*p:nonfile}", "/api/f/a/b").is_some());
    assert!(params("f/{*p:nonfile}", "/api/f/a/b.js").is_none());
    assert!(params("f/{*p:file}", "/api/f/a/b.js").is_some());
    // A constraint other than nonfile refuses the absent value.
    assert!(params("f/{*p:alpha}", "/api/f").is_none());
}

#[test]
fn integer_constraints_accept_and_reject() {
    let int = "x/{v:int}";
    for ok in ["0", "-5", "+5", "2147483647", "-2147483648", "%2012%20"] {
        assert!(accepts(int, ok), "int should accept {ok}");
    }
    for bad in ["2147483648", "1.0", "abc", "1e3", "-", "0x10", "٣"] {
        assert!(!accepts(int, bad), "int should reject {bad}");
    }
    assert!(accepts("x/{v:long}", "9223372036854775807"));
    assert!(!accepts("x/{v:long}", "9223372036854775808"));
    assert!(!accepts("x/{v:long}", "12a"));
}

#[test]
fn bool_constraint() {
    for ok in ["true", "FALSE", "True"] {
        assert!(accepts("x/{v:bool}", ok), "{ok}");
    }
    for bad in ["1", "yes", "truee"] {
        assert!(!accepts("x/{v:bool}", bad), "{bad}");
    }
}

#[test]
fn decimal_and_float_constraints() {
    for ok in [
        "1",
        "-1.5",
        "1,000.25",
        ".5",
        "5.",
        "5-",
        "79228162514264337593543950335",
    ] {
        assert!(accepts("x/{v:decimal}", ok), "decimal should accept {ok}");
    }
    for bad in [
        "1e5",
        "abc",
        ".",
        "79228162514264337593543950336",
        "-5-",
        ",1",
        "NaN",
    ] {
        assert!(
            !accepts("x/{v:decimal}", bad),
            "decimal should reject {bad}"
        );
    }
    for route in ["x/{v:double}", "x/{v:float}"] {
        for ok in [
            "1",
            "-1.5e10",
            "1,000.5",
            "1E-3",
            "NaN",
            "-Infinity",
            "1e999",
        ] {
            assert!(accepts(route, ok), "{route} should accept {ok}");
        }
        for bad in ["abc", "1e", "1.2.3", "5-", "e5"] {
            assert!(!accepts(route, bad), "{route} should reject {bad}");
        }
    }
}

#[test]
fn guid_constraint() {
    for ok in [
        "0f8fad5b-d9cb-469f-a165-70867728950e",
        "0F8FAD5BD9CB469FA16570867728950E",
        "{0f8fad5b-d9cb-469f-a165-70867728950e}",
        "(0f8fad5b-d9cb-469f-a165-70867728950e)",
    ] {
        assert!(accepts("x/{v:guid}", ok), "{ok}");
    }
    for bad in [
        "0f8fad5b-d9cb-469f-a165-70867728950",
        "0f8fad5bd9cb469fa16570867728950g",
        "123",
    ] {
        assert!(!accepts("x/{v:guid}", bad), "{bad}");
    }
}

#[test]
fn datetime_constraint() {
    for ok in [
        "2016-12-31",
        "2016-12-31%207:32pm",
        "2016-12-31T23:59:59Z",
        "2016-12-31T23:59:59.1234567+01:00",
        "12-31-2016",
        "2.29.2024",
        "10:30",
    ] {
        assert!(accepts("x/{v:datetime}", ok), "{ok}");
    }
    // Slash-separated dates only reach a constraint through a catch-all.
    assert!(params("d/{*v:datetime}", "/api/d/12/31/2016").is_some());
    assert!(is_datetime("2/29/24") && !is_datetime("2/29/23"));
    for bad in [
        "2016-13-01",
        "2023-02-29",
        "2016-12-31T25:00",
        "hello",
        "2016-12-31x",
        "12:60",
    ] {
        assert!(!accepts("x/{v:datetime}", bad), "{bad}");
    }
}

#[test]
fn alpha_constraint() {
    assert!(accepts("x/{v:alpha}", "abcXYZ"));
    assert!(!accepts("x/{v:alpha}", "abc1"));
    assert!(!accepts("x/{v:alpha}", "caf%C3%A9"));
}

#[test]
fn numeric_range_constraints() {
    assert!(accepts("x/{v:min(10)}", "10"));
    assert!(!accepts("x/{v:min(10)}", "9"));
    assert!(!accepts("x/{v:min(10)}", "ten"));
    assert!(accepts("x/{v:max(10)}", "-3"));
    assert!(!accepts("x/{v:max(10)}", "11"));
    assert!(accepts("x/{v:range(1, 5)}", "5"));
    assert!(!accepts("x/{v:range(1,5)}", "0"));
    assert!(!accepts("x/{v:range(1,5)}", "6"));
}

#[test]
fn length_constraints() {
    assert!(accepts("x/{v:length(3)}", "abc"));
    assert!(!accepts("x/{v:length(3)}", "abcd"));
    assert!(accepts("x/{v:length(2,4)}", "abcd"));
    assert!(!accepts("x/{v:length(2,4)}", "a"));
    assert!(accepts("x/{v:minlength(2)}", "ab"));
    assert!(!accepts("x/{v:minlength(2)}", "a"));
    assert!(accepts("x/{v:maxlength(2)}", "ab"));
    assert!(!accepts("x/{v:maxlength(2)}", "abc"));
    // .NET counts UTF-16 code units: one astral character is two.
    assert!(accepts("x/{v:length(2)}", "%F0%9F%98%80"));
}

#[test]
fn regex_constraint_is_case_insensitive_and_unanchored_like_aspnet() {
    assert!(accepts("x/{v:regex(^\\d{{3}}-\\d{{4}}$)}", "555-1234"));
    assert!(!accepts("x/{v:regex(^\\d{{3}}-\\d{{4}}$)}", "5555-1234"));
    assert!(accepts("x/{v:regex(^(list|get)$)}", "LIST"));
    assert!(!accepts("x/{v:regex(^(list|get)$)}", "create"));
    // ASP.NET Core does not add ^…$: an unanchored pattern matches a substring.
    assert!(accepts("x/{v:regex(abc)}", "xxABCxx"));
    assert!(accepts("x/{v:regex(a:b)}", "a:b"));
}

#[test]
fn chained_and_other_constraints() {
    let route = "x/{v:int:min(1):max(9)}";
    assert!(accepts(route, "5"));
    assert!(!accepts(route, "0"));
    assert!(!accepts(route, "10"));
    assert!(accepts("x/{v:alpha:length(3)}", "dog"));
    assert!(!accepts("x/{v:alpha:length(3)}", "dogs"));
    assert!(accepts("x/{v:INT}", "1"));
    assert!(accepts("x/{v:required}", "a"));
    assert!(accepts("x/{v:file}", "a.txt"));
    assert!(!accepts("x/{v:file}", "a."));
    assert!(accepts("x/{v:nonfile}", "abc"));
    assert!(!accepts("x/{v:nonfile}", ".gitignore"));
}

#[test]
fn method_mismatch_is_no_match_and_empty_means_all() {
    let r = Router::new(
        "api",
        vec![
            spec("get", Some("a"), &[Method::GET, Method::HEAD]),
            spec("any", Some("b"), &[]),
        ],
    )
    .expect("valid");
    assert!(r.find(&Method::GET, "/api/a").is_some());
    assert!(r.find(&Method::HEAD, "/api/a").is_some());
    assert!(r.find(&Method::POST, "/api/a").is_none());
    let ext = Method::from_bytes(b"PURGE").expect("valid method");
    assert!(r.find(&ext, "/api/b").is_some());
    assert!(r.find(&Method::DELETE, "/api/b").is_some());
}

#[test]
fn first_match_in_registration_order_wins() {
    let specs = vec![
        spec("catch", Some("{*rest}"), &[Method::POST]),
        spec("generic", Some("items/{id}"), &[]),
        spec("specific", Some("items/special"), &[]),
    ];
    let r = Router::new("api", specs).expect("valid");
    assert_eq!(r.len(), 3);
    assert!(!r.is_empty());
    let hit = r.find(&Method::GET, "/api/items/special").expect("matches");
    assert_eq!((hit.function, hit.index), ("generic", 1));
    assert_eq!(hit.auth, AuthLevel::Function);
    let hit = r
        .find(&Method::POST, "/api/items/special")
        .expect("matches");
    assert_eq!((hit.function, hit.index), ("catch", 0));
    // A failing constraint moves on to the next route.
    let r = router(&[("num", "v/{id:int}"), ("text", "v/{name}")]);
    assert_eq!(
        r.find(&Method::GET, "/api/v/3").map(|m| m.function),
        Some("num")
    );
    assert_eq!(
        r.find(&Method::GET, "/api/v/abc").map(|m| m.function),
        Some("text")
    );
}

#[test]
fn reserved_routes_are_refused() {
    for route in [
        "admin",
        "/Admin/x",
        "administrator",
        "RUNTIME/webhooks",
        "runtimes",
    ] {
        let e = template_error(route);
        assert!(
            matches!(e, RouteError::ReservedRoute { .. }),
            "{route}: {e}"
        );
    }
    // The function name counts when there is no route.
    let e = build_error("api", vec![spec("AdminPanel", None, &[])]);
    assert!(matches!(e, RouteError::ReservedRoute { .. }));
    // Only the route is checked, not the prefix, and only at its start.
    assert!(Router::new("admin", vec![spec("f", Some("x/admin"), &[])]).is_ok());
}

#[test]
fn conflicting_routes_are_refused() {
    let e = build_error(
        "api",
        vec![
            spec("a", Some("Items/{id}"), &[Method::GET]),
            spec("b", Some("/items/{id}/"), &[Method::GET]),
        ],
    );
    assert!(
        matches!(e, RouteError::Conflict { first, second, .. } if first == "a" && second == "b")
    );
    let e = build_error(
        "api",
        vec![
            spec("a", Some("x"), &[Method::GET]),
            spec("b", Some("x"), &[]),
        ],
    );
    assert!(matches!(e, RouteError::Conflict { .. }));
    // Same route, disjoint methods: allowed. Different route strings: allowed.
    let ok = Router::new(
        "api",
        vec![
            spec("a", Some("x"), &[Method::GET]),
            spec("b", Some("x"), &[Method::POST]),
            spec("c", Some("{id}"), &[]),
            spec("d", Some("{name}"), &[]),
        ],
    );
    assert!(ok.is_ok());
}

#[test]
fn duplicate_function_names_are_refused() {
    let e = build_error(
        "api",
        vec![spec("f", Some("a"), &[]), spec("F", Some("b"), &[])],
    );
    assert!(matches!(e, RouteError::DuplicateFunction { function } if function == "F"));
}

#[test]
fn bad_templates_are_refused_at_startup() {
    for route in [
        "{a}.{b}",
        "file.{ext}",
        "a//b",
        "{*rest}/x",
        "{id",
        "id}",
        "{}",
        "{a}/{A}",
        "{id=1?}",
        "{*rest?}",
        "a?b",
        "{a{b}",
        "{na/me}",
    ] {
        let e = template_error(route);
        assert!(matches!(e, RouteError::BadTemplate { .. }), "{route}: {e}");
    }
}

#[test]
fn unknown_and_malformed_constraints_are_refused() {
    let e = template_error("{id:integer}");
    assert!(
        matches!(e, RouteError::UnknownConstraint { ref constraint, .. } if constraint == "integer"),
        "{e}"
    );
    for route in [
        "{id:min}",
        "{id:min(a)}",
        "{id:int(3)}",
        "{id:range(5,1)}",
        "{id:length(-1)}",
        "{id:regex([)}",
        "{id:min(1}",
    ] {
        let e = template_error(route);
        assert!(
            matches!(e, RouteError::BadConstraint { .. }),
            "{route}: {e}"
        );
    }
}

#[test]
fn escaped_braces_are_literal() {
    assert!(params("a{{b}}", "/api/a%7Bb%7D").is_some());
}

#[test]
fn root_and_odd_paths_do_not_panic() {
    let r = router(&[("f", "x")]);
    for path in ["", "/", "//", "*", "/api/%", "/api/%E", "/..", "/api/../.."] {
        assert!(r.find(&Method::GET, path).is_none(), "{path}");
    }
    let r = Router::new("", vec![spec("all", Some("{*p}"), &[])]).expect("valid");
    assert_eq!(r.find(&Method::GET, "/").map(|m| m.params), Some(vec![]));
}
