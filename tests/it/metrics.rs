//! `/metrics`: a scrape after real traffic passes `promtool check metrics`
//! and shows the counters moved; `metrics.token` and `metrics.bind` work.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::{json, Value};

use crate::support::{
    assert_error, auth_options, client, close_code, new_session, next_frame, require_tool,
    send_json, signed_in, until_done, ws_connected, ws_open, JsonValue, ServerOptions, TestServer,
};

/// The value of the sample `name` whose labels are exactly `labels`.
pub fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, labels) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            let found: BTreeMap<String, String> = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k.to_string(), v.trim_matches('"').to_string()))
                })
                .collect();
            (found == wanted).then(|| value.parse().ok()).flatten()
        })
}

async fn scrape(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = client().get(url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    req.send().await.unwrap()
}

pub(crate) fn promtool(scrape: &str) -> std::process::Output {
    let mut child = Command::new(require_tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(scrape.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
async fn a_scrape_after_real_traffic_is_valid_and_moved() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_DEMO__REQUEST_LIMIT", "2"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let session = new_session(&server, &access).await;

    // A WebSocket chat, and a failed handshake.
    let (mut ws, _) = ws_connected(
        &server,
        &format!("/ws/sessions/{session}/?token={access}"),
        &[],
    )
    .await;
    send_json(
        &mut ws,
        json!({"type": "question", "text": "one two three"}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "message");
    until_done(&mut ws).await;
    let (mut bad, _) = ws_open(
        &server,
        &format!("/ws/sessions/{session}/?token=forged"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(close_code(&mut bad).await, 4001);

    // A quota rejection: a demo user with a limit of 2.
    let demo: Value = client()
        .post(server.url("/api/auth/demo/"))
        .json_value()
        .await;
    let demo_access = demo["access"].as_str().unwrap();
    for _ in 0..2 {
        new_session(&server, demo_access).await;
    }
    let res = client()
        .post(server.url("/api/sessions/"))
        .bearer_auth(demo_access)
        .send()
        .await
        .unwrap();
    assert_error(res, 429, "quota_exceeded").await;
    // A failed login.
    let res = client()
        .post(server.url("/api/auth/login/"))
        .json(&json!({"email": "ann@example.com", "password": "wrong password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);

    let res = scrape(&server.url("/metrics"), None).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let check = promtool(&text);
    assert!(
        check.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let at_least = |name: &str, labels: &[(&str, &str)], min: f64| {
        let v = sample(&text, name, labels)
            .unwrap_or_else(|| panic!("{name}{labels:?} missing:\n{text}"));
        assert!(v >= min, "{name}{labels:?} = {v}, expected at least {min}");
    };
    at_least(
        "palaver_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/auth/login"),
            ("status", "200"),
        ],
        1.0,
    );
    at_least(
        "palaver_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/auth/login"),
            ("status", "401"),
        ],
        1.0,
    );
    at_least(
        "palaver_http_requests_total",
        &[
            ("method", "POST"),
            ("route", "/api/sessions"),
            ("status", "429"),
        ],
        1.0,
    );
    at_least(
        "palaver_http_request_duration_seconds_count",
        &[("method", "POST"), ("route", "/api/auth/login")],
        2.0,
    );
    at_least("palaver_ws_handshakes_total", &[("outcome", "ok")], 1.0);
    at_least(
        "palaver_ws_handshakes_total",
        &[("outcome", "auth_failed")],
        1.0,
    );
    at_least(
        "palaver_ws_messages_total",
        &[("direction", "in"), ("type", "question")],
        1.0,
    );
    at_least(
        "palaver_ws_messages_total",
        &[("direction", "out"), ("type", "token")],
        3.0,
    );
    at_least(
        "palaver_ws_messages_total",
        &[("direction", "out"), ("type", "done")],
        1.0,
    );
    at_least("palaver_ws_closes_total", &[("code", "4001")], 1.0);
    at_least("palaver_ws_connections", &[], 1.0);
    at_least(
        "palaver_auth_tokens_issued_total",
        &[("kind", "access")],
        2.0,
    );
    at_least(
        "palaver_auth_failures_total",
        &[("reason", "invalid_credentials")],
        1.0,
    );
    at_least("palaver_auth_failures_total", &[("reason", "invalid")], 1.0);
    at_least("palaver_quota_rejections_total", &[("kind", "demo")], 1.0);
    at_least(
        "palaver_analysis_stream_duration_seconds_count",
        &[("engine", "echo"), ("status", "complete")],
        1.0,
    );
    at_least("palaver_analysis_first_token_seconds_count", &[], 1.0);
    at_least("palaver_storage_flush_seconds_count", &[], 1.0);
    at_least("palaver_demo_users", &[], 1.0);
    at_least("process_resident_memory_bytes", &[], 1.0);
    at_least("process_open_fds", &[], 1.0);
    at_least("process_start_time_seconds", &[], 1.0);
    assert!(sample(&text, "process_cpu_seconds_total", &[]).is_some());
    assert!(sample(&text, "palaver_analysis_queue_depth", &[]).is_some());
    assert!(sample(&text, "palaver_analysis_active_streams", &[]).is_some());
    assert!(sample(&text, "palaver_analysis_workers_busy", &[]).is_some());
    // Bounded labels: no raw path or id ever appears.
    assert!(!text.contains(&session), "a session id leaked into a label");
    assert!(!text.contains(&access[..20]));

    // The connection gauge goes back down when the socket closes.
    drop(ws);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let text = scrape(&server.url("/metrics"), None)
            .await
            .text()
            .await
            .unwrap();
        if sample(&text, "palaver_ws_connections", &[]) == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the gauge never went down"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every frame a socket was sent is counted once, by type, whether its
/// actor queued it (`connected`, `quota`, `pong`) or the reply hub did (a
/// reply's frames on every socket of the session, a resume's answer).
#[tokio::test]
async fn every_frame_sent_is_counted_once_by_type() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_ANALYSIS__TOKEN_DELAY", "20ms"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let session = new_session(&server, &access).await;
    let path = format!("/ws/sessions/{session}/?token={access}");
    let mut received: BTreeMap<String, f64> = BTreeMap::new();
    let mut count = |frames: &[Value]| {
        for f in frames {
            *received
                .entry(f["type"].as_str().unwrap().to_owned())
                .or_default() += 1.0;
        }
    };
    // Two sockets follow the reply; a third joins mid-way and resumes it
    // live, the second resumes it again once it is stored.
    let (mut one, first) = ws_connected(&server, &path, &[]).await;
    let (mut two, second) = ws_connected(&server, &path, &[]).await;
    count(&[first, second]);
    send_json(
        &mut one,
        json!({"type": "question", "text": "a b c d e f g h"}),
    )
    .await;
    let mut head = Vec::new();
    let id = loop {
        let f = next_frame(&mut one).await;
        let token = f["type"] == "token";
        head.push(f);
        if token {
            break head.last().unwrap()["message_id"]
                .as_str()
                .unwrap()
                .to_owned();
        }
    };
    let (mut three, third) = ws_connected(&server, &path, &[]).await;
    count(&[third]);
    send_json(
        &mut three,
        json!({"type": "resume", "message_id": id, "after": 1}),
    )
    .await;
    count(&head);
    count(&until_done(&mut one).await);
    count(&until_done(&mut two).await);
    count(&until_done(&mut three).await);
    send_json(
        &mut two,
        json!({"type": "resume", "message_id": id, "after": 5}),
    )
    .await;
    count(&until_done(&mut two).await);
    send_json(&mut one, json!({"type": "ping"})).await;
    count(&[next_frame(&mut one).await]);
    assert_eq!(received["resumed"], 2.0);
    assert_eq!(received["token"], 8.0 * 2.0 + 7.0 + 3.0);

    let res = scrape(&server.url("/metrics"), None).await;
    let text = res.text().await.unwrap();
    for (kind, n) in &received {
        let counted = sample(
            &text,
            "palaver_ws_messages_total",
            &[("direction", "out"), ("type", kind)],
        );
        assert_eq!(counted, Some(*n), "{kind}");
    }
    // Nothing else was counted as sent.
    let out_types = text
        .lines()
        .filter(|l| l.starts_with("palaver_ws_messages_total{") && l.contains(r#"direction="out""#))
        .count();
    assert_eq!(out_types, received.len(), "{text}");
}

#[tokio::test]
async fn metrics_token_protects_the_scrape() {
    let server = TestServer::with(
        ServerOptions::default().env("PALAVER_METRICS__TOKEN", "scrape-secret-123"),
    );
    assert_error(
        scrape(&server.url("/metrics"), None).await,
        401,
        "token_invalid",
    )
    .await;
    assert_error(
        scrape(&server.url("/metrics"), Some("wrong")).await,
        401,
        "token_invalid",
    )
    .await;
    let res = scrape(&server.url("/metrics"), Some("scrape-secret-123")).await;
    assert_eq!(res.status(), 200);
    assert!(res
        .text()
        .await
        .unwrap()
        .contains("process_resident_memory_bytes"));
    assert!(!server.output().contains("scrape-secret-123"));
}

#[tokio::test]
async fn metrics_bind_serves_the_scrape_elsewhere() {
    let server =
        TestServer::with(ServerOptions::default().env("PALAVER_METRICS__BIND", "127.0.0.1:0"));
    let output = server.output();
    let line = output
        .lines()
        .find(|l| l.starts_with("metrics on http://"))
        .expect("the metrics address is printed");
    let url = line.trim_start_matches("metrics on ").trim().to_owned();
    let res = scrape(&url, None).await;
    assert_eq!(res.status(), 200);
    let text = res.text().await.unwrap();
    assert!(text.contains("process_open_fds"));
    assert!(promtool(&text).status.success());
    assert_error(
        scrape(&server.url("/metrics"), None).await,
        404,
        "not_found",
    )
    .await;
}

/// `/metrics` without a token on an address that is not loopback is open to
/// anyone who reaches it: the start warns (naming no secret). With a token,
/// or on loopback, it does not.
#[tokio::test]
async fn a_public_metrics_endpoint_is_warned_about_at_start() {
    const WARNING: &str = "GET /metrics is public";
    // The tracing line that follows the check, on the same stream.
    const STARTED: &str = "listening addr=";
    let everywhere = || ServerOptions::default().arg("--bind").arg("0.0.0.0:0");

    let public = TestServer::with(everywhere());
    let output = public.output_once(STARTED);
    let warning = output
        .lines()
        .find(|l| l.contains(WARNING))
        .unwrap_or_else(|| panic!("no warning:\n{output}"));
    assert!(warning.contains("metrics.token"), "{warning}");

    let with_token =
        TestServer::with(everywhere().env("PALAVER_METRICS__TOKEN", "scrape-secret-123"));
    let output = with_token.output_once(STARTED);
    assert!(!output.contains(WARNING), "{output}");
    assert!(!output.contains("scrape-secret-123"), "{output}");

    let separate = TestServer::with(everywhere().env("PALAVER_METRICS__BIND", "127.0.0.1:0"));
    let output = separate.output_once(STARTED);
    assert!(!output.contains(WARNING), "{output}");

    let loopback = TestServer::start();
    let output = loopback.output_once(STARTED);
    assert!(!output.contains(WARNING), "{output}");
}

/// The Grafana dashboard in docs/ parses and queries only metrics the server
/// exports (so it cannot drift from the code silently).
#[test]
fn the_grafana_dashboard_uses_exported_metrics() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/docs/grafana-dashboard.json"
    ))
    .unwrap();
    let dashboard: Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let exported = [
        "palaver_http_requests_total",
        "palaver_http_request_duration_seconds_bucket",
        "palaver_ws_connections",
        "palaver_ws_handshakes_total",
        "palaver_ws_closes_total",
        "palaver_ws_messages_total",
        "palaver_analysis_first_token_seconds_bucket",
        "palaver_analysis_stream_duration_seconds_bucket",
        "palaver_analysis_queue_depth",
        "palaver_analysis_active_streams",
        "palaver_analysis_workers_busy",
        "palaver_auth_tokens_issued_total",
        "palaver_auth_failures_total",
        "palaver_auth_refresh_reuse_total",
        "palaver_quota_rejections_total",
        "palaver_demo_users",
        "palaver_storage_flush_seconds_bucket",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds_total",
    ];
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            let names: Vec<&str> = expr
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .filter(|w| w.starts_with("palaver_") || w.starts_with("process_"))
                .collect();
            assert!(!names.is_empty(), "{expr}");
            for name in names {
                assert!(exported.contains(&name), "{name} in {expr} is not exported");
            }
        }
    }
}
