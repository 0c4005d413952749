//! Abusive clients of the identity endpoints (issue "Hardening"): what they
//! send must cost the server neither memory that stays nor the capacity
//! honest clients need.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::future::join_all;
use serde_json::{json, Value};

use crate::support::{assert_error, auth_options, client, register, ServerOptions, TestServer};

const PASSWORD: &str = "correct horse battery";

async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(server.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// The server process's resident set, in KiB.
fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// The flood the review reproduced: 120 logins from one client, each with
/// a distinct 1 MB email, took a fresh server from 9 MB to 370 MB, and the
/// memory stayed. Now each is a 400 naming the field, and nothing is kept.
#[tokio::test]
async fn a_flood_of_huge_distinct_emails_leaves_memory_where_it_was() {
    let server = TestServer::with(auth_options());
    register(&server, "ann@example.com", PASSWORD).await;
    let huge = |i: usize| format!("{i}{}@example.com", "x".repeat(1_000_000));
    // Warm up what one such request allocates and frees (buffers, arenas).
    for i in 0..5 {
        let body = json!({"email": huge(i), "password": PASSWORD});
        post(&server, "/api/auth/login/", &body).await;
    }
    let before = rss_kib(server.pid());
    for i in 0..120 {
        let body = json!({"email": huge(1000 + i), "password": PASSWORD});
        let res = post(&server, "/api/auth/login/", &body).await;
        let err = assert_error(res, 400, "invalid_request").await;
        assert!(
            err["error"].as_str().unwrap().starts_with("email:"),
            "{err}"
        );
    }
    let long_password = json!({"email": "ann@example.com", "password": "p".repeat(1025)});
    let res = post(&server, "/api/auth/login/", &long_password).await;
    let err = assert_error(res, 400, "invalid_request").await;
    assert!(
        err["error"].as_str().unwrap().starts_with("password:"),
        "{err}"
    );
    let after = rss_kib(server.pid());
    eprintln!("RSS {before} KiB before the flood, {after} KiB after");
    let grown = after.saturating_sub(before);
    assert!(
        grown < 8 * 1024,
        "RSS grew by {grown} KiB ({before} → {after} KiB) over 120 huge logins"
    );
    // The client's failure budget was not spent by refused requests.
    let res = post(
        &server,
        "/api/auth/login/",
        &json!({"email": "ann@example.com", "password": PASSWORD}),
    )
    .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn registrations_are_limited_per_client_and_overall() {
    let per_ip = TestServer::with(
        ServerOptions::default()
            .env("PALAVER_AUTH__ALLOW_REGISTRATION", "true")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_IP_PER_HOUR", "3"),
    );
    for i in 0..3 {
        register(&per_ip, &format!("u{i}@example.com"), PASSWORD).await;
    }
    let res = post(
        &per_ip,
        "/api/auth/register/",
        &json!({"email": "u3@example.com", "password": PASSWORD}),
    )
    .await;
    let retry: u64 = res.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry > 0 && retry <= 3600, "Retry-After {retry}");
    assert_error(res, 429, "rate_limited").await;
    // Over-long fields are refused before they count.
    let res = post(
        &per_ip,
        "/api/auth/register/",
        &json!({"email": format!("{}@example.com", "x".repeat(300)), "password": PASSWORD}),
    )
    .await;
    let err = assert_error(res, 400, "invalid_request").await;
    assert!(
        err["error"].as_str().unwrap().starts_with("email:"),
        "{err}"
    );
    drop(per_ip);

    let overall = TestServer::with(
        ServerOptions::default()
            .env("PALAVER_AUTH__ALLOW_REGISTRATION", "true")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_IP_PER_HOUR", "0")
            .env("PALAVER_AUTH__REGISTRATIONS_PER_HOUR", "2"),
    );
    for i in 0..2 {
        register(&overall, &format!("u{i}@example.com"), PASSWORD).await;
    }
    let res = post(
        &overall,
        "/api/auth/register/",
        &json!({"email": "u2@example.com", "password": PASSWORD}),
    )
    .await;
    assert_error(res, 429, "rate_limited").await;
}

/// Registrations hash passwords with permits of their own: a sustained flood
/// of them (unthrottled here) never turns a valid login into `busy`.
#[tokio::test]
async fn a_registration_flood_does_not_turn_logins_busy() {
    let server = Arc::new(TestServer::with(auth_options()));
    register(&server, "ann@example.com", PASSWORD).await;
    let stop = Arc::new(AtomicBool::new(false));
    let flooders: Vec<_> = (0..16)
        .map(|t| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let body =
                        json!({"email": format!("f{t}-{n}@example.com"), "password": PASSWORD});
                    statuses.push(post(&server, "/api/auth/register/", &body).await.status());
                    n += 1;
                }
                statuses
            })
        })
        .collect();
    let mut logins = Vec::new();
    for _ in 0..10 {
        let body = json!({"email": "ann@example.com", "password": PASSWORD});
        logins.push(post(&server, "/api/auth/login/", &body).await.status());
    }
    stop.store(true, Ordering::Relaxed);
    let flood: Vec<_> = join_all(flooders)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    assert!(
        flood.iter().any(|s| s.as_u16() == 503),
        "the flood was big enough to fill the registration permits: {flood:?}"
    );
    assert!(
        logins.iter().all(|s| s.as_u16() == 200),
        "logins during the flood: {logins:?}"
    );
}
