//! The operator CLI against a real data directory, checked through the
//! storage crate itself.

use palaver_storage::{Store, StoreConfig};

use crate::support::{palaver, text, TestServer};

fn open(dir: &std::path::Path) -> Store {
    Store::open(&StoreConfig {
        path: dir.to_path_buf(),
        cache_bytes: 8 << 20,
        fsync: false,
    })
    .unwrap()
}

#[test]
fn user_add_creates_a_user_that_storage_finds() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let out = palaver(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "Ops@Example.com",
            "--password-stdin",
            "--data",
            data,
        ],
        &[],
        "a long password\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("created user Ops@Example.com"));

    let store = open(dir.path().join("data").as_path());
    let user = store
        .users()
        .find_by_email("ops@example.com")
        .unwrap()
        .expect("stored");
    assert!(user.is_active && !user.is_demo);
    assert!(user.password_hash.starts_with("$argon2id$"));
    assert!(palaver_actors::password::verify(
        "a long password",
        &user.password_hash
    ));
    assert!(!user.password_hash.contains("a long password"));
}

#[test]
fn user_list_disable_enable_delete() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--data", data]);
        palaver(dir.path(), &full, &[], stdin)
    };
    for email in ["a@example.com", "b@example.com"] {
        let out = run(
            &["user", "add", "--email", email, "--password-stdin"],
            "password-123\n",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let dup = run(
        &[
            "user",
            "add",
            "--email",
            "A@example.com",
            "--password-stdin",
        ],
        "password-123\n",
    );
    assert_eq!(dup.status.code(), Some(1));
    assert!(
        text(&dup.stderr).contains("already exists"),
        "{}",
        text(&dup.stderr)
    );
    let short = run(
        &[
            "user",
            "add",
            "--email",
            "c@example.com",
            "--password-stdin",
        ],
        "short\n",
    );
    assert_eq!(short.status.code(), Some(1));
    assert!(
        text(&short.stderr).contains("at least 8"),
        "{}",
        text(&short.stderr)
    );

    let list = text(&run(&["user", "list"], "").stdout);
    assert!(
        list.contains("a@example.com") && list.contains("b@example.com"),
        "{list}"
    );
    assert!(!list.contains("c@example.com"));

    assert!(run(&["user", "disable", "--email", "a@example.com"], "")
        .status
        .success());
    assert!(
        !open(&data_dir)
            .users()
            .find_by_email("a@example.com")
            .unwrap()
            .unwrap()
            .is_active
    );
    assert!(run(&["user", "enable", "--email", "a@example.com"], "")
        .status
        .success());
    assert!(
        open(&data_dir)
            .users()
            .find_by_email("a@example.com")
            .unwrap()
            .unwrap()
            .is_active
    );
    assert!(run(&["user", "delete", "--email", "b@example.com"], "")
        .status
        .success());
    assert!(open(&data_dir)
        .users()
        .find_by_email("b@example.com")
        .unwrap()
        .is_none());

    let missing = run(&["user", "disable", "--email", "nobody@example.com"], "");
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("no user with email nobody@example.com"));
}

#[test]
fn user_add_without_a_terminal_asks_for_password_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let out = palaver(
        dir.path(),
        &["user", "add", "--email", "a@example.com"],
        &[],
        "",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--password-stdin"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn commands_say_plainly_when_the_server_holds_the_database() {
    let server = TestServer::start();
    let data = server.data.to_str().unwrap().to_owned();
    let out = palaver(&server.workdir, &["user", "list", "--data", &data], &[], "");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("in use by another palaver process"), "{err}");
    assert!(
        !err.contains("WouldBlock") && !err.contains("Os {"),
        "no raw sled error: {err}"
    );
}
