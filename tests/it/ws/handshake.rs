//! The handshake: every credential form, and every refusal with its close code.

use super::*;

#[tokio::test]
async fn every_credential_form_connects_and_connected_comes_first() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let key = api_key(&server, &ann.access).await;
    let t = ticket(&server, &ann.access).await;
    let bearer = format!("Bearer {}", ann.access);
    let protocol = format!("palaver.v1, bearer.{}", ann.access);
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (path(&ann.session, &format!("?ticket={t}")), vec![]),
        (
            path(&ann.session, ""),
            vec![("sec-websocket-protocol", protocol.as_str())],
        ),
        (ann.token_path(), vec![]),
        (
            path(&ann.session, ""),
            vec![("authorization", bearer.as_str())],
        ),
        (path(&ann.session, &format!("?api_key={key}")), vec![]),
        (path(&ann.session, ""), vec![("x-api-key", key.as_str())]),
    ];
    for (i, (p, headers)) in forms.iter().enumerate() {
        let (mut ws, response) = ws_open(&server, p, headers)
            .await
            .unwrap_or_else(|e| panic!("form {i}: {e}"));
        if i == 1 {
            assert_eq!(response.headers()["sec-websocket-protocol"], "palaver.v1");
        }
        let connected = next_frame(&mut ws).await;
        assert_eq!(connected["type"], "connected", "form {i}");
        assert_eq!(connected["session_id"], ann.session.as_str());
        assert_eq!(connected["user"]["is_demo"], false);
        assert_eq!(connected["quota"], Value::Null);
        if i < 4 {
            assert!(connected["expires_at"].as_u64().unwrap() > crate::support::now());
        } else {
            assert_eq!(
                connected["expires_at"],
                Value::Null,
                "API keys do not expire"
            );
        }
    }
}

#[tokio::test]
async fn bad_credentials_of_every_form_close_4001_and_a_ticket_works_once() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let t = ticket(&server, &ann.access).await;
    let (_ws, _) = ws_connected(&server, &path(&ann.session, &format!("?ticket={t}")), &[]).await;
    let forged = format!("{}x", ann.access);
    let bad_bearer = format!("Bearer {forged}");
    let bad_protocol = format!("palaver.v1, bearer.{forged}");
    type Case<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let cases: Vec<Case> = vec![
        (
            "used ticket",
            path(&ann.session, &format!("?ticket={t}")),
            vec![],
        ),
        (
            "unknown ticket",
            path(&ann.session, "?ticket=pvt_nope"),
            vec![],
        ),
        (
            "bad subprotocol token",
            path(&ann.session, ""),
            vec![("sec-websocket-protocol", bad_protocol.as_str())],
        ),
        (
            "bad ?token",
            path(&ann.session, &format!("?token={forged}")),
            vec![],
        ),
        (
            "bad Authorization",
            path(&ann.session, ""),
            vec![("authorization", bad_bearer.as_str())],
        ),
        (
            "bad ?api_key",
            path(&ann.session, "?api_key=pvk_nope"),
            vec![],
        ),
        (
            "bad X-API-Key",
            path(&ann.session, ""),
            vec![("x-api-key", "pvk_nope")],
        ),
        ("nothing", path(&ann.session, ""), vec![]),
        // Precedence: a bad ticket decides even when a good token follows.
        (
            "ticket before token",
            path(
                &ann.session,
                &format!("?ticket=pvt_nope&token={}", ann.access),
            ),
            vec![],
        ),
    ];
    for (what, p, headers) in cases {
        let (mut ws, _) = ws_open(&server, &p, &headers)
            .await
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(close_code(&mut ws).await, 4001, "{what}");
    }
}

#[tokio::test]
async fn sessions_that_are_missing_or_not_yours_close_4004() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let bob = user(&server, "bob@example.com").await;
    for session in [
        uuid::Uuid::new_v4().to_string(),
        bob.session.clone(),
        "nope".into(),
    ] {
        let (mut ws, _) = ws_open(
            &server,
            &path(&session, &format!("?token={}", ann.access)),
            &[],
        )
        .await
        .unwrap();
        assert_eq!(close_code(&mut ws).await, 4004, "{session}");
    }
}

#[tokio::test]
async fn a_disabled_user_closes_4002() {
    use crate::support::{palaver, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let out = palaver(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "off@example.com",
            "--password-stdin",
            "--data",
            d,
        ],
        &[],
        "password-123\n",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = palaver(
        dir.path(),
        &[
            "apikey",
            "create",
            "--email",
            "off@example.com",
            "--name",
            "k",
            "--data",
            d,
        ],
        &[],
        "",
    );
    let key = text(&out.stdout)
        .lines()
        .find(|l| l.starts_with("pvk_"))
        .unwrap()
        .to_owned();
    // A session made while enabled.
    let server = TestServer::with(echo().data(&data));
    let session = {
        let res = client()
            .post(server.url("/api/sessions/"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap();
        res.json::<Value>().await.unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(server.terminate().code(), Some(0));
    // An operator's token (a family of its own, which disabling cannot
    // revoke; disabling deletes the API key): the user check refuses it.
    let minted = palaver(
        dir.path(),
        &["token", "mint", "--email", "off@example.com", "--data", d],
        &[("PALAVER_AUTH__SECRET", crate::support::SECRET)],
        "",
    );
    let token = text(&minted.stdout).trim().to_owned();
    assert!(palaver(
        dir.path(),
        &["user", "disable", "--email", "off@example.com", "--data", d],
        &[],
        ""
    )
    .status
    .success());
    let server = TestServer::with(echo().data(&data));
    let (mut ws, _) = ws_open(&server, &path(&session, &format!("?token={token}")), &[])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    // The deleted API key is refused like any unknown one.
    let (mut ws, _) = ws_open(&server, &path(&session, ""), &[("x-api-key", key.as_str())])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn too_many_connections_close_4029() {
    let server = TestServer::with(echo().env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "2"));
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    let (_a, _) = ws_connected(&server, &p, &[]).await;
    let (b, _) = ws_connected(&server, &p, &[]).await;
    let (mut c, _) = ws_open(&server, &p, &[]).await.unwrap();
    assert_eq!(close_code(&mut c).await, 4029);
    // A place frees when a connection ends.
    drop(b);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (mut ws, _) = ws_open(&server, &p, &[]).await.unwrap();
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(v) if v["type"] == "connected" => break,
            _ => assert!(
                std::time::Instant::now() < deadline,
                "the closed connection's place was never freed"
            ),
        }
    }
}

#[tokio::test]
async fn foreign_origins_close_1008() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    let (mut ws, _) = ws_open(&server, &p, &[("origin", "http://evil.example")])
        .await
        .unwrap();
    assert_eq!(close_code(&mut ws).await, 1008);
    let own = server.base.clone();
    ws_connected(&server, &p, &[("origin", own.as_str())]).await;
    drop(server);

    let server = TestServer::with(echo().env(
        "PALAVER_SERVER__ALLOWED_ORIGINS",
        "[\"https://chat.example.com\"]",
    ));
    let ann = user(&server, "ann@example.com").await;
    let p = ann.token_path();
    ws_connected(&server, &p, &[("origin", "https://chat.example.com")]).await;
    for origin in [
        "https://chat.example.com.evil.io",
        "http://chat.example.com",
        server.base.as_str(),
    ] {
        let (mut ws, _) = ws_open(&server, &p, &[("origin", origin)]).await.unwrap();
        assert_eq!(close_code(&mut ws).await, 1008, "{origin}");
    }
}

#[tokio::test]
async fn reject_with_http_answers_without_upgrading() {
    use tokio_tungstenite::tungstenite::Error;
    let server = TestServer::with(
        echo()
            .env("PALAVER_WS__REJECT_WITH", "http")
            .env("PALAVER_WS__MAX_CONNECTIONS_PER_USER", "1"),
    );
    let ann = user(&server, "ann@example.com").await;
    let good = ann.token_path();
    let _held = ws_connected(&server, &good, &[]).await;
    let cases = [
        (
            path(&ann.session, "?token=bad"),
            vec![],
            401u16,
            "token_invalid",
        ),
        (
            path(
                &uuid::Uuid::new_v4().to_string(),
                &format!("?token={}", ann.access),
            ),
            vec![],
            404,
            "not_found",
        ),
        (good.clone(), vec![], 429, "rate_limited"),
        (
            good.clone(),
            vec![("origin", "http://evil.example")],
            403,
            "forbidden",
        ),
    ];
    for (p, headers, status, code) in cases {
        match ws_open(&server, &p, &headers).await {
            Err(Error::Http(response)) => {
                assert_eq!(response.status().as_u16(), status, "{p}");
                let body: Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["code"], code);
            }
            Err(e) => panic!("{p}: {e}"),
            Ok(_) => panic!("{p}: upgraded"),
        }
    }
}

#[tokio::test]
async fn a_deleted_users_token_closes_4002() {
    use crate::support::{palaver, text};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let server = TestServer::with(echo().data(&data));
    let ann = user(&server, "ann@example.com").await;
    let _bob = user(&server, "bob@example.com").await;
    assert_eq!(server.terminate().code(), Some(0));
    let out = palaver(
        dir.path(),
        &["user", "delete", "--email", "ann@example.com", "--data", d],
        &[],
        "",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let server = TestServer::with(echo().data(&data));
    let (mut ws, _) = ws_open(&server, &ann.token_path(), &[]).await.unwrap();
    assert_eq!(close_code(&mut ws).await, 4002);
    // Her sessions went with her.
    let store_check = client()
        .get(server.url("/api/sessions/"))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(store_check.status(), 401);
}
