//! The identity layer against a temporary store and a booted supervisor.

use super::*;
use std::net::IpAddr;
use std::time::Duration;

use palaver_storage::{NewUser, Store};

async fn booted() -> (Auth, Store) {
    let store = Store::temporary().unwrap();
    let booted = crate::supervisor::tests::boot(store.clone());
    (booted.auth, store)
}

async fn user(store: &Store, email: &str) -> User {
    store
        .users()
        .create(NewUser {
            email: email.into(),
            password_hash: password::hash("password-123").unwrap(),
            is_demo: false,
            demo_expires_at: None,
        })
        .await
        .unwrap()
}

const IP: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
use std::net::Ipv4Addr;

#[actix_rt::test]
async fn tickets_are_single_use_and_follow_revocation() {
    let (auth, store) = booted().await;
    user(&store, "ann@example.com").await;
    let pair = auth
        .login("ann@example.com", "password-123", IP)
        .await
        .unwrap();
    let principal = auth.verify_access(&pair.access).await.unwrap();

    let (ticket, ttl) = auth.issue_ticket(&principal).unwrap();
    assert_eq!(ttl, Duration::from_secs(30));
    let admitted = auth.consume_ticket(&ticket).unwrap();
    assert_eq!(admitted.user.id, principal.user.id);
    assert_eq!(admitted.family(), principal.family());
    assert_eq!(admitted.expires_at(), principal.expires_at());
    assert!(matches!(
        auth.consume_ticket(&ticket),
        Err(AuthError::Invalid(_))
    ));

    // A ticket of a family logged out meanwhile is refused.
    let (ticket, _) = auth.issue_ticket(&principal).unwrap();
    auth.logout(&pair.refresh).await.unwrap();
    assert!(matches!(
        auth.consume_ticket(&ticket),
        Err(AuthError::Revoked)
    ));
    assert!(matches!(
        auth.verify_access(&pair.access).await,
        Err(AuthError::Revoked)
    ));
}

#[actix_rt::test]
async fn disabled_users_fail_verification_with_every_credential() {
    let (auth, store) = booted().await;
    let ann = user(&store, "ann@example.com").await;
    let pair = auth
        .login("ann@example.com", "password-123", IP)
        .await
        .unwrap();
    let (_, key) = auth.create_api_key(&ann, "k").await.unwrap();
    let (ticket, _) = auth
        .issue_ticket(&auth.verify_access(&pair.access).await.unwrap())
        .unwrap();
    store.users().set_active(ann.id, false).await.unwrap();
    assert!(matches!(
        auth.verify_access(&pair.access).await,
        Err(AuthError::AccountDisabled)
    ));
    assert!(matches!(
        auth.verify_api_key(&key),
        Err(AuthError::AccountDisabled)
    ));
    assert!(matches!(
        auth.consume_ticket(&ticket),
        Err(AuthError::AccountDisabled)
    ));
    assert!(matches!(
        auth.refresh(&pair.refresh).await,
        Err(AuthError::AccountDisabled)
    ));
    assert!(matches!(
        auth.login("ann@example.com", "password-123", IP).await,
        Err(AuthError::AccountDisabled)
    ));
}

#[actix_rt::test]
async fn minted_tokens_verify_and_are_capped_for_demo_users() {
    let (auth, store) = booted().await;
    let ann = user(&store, "ann@example.com").await;
    let (token, exp) = mint_access(auth.tokens(), &ann, Duration::from_secs(3600)).unwrap();
    assert!(exp >= now_secs() + 3599);
    assert_eq!(auth.verify_access(&token).await.unwrap().user.id, ann.id);

    let demo = auth.demo(IP).await.unwrap();
    let end = demo.user.demo_expires_at.unwrap();
    let (_, exp) = mint_access(auth.tokens(), &demo.user, Duration::from_secs(86400)).unwrap();
    assert_eq!(exp, end);
}

#[actix_rt::test]
async fn a_revoked_familys_record_outlives_its_longest_token() {
    // Access tokens outliving refresh tokens: the family's record must
    // stay until the access token expires, or its revocation is lost.
    let store = Store::temporary().unwrap();
    let mut settings = crate::supervisor::tests::settings();
    settings.access_ttl = Duration::from_secs(7200);
    settings.refresh_ttl = Duration::from_secs(60);
    let auth = crate::supervisor::tests::boot_with(store.clone(), settings).auth;
    user(&store, "ann@example.com").await;
    let pair = auth
        .login("ann@example.com", "password-123", IP)
        .await
        .unwrap();
    auth.logout(&pair.refresh).await.unwrap();
    // A collection just after the refresh token's expiry.
    store.families().collect_expired(now_secs() + 120).unwrap();
    assert!(matches!(
        auth.verify_access(&pair.access).await,
        Err(AuthError::Revoked)
    ));
}

#[actix_rt::test]
async fn a_ticket_never_outlives_its_credential() {
    let (auth, store) = booted().await;
    let ann = user(&store, "ann@example.com").await;
    let grant = |credential_expires_at| TicketGrant {
        user_id: ann.id,
        family: None,
        credential_expires_at,
        api_key: None,
    };
    let ttl = Duration::from_secs(30);
    let late = auth
        .inner
        .tickets
        .issue(grant(Some(now_secs() - 1)), ttl)
        .unwrap();
    assert!(matches!(
        auth.consume_ticket(&late),
        Err(AuthError::Expired)
    ));
    let fine = auth
        .inner
        .tickets
        .issue(grant(Some(now_secs() + 60)), ttl)
        .unwrap();
    assert!(auth.consume_ticket(&fine).is_ok());

    // Nor is one issued for a credential past its expiry (verified
    // within the leeway).
    let mut principal = Principal {
        user: ann.clone(),
        via: Via::Ticket(grant(Some(now_secs() - 2))),
    };
    assert!(matches!(
        auth.issue_ticket(&principal),
        Err(AuthError::Expired)
    ));
    principal.via = Via::Ticket(grant(Some(now_secs() + 60)));
    assert!(auth.issue_ticket(&principal).is_ok());
}

#[actix_rt::test]
async fn recheck_sees_deleted_keys_revoked_families_and_disabled_users() {
    let (auth, store) = booted().await;
    let ann = user(&store, "ann@example.com").await;
    let (record, key) = auth.create_api_key(&ann, "k").await.unwrap();
    let by_key = auth.verify_api_key(&key).unwrap();
    let pair = auth
        .login("ann@example.com", "password-123", IP)
        .await
        .unwrap();
    let by_token = auth.verify_access(&pair.access).await.unwrap();
    let (ticket, _) = auth.issue_ticket(&by_key).unwrap();
    let by_ticket = auth.consume_ticket(&ticket).unwrap();
    for p in [&by_key, &by_token, &by_ticket] {
        assert!(auth.recheck(p).is_ok());
    }

    auth.delete_api_key(&ann, record.id).await.unwrap();
    assert!(matches!(auth.recheck(&by_key), Err(AuthError::Revoked)));
    assert!(matches!(auth.recheck(&by_ticket), Err(AuthError::Revoked)));
    assert!(auth.recheck(&by_token).is_ok());

    auth.logout(&pair.refresh).await.unwrap();
    assert!(matches!(auth.recheck(&by_token), Err(AuthError::Revoked)));

    let bob = user(&store, "bob@example.com").await;
    let (_, key) = auth.create_api_key(&bob, "k").await.unwrap();
    let by_key = auth.verify_api_key(&key).unwrap();
    store.users().set_active(bob.id, false).await.unwrap();
    assert!(matches!(
        auth.recheck(&by_key),
        Err(AuthError::AccountDisabled)
    ));
}

#[actix_rt::test]
async fn overlong_credentials_are_refused_before_anything_is_kept() {
    let (auth, store) = booted().await;
    user(&store, "ann@example.com").await;
    for _ in 0..100 {
        let email = format!("{}@example.com", "x".repeat(300));
        let err = auth.login(&email, "password-123", IP).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::BadRequest(m) if m.starts_with("email:")),
            "{err:?}"
        );
        let err = auth
            .login("ann@example.com", &"p".repeat(1025), IP)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, AuthError::BadRequest(m) if m.starts_with("password:")),
            "{err:?}"
        );
    }
    let limits = &auth.inner.limiters;
    assert!(limits.failures_by_ip.is_empty() && limits.failures_by_email.is_empty());
    // Under the limits they count as before.
    let err = auth.login("ann@example.com", "wrong-pass", IP).await;
    assert!(matches!(err, Err(AuthError::InvalidCredentials)));
    assert_eq!(limits.failures_by_email.len(), 1);
    // A successful login clears its email's failures (the client's
    // stay: one good account must not reset a guessing client).
    auth.login("ann@example.com", "password-123", IP)
        .await
        .unwrap();
    assert!(limits.failures_by_email.is_empty());
    assert_eq!(limits.failures_by_ip.len(), 1);
}

#[actix_rt::test]
async fn the_client_limit_is_checked_before_the_email_limit() {
    let store = Store::temporary().unwrap();
    let mut settings = crate::supervisor::tests::settings();
    settings.login_failures_per_ip = 3;
    let auth = crate::supervisor::tests::boot_with(store.clone(), settings).auth;
    for n in 0..3 {
        let err = auth
            .login(&format!("u{n}@example.com"), "wrong-pass", IP)
            .await;
        assert!(matches!(err, Err(AuthError::InvalidCredentials)));
    }
    // A client over its limit leaves no per-email entry for new emails.
    for n in 3..50 {
        let err = auth
            .login(&format!("u{n}@example.com"), "wrong-pass", IP)
            .await;
        assert!(matches!(err, Err(AuthError::RateLimited { .. })));
    }
    assert_eq!(auth.inner.limiters.failures_by_email.len(), 3);
}

#[actix_rt::test]
async fn the_sweep_deletes_expired_demo_users_only() {
    let (auth, store) = booted().await;
    let live = auth.demo(IP).await.unwrap().user;
    let expired = store
        .users()
        .create(NewUser {
            email: "demo-old@demo.invalid".into(),
            password_hash: String::new(),
            is_demo: true,
            demo_expires_at: Some(now_secs() - 1),
        })
        .await
        .unwrap();
    auth.actor().send(Sweep).await.unwrap();
    assert!(store.users().get(expired.id).unwrap().is_none());
    assert!(store.users().get(live.id).unwrap().is_some());
}

#[actix_rt::test]
async fn the_single_writer_creates_no_key_for_a_user_that_is_gone() {
    let (auth, store) = booted().await;
    let ann = user(&store, "ann@example.com").await;
    store.purge_user(ann.id).await.unwrap();
    assert!(matches!(
        auth.create_api_key(&ann, "late").await,
        Err(AuthError::UnknownUser)
    ));
    assert!(store.api_keys().list_for(ann.id).unwrap().is_empty());
}

#[actix_rt::test]
async fn identity_writes_through_the_actor_are_durable_and_ordered() {
    let (auth, store) = booted().await;
    // Many demo starts at once: each gets its own user and family, all
    // written by the one actor.
    let pairs = futures_util::future::join_all((0..20).map(|_| auth.demo(IP))).await;
    let mut users = std::collections::HashSet::new();
    for pair in pairs {
        let pair = pair.unwrap();
        assert!(users.insert(pair.user.id));
        let claims = auth.tokens().decode(&pair.refresh).unwrap();
        let family = store.families().get(claims.fam).unwrap().unwrap();
        assert_eq!(family.current_jti, claims.jti);
    }
}
