//! `/api/auth/…`: login, demo, refresh, logout, me, register, WebSocket
//! tickets and API keys (API.md §3). Never counted against quotas.

use std::net::{IpAddr, Ipv4Addr};

use actix_web::{web, HttpRequest, HttpResponse};
use palaver_actors::auth::{now_secs, AuthError, TokenPair};
use palaver_actors::password;
use palaver_storage::{ApiKey, User};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::{Authenticated, Json};
use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, UnsupportedMediaType,
};
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

/// An email and a password (login, register).
#[derive(Deserialize, ToSchema)]
pub struct Credentials {
    /// At most 254 bytes.
    #[schema(example = "ann@example.com")]
    email: String,
    /// At most 1 024 bytes; registering needs at least 8 characters.
    #[schema(example = "correct horse battery")]
    password: String,
}

/// A new account's email and password.
#[derive(Deserialize, ToSchema)]
pub struct Registration {
    /// At most 254 bytes; one `@`, a dot in the domain, no spaces or
    /// control characters.
    #[schema(
        example = "ann@example.com",
        pattern = r"^[^@\s\x00-\x1f\x7f-\x9f]+@[^@.\s\x00-\x1f\x7f-\x9f][^@\s\x00-\x1f\x7f-\x9f]*\.[^@\s\x00-\x1f\x7f-\x9f]*[^@.\s\x00-\x1f\x7f-\x9f]$"
    )]
    email: String,
    /// At least 8 characters, at most 1 024 bytes.
    #[schema(example = "correct horse battery", min_length = 8)]
    password: String,
}

/// A refresh token (refresh, logout).
#[derive(Deserialize, ToSchema)]
pub struct RefreshBody {
    refresh: String,
}

/// A new API key's name.
#[derive(Deserialize, ToSchema)]
pub struct ApiKeyBody {
    /// 1 to 100 characters, not all spaces.
    // Not white space only, as `str::trim` sees it (see `Question::text`).
    #[schema(
        example = "laptop",
        min_length = 1,
        max_length = 100,
        pattern = r"[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    name: String,
}

/// A user as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = User)]
pub struct UserView {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub is_demo: bool,
}

/// A fresh pair of tokens (refresh's answer; login and demo add to it).
#[derive(Serialize, ToSchema)]
pub struct Tokens {
    /// The access JWT.
    pub access: String,
    /// The refresh JWT (single use: refreshing spends it).
    pub refresh: String,
    /// Always `Bearer`.
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
}

impl From<&TokenPair> for Tokens {
    fn from(pair: &TokenPair) -> Self {
        Tokens {
            access: pair.access.clone(),
            refresh: pair.refresh.clone(),
            token_type: "Bearer",
            expires_in: pair.expires_in,
        }
    }
}

/// `POST /api/auth/login/`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Login {
    #[serde(flatten)]
    pub tokens: Tokens,
    /// Always false: demo users do not log in.
    pub is_demo: bool,
    pub user: UserView,
}

/// `POST /api/auth/demo/`'s answer: a demo user's tokens and quota.
#[derive(Serialize, ToSchema)]
pub struct Demo {
    #[serde(flatten)]
    pub tokens: Tokens,
    /// Always true.
    pub is_demo: bool,
    /// Counted requests the demo may make.
    pub request_limit: u32,
    /// Counted requests made (0: the demo is new).
    pub request_count: u32,
    /// When the demo ends (Unix seconds).
    pub expires_at: Option<u64>,
    pub user: UserView,
}

/// The caller's quota (`me`): counts and when the window resets or the demo
/// ends (Unix seconds).
#[derive(Serialize, ToSchema)]
pub struct MeQuota {
    pub request_count: u32,
    pub request_limit: u32,
    pub expires_at: u64,
}

/// `GET /api/auth/me/`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Me {
    #[schema(format = Uuid)]
    pub id: String,
    pub email: String,
    pub is_demo: bool,
    pub is_active: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
    /// Null for a user without a limit.
    pub quota: Option<MeQuota>,
    /// A user from another issuer (`[[auth.external]]`): which, and its id
    /// there; null for palaver's own users.
    pub external: Option<MeExternal>,
}

/// Where a user from another issuer comes from.
#[derive(Serialize, ToSchema)]
pub struct MeExternal {
    /// The `[[auth.external]]` entry's `name`.
    pub issuer: String,
    /// The user's id at that issuer (its user claim).
    pub id: String,
}

/// A WebSocket ticket: single use, `expires_in` seconds.
#[derive(Serialize, ToSchema)]
pub struct Ticket {
    pub ticket: String,
    pub expires_in: u64,
}

/// `POST /api/auth/register/`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub user: UserView,
}

/// An API key as listed (never the key itself).
#[derive(Serialize, ToSchema)]
#[schema(as = ApiKey)]
pub struct ApiKeyView {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub last_used_at: Option<String>,
}

/// A new API key: the only time `key` is shown.
#[derive(Serialize, ToSchema)]
pub struct NewApiKey {
    #[schema(format = Uuid)]
    pub id: String,
    pub name: String,
    /// The key, for `X-API-Key`; stored only as a hash.
    pub key: String,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// `GET /api/auth/api-keys/`'s answer.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub api_keys: Vec<ApiKeyView>,
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

impl From<&ApiKey> for ApiKeyView {
    fn from(key: &ApiKey) -> Self {
        ApiKeyView {
            id: key.id.hyphenated().to_string(),
            name: key.name.clone(),
            created_at: rfc3339_millis(key.created_at),
            last_used_at: key.last_used_at.map(rfc3339_millis),
        }
    }
}

/// The client's IP: the peer address (palaver does not trust forwarding
/// headers; see docs/DECISIONS.md).
fn client_ip(req: &HttpRequest) -> IpAddr {
    req.peer_addr()
        .map(|a| a.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    // Token responses must never be cached (RFC 6749 §5.1).
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}

/// Logs in with an email and a password.
#[utoipa::path(post, operation_id = "login", path = "/api/auth/login/", tag = "auth", request_body = Credentials,
    responses(
        (status = 200, description = "Signed in", body = Login),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType,
        TooManyRequests, ServiceUnavailable,
    ))]
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
    Ok(no_store(HttpResponse::Ok()).json(Login {
        tokens: Tokens::from(&pair),
        is_demo: false,
        user: UserView::from(&pair.user),
    }))
}

/// Creates a demo user and signs it in. `{}` or no body at all: the body is
/// not read.
#[utoipa::path(post, operation_id = "demo", path = "/api/auth/demo/", tag = "auth",
    responses(
        (status = 200, description = "A new demo user's tokens", body = Demo),
        Forbidden, TooManyRequests, ServiceUnavailable,
    ))]
async fn demo(state: web::Data<AppState>, req: HttpRequest) -> Result<HttpResponse, ApiError> {
    let pair = state.auth.demo(client_ip(&req)).await?;
    Ok(no_store(HttpResponse::Ok()).json(Demo {
        tokens: Tokens::from(&pair),
        is_demo: true,
        request_limit: state.config.demo.request_limit,
        request_count: 0,
        expires_at: pair.user.demo_expires_at,
        user: UserView::from(&pair.user),
    }))
}

/// Spends a refresh token for a new pair of the same family. Presenting a
/// spent one again revokes the whole family.
#[utoipa::path(post, operation_id = "refresh", path = "/api/auth/refresh/", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 200, description = "A new pair", body = Tokens),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType,
        ServiceUnavailable,
    ))]
async fn refresh(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    let pair = state.auth.refresh(&body.refresh).await?;
    Ok(no_store(HttpResponse::Ok()).json(Tokens::from(&pair)))
}

/// Revokes the refresh token's family and closes its sockets (4001).
#[utoipa::path(post, operation_id = "logout", path = "/api/auth/logout/", tag = "auth", request_body = RefreshBody,
    responses(
        (status = 204, description = "Signed out"),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType,
        ServiceUnavailable,
    ))]
async fn logout(
    state: web::Data<AppState>,
    body: Json<RefreshBody>,
) -> Result<HttpResponse, ApiError> {
    state.auth.logout(&body.refresh).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The caller, and their quota if they have one.
#[utoipa::path(get, operation_id = "me", path = "/api/auth/me/", tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller", body = Me),
        Unauthorized, Forbidden, ServiceUnavailable,
    ))]
async fn me(state: web::Data<AppState>, who: Authenticated) -> Result<HttpResponse, ApiError> {
    let user = &who.0.user;
    let quota = match state.quota_policy(user) {
        Some(policy) => {
            let standing = state.quotas.peek(user.id, policy, now_secs())?;
            // A demo's quota ends with the demo; a regular user's window resets.
            let expires_at = user
                .demo_expires_at
                .unwrap_or_else(|| now_secs() + standing.reset_in);
            Some(MeQuota {
                request_count: standing.count,
                request_limit: standing.limit(),
                expires_at,
            })
        }
        None => None,
    };
    Ok(HttpResponse::Ok().json(Me {
        id: user.id.to_string(),
        email: user.email.clone(),
        is_demo: user.is_demo,
        is_active: user.is_active,
        created_at: rfc3339_millis(user.created_at),
        quota,
        external: user.external.as_ref().map(|e| MeExternal {
            issuer: e.issuer.clone(),
            id: e.id.clone(),
        }),
    }))
}

/// A single-use ticket for `?ticket=` on a WebSocket URL, bound to the
/// caller and their token family.
#[utoipa::path(post, operation_id = "ws_ticket", path = "/api/auth/ws-ticket/", tag = "auth",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A ticket", body = Ticket),
        Unauthorized, Forbidden, ServiceUnavailable,
    ))]
async fn ws_ticket(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let (ticket, ttl) = state.auth.issue_ticket(&who.0)?;
    Ok(no_store(HttpResponse::Ok()).json(Ticket {
        ticket,
        expires_in: ttl.as_secs(),
    }))
}

/// Creates an API key; the answer is the only time it is shown. Demo users:
/// 403.
#[utoipa::path(post, operation_id = "create_api_key", path = "/api/auth/api-keys/", tag = "api keys", request_body = ApiKeyBody,
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "The new key", body = NewApiKey),
        BadRequest, Unauthorized, Forbidden, PayloadTooLarge, UnsupportedMediaType,
        ServiceUnavailable,
    ))]
async fn create_api_key(
    state: web::Data<AppState>,
    who: Authenticated,
    body: Json<ApiKeyBody>,
) -> Result<HttpResponse, ApiError> {
    let (record, key) = state.auth.create_api_key(&who.0.user, &body.name).await?;
    let view = ApiKeyView::from(&record);
    Ok(no_store(HttpResponse::Created()).json(NewApiKey {
        id: view.id,
        name: view.name,
        key,
        created_at: view.created_at,
    }))
}

/// The caller's API keys. Demo users: 403.
#[utoipa::path(get, operation_id = "list_api_keys", path = "/api/auth/api-keys/", tag = "api keys",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's keys", body = ApiKeyList),
        Unauthorized, Forbidden, ServiceUnavailable,
    ))]
async fn list_api_keys(
    state: web::Data<AppState>,
    who: Authenticated,
) -> Result<HttpResponse, ApiError> {
    if who.0.user.is_demo {
        return Err(AuthError::DemoForbidden.into());
    }
    let keys = state.store.api_keys().list_for(who.0.user.id)?;
    Ok(HttpResponse::Ok().json(ApiKeyList {
        api_keys: keys.iter().map(ApiKeyView::from).collect(),
    }))
}

/// Deletes one of the caller's API keys; sockets opened with it close
/// (4001). Demo users: 403.
#[utoipa::path(delete, operation_id = "delete_api_key", path = "/api/auth/api-keys/{id}/", tag = "api keys",
    params(("id" = Uuid, Path, description = "The key's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    ))]
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

/// Creates an account (when `auth.allow_registration` is true).
#[utoipa::path(post, operation_id = "register", path = "/api/auth/register/", tag = "auth", request_body = Registration,
    responses(
        (status = 201, description = "Registered", body = Registered),
        BadRequest, Forbidden, Conflict, PayloadTooLarge, UnsupportedMediaType,
        TooManyRequests, ServiceUnavailable,
    ))]
async fn register(
    state: web::Data<AppState>,
    req: HttpRequest,
    body: Json<Registration>,
) -> Result<HttpResponse, ApiError> {
    if !state.config.auth.allow_registration {
        return Err(ApiError::RegistrationClosed);
    }
    let Registration { email, password } = body.into_inner();
    palaver_actors::auth::check_lengths(&email, &password)?;
    validate_email(&email)?;
    password::validate(&password).map_err(|e| ApiError::invalid(format!("password: {e}")))?;
    let user = state
        .auth
        .register(&email, &password, client_ip(&req))
        .await?;
    Ok(HttpResponse::Created().json(Registered {
        user: UserView::from(&user),
    }))
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
