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

/// `apikey create|list|revoke` and `token mint` against a data directory,
/// then the results used on a server started on it; and a user disabled by
/// the CLI gets 403 `account_disabled` after a correct password only.
#[tokio::test]
async fn apikey_and_token_commands_work_against_the_server() {
    use crate::support::{assert_error, client, me, ServerOptions};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let run = |args: &[&str], stdin: &str| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--data", data]);
        palaver(dir.path(), &full, &[], stdin)
    };
    for email in ["ops@example.com", "off@example.com"] {
        let out = run(
            &["user", "add", "--email", email, "--password-stdin"],
            "password-123\n",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let created = run(
        &[
            "apikey",
            "create",
            "--email",
            "ops@example.com",
            "--name",
            "deploy",
        ],
        "",
    );
    assert!(created.status.success(), "{}", text(&created.stderr));
    let stdout = text(&created.stdout);
    let key = stdout
        .lines()
        .find(|l| l.starts_with("pvk_"))
        .expect("the key is printed")
        .to_owned();
    let key_id = stdout
        .split(['(', ')'])
        .nth(1)
        .expect("the key id is printed")
        .to_owned();
    let listed = text(&run(&["apikey", "list", "--email", "ops@example.com"], "").stdout);
    assert!(
        listed.contains(&key_id) && listed.contains("deploy"),
        "{listed}"
    );
    assert!(!listed.contains(&key), "a listing never shows the key");

    let minted = run(
        &[
            "token",
            "mint",
            "--email",
            "ops@example.com",
            "--ttl",
            "10m",
        ],
        "",
    );
    assert!(minted.status.success(), "{}", text(&minted.stderr));
    let token = text(&minted.stdout).trim().to_owned();
    let claims = crate::support::claims_of(&token);
    assert_eq!(
        claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap(),
        600
    );
    assert!(run(&["user", "disable", "--email", "off@example.com"], "")
        .status
        .success());

    let server = TestServer::with(ServerOptions::default().data(&data_dir));
    let res = client()
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = me(&server, &token).await;
    assert_eq!(res.status(), 200);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["email"], "ops@example.com");

    let login = |password: &'static str| {
        client()
            .post(server.url("/api/auth/login/"))
            .json(&serde_json::json!({"email": "off@example.com", "password": password}))
            .send()
    };
    assert_error(
        login("password-123").await.unwrap(),
        403,
        "account_disabled",
    )
    .await;
    assert_error(
        login("wrong-password").await.unwrap(),
        401,
        "invalid_credentials",
    )
    .await;
    assert_eq!(server.terminate().code(), Some(0));

    let revoked = run(&["apikey", "revoke", &key_id], "");
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    let again = run(&["apikey", "revoke", &key_id], "");
    assert_eq!(again.status.code(), Some(1));
    let server = TestServer::with(ServerOptions::default().data(&data_dir));
    let res = client()
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
}

/// `user disable` then `user enable` brings back none of the user's earlier
/// credentials: its refresh families are revoked (their access tokens too)
/// and its API keys deleted, so a stolen one stays useless.
#[tokio::test]
async fn disable_then_enable_revokes_every_earlier_credential() {
    use crate::support::{assert_error, client, login, me, ServerOptions};

    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let data = data_dir.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut full: Vec<&str> = args.to_vec();
        full.extend(["--data", data]);
        let out = palaver(dir.path(), &full, &[], "password-123\n");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    run(&[
        "user",
        "add",
        "--email",
        "ann@example.com",
        "--password-stdin",
    ]);
    let options = || {
        ServerOptions::default()
            .data(&data_dir)
            .env("PALAVER_AUTH__SECRET", crate::support::SECRET)
    };

    let server = TestServer::with(options());
    let pair = login(&server, "ann@example.com", "password-123").await;
    let access = pair["access"].as_str().unwrap().to_owned();
    let refresh = pair["refresh"].as_str().unwrap().to_owned();
    let res = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(&access)
        .json(&serde_json::json!({"name": "laptop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let key = res.json::<serde_json::Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(server.terminate().code(), Some(0));

    let said = run(&["user", "disable", "--email", "ann@example.com"]);
    assert!(
        said.contains("1 login(s) revoked") && said.contains("1 API key(s) deleted"),
        "{said}"
    );
    run(&["user", "enable", "--email", "ann@example.com"]);

    let server = TestServer::with(options());
    assert_error(me(&server, &access).await, 401, "token_revoked").await;
    let res = client()
        .post(server.url("/api/auth/refresh/"))
        .json(&serde_json::json!({"refresh": refresh}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_revoked").await;
    let res = client()
        .get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "token_invalid").await;
    // The user itself is back: a new login works.
    let fresh = login(&server, "ann@example.com", "password-123").await;
    let res = me(&server, fresh["access"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
}
