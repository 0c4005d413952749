//! Sources: the checks of `[[auth.external]]` entries, routing by `iss`,
//! one source's verification, JWKS parsing; and, through a booted `Auth`,
//! provisioning and the refusals that need storage.

use std::time::Duration;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use super::jwks::KeySet;
use super::*;
use crate::auth::{now_secs, Auth, AuthError, Via};

const DJANGO_SECRET: &str = "django-insecure-0123456789abcdefghijklmnopqrstuvwxyz";
const OWN_SECRET: &[u8] = &[9; 64];

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/../tests/fixtures/jwt/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// An entry as a Django project with simplejwt's defaults needs it.
fn django() -> ExternalSettings {
    ExternalSettings {
        name: "django".into(),
        issuer: String::new(),
        audience: None,
        algorithms: vec![Algorithm::HS256],
        key: ExternalKey::Secret(DJANGO_SECRET.as_bytes().to_vec()),
        user_claim: "user_id".into(),
        token_type_claim: Some("token_type".into()),
        demo_claim: None,
        leeway_seconds: 5,
    }
}

fn pem_entry() -> ExternalSettings {
    ExternalSettings {
        name: "idp".into(),
        issuer: "https://idp.example.com/realms/main".into(),
        audience: Some("palaver".into()),
        algorithms: vec![Algorithm::RS256],
        key: ExternalKey::PublicKey {
            path: "rsa-a.pub.pem".into(),
            pem: fixture("rsa-a.pub.pem"),
        },
        user_claim: "sub".into(),
        token_type_claim: None,
        demo_claim: Some("demo".into()),
        leeway_seconds: 5,
    }
}

fn own_keys() -> KeySource {
    KeySource::Hs256 {
        secret: OWN_SECRET.to_vec(),
        previous: vec![b"a-retired-secret-a-retired-secret-0000".to_vec()],
    }
}

fn sources(entries: &[ExternalSettings]) -> Result<Sources, SourceError> {
    Sources::new(entries, &own_keys(), "palaver")
}

fn refusal(entries: &[ExternalSettings]) -> String {
    match sources(entries) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("accepted an unworkable entry"),
    }
}

/// A simplejwt access token: HS256, `token_type`, `jti`, `user_id`, `exp`,
/// `iat`, no `iss`.
fn simplejwt(claims: Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn access_claims(user_id: Value) -> Value {
    let now = now_secs();
    json!({"token_type": "access", "exp": now + 300, "iat": now,
           "jti": "0b1c5e4b0f8a4bbd8f1b5c0a7e6d5c4b", "user_id": user_id})
}

fn rs256(claims: &Value, kid: Option<&str>, key: &str) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    encode(
        &header,
        claims,
        &EncodingKey::from_rsa_pem(&fixture(key)).unwrap(),
    )
    .unwrap()
}

fn verify(source: &Source, token: &str) -> Result<ExternalClaims, TokenError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid("header"))?;
    source.validation(header.alg)?;
    let kid = header.kid.as_deref();
    let key = source
        .key_now(kid, header.alg)
        .ok_or(TokenError::Invalid("unknown key id"))?;
    source.verify(token, kid, header.alg, &key)
}

fn external<'a>(sources: &'a Sources, token: &str) -> &'a Source {
    match sources.route(token).unwrap() {
        Route::External(source) => source,
        Route::Own => panic!("routed to palaver's own verification"),
    }
}

#[test]
fn entries_that_cannot_work_are_refused_by_name() {
    let named = |entries: &[ExternalSettings], needle: &str| {
        let refused = refusal(entries);
        assert!(refused.contains(needle), "{needle}: {refused}");
    };
    let mut bad_name = django();
    bad_name.name = "Django!".into();
    named(&[bad_name], "#1");
    let mut long = django();
    long.name = "x".repeat(33);
    named(&[long], "1–32");
    let mut twin = pem_entry();
    twin.name = "django".into();
    named(&[django(), twin], "same name");

    let mut second_blank = pem_entry();
    second_blank.issuer = String::new();
    named(&[django(), second_blank], "at most one");
    let mut same_issuer = pem_entry();
    same_issuer.name = "idp2".into();
    named(&[pem_entry(), same_issuer], "another entry has issuer");
    let mut own_issuer = pem_entry();
    own_issuer.issuer = "palaver".into();
    named(&[own_issuer], "palaver's own");

    let mut short = django();
    short.key = ExternalKey::Secret(b"too-short".to_vec());
    named(&[short], "at least 32 bytes");
    let mut ours = django();
    ours.key = ExternalKey::Secret(OWN_SECRET.to_vec());
    named(&[ours], "\"django\": secret is palaver's own");
    let mut retired = django();
    retired.key = ExternalKey::Secret(b"a-retired-secret-a-retired-secret-0000".to_vec());
    named(&[retired], "palaver's own");
    let mut shared = django();
    shared.name = "flask".into();
    shared.issuer = "flask".into();
    named(&[django(), shared], "also \"django\"'s");

    let mut hs_with_pem = pem_entry();
    hs_with_pem.algorithms = vec![Algorithm::HS256];
    named(&[hs_with_pem], "never HS*");
    let mut mixed = pem_entry();
    mixed.algorithms = vec![Algorithm::RS256, Algorithm::ES256];
    named(&[mixed], "one family");
    let mut rs_with_secret = django();
    rs_with_secret.algorithms = vec![Algorithm::RS256];
    named(&[rs_with_secret], "only HS256");
    let mut none = django();
    none.algorithms = vec![];
    named(&[none], "at least one");
    let mut private = pem_entry();
    private.key = ExternalKey::PublicKey {
        path: "rsa-a.key.pem".into(),
        pem: fixture("rsa-a.key.pem"),
    };
    named(&[private], "private key");
    let mut wrong_kind = pem_entry();
    wrong_kind.key = ExternalKey::PublicKey {
        path: "ec-p256.pub.pem".into(),
        pem: fixture("ec-p256.pub.pem"),
    };
    named(&[wrong_kind], "not a Rsa public key");
    let mut garbage = pem_entry();
    garbage.key = ExternalKey::PublicKey {
        path: "x.pem".into(),
        pem: b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n".to_vec(),
    };
    named(&[garbage], "x.pem");
    let mut jwks_hs = pem_entry();
    jwks_hs.algorithms = vec![Algorithm::HS256];
    jwks_hs.key = ExternalKey::Jwks {
        url: "https://idp.example.com/certs".parse().unwrap(),
        cache: Duration::from_secs(3600),
    };
    named(&[jwks_hs], "HS* needs a secret");
    let mut no_user = django();
    no_user.user_claim = String::new();
    named(&[no_user], "user_claim");

    assert!(sources(&[django(), pem_entry()]).is_ok());
    // With RS256 palaver has no secret to collide with.
    let rs = KeySource::Rs256 {
        private_pem: vec![],
        public_pem: vec![],
    };
    assert!(Sources::new(&[django()], &rs, "palaver").is_ok());
}

#[test]
fn a_token_goes_to_the_source_its_iss_names_and_nowhere_else() {
    let all = sources(&[django(), pem_entry()]).unwrap();
    let sign = |claims: Value| simplejwt(claims, DJANGO_SECRET);
    let route = |token: &str| match all.route(token) {
        Ok(Route::Own) => "own".to_owned(),
        Ok(Route::External(s)) => s.name().to_string(),
        Err(_) => "refused".to_owned(),
    };
    assert_eq!(route(&sign(json!({"iss": "palaver"}))), "own");
    assert_eq!(route(&sign(json!({"user_id": 1}))), "django");
    assert_eq!(route(&sign(json!({"iss": null}))), "django");
    assert_eq!(
        route(&sign(json!({"iss": "https://idp.example.com/realms/main"}))),
        "idp"
    );
    assert_eq!(route(&sign(json!({"iss": "someone-else"}))), "refused");
    assert_eq!(route(&sign(json!({"iss": ""}))), "refused");
    // jsonwebtoken would accept an array naming the issuer among others.
    assert_eq!(route(&sign(json!({"iss": ["palaver", "x"]}))), "refused");
    assert_eq!(route(&sign(json!({"iss": 7}))), "refused");
    assert_eq!(route("not-a-token"), "refused");
    assert_eq!(route("a.%%%.c"), "refused");
    // Two `iss`: no parser may pick another than the router did.
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256"}"#);
    let payload = URL_SAFE_NO_PAD.encode(br#"{"iss":"palaver","iss":"someone"}"#);
    assert_eq!(route(&format!("{header}.{payload}.sig")), "refused");

    // Without a source for tokens lacking `iss`, they have nowhere to go.
    let only_idp = sources(&[pem_entry()]).unwrap();
    assert!(only_idp.route(&sign(json!({"user_id": 1}))).is_err());
    // With no entries, nothing is read: palaver's own verification decides.
    let none = sources(&[]).unwrap();
    assert!(matches!(none.route("garbage"), Ok(Route::Own)));
}

#[test]
fn a_simplejwt_access_token_verifies_and_everything_else_does_not() {
    let all = sources(&[django()]).unwrap();
    let token = simplejwt(access_claims(json!(42)), DJANGO_SECRET);
    let claims = verify(external(&all, &token), &token).unwrap();
    assert_eq!(claims.id, "42");
    assert!(!claims.is_demo);
    // simplejwt 5 writes the id as a string: the same user.
    let token = simplejwt(access_claims(json!("42")), DJANGO_SECRET);
    assert_eq!(verify(external(&all, &token), &token).unwrap().id, "42");

    let refused = |claims: Value, secret: &str| {
        let token = simplejwt(claims, secret);
        verify(external(&all, &token), &token).unwrap_err()
    };
    let mut refresh = access_claims(json!(42));
    refresh["token_type"] = json!("refresh");
    assert_eq!(
        refused(refresh, DJANGO_SECRET),
        TokenError::Invalid("not an access token")
    );
    let mut untyped = access_claims(json!(42));
    untyped.as_object_mut().unwrap().remove("token_type");
    assert_eq!(
        refused(untyped, DJANGO_SECRET),
        TokenError::Invalid("not an access token")
    );
    let mut expired = access_claims(json!(42));
    expired["exp"] = json!(now_secs() - 60);
    assert_eq!(refused(expired, DJANGO_SECRET), TokenError::Expired);
    let mut no_exp = access_claims(json!(42));
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        refused(no_exp, DJANGO_SECRET),
        TokenError::Invalid("missing claim")
    );
    let mut early = access_claims(json!(42));
    early["nbf"] = json!(now_secs() + 600);
    assert_eq!(
        refused(early, DJANGO_SECRET),
        TokenError::Invalid("not valid yet")
    );
    for bad_user in [
        json!(""),
        json!(1.5),
        json!(true),
        json!(null),
        json!({"id": 1}),
    ] {
        assert!(
            matches!(
                refused(access_claims(bad_user.clone()), DJANGO_SECRET),
                TokenError::Invalid(_)
            ),
            "{bad_user}"
        );
    }
    assert_eq!(
        refused(
            access_claims(json!("x".repeat(MAX_EXTERNAL_ID_BYTES + 1))),
            DJANGO_SECRET
        ),
        TokenError::Invalid("the user claim is missing or not a non-empty string or an integer")
    );
    assert_eq!(
        refused(
            access_claims(json!(42)),
            "another-secret-another-secret-another-secret"
        ),
        TokenError::Invalid("bad signature")
    );
    // Another HMAC algorithm than the pinned one, even with the right secret.
    let hs512 = encode(
        &Header::new(Algorithm::HS512),
        &access_claims(json!(42)),
        &EncodingKey::from_secret(DJANGO_SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        verify(external(&all, &hs512), &hs512).unwrap_err(),
        TokenError::Invalid("algorithm not allowed")
    );
}

#[test]
fn a_pem_source_checks_issuer_audience_and_the_demo_claim() {
    let all = sources(&[pem_entry()]).unwrap();
    let now = now_secs();
    let good = json!({"iss": "https://idp.example.com/realms/main", "aud": "palaver",
                      "sub": "f3c1", "exp": now + 300, "demo": true});
    let token = rs256(&good, Some("whatever"), "rsa-a.key.pem");
    let claims = verify(external(&all, &token), &token).unwrap();
    assert_eq!((claims.id.as_str(), claims.is_demo), ("f3c1", true));

    let mut no_aud = good.clone();
    no_aud.as_object_mut().unwrap().remove("aud");
    let token = rs256(&no_aud, None, "rsa-a.key.pem");
    assert_eq!(
        verify(external(&all, &token), &token).unwrap_err(),
        TokenError::Invalid("missing claim")
    );
    let mut other_aud = good.clone();
    other_aud["aud"] = json!("account");
    let token = rs256(&other_aud, None, "rsa-a.key.pem");
    assert_eq!(
        verify(external(&all, &token), &token).unwrap_err(),
        TokenError::Invalid("wrong audience")
    );
    let mut odd_demo = good.clone();
    odd_demo["demo"] = json!("yes");
    let token = rs256(&odd_demo, None, "rsa-a.key.pem");
    assert!(verify(external(&all, &token), &token).is_err());
    // Another RSA key than the configured one.
    let token = rs256(&good, None, "rsa-b.key.pem");
    assert_eq!(
        verify(external(&all, &token), &token).unwrap_err(),
        TokenError::Invalid("bad signature")
    );
    // Key confusion: HS256 "signed" with the public key's PEM bytes.
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &good,
        &EncodingKey::from_secret(&fixture("rsa-a.pub.pem")),
    )
    .unwrap();
    assert_eq!(
        verify(external(&all, &confused), &confused).unwrap_err(),
        TokenError::Invalid("algorithm not allowed")
    );
}

#[test]
fn a_jwks_keeps_only_signature_keys_for_the_entry_algorithms() {
    let jwk = |name: &str| -> Value { serde_json::from_slice(&fixture(name)).unwrap() };
    let mut enc = jwk("rsa-c.jwk.json");
    enc["use"] = json!("enc");
    enc["kid"] = json!("enc");
    let mut p521 = jwk("ec-p256.jwk.json");
    p521["crv"] = json!("P-521");
    let document = json!({"keys": [
        jwk("rsa-a.jwk.json"),
        jwk("rsa-b.jwk.json"),
        jwk("ec-p256.jwk.json"),
        enc,
        p521,
        {"kty": "oct", "k": "c2VjcmV0", "kid": "oct"},
        {"kty": "weird", "kid": "weird"},
        {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": "AQAB", "e": "AQAB"},
    ]});
    let body = serde_json::to_vec(&document).unwrap();
    let rsa_only = KeySet::parse(&body, &[Algorithm::RS256]).unwrap();
    assert_eq!(rsa_only.len(), 2);
    assert!(rsa_only.find(Some("rsa-a"), Algorithm::RS256).is_some());
    assert!(rsa_only.find(Some("rsa-b"), Algorithm::RS256).is_some());
    assert!(rsa_only.find(Some("enc"), Algorithm::RS256).is_none());
    assert!(rsa_only.find(Some("ec-p256"), Algorithm::ES256).is_none());
    // Two keys fit: a token without `kid` names neither.
    assert!(rsa_only.find(None, Algorithm::RS256).is_none());
    // A key declared RS256 verifies nothing else.
    assert!(rsa_only.find(Some("rsa-a"), Algorithm::RS512).is_none());

    let both = KeySet::parse(&body, &[Algorithm::RS256, Algorithm::ES256]).unwrap();
    assert_eq!(both.len(), 3);
    assert!(both.find(Some("ec-p256"), Algorithm::ES256).is_some());
    assert!(both.find(Some("ec-p256"), Algorithm::ES384).is_none());
    let one = serde_json::to_vec(&json!({"keys": [jwk("rsa-a.jwk.json")]})).unwrap();
    let single = KeySet::parse(&one, &[Algorithm::RS256]).unwrap();
    assert!(single.find(None, Algorithm::RS256).is_some());

    assert!(KeySet::parse(b"<html>", &[Algorithm::RS256]).is_err());
    assert!(KeySet::parse(b"{\"keys\": 5}", &[Algorithm::RS256]).is_err());
}

async fn booted(external: Vec<ExternalSettings>) -> (Auth, palaver_storage::Store) {
    let store = palaver_storage::Store::temporary().unwrap();
    let mut settings = crate::supervisor::tests::settings();
    settings.external = external;
    let booted = crate::supervisor::tests::boot_with(store.clone(), settings);
    (booted.auth, store)
}

#[actix_rt::test]
async fn the_first_token_provisions_a_user_and_later_ones_find_it() {
    let (auth, store) = booted(vec![django()]).await;
    let token = simplejwt(access_claims(json!(42)), DJANGO_SECRET);
    let first = auth.verify_access(&token).await.unwrap();
    assert!(matches!(&first.via, Via::External(g) if &*g.source == "django"));
    assert_eq!(first.family(), None);
    assert_eq!(
        first.user.external.as_ref().map(ToString::to_string),
        Some("django:42".into())
    );
    assert!(!first.user.is_demo && first.user.demo_expires_at.is_none());
    let again = auth
        .verify_access(&simplejwt(access_claims(json!("42")), DJANGO_SECRET))
        .await
        .unwrap();
    assert_eq!(again.user.id, first.user.id);
    assert_eq!(store.users().count(), 1);

    // Tickets work as for palaver's own tokens, bound to the token's expiry.
    let (ticket, _) = auth.issue_ticket(&first).unwrap();
    let admitted = auth.consume_ticket(&ticket).unwrap();
    assert_eq!(admitted.user.id, first.user.id);
    assert_eq!(admitted.expires_at(), first.expires_at());

    // Refresh and logout are the issuer's business.
    assert!(matches!(
        auth.refresh(&token).await,
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        auth.logout(&token).await,
        Err(AuthError::Invalid(_))
    ));

    store.disable_user(first.user.id).await.unwrap();
    assert!(matches!(
        auth.verify_access(&token).await,
        Err(AuthError::AccountDisabled)
    ));
    assert_eq!(
        store.users().count(),
        1,
        "a disabled user is not re-provisioned"
    );
}

#[actix_rt::test]
async fn concurrent_first_tokens_provision_one_user() {
    let (auth, store) = booted(vec![django()]).await;
    let token = simplejwt(access_claims(json!(7)), DJANGO_SECRET);
    let attempts = (0..16).map(|_| auth.verify_access(&token));
    let principals = futures_util::future::join_all(attempts).await;
    let ids: std::collections::HashSet<_> =
        principals.into_iter().map(|p| p.unwrap().user.id).collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(store.users().count(), 1);
}

#[actix_rt::test]
async fn a_demo_claim_makes_a_demo_user_whose_credential_ends_with_the_demo() {
    let mut entry = django();
    entry.demo_claim = Some("is_demo".into());
    let (auth, _store) = booted(vec![entry]).await;
    let mut claims = access_claims(json!(9));
    claims["is_demo"] = json!(true);
    claims["exp"] = json!(now_secs() + 86_400);
    let principal = auth
        .verify_access(&simplejwt(claims, DJANGO_SECRET))
        .await
        .unwrap();
    assert!(principal.user.is_demo);
    let end = principal.user.demo_expires_at.unwrap();
    assert!(end <= now_secs() + 900);
    assert_eq!(principal.expires_at(), Some(end));
}
