use http::Method;

use super::process::{cpu_seconds, resident_bytes};
use super::*;

#[test]
fn status_classes_and_methods_are_bounded() {
    assert_eq!(StatusClass::from(StatusCode::OK), StatusClass::Success);
    assert_eq!(
        StatusClass::from(StatusCode::NOT_FOUND),
        StatusClass::ClientError
    );
    assert_eq!(
        StatusClass::from(StatusCode::BAD_GATEWAY),
        StatusClass::ServerError
    );
    assert_eq!(
        StatusClass::from(StatusCode::SWITCHING_PROTOCOLS),
        StatusClass::Informational
    );
    let odd = Method::from_bytes(b"PROPFIND").expect("valid token");
    assert_eq!(HttpMethod::from(&odd), HttpMethod::Other);
}

#[test]
fn encodes_labels_and_names_with_units() {
    let metrics = Metrics::new();
    let name: Arc<str> = Arc::from("hello");
    metrics.request_answered(
        FunctionName::of(&name),
        HttpMethod::Get,
        StatusCode::OK,
        Duration::from_millis(3),
    );
    metrics.request_answered(
        FunctionName::default(),
        HttpMethod::Post,
        StatusCode::NOT_FOUND,
        Duration::from_millis(1),
    );
    metrics.worker_restart(RestartReason::StartFailed);
    let text = metrics.encode().expect("encodes");
    for want in [
        r#"sluice_http_requests_total{function="hello",method="GET",status_class="2xx"} 1"#,
        r#"sluice_http_requests_total{function="-",method="POST",status_class="4xx"} 1"#,
        r#"sluice_http_request_duration_seconds_count{function="hello"} 1"#,
        r#"sluice_worker_restarts_total{reason="start_failed"} 1"#,
        r#"sluice_workers{state="ready"} 0"#,
        r#"sluice_build_info{version=""#,
        "# TYPE sluice_rpc_bytes_sent counter",
    ] {
        assert!(text.contains(want), "{want} missing from\n{text}");
    }
    assert!(text.ends_with("# EOF\n"));
}

#[test]
fn guards_count_in_flight_and_disconnects() {
    let metrics = Metrics::new();
    metrics.request_started().finish();
    drop(metrics.request_started());
    assert_eq!(metrics.in_flight.get(), 0);
    assert_eq!(metrics.client_disconnects.get(), 1);
    let starting = metrics.worker_starting();
    assert_eq!(metrics.workers_starting.get(), 1);
    drop(starting);
    metrics.worker_ready(RuntimeLabels {
        package: "azure-functions-runtime".into(),
        version: "1.2.1".into(),
        source: "bundled".into(),
    });
    assert_eq!(metrics.workers_ready.get(), 1);
    assert!(metrics.cold_start.get() > 0.0);
}

#[test]
fn proc_files_parse() {
    assert_eq!(
        resident_bytes("Name:\tsluice\nVmRSS:\t    2048 kB\n"),
        Some(2 * 1024 * 1024)
    );
    let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 8 0";
    assert_eq!(cpu_seconds(stat), Some(3.0));
}
