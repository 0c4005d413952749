//! `GET /ws/sessions/{id}/`: the WebSocket handshake (API.md §7).
//!
//! Everything is decided while the upgrade request is handled, before the
//! handshake completes: the `Origin`, the credential (ticket, then
//! `Sec-WebSocket-Protocol: palaver.v1, bearer.<jwt>`, then `?token=`, then
//! `Authorization`, then `?api_key=` / `X-API-Key`: the first present one
//! decides), the session's ownership and the per-user connection limit. A
//! refused connection gets no actor and none of its frames is read: with
//! `ws.reject_with = "close"` the handshake completes only to carry the close
//! code; with `"http"` it is answered 401/403/404/429 without upgrading.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use palaver_actors::auth::{AuthError, Principal};
use palaver_actors::protocol::Close;
use palaver_actors::socket::{self, Incoming, Out, Outbox};
use palaver_actors::supervisor::{SpawnRefused, Supervisor};
use palaver_actors::telemetry;
use serde::Deserialize;

use super::extract::{api_key_header, bearer_header, missing};
use super::sessions::owned_session;
use super::ApiError;
use crate::app::AppState;
use crate::config::RejectWith;

/// The subprotocol palaver speaks.
pub const SUBPROTOCOL: &str = "palaver.v1";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/ws/sessions/{id}").get(connect));
}

/// What the handshake's query string may carry (read once).
#[derive(Default, Deserialize)]
struct HandshakeQuery {
    ticket: Option<String>,
    token: Option<String>,
    api_key: Option<String>,
    /// `?resume=<message_id>:<seq>`: resume a reply right after `connected`.
    resume: Option<String>,
}

impl HandshakeQuery {
    /// The query of `req`; an unreadable one carries nothing.
    fn of(req: &HttpRequest) -> HandshakeQuery {
        web::Query::<HandshakeQuery>::from_query(req.query_string())
            .map(web::Query::into_inner)
            .unwrap_or_default()
    }
}

/// Why a handshake is refused.
enum Refusal {
    Origin,
    Auth(AuthError),
    NotFound,
    TooMany,
}

impl Refusal {
    /// The `outcome` label of `palaver_ws_handshakes_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Refusal::Origin => "origin_rejected",
            Refusal::Auth(AuthError::AccountDisabled | AuthError::UnknownUser) => "user_inactive",
            Refusal::Auth(AuthError::Storage(_) | AuthError::Internal(_)) => "error",
            Refusal::Auth(_) => "auth_failed",
            Refusal::NotFound => "not_found",
            Refusal::TooMany => "too_many",
        }
    }

    fn close(&self) -> Close {
        match self {
            Refusal::Origin => Close::OriginRejected,
            Refusal::Auth(AuthError::AccountDisabled | AuthError::UnknownUser) => {
                Close::AccountUnavailable
            }
            Refusal::Auth(AuthError::Storage(_) | AuthError::Internal(_)) => Close::ServerError,
            Refusal::Auth(_) => Close::AuthFailed,
            Refusal::NotFound => Close::SessionNotFound,
            Refusal::TooMany => Close::TooManyConnections,
        }
    }

    fn http_error(self) -> ApiError {
        match self {
            Refusal::Origin => ApiError::Forbidden("origin not allowed".into()),
            Refusal::Auth(e) => e.into(),
            Refusal::NotFound => ApiError::NotFound,
            Refusal::TooMany => ApiError::RateLimited { retry_after: 5 },
        }
    }
}

async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let mut query = HandshakeQuery::of(&req);
    let admitted = admit(&req, &state, &path, &query).await;
    let (principal, session) = match admitted {
        Ok(found) => found,
        Err(refusal) => return refuse(&req, body, &state, refusal),
    };
    let policy = state.quota_policy(&principal.user);
    let (user_id, session_id) = (principal.user.id, session.id);
    // The Supervisor creates and registers the session actor (and looks at
    // the credential and session again once it is registered).
    let reservation = match Supervisor::reserve_session(
        &state.sessions,
        principal,
        session,
        policy,
        state.config.ws.max_connections_per_user as usize,
    ) {
        Ok(reservation) => reservation,
        Err(refused) => {
            let refusal = match refused {
                SpawnRefused::TooMany => Refusal::TooMany,
                SpawnRefused::Credential(e) => Refusal::Auth(e),
                SpawnRefused::SessionGone => Refusal::NotFound,
            };
            return refuse(&req, body, &state, refusal);
        }
    };
    // Dropping the reservation on an error unregisters the connection.
    let (response, outbox, incoming) = upgrade(&req, body, &state)?;
    telemetry::ws_handshake("ok");
    tracing::info!(conn = reservation.conn_id(), user_id = %user_id, session_id = %session_id, "websocket connected");
    reservation
        .resume_at_connect(query.resume.take())
        .start(outbox, incoming);
    Ok(response)
}

async fn admit(
    req: &HttpRequest,
    state: &AppState,
    session_id: &str,
    query: &HandshakeQuery,
) -> Result<(Principal, palaver_storage::Session), Refusal> {
    if !super::origin::allowed(req.headers(), &state.config.server.allowed_origins) {
        return Err(Refusal::Origin);
    }
    let principal = credential(req, state, query).await.map_err(Refusal::Auth)?;
    let session =
        owned_session(&state.store, principal.user.id, session_id).map_err(|e| match e {
            ApiError::NotFound => Refusal::NotFound,
            other => Refusal::Auth(AuthError::Internal(other.to_string())),
        })?;
    Ok((principal, session))
}

/// The first credential present, in the contract's order of precedence
/// (every access-token form takes palaver's own tokens and other issuers').
/// Public as the entry point of the credentials fuzz target (`fuzz/`).
pub async fn authenticate(req: &HttpRequest, state: &AppState) -> Result<Principal, AuthError> {
    credential(req, state, &HandshakeQuery::of(req)).await
}

/// [`authenticate`] with the query already read.
async fn credential(
    req: &HttpRequest,
    state: &AppState,
    query: &HandshakeQuery,
) -> Result<Principal, AuthError> {
    let auth = &state.auth;
    if let Some(ticket) = &query.ticket {
        return auth.consume_ticket(ticket);
    }
    if let Some(token) = subprotocol_token(req) {
        return auth.verify_access(token).await;
    }
    if let Some(token) = &query.token {
        return auth.verify_access(token).await;
    }
    if let Some(bearer) = bearer_header(req) {
        return auth.verify_access(bearer?).await;
    }
    if let Some(key) = &query.api_key {
        return auth.verify_api_key(key);
    }
    api_key_header(req, auth).unwrap_or_else(missing)
}

/// `bearer.<jwt>` among the offered subprotocols.
fn subprotocol_token(req: &HttpRequest) -> Option<&str> {
    offered_protocols(req).find_map(|p| p.strip_prefix("bearer."))
}

/// Every subprotocol the client offers, in order.
fn offered_protocols(req: &HttpRequest) -> impl Iterator<Item = &str> {
    req.headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
}

fn refuse(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
    refusal: Refusal,
) -> Result<HttpResponse, ApiError> {
    let why = refusal.close();
    let (code, reason) = (why.code(), why.reason());
    tracing::info!(code, reason, "websocket refused");
    telemetry::ws_handshake(refusal.outcome());
    if state.config.ws.reject_with == RejectWith::Http {
        return Err(refusal.http_error());
    }
    // Complete the handshake only to deliver the close code; the client's
    // frames are never read (the stream is dropped unread).
    let (response, outbox, _unread) = upgrade(req, body, state)?;
    telemetry::ws_close(code);
    outbox.control(Out::Close(code, reason));
    Ok(response)
}

/// The 101 response (with `palaver.v1` when the client offers it) and the
/// two ends of the socket under it (the response's body is the third).
fn upgrade(
    req: &HttpRequest,
    body: web::Payload,
    state: &AppState,
) -> Result<(HttpResponse, Outbox, Incoming), ApiError> {
    let mut response = actix_http::ws::handshake(req.head())
        .map_err(|e| ApiError::invalid(format!("not a WebSocket upgrade: {e}")))?;
    if offered_protocols(req).any(|p| p == SUBPROTOCOL) {
        response.insert_header((header::SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL));
    }
    let limits = &state.sessions.limits;
    let socket::Socket {
        outbox,
        incoming,
        body,
    } = socket::open(
        body.into_inner(),
        limits.max_message_bytes,
        limits.max_buffered_bytes,
    );
    let response = response.message_body(body).map_err(ApiError::internal)?;
    Ok((
        HttpResponse::from(response.map_into_boxed_body()),
        outbox,
        incoming,
    ))
}
