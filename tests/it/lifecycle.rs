//! Process lifecycle: SIGTERM exits 0 with storage flushed; an acknowledged
//! write survives SIGKILL; the data directory is its owner's alone.

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

/// Every directory and file under `dir` (itself included) with its
/// permission bits.
fn modes(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u32)> {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let mut found = vec![(dir.to_path_buf(), mode(dir))];
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            found.extend(modes(&path));
        } else {
            found.push((path.clone(), mode(&path)));
        }
    }
    found
}

/// Chat history, password hashes and the signing secret are not for other
/// local users: directories 0700, files 0600, whatever the umask (the test
/// runs under the usual 022), and a directory restored with looser modes is
/// tightened at the next start.
#[tokio::test]
async fn the_data_directory_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let assert_private = |data: &std::path::Path| {
        let found = modes(data);
        assert!(found.len() >= 5, "db/, its files, jwt_secret: {found:?}");
        for (path, mode) in found {
            let wanted = if path.is_dir() { 0o700 } else { 0o600 };
            assert_eq!(mode, wanted, "{} is {mode:o}", path.display());
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = TestServer::with(registration().data(&data));
    register(&server, "ann@example.com").await;
    assert_private(&data);
    assert_eq!(server.terminate().code(), Some(0));

    for (path, _) in modes(&data) {
        let loose = if path.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(loose)).unwrap();
    }
    let server = TestServer::with(registration().data(&data));
    assert_private(&data);
    assert_eq!(server.terminate().code(), Some(0));
}
