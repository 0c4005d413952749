//! Configuration layers: defaults < config.toml < environment < flags; bad
//! and unknown keys stop the start with a message naming key and source.

use serde_json::json;

use crate::support::{assert_error, client, palaver, text, ServerOptions, TestServer};

/// A register body of about `n` bytes (registration is closed by default, so
/// a body the limit admits gets 403, one it refuses gets 413).
fn body_of(n: usize) -> String {
    let password = "p".repeat(n.saturating_sub(40));
    json!({"email": "a@example.com", "password": password}).to_string()
}

async fn post_register(server: &TestServer, body: String) -> reqwest::Response {
    client()
        .post(server.url("/api/auth/register/"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn file_then_env_then_flag() {
    // The file alone: a 200-byte body is over its 100-byte limit.
    let server =
        TestServer::with(ServerOptions::default().config_toml("[server]\nmax_json_bytes = 100\n"));
    assert_error(
        post_register(&server, body_of(200)).await,
        413,
        "payload_too_large",
    )
    .await;
    drop(server);

    // The environment beats the file: 300 admits 200 bytes, not 400.
    let server = TestServer::with(
        ServerOptions::default()
            .config_toml("[server]\nmax_json_bytes = 100\n")
            .env("PALAVER_SERVER__MAX_JSON_BYTES", "300"),
    );
    assert_error(
        post_register(&server, body_of(200)).await,
        403,
        "registration_closed",
    )
    .await;
    assert_error(
        post_register(&server, body_of(400)).await,
        413,
        "payload_too_large",
    )
    .await;
    drop(server);

    // Flags beat the environment and the file: --bind and --data win.
    let dir = tempfile::tempdir().unwrap();
    let flag_data = dir.path().join("flag-data");
    let server = TestServer::with(
        ServerOptions::default()
            .config_toml("[server]\nbind = \"127.0.0.1:9\"\n[storage]\npath = \"file-data\"\n")
            .env("PALAVER_SERVER__BIND", "127.0.0.1:7")
            .env("PALAVER_STORAGE__PATH", "env-data")
            .arg("--bind")
            .arg("127.0.0.1:0")
            .data(&flag_data),
    );
    let port: u16 = server.base.rsplit(':').next().unwrap().parse().unwrap();
    assert!(port != 9 && port != 7, "bound {port}: the flag did not win");
    assert!(
        flag_data.join("db").is_dir(),
        "the --data directory holds the database"
    );
    assert!(!server.workdir.join("env-data").exists());
    assert!(!server.workdir.join("file-data").exists());
}

#[tokio::test]
async fn unknown_key_in_file_is_refused_with_its_name() {
    let err = TestServer::try_with(
        ServerOptions::default().config_toml("[server]\nbindd = \"127.0.0.1:0\"\n"),
    )
    .err()
    .expect("the server must refuse to start");
    assert!(err.contains("server.bindd"), "{err}");
    assert!(err.contains("config.toml"), "names the source: {err}");
}

#[tokio::test]
async fn unknown_or_bad_env_key_is_refused_with_its_name() {
    let err = TestServer::try_with(ServerOptions::default().env("PALAVER_SERVER__NOPE", "1"))
        .err()
        .expect("unknown env key must stop the start");
    assert!(err.contains("PALAVER_SERVER__NOPE"), "{err}");

    let err =
        TestServer::try_with(ServerOptions::default().env("PALAVER_DEMO__REQUEST_LIMIT", "lots"))
            .err()
            .expect("bad value must stop the start");
    assert!(err.contains("PALAVER_DEMO__REQUEST_LIMIT"), "{err}");

    let err =
        TestServer::try_with(ServerOptions::default().env("PALAVER_AUTH__ACCESS_TTL", "soon"))
            .err()
            .expect("bad duration must stop the start");
    assert!(err.contains("PALAVER_AUTH__ACCESS_TTL"), "{err}");
}

#[test]
fn config_show_prints_effective_values_with_secrets_redacted() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("config.toml"),
        "[demo]\nrequest_limit = 9\n",
    )
    .unwrap();
    let out = palaver(
        dir.path(),
        &["config", "show"],
        &[
            (
                "PALAVER_AUTH__SECRET",
                "super-secret-signing-key-0123456789",
            ),
            ("PALAVER_AUTH__ACCESS_TTL", "4s"),
            ("PALAVER_METRICS__TOKEN", "scrape-me-secret"),
        ],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(shown.contains("request_limit = 9"), "{shown}");
    assert!(shown.contains("access_ttl = \"4s\""), "{shown}");
    assert!(
        !shown.contains("super-secret-signing-key-0123456789"),
        "{shown}"
    );
    assert!(!shown.contains("scrape-me-secret"), "{shown}");
    assert!(shown.contains("[redacted]"), "{shown}");
}

#[test]
fn config_check_validates() {
    let dir = tempfile::tempdir().unwrap();
    let ok = palaver(dir.path(), &["config", "check"], &[], "");
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    std::fs::write(
        dir.path().join("bad.toml"),
        "[ws]\nreject_with = \"maybe\"\n",
    )
    .unwrap();
    let bad = palaver(
        dir.path(),
        &["config", "check", "--config", "bad.toml"],
        &[],
        "",
    );
    assert_eq!(bad.status.code(), Some(2));
    let err = text(&bad.stderr);
    assert!(
        err.contains("ws.reject_with") && err.contains("bad.toml"),
        "{err}"
    );

    let missing = palaver(
        dir.path(),
        &["config", "check", "--config", "nope.toml"],
        &[],
        "",
    );
    assert_eq!(missing.status.code(), Some(2));
    assert!(text(&missing.stderr).contains("nope.toml"));

    // What `serve` would refuse, `config check` refuses too.
    let deep = "[".repeat(10_000);
    for (key, value, named) in [
        ("PALAVER_AUTH__SECRET", "too-short", "auth.secret"),
        (
            "PALAVER_ANALYSIS__OPENAI__BASE_URL",
            "ftp://127.0.0.1/v1",
            "analysis.openai.base_url",
        ),
        (
            "PALAVER_ANALYSIS__OPENAI__BASE_URL",
            "not a url",
            "analysis.openai.base_url",
        ),
        ("PALAVER_STORAGE__RETENTION", "500ms", "storage.retention"),
        (
            "PALAVER_STORAGE__RETENTION",
            "forever",
            "PALAVER_STORAGE__RETENTION",
        ),
        (
            "PALAVER_SERVER__HEADER_TIMEOUT",
            "0s",
            "server.header_timeout",
        ),
        (
            "PALAVER_SERVER__UPLOAD_TIMEOUT",
            "0s",
            "server.upload_timeout",
        ),
        (
            "PALAVER_SERVER__MAX_CONNECTIONS_PER_IP",
            "-1",
            "PALAVER_SERVER__MAX_CONNECTIONS_PER_IP",
        ),
        // Fuzz crash 3: values figment 0.10.19 misreads (a panic, exit 101,
        // for the first; a silently shortened secret for the second).
        (
            "PALAVER_METRICS__TOKEN",
            "\"é\\n\"",
            "PALAVER_METRICS__TOKEN",
        ),
        (
            "PALAVER_AUTH__SECRET",
            "\"ñandú-0123456789abcdef0123456789abcdef\\t\"",
            "PALAVER_AUTH__SECRET",
        ),
        // And the stack figment's parser overflows (an abort, exit 134).
        ("PALAVER_SERVER__BIND", &deep, "PALAVER_SERVER__BIND"),
    ] {
        let refused = palaver(dir.path(), &["config", "check"], &[(key, value)], "");
        assert_eq!(refused.status.code(), Some(2), "{key}");
        assert!(text(&refused.stderr).contains(named), "{key}");
    }

    // Key files that are named but missing: refused by `check` as by `serve`.
    let refused = palaver(
        dir.path(),
        &["config", "check"],
        &[
            ("PALAVER_AUTH__ALGORITHM", "RS256"),
            ("PALAVER_AUTH__PRIVATE_KEY", "/nonexistent/jwt.key"),
            ("PALAVER_AUTH__PUBLIC_KEY", "/nonexistent/jwt.pub"),
        ],
        "",
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("/nonexistent/jwt.key"),
        "{}",
        text(&refused.stderr)
    );

    // The 32-byte minimum holds for retired secrets too.
    std::fs::write(
        dir.path().join("retired.toml"),
        format!(
            "[auth]\nsecret = \"{}\"\nprevious_secrets = [\"{}\", \"short\"]\n",
            "s".repeat(40),
            "o".repeat(40)
        ),
    )
    .unwrap();
    let refused = palaver(
        dir.path(),
        &["config", "check", "--config", "retired.toml"],
        &[],
        "",
    );
    assert_eq!(refused.status.code(), Some(2));
    assert!(
        text(&refused.stderr).contains("auth.previous_secrets"),
        "{}",
        text(&refused.stderr)
    );
}
