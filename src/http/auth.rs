//! `/api/auth/…`: login, demo, refresh, logout, me, register, WebSocket
//! tickets and API keys (API.md §3). Never counted against quotas.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::{web, HttpRequest, HttpResponse};
use palaver_actors::auth::{now_secs, AuthError, TokenPair};
use palaver_actors::password;
use palaver_storage::{ApiKey, User};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::extract::{Authenticated, Json};
use super::ApiError;
use crate::app::AppState;
use palaver_actors::protocol::rfc3339_millis;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/auth/login").post(login))
        .service(web::resource("/api/auth/demo").post(demo))
        .service(web::resource("/api/auth/refresh").post(refresh))
        .service(web::resource("/api/auth/logout").post(logout))
        .service(web::resource("/api/auth/me").get(me))
        .service(web::resource("/api/auth/register").post(register))
        .service(web::resource("/api/auth/ws-ticket").post(ws_ticket))
        .service(
            web::resource("/api/auth/api-keys")
                .post(create_api_key)
                .get(list_api_keys),
        )
        .service(web::resource("/api/auth/api-keys/{id}").delete(delete_api_key));
}

#[derive(Deserialize)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
struct RefreshBody {
    refresh: String,
}

#[derive(Deserialize)]
struct ApiKeyBody {
    name: String,
}

/// A user as the API shows it.
#[derive(Serialize)]
pub struct UserView {
    pub id: String,
    pub email: String,
    pub is_demo: bool,
}

impl From<&User> for UserView {
    fn from(u: &User) -> Self {
        UserView {
            id: u.id.to_string(),
            email: u.email.clone(),
            is_demo: u.is_demo,
        }
    }
}

fn api_key_view(key: &ApiKey) -> serde_json::Value {
    json!({
        "id": key.id.hyphenated().to_string(),
        "name": key.name,
        "created_at": rfc3339_millis(key.created_at),
        "last_used_at": key.last_used_at.map(rfc3339_millis),
    })
}

/// The client's IP: the peer address (palaver does not trust forwarding
/// headers; see docs/DECISIONS.md).
fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn token_body(pair: &TokenPair) -> serde_json::Map<String, serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("access".into(), json!(pair.access));
    body.insert("refresh".into(), json!(pair.refresh));
    body.insert("token_type".into(), json!("Bearer"));
    body.insert("expires_in".into(), json!(pair.expires_in));
    body
}

fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    // Token responses must never be cached (RFC 6749 §5.1).
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}

async fn login(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    let pair = state
        .auth
        .login(&body.email, &body.password, client_ip(&req))
        .await?;
    tracing::info!(user_id = %pair.user.id, "login");
    let mut out = token_body(&pair);
    out.insert("is_demo".into(), json!(false));
    out.insert("user".into(), json!(UserView::from(&pair.user)));
    Ok(no_store(HttpResponse::Ok()).json(out))
}

/// `{}` or no body at all: the body is not read.
async fn demo(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let pair = state.auth.demo(client_ip(&req)).await?;
    let mut out = token_body(&pair);
    out.insert("is_demo".into(), json!(true));
    out.insert(
        "request_limit".into(),
        json!(state.config.demo.request_limit),
    );
    out.insert("request_count".into(), json!(0));
    out.insert("expires_at".into(), json!(pair.user.demo_expires_at));
    out.insert("user".into(), json!(UserView::from(&pair.user)));
    Ok(no_store(HttpResponse::Ok()).json(out))
}

async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let pair = state.auth.refresh(&body.refresh).await?;
    Ok(no_store(HttpResponse::Ok()).json(token_body(&pair)))
}

async fn logout(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&body.refresh).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn me(state: web::Data<AppState>, who: Authenticated) -> Result<HttpResponse, ApiError> {
    let user = &who.0.user;
    let quota = match state.quota_policy(user) {
        Some(policy) => {
            let standing = state.quotas.peek(user.id, policy, now_secs())?;
            // A demo's quota ends with the demo; a regular user's window resets.
            let expires_at = user
                .demo_expires_at
                .unwrap_or_else(|| now_secs() + standing.reset_in);
            json!({
                "request_count": standing.count,
                "request_limit": standing.limit(),
                "expires_at": expires_at,
            })
        }
        None => serde_json::Value::Null,
    };
    Ok(HttpResponse::Ok().json(json!({
        "id": user.id.to_string(),
        "email": user.email,
        "is_demo": user.is_demo,
        "is_active": user.is_active,
        "created_at": rfc3339_millis(user.created_at),
        "quota": quota,
        // A user from another issuer (`[[auth.external]]`): which, and its
        // id there; `null` for palaver's own users.
        "external": user.external.as_ref().map(|e| json!({"issuer": e.issuer, "id": e.id})),
    })))
}

async fn ws_ticket(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let (ticket, ttl) = state.auth.issue_ticket(&who.0)?;
    Ok(no_store(HttpResponse::Ok()).json(json!({"ticket": ticket, "expires_in": ttl.as_secs()})))
}

async fn create_api_key(
    state: web::Data<AppState>,
    who: Authenticated,
    body: Json<ApiKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let (record, key) = state.auth.create_api_key(&who.0.user, &body.name).await?;
    let mut view = api_key_view(&record);
    view["key"] = json!(key);
    view.as_object_mut().map(|o| o.remove("last_used_at"));
    Ok(no_store(HttpResponse::Created()).json(view))
}

async fn list_api_keys(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    if who.0.user.is_demo {
        return Err(AuthError::DemoForbidden.into());
    }
    let keys = state.store.api_keys().list_for(who.0.user.id)?;
    let keys: Vec<_> = keys.iter().map(api_key_view).collect();
    Ok(HttpResponse::Ok().json(json!({ "api_keys": keys })))
}

async fn delete_api_key(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    if who.0.user.is_demo {
        return Err(AuthError::DemoForbidden.into());
    }
    let id = Uuid::parse_str(&path).map_err(|_| ApiError::NotFound)?;
    state.auth.delete_api_key(&who.0.user, id).await?;
    // Sockets opened with the key (or a ticket it asked for) go with it.
    state.sessions.connections.close_api_key(
        who.0.user.id,
        id,
        palaver_actors::protocol::Close::ApiKeyDeleted,
    );
    Ok(HttpResponse::NoContent().finish())
}

/// A syntactic check, enough to catch typos and garbage: one `@`, something
/// on both sides, a dot in the domain, no spaces or control characters.
pub fn validate_email(email: &str) -> Result<(), ApiError> {
    let email = email.trim();
    let valid = email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && match email.split_once('@') {
            Some((local, domain)) => {
                !local.is_empty()
                    && !domain.contains('@')
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
            }
            None => false,
        };
    if valid {
        Ok(())
    } else {
        Err(ApiError::invalid("email: not a valid email address"))
    }
}

async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<Credentials>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.allow_registration {
        return Err(ApiError::RegistrationClosed);
    }
    let Credentials { email, password } = body.into_inner();
    palaver_actors::auth::check_lengths(&email, &password)?;
    validate_email(&email)?;
    password::validate(&password).map_err(|e| ApiError::invalid(format!("password: {e}")))?;
    let user = state
        .auth
        .register(&email, &password, client_ip(&req))
        .await?;
    Ok(HttpResponse::Created().json(json!({ "user": UserView::from(&user) })))
}

#[cfg(test)]
mod tests {
    use super::validate_email;

    #[test]
    fn email_validation() {
        for ok in ["a@b.co", "Ann.Lee+x@example.com", " pad@example.org "] {
            assert!(validate_email(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "no-at",
            "@example.com",
            "a@",
            "a@b",
            "a@@b.com",
            "a b@c.com",
            "a@.com",
            "a@com.",
        ] {
            assert!(validate_email(bad).is_err(), "{bad}");
        }
    }
}
