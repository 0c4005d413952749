//! Sockets closed when their credential or session goes: logout, reuse, expiry, deletions.

use super::*;

#[tokio::test]
async fn logout_and_session_deletion_close_open_sockets() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let other = crate::support::login(&server, "ann@example.com", "correct horse battery").await;
    let (mut ws, _) = ann.connect(&server).await;
    let other_access = other["access"].as_str().unwrap();
    let (mut survivor, _) = ws_connected(
        &server,
        &path(&ann.session, &format!("?token={other_access}")),
        &[],
    )
    .await;
    let res = client()
        .post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": ann.refresh}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut ws).await, 4001);
    // Another family's socket is untouched...
    send_json(&mut survivor, json!({"type": "ping"})).await;
    assert_eq!(next_frame(&mut survivor).await["type"], "pong");
    // ...until its session is deleted.
    let res = client()
        .delete(server.url(&format!("/api/sessions/{}/", ann.session)))
        .bearer_auth(other_access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut survivor).await, 4004);
}

#[tokio::test]
async fn refresh_reuse_closes_the_familys_sockets() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, _) = ann.connect(&server).await;
    let refresh = |token: String| {
        client()
            .post(server.url("/api/auth/refresh/"))
            .json(&json!({"refresh": token}))
            .send()
    };
    assert_eq!(refresh(ann.refresh.clone()).await.unwrap().status(), 200);
    assert_error(
        refresh(ann.refresh.clone()).await.unwrap(),
        401,
        "token_revoked",
    )
    .await;
    assert_eq!(close_code(&mut ws).await, 4001);
}

#[tokio::test]
async fn an_expiring_credential_warns_then_closes_4001() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_AUTH__ACCESS_TTL", "3s")
            .env("PALAVER_AUTH__LEEWAY_SECONDS", "0")
            .env("PALAVER_WS__EXPIRY_WARNING", "2s"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, connected) = ann.connect(&server).await;
    assert!(connected["expires_at"].as_u64().unwrap() <= crate::support::now() + 3);
    let warning = next_frame(&mut ws).await;
    assert_eq!(warning["type"], "token_expiring");
    assert!(warning["expires_in"].as_u64().unwrap() <= 2);
    assert_eq!(close_code(&mut ws).await, 4001);
}

/// A question sent just after the credential's expiry is never admitted,
/// even if the expiry timer has not run yet: the socket closes 4001.
#[tokio::test]
async fn a_question_after_expiry_is_not_admitted() {
    let server = TestServer::with(
        echo()
            .env("PALAVER_AUTH__ACCESS_TTL", "2s")
            .env("PALAVER_AUTH__LEEWAY_SECONDS", "0")
            .env("PALAVER_WS__EXPIRY_WARNING", "1s"),
    );
    let ann = user(&server, "ann@example.com").await;
    let (mut ws, connected) = ann.connect(&server).await;
    let expires_at = connected["expires_at"].as_u64().unwrap();
    // The clock is the subject here: send 20 ms after the expiry instant.
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(expires_at * 1000 + 20);
    if let Ok(wait) = at.duration_since(std::time::SystemTime::now()) {
        tokio::time::sleep(wait).await;
    }
    send_json(&mut ws, json!({"type": "question", "text": "too late"})).await;
    loop {
        match crate::support::next_incoming(&mut ws).await {
            crate::support::Incoming::Json(frame) => assert_eq!(
                frame["type"], "token_expiring",
                "nothing but the warning before the close: {frame}"
            ),
            crate::support::Incoming::Close(code, _) => {
                assert_eq!(code, 4001);
                break;
            }
            crate::support::Incoming::Ended => panic!("ended without a close frame"),
        }
    }
}

#[tokio::test]
async fn deleting_an_api_key_closes_its_sockets_and_refresh_follows_the_new_family() {
    let server = TestServer::with(echo());
    let ann = user(&server, "ann@example.com").await;
    let key = api_key(&server, &ann.access).await;
    let (mut by_key, _) = ws_connected(
        &server,
        &path(&ann.session, ""),
        &[("x-api-key", key.as_str())],
    )
    .await;
    // A ticket the key asked for, not yet used when the key goes.
    let pending: Value = client()
        .post(server.url("/api/auth/ws-ticket/"))
        .header("x-api-key", key.as_str())
        .json_value()
        .await;
    let pending = pending["ticket"].as_str().unwrap();
    let keys: Value = client()
        .get(server.url("/api/auth/api-keys/"))
        .bearer_auth(&ann.access)
        .json_value()
        .await;
    let id = keys["api_keys"][0]["id"].as_str().unwrap();
    let res = client()
        .delete(server.url(&format!("/api/auth/api-keys/{id}/")))
        .bearer_auth(&ann.access)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut by_key).await, 4001);
    let (mut late, _) = ws_open(
        &server,
        &path(&ann.session, &format!("?ticket={pending}")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        close_code(&mut late).await,
        4001,
        "the key's ticket went with it"
    );

    // A socket refreshed in-band with another login's token follows that
    // family: logging the new family out closes it.
    let (mut ws, _) = ann.connect(&server).await;
    let other = crate::support::login(&server, "ann@example.com", "correct horse battery").await;
    send_json(
        &mut ws,
        json!({"type": "refresh", "token": other["access"]}),
    )
    .await;
    assert_eq!(next_frame(&mut ws).await["type"], "refreshed");
    let res = client()
        .post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": other["refresh"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(close_code(&mut ws).await, 4001);
}
