//! No credential ever reaches the logs: a session that uses every credential
//! form the server accepts so far (another issuer's tokens included), at the
//! most verbose log level, in both formats, and the captured output searched
//! for each secret.

use serde_json::{json, Value};

use crate::support::{
    auth_options, client, close_code, new_session, next_frame, register, send_json,
    ticket as issue_ticket, ws_connected, ws_open, JsonValue, TestServer,
};

async fn exercise(server: &TestServer) -> Vec<String> {
    let http = client();
    let password = "hunter2-correct-horse";
    register(server, "ann@example.com", password).await;
    let login: Value = http
        .post(server.url("/api/auth/login/"))
        .json(&json!({"email": "ann@example.com", "password": password}))
        .json_value()
        .await;
    let access = login["access"].as_str().unwrap().to_owned();
    let refresh = login["refresh"].as_str().unwrap().to_owned();
    // A wrong password is a credential too.
    let wrong = "wrong-password-do-not-log";
    http.post(server.url("/api/auth/login/"))
        .json(&json!({"email": "ann@example.com", "password": wrong}))
        .send()
        .await
        .unwrap();

    let key: Value = http
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(&access)
        .json(&json!({"name": "logs"}))
        .json_value()
        .await;
    let key = key["key"].as_str().unwrap().to_owned();
    http.get(server.url("/api/auth/me/"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    let ticket: Value = http
        .post(server.url("/api/auth/ws-ticket/"))
        .bearer_auth(&access)
        .json_value()
        .await;
    let ticket = ticket["ticket"].as_str().unwrap().to_owned();
    // Credentials in query strings, as WebSocket clients send them.
    for (name, value) in [("token", &access), ("ticket", &ticket), ("api_key", &key)] {
        http.get(server.url(&format!("/api/auth/me/?{name}={value}")))
            .send()
            .await
            .unwrap();
    }
    http.get(server.url("/api/auth/me/"))
        .header(
            "sec-websocket-protocol",
            format!("palaver.v1, bearer.{access}"),
        )
        .send()
        .await
        .unwrap();
    // Every WebSocket credential form, and a forged one.
    let session = new_session(server, &access).await;
    let ws_ticket = issue_ticket(server, &access).await;
    let bearer = format!("Bearer {access}");
    let protocol = format!("palaver.v1, bearer.{access}");
    let forms: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/ws/sessions/{session}/?ticket={ws_ticket}"),
            vec![],
        ),
        (
            format!("/ws/sessions/{session}/"),
            vec![("sec-websocket-protocol", protocol.as_str())],
        ),
        (format!("/ws/sessions/{session}/?token={access}"), vec![]),
        (
            format!("/ws/sessions/{session}/"),
            vec![("authorization", bearer.as_str())],
        ),
        (format!("/ws/sessions/{session}/?api_key={key}"), vec![]),
        (
            format!("/ws/sessions/{session}/"),
            vec![("x-api-key", key.as_str())],
        ),
    ];
    for (path, headers) in &forms {
        let (mut ws, _) = ws_connected(server, path, headers).await;
        send_json(&mut ws, json!({"type": "refresh", "token": access})).await;
        assert_eq!(next_frame(&mut ws).await["type"], "refreshed");
    }
    let forged_ticket = "pvt_forged-ticket-value-do-not-log-0123456789";
    let (mut ws, _) = ws_open(
        server,
        &format!("/ws/sessions/{session}/?ticket={forged_ticket}"),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(close_code(&mut ws).await, 4001);

    let rotated: Value = http
        .post(server.url("/api/auth/refresh/"))
        .json(&json!({"refresh": refresh}))
        .json_value()
        .await;
    // Reuse, then logout: the failure paths log too.
    http.post(server.url("/api/auth/refresh/"))
        .json(&json!({"refresh": refresh}))
        .send()
        .await
        .unwrap();
    let new_refresh = rotated["refresh"].as_str().unwrap().to_owned();
    http.post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": new_refresh}))
        .send()
        .await
        .unwrap();
    let demo: Value = http.post(server.url("/api/auth/demo/")).json_value().await;
    let demo_access = demo["access"].as_str().unwrap().to_owned();
    http.get(server.url("/api/auth/me/"))
        .bearer_auth(&demo_access)
        .send()
        .await
        .unwrap();

    // Another issuer's token (a Django app's), on HTTP and a socket, and one
    // forged with its secret's neighbour.
    let external = crate::external::django_token(json!(4242));
    http.get(server.url("/api/auth/me/"))
        .bearer_auth(&external)
        .send()
        .await
        .unwrap();
    let (_ws, _) = ws_connected(
        server,
        &format!(
            "/ws/sessions/{}/?token={external}",
            new_session(server, &external).await
        ),
        &[],
    )
    .await;
    let mut forged = external.clone();
    forged.push('x');
    http.get(server.url("/api/auth/me/"))
        .bearer_auth(&forged)
        .send()
        .await
        .unwrap();

    vec![
        crate::external::DJANGO_SECRET.into(),
        external,
        password.into(),
        wrong.into(),
        access,
        refresh,
        new_refresh,
        rotated["access"].as_str().unwrap().into(),
        key,
        ticket,
        demo_access,
        demo["refresh"].as_str().unwrap().into(),
        crate::support::SECRET.into(),
        ws_ticket,
        forged_ticket.into(),
    ]
}

fn assert_clean(output: &str, secrets: &[String]) {
    assert!(output.contains("request"), "logs were captured: {output}");
    for secret in secrets {
        // Tokens are long; any 20-character piece of one is a leak.
        let probe = &secret[..secret.len().min(20)];
        assert!(
            !output.contains(probe),
            "a credential leaked into the logs: {probe}…"
        );
        // The signature part of a JWT on its own.
        if let Some(sig) = secret.rsplit('.').next().filter(|s| s.len() > 20) {
            assert!(
                !output.contains(sig),
                "a token signature leaked into the logs"
            );
        }
    }
}

#[tokio::test]
async fn no_credential_in_pretty_trace_logs() {
    let server = TestServer::with(
        auth_options()
            .env("RUST_LOG", "trace")
            .config_toml(&crate::external::django_entry()),
    );
    let secrets = exercise(&server).await;
    let output = server.output();
    assert_clean(&output, &secrets);
}

#[tokio::test]
async fn no_credential_in_json_logs() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_LOGGING__FORMAT", "json")
            .env("RUST_LOG", "trace")
            .config_toml(&crate::external::django_entry()),
    );
    let secrets = exercise(&server).await;
    let output = server.output();
    let json_lines = output.lines().filter(|l| l.starts_with('{')).count();
    assert!(json_lines > 10, "JSON log lines: {json_lines}");
    for line in output.lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(line).expect("every JSON log line parses");
    }
    assert_clean(&output, &secrets);
}
