//! Sluice's log output as a container runtime or a harness captures it (stderr to a pipe):
//! no ANSI escapes even without `NO_COLOR`, text values quoted consistently, the opt-in
//! access log, `--log-format json` lines that all parse (a function's own log record
//! keeps its invocation id, function name, logger and level), and a worker killed with 64
//! requests in flight costing a bounded number of lines.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use common::{Extras, LOG_DEADLINE, Options, Sluice, client, is_descendant_of, send_signal};
use serde_json::Value;
use tokio::time::{Instant, sleep};

fn app(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apps")
        .join(name)
}

/// The `key=value` fields of a text line (values bare or double-quoted with escapes).
fn text_fields(line: &str) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    let mut rest = line;
    while let Some(eq) = rest.find('=') {
        let key_start = rest[..eq].rfind(' ').map_or(0, |i| i + 1);
        let key = rest[key_start..eq].to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end..])
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            (after[..end].to_owned(), &after[end..])
        };
        fields.insert(key, value);
        rest = next;
    }
    fields
}

#[tokio::test]
async fn piped_text_output_has_no_escapes_quotes_values_and_logs_access() -> anyhow::Result<()> {
    // As a container runtime starts it: no NO_COLOR, a TERM that would allow colours.
    let extras = Extras::default()
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .arg("--access-log");
    let sluice = Sluice::start_with(Options::new(app("tracing")), &extras).await?;
    let hello = client()
        .get(sluice.url("/api/log?n=1&code=secret"))
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .send()
        .await?;
    ensure!(hello.status() == 200);
    let missing = client().get(sluice.url("/api/no such")).send().await?;
    ensure!(missing.status() == 404);
    sluice
        .wait_for_output("x-marks-the-spot 1", LOG_DEADLINE)
        .await?;
    sluice.wait_for_output("status=404", LOG_DEADLINE).await?;

    ensure!(
        sluice.escape_bytes() == 0,
        "{} escape bytes in piped output",
        sluice.escape_bytes()
    );
    let access: Vec<HashMap<String, String>> = sluice
        .output_lines_containing(" access: ")
        .iter()
        .map(|l| text_fields(l))
        .collect();
    let ok = access
        .iter()
        .find(|f| f.get("path").map(String::as_str) == Some("/api/log"))
        .context("no access line for /api/log")?;
    ensure!(ok["method"] == "GET" && ok["status"] == "200", "{ok:?}");
    ensure!(ok["function"] == "log" && ok["bytes"] == "6", "{ok:?}");
    ensure!(ok["invocation_id"].len() == 36, "{ok:?}");
    ensure!(
        ok["trace_id"] == "0af7651916cd43dd8448eb211c80319c",
        "{ok:?}"
    );
    ensure!(ok["parent_span_id"] == "b7ad6b7169203331", "{ok:?}");
    ensure!(ok["span_id"].len() == 16 && ok["span_id"] != "b7ad6b7169203331");
    ensure!(ok["duration_ms"].parse::<f64>().is_ok(), "{ok:?}");
    ensure!(
        !sluice.output_contains("secret"),
        "the query (which may carry a key) was logged"
    );
    let missing = access
        .iter()
        .find(|f| f.get("status").map(String::as_str) == Some("404"))
        .context("no access line for the 404")?;
    ensure!(missing["path"] == "/api/no%20such", "{missing:?}");
    ensure!(missing["function"] == "-" && missing["invocation_id"] == "-");
    // The function's own record: the message as written, labels as fields.
    let line = sluice
        .output_lines_containing("x-marks-the-spot 1")
        .pop()
        .context("no function line")?;
    let fields = text_fields(&line);
    ensure!(
        fields["function"] == "log" && fields["logger"] == "root",
        "{line}"
    );
    ensure!(fields["invocation_id"] == ok["invocation_id"], "{line}");
    Ok(())
}

#[tokio::test]
async fn json_lines_all_parse_and_keep_function_log_labels() -> anyhow::Result<()> {
    let extras = Extras::default()
        .arg("--log-format")
        .arg("json")
        .arg("--access-log");
    let sluice = Sluice::start_with(Options::new(app("tracing")), &extras).await?;
    let response = client().get(sluice.url("/api/log?n=7")).send().await?;
    ensure!(response.status() == 200);
    sluice
        .wait_for_output("x-marks-the-spot 7", LOG_DEADLINE)
        .await?;
    sluice
        .wait_for_output("\"target\":\"access\"", LOG_DEADLINE)
        .await?;

    let lines = sluice.output_lines();
    ensure!(lines.len() > 5, "{lines:?}");
    let mut parsed = Vec::new();
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON line: {line:?}"))?;
        for key in ["timestamp", "level", "target", "message"] {
            ensure!(value[key].is_string(), "{key} missing in {line}");
        }
        parsed.push(value);
    }
    ensure!(
        parsed
            .iter()
            .any(|v| v["message"] == "listening" && v["addr"].is_string()),
        "no listening line with its address"
    );
    let function = parsed
        .iter()
        .find(|v| v["message"] == "x-marks-the-spot 7")
        .context("no function line")?;
    ensure!(function["target"] == "function" && function["level"] == "INFO");
    ensure!(function["function"] == "log" && function["logger"] == "root");
    let access = parsed
        .iter()
        .find(|v| v["target"] == "access" && v["path"] == "/api/log")
        .context("no access line")?;
    ensure!(
        function["invocation_id"] == access["invocation_id"]
            && function["invocation_id"]
                .as_str()
                .is_some_and(|id| id.len() == 36),
        "{function} / {access}"
    );
    ensure!(access["status"] == 200 && access["bytes"] == 6, "{access}");
    Ok(())
}

#[tokio::test]
async fn a_worker_killed_with_64_requests_in_flight_logs_a_bounded_number_of_lines()
-> anyhow::Result<()> {
    const IN_FLIGHT: usize = 64;
    let sluice = Sluice::start(Options::new(app("faults"))).await?;
    let mut requests = Vec::new();
    for i in 0..IN_FLIGHT {
        let url = sluice.url(&format!("/api/slow?s=60&id=k{i}"));
        requests.push(tokio::spawn(async move {
            client().get(url).send().await.map(|r| r.status())
        }));
    }
    let until = Instant::now() + LOG_DEADLINE;
    while sluice.output_lines_containing("slow-start id=k").len() < IN_FLIGHT {
        ensure!(Instant::now() < until, "not all requests started");
        sleep(Duration::from_millis(20)).await;
    }
    let started = sluice.output_lines_containing("slow-start id=k");
    let pid: u32 = started[0]
        .split("pid=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|pid| pid.parse().ok())
        .context("no pid in the slow-start line")?;
    let before = sluice.output_lines().len();
    ensure!(
        is_descendant_of(pid, sluice.pid()?),
        "{pid} is not Sluice's worker"
    );
    send_signal(pid, "KILL")?;
    for request in requests {
        let status = request.await??;
        ensure!(status == 502, "a request in flight got {status}");
    }
    // The one summary line comes within the reporting interval.
    sluice.wait_for_output("repeated=", LOG_DEADLINE).await?;
    sleep(Duration::from_millis(1500)).await;

    let after: Vec<String> = sluice.output_lines()[before..].to_vec();
    let failed: Vec<&String> = after
        .iter()
        .filter(|l| l.contains("request failed"))
        .collect();
    let repeated: u64 = failed
        .iter()
        .filter_map(|l| text_fields(l).get("repeated")?.parse::<u64>().ok())
        .sum();
    let full: Vec<HashMap<String, String>> = failed
        .iter()
        .filter(|l| !l.contains("repeated="))
        .map(|l| text_fields(l))
        .collect();
    // The full line's error has spaces: quoted, it still parses into the right fields.
    ensure!(
        full.iter()
            .all(|f| f.get("error").is_some_and(|e| e.contains("went away"))
                && f.get("function").map(String::as_str) == Some("slow")),
        "{full:?}"
    );
    ensure!(
        failed.len() <= 3 && full.len() as u64 + repeated == IN_FLIGHT as u64,
        "{} `request failed` lines for {IN_FLIGHT} failed requests (repeats counted: {repeated}):\n{}",
        failed.len(),
        after.join("\n")
    );
    if after.len() > 30 {
        bail!(
            "{} lines after killing one worker:\n{}",
            after.len(),
            after.join("\n")
        );
    }
    Ok(())
}
