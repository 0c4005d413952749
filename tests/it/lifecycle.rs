//! Process lifecycle: SIGTERM exits 0 with storage flushed; an acknowledged
//! write survives SIGKILL.

use std::os::unix::process::ExitStatusExt;

use serde_json::json;

use crate::support::{client, palaver, text, ServerOptions, TestServer};

async fn register(server: &TestServer, email: &str) {
    let res = client()
        .post(server.url("/api/auth/register/"))
        .json(&json!({"email": email, "password": "long enough pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

fn registration() -> ServerOptions {
    ServerOptions::default().open_registration()
}

#[tokio::test]
async fn sigterm_exits_zero_and_keeps_writes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(registration().data(&data));
    register(&server, "kept@example.com").await;
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "exit status {status:?}");

    let out = palaver(
        dir.path(),
        &["user", "list", "--data", data.to_str().unwrap()],
        &[],
        "",
    );
    assert!(
        text(&out.stdout).contains("kept@example.com"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn an_acknowledged_write_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(registration().data(&data));
    for i in 0..20 {
        register(&server, &format!("user{i}@example.com")).await;
    }
    let status = server.kill();
    assert_eq!(status.signal(), Some(9));

    let server = TestServer::with(registration().data(&data));
    let out = palaver(
        &server.workdir,
        &["user", "list", "--data", data.to_str().unwrap()],
        &[],
        "",
    );
    // The restarted server holds the lock: stop it, then list.
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(server.terminate().code(), Some(0));
    let out = palaver(
        dir.path(),
        &["user", "list", "--data", data.to_str().unwrap()],
        &[],
        "",
    );
    let list = text(&out.stdout);
    for i in 0..20 {
        assert!(
            list.contains(&format!("user{i}@example.com")),
            "user{i} lost:\n{list}"
        );
    }
}
