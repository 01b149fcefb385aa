use std::path::Path;

use clap::Parser;

use super::*;

fn args(dir: &Path) -> ServeArgs {
    ServeArgs {
        app_dir: Some(dir.to_path_buf()),
        placeholder: false,
        config: None,
        port: None,
        bind: None,
        workers: None,
        python: None,
        secrets_file: None,
        drain_grace: None,
        no_install: false,
        worker_config: None,
        admin_port: None,
        admin_bind: None,
        admin_token_file: None,
        body_budget: None,
        io: None,
        threads: None,
        settings: SettingsArgs::default(),
        cors: None,
        cors_credentials: false,
        watch: false,
        log_format: None,
        access_log: false,
        otlp_endpoint: None,
        ready_file: None,
    }
}

#[test]
fn watch_comes_from_the_flag_or_the_file_and_not_with_a_placeholder() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    assert!(
        !ServeConfig::resolve(args(&dir), &|_| None)
            .expect("valid")
            .watch
    );
    let mut flag = args(&dir);
    flag.watch = true;
    assert!(ServeConfig::resolve(flag, &|_| None).expect("valid").watch);
    let file = dir.join("sluice.toml");
    std::fs::write(&file, "watch = true\n").expect("write");
    let mut from_file = args(&dir);
    from_file.config = Some(file.clone());
    assert!(
        ServeConfig::resolve(from_file, &|_| None)
            .expect("valid")
            .watch
    );
    let mut placeholder = args(&dir);
    placeholder.app_dir = None;
    placeholder.placeholder = true;
    placeholder.config = Some(file);
    let refused = ServeConfig::resolve(placeholder, &|_| None);
    assert!(
        matches!(refused, Err(ConfigError::BadSetting { name: "watch", .. })),
        "{refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    // The placeholder directory resolve made for this process (empty).
    let _ = std::fs::remove_dir(
        std::env::temp_dir().join(format!("sluice-placeholder-{}", std::process::id())),
    );
}

#[test]
fn otlp_endpoint_from_flag_environment_or_file_must_be_plain_http() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cfg = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!(cfg.otlp_endpoint, None);
    let env =
        |k: &str| (k == "OTEL_EXPORTER_OTLP_ENDPOINT").then(|| "http://127.0.0.1:4317/".to_owned());
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    let mut flag = args(&dir);
    flag.otlp_endpoint = Some("http://collector:4317".into());
    let cfg = ServeConfig::resolve(flag, &env).expect("valid");
    assert_eq!(cfg.otlp_endpoint.as_deref(), Some("http://collector:4317"));
    for bad in ["https://collector:4317", "collector:4317", "nonsense"] {
        let mut flag = args(&dir);
        flag.otlp_endpoint = Some(bad.into());
        assert!(
            matches!(
                ServeConfig::resolve(flag, &|_| None),
                Err(ConfigError::BadSetting {
                    name: "--otlp-endpoint",
                    ..
                })
            ),
            "{bad}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn log_format_and_access_log_sources() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cfg = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!((cfg.log_format, cfg.access_log), (LogFormat::Text, false));

    let json = |k: &str| (k == "SLUICE_LOG_FORMAT").then(|| "JSON".to_owned());
    let cfg = ServeConfig::resolve(args(&dir), &json).expect("valid");
    assert_eq!(cfg.log_format, LogFormat::Json);
    let mut flag = args(&dir);
    flag.log_format = Some(LogFormat::Text);
    flag.access_log = true;
    let cfg = ServeConfig::resolve(flag, &json).expect("valid");
    assert_eq!((cfg.log_format, cfg.access_log), (LogFormat::Text, true));

    let bad = |k: &str| (k == "SLUICE_LOG_FORMAT").then(|| "xml".to_owned());
    assert!(matches!(
        ServeConfig::resolve(args(&dir), &bad),
        Err(ConfigError::BadSetting {
            name: "SLUICE_LOG_FORMAT",
            ..
        })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn body_limit_and_budget_defaults_sources_and_bounds() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let cfg = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!(cfg.body_limit, DEFAULT_BODY_LIMIT);
    assert_eq!(cfg.body_budget, DEFAULT_BODY_BUDGET);

    let env = |k: &str| match k {
        "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT" => Some("1000".to_owned()),
        "SLUICE_BODY_BUDGET" => Some("5000".to_owned()),
        _ => None,
    };
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    assert_eq!((cfg.body_limit, cfg.body_budget), (1000, 5000));
    let mut flag = args(&dir);
    flag.body_budget = Some(7000);
    let cfg = ServeConfig::resolve(flag, &env).expect("valid");
    assert_eq!(cfg.body_budget, 7000, "flag over environment");

    let small = |k: &str| (k == "SLUICE_BODY_BUDGET").then(|| "1000".to_owned());
    let err = ServeConfig::resolve(args(&dir), &small).expect_err("budget below the limit");
    assert!(err.to_string().contains("SLUICE_BODY_BUDGET"), "{err}");
    let huge = |k: &str| {
        (k == "FUNCTIONS_REQUEST_BODY_SIZE_LIMIT").then(|| (MAX_BODY_LIMIT + 1).to_string())
    };
    let err = ServeConfig::resolve(args(&dir), &huge).expect_err("over one gRPC message");
    assert!(err.to_string().contains("gRPC"), "{err}");
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn file_sits_between_defaults_and_environment_and_flags() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("sluice.toml");
    std::fs::write(
        &file,
        "port = 8080\nworkers = 3\ndrain_grace_secs = 5\nadmin_port = 9999\n",
    )
    .expect("write");
    let mut a = args(&dir);
    a.config = Some(file.clone());
    a.admin_port = Some(1234);
    let env = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "2".to_owned());
    let cfg = ServeConfig::resolve(a, &env).expect("valid");
    assert_eq!(cfg.listen.port(), 8080, "file over default");
    assert_eq!(cfg.listen.ip(), DEFAULT_BIND, "default when nobody says");
    assert_eq!(cfg.workers.get(), 2, "environment over file");
    assert_eq!(cfg.admin.port(), 1234, "flag over file");
    assert_eq!(cfg.drain_grace, Duration::from_secs(5));
    std::fs::write(&file, "portt = 1\n").expect("write");
    let mut bad = args(&dir);
    bad.config = Some(file.clone());
    let err = ServeConfig::resolve(bad, &|_| None).expect_err("unknown key");
    assert!(err.to_string().contains("sluice.toml"), "{err}");
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn route_prefix_defaults_to_api_and_can_be_empty() {
    assert_eq!(HostJson::parse("{}").expect("json").route_prefix, "api");
    let host = HostJson::parse(r#"{"extensions":{"http":{"routePrefix":""}}}"#).expect("json");
    assert_eq!(host.route_prefix, "");
}

#[test]
fn function_timeout_and_throttles() {
    let host = HostJson::parse(
        r#"{"functionTimeout":"00:00:02","extensions":{"http":{"maxConcurrentRequests":2,"maxOutstandingRequests":4}}}"#,
    )
    .expect("valid");
    assert_eq!(host.function_timeout, Some(Duration::from_secs(2)));
    assert_eq!(host.max_concurrent_requests, Some(2));
    assert_eq!(host.outstanding_cap(), 4);
    let d = HostJson::parse(r#"{"functionTimeout":"1.02:03:04.5"}"#).expect("valid");
    assert_eq!(d.function_timeout, Some(Duration::from_secs_f64(93_784.5)));
    assert_eq!(
        HostJson::parse(r#"{"functionTimeout":"-1"}"#)
            .expect("valid")
            .function_timeout,
        None
    );
    assert_eq!(
        HostJson::parse(r#"{"functionTimeout":-1}"#)
            .expect("valid")
            .function_timeout,
        None
    );
    let defaults = HostJson::parse("{}").expect("valid");
    assert_eq!(defaults.function_timeout, Some(DEFAULT_FUNCTION_TIMEOUT));
    assert_eq!(defaults.outstanding_cap(), DEFAULT_MAX_OUTSTANDING);
    assert!(HostJson::parse(r#"{"functionTimeout":"soon"}"#).is_err());
    assert!(HostJson::parse(r#"{"functionTimeout":"00:61:00"}"#).is_err());
    let unbounded =
        HostJson::parse(r#"{"extensions":{"http":{"maxConcurrentRequests":-1}}}"#).expect("valid");
    assert_eq!(unbounded.max_concurrent_requests, None);
}

#[test]
fn worker_count_from_env_is_capped_and_flag_wins() {
    let dir = std::env::temp_dir();
    let env = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "3".to_owned());
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    assert_eq!(cfg.workers.get(), 3);
    let mut a = args(&dir);
    a.workers = Some(2);
    assert_eq!(
        ServeConfig::resolve(a, &env).expect("valid").workers.get(),
        2
    );
    let too_many = |k: &str| (k == "FUNCTIONS_WORKER_PROCESS_COUNT").then(|| "11".to_owned());
    assert!(ServeConfig::resolve(args(&dir), &too_many).is_err());
}

#[test]
fn admin_listener_defaults_to_loopback_9091() {
    let dir = std::env::temp_dir();
    let cli = Cli::try_parse_from(["sluice", "serve", &dir.display().to_string()])
        .expect("valid command line");
    let Command::Serve(serve) = cli.command else {
        panic!("serve subcommand")
    };
    let cfg = ServeConfig::resolve(*serve, &|_| None).expect("valid");
    assert_eq!(cfg.admin, "127.0.0.1:9091".parse().expect("literal"));
    let cli = Cli::try_parse_from([
        "sluice",
        "serve",
        &dir.display().to_string(),
        "--admin-port",
        "0",
        "--admin-bind",
        "0.0.0.0",
    ])
    .expect("valid command line");
    let Command::Serve(serve) = cli.command else {
        panic!("serve subcommand")
    };
    let cfg = ServeConfig::resolve(*serve, &|_| None).expect("valid");
    assert_eq!(cfg.admin, "0.0.0.0:0".parse().expect("literal"));
}

#[test]
fn io_backend_and_threads_come_from_file_and_flags() {
    let dir = std::env::temp_dir().join(format!("sluice-io-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let file = dir.join("sluice.toml");
    std::fs::write(&file, "io = \"uring\"\nthreads = 3\n").expect("write");
    let mut a = args(&dir);
    a.config = Some(file.clone());
    let cfg = ServeConfig::resolve(a, &|_| None).expect("valid");
    assert_eq!((cfg.io, cfg.threads.get()), (IoMode::Uring, 3));
    assert!(!cfg.simulate_uring_failure);

    let mut a = args(&dir);
    a.config = Some(file.clone());
    a.io = Some(IoMode::Epoll);
    a.threads = Some(1);
    let probe = |k: &str| (k == "SLUICE_URING_PROBE").then(|| "fail".to_owned());
    let cfg = ServeConfig::resolve(a, &probe).expect("valid");
    assert_eq!((cfg.io, cfg.threads.get()), (IoMode::Epoll, 1), "flags win");
    assert!(cfg.simulate_uring_failure);

    let defaults = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!(defaults.io, IoMode::Auto);
    assert_eq!(defaults.threads, default_threads(defaults.workers));
    assert_eq!(defaults.threads.get(), 1, "one worker, one runtime thread");

    let mut zero = args(&dir);
    zero.threads = Some(0);
    assert!(ServeConfig::resolve(zero, &|_| None).is_err());
    let bogus = |k: &str| (k == "SLUICE_URING_PROBE").then(|| "maybe".to_owned());
    assert!(ServeConfig::resolve(args(&dir), &bogus).is_err());
    std::fs::write(&file, "io = \"kqueue\"\n").expect("write");
    let mut bad = args(&dir);
    bad.config = Some(file);
    assert!(ServeConfig::resolve(bad, &|_| None).is_err());
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn missing_app_dir_is_an_error() {
    let err = ServeConfig::resolve(args(Path::new("/nonexistent/sluice")), &|_| None);
    assert!(matches!(err, Err(ConfigError::NoAppDir { .. })));
}

#[test]
fn local_settings_sit_under_the_environment_and_flags() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("local.settings.json"),
        r#"{"Values": {"FUNCTIONS_WORKER_PROCESS_COUNT": "3", "A": "file", "B": "file"},
            "Host": {"LocalHttpPort": 7199, "CORS": "http://localhost:3000"}}"#,
    )
    .expect("write settings");
    let env = |k: &str| (k == "B").then(|| "env".to_owned());
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    assert_eq!(
        cfg.workers.get(),
        3,
        "Values are environment for Sluice too"
    );
    assert_eq!(cfg.listen.port(), 7199);
    assert!(cfg.cors.is_some());
    assert_eq!(cfg.app_settings.get("A"), Some("file"));
    assert_eq!(cfg.app_settings.get("B"), None, "the environment wins");
    assert_eq!(cfg.app_settings.overridden, vec!["B".to_owned()]);

    let mut flags = args(&dir);
    flags.port = Some(7200);
    flags.workers = Some(1);
    let cfg = ServeConfig::resolve(flags, &env).expect("valid");
    assert_eq!((cfg.listen.port(), cfg.workers.get()), (7200, 1));

    let mut skip = args(&dir);
    skip.settings.no_local_settings = true;
    let cfg = ServeConfig::resolve(skip, &env).expect("valid");
    assert_eq!(cfg.listen.port(), DEFAULT_PORT);
    assert!(cfg.cors.is_none() && cfg.app_settings.file.is_none());
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn cors_sources_in_order_flag_file_platform_settings() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(
        dir.join("local.settings.json"),
        r#"{"Host": {"CORS": "http://from-settings.example"}}"#,
    )
    .expect("write settings");
    let shown = |cfg: ServeConfig| cfg.cors.map(|c| c.to_string()).unwrap_or_default();
    let cfg = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!(shown(cfg), "http://from-settings.example");

    let platform = |k: &str| match k {
        "CORS_ALLOWED_ORIGINS" => Some(r#"["https://a.example", "https://b.example"]"#.to_owned()),
        "CORS_SUPPORT_CREDENTIALS" => Some("True".to_owned()),
        _ => None,
    };
    let cfg = ServeConfig::resolve(args(&dir), &platform).expect("valid");
    assert_eq!(
        shown(cfg),
        "https://a.example, https://b.example; credentials allowed"
    );

    let mut flag = args(&dir);
    flag.cors = Some("http://from-flag.example".into());
    assert_eq!(
        shown(ServeConfig::resolve(flag, &platform).expect("valid")),
        "http://from-flag.example"
    );

    for (name, value) in [
        ("CORS_ALLOWED_ORIGINS", "https://a.example"),
        ("CORS_SUPPORT_CREDENTIALS", "yes"),
    ] {
        let bad = |k: &str| (k == name).then(|| value.to_owned());
        assert!(
            matches!(
                ServeConfig::resolve(args(&dir), &bad),
                Err(ConfigError::BadSetting { name: n, .. }) if n == name
            ),
            "{name}={value}"
        );
    }
    std::fs::remove_dir_all(dir).expect("cleanup");
}

#[test]
fn admin_token_is_checked_kept_secret_and_required_off_loopback_for_placeholders() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let token = "0123456789abcdef-token";
    let env = |k: &str| (k == "SLUICE_ADMIN_TOKEN").then(|| format!("{token}\n"));
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    let held = cfg.admin_token.expect("from the environment");
    assert!(held.matches(token.as_bytes()), "trimmed, then compared");
    assert!(!held.matches(b"0123456789abcdef-tokeN"));
    assert!(!format!("{held:?}").contains(token), "never printed");

    let file = dir.join("token");
    std::fs::write(&file, "short").expect("write");
    let mut from_file = args(&dir);
    from_file.admin_token_file = Some(file);
    assert!(matches!(
        ServeConfig::resolve(from_file, &env),
        Err(ConfigError::BadSetting {
            name: "--admin-token-file",
            ..
        })
    ));

    let mut open_placeholder = args(&dir);
    open_placeholder.app_dir = None;
    open_placeholder.placeholder = true;
    open_placeholder.admin_bind = Some(IpAddr::from([0, 0, 0, 0]));
    let refused = ServeConfig::resolve(open_placeholder, &|_| None);
    assert!(
        matches!(
            refused,
            Err(ConfigError::BadSetting {
                name: "--admin-bind",
                ..
            })
        ),
        "{refused:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir(
        std::env::temp_dir().join(format!("sluice-placeholder-{}", std::process::id())),
    );
}

#[test]
fn what_components_read_from_the_environment_is_resolved_here() {
    let dir = std::env::temp_dir().join(format!("sluice-cfg-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let defaults = ServeConfig::resolve(args(&dir), &|_| None).expect("valid");
    assert_eq!(defaults.script_file, "function_app.py");
    assert_eq!(defaults.python_search.get("PATH"), None);
    assert!(
        !defaults.inherited.contains("PATH"),
        "a lookup alone captures no environment"
    );
    let env = |k: &str| match k {
        "SLUICE_CACHE_DIR" => Some("/srv/cache".to_owned()),
        "PYTHON_SCRIPT_FILE_NAME" => Some("app.py".to_owned()),
        "PATH" => Some("/usr/bin".to_owned()),
        "PYENV_ROOT" => Some("/opt/pyenv".to_owned()),
        "SECRET" => Some("not for the Python search".to_owned()),
        _ => None,
    };
    let cfg = ServeConfig::resolve(args(&dir), &env).expect("valid");
    assert_eq!(cfg.cache_dir, Path::new("/srv/cache"));
    assert_eq!(cfg.script_file, "app.py");
    assert_eq!(cfg.python_search.get("PATH").as_deref(), Some("/usr/bin"));
    assert_eq!(
        cfg.python_search.get("PYENV_ROOT").as_deref(),
        Some("/opt/pyenv")
    );
    assert_eq!(cfg.python_search.get("SECRET"), None);
    let _ = std::fs::remove_dir_all(&dir);
}
