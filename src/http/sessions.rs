//! `/api/sessions/…`: conversations and their history (API.md §5). Every call
//! checks ownership; another user's session is a plain 404.

use actix_web::{web, HttpResponse};
use std::sync::Arc;

use palaver_actors::analysis::{Cancel, Event};
use palaver_actors::messages::SessionDeleted;
use palaver_actors::protocol::MessageView;
use palaver_actors::question::{Asking, Refusal};
use palaver_storage::{Session, Store, UserId};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{optional_json, Authenticated, Json};
use super::openapi::{
    BadGateway, BadRequest, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, UnsupportedMediaType,
};
use super::tracks::owned_track;
use super::ApiError;
use crate::app::AppState;
use palaver_actors::protocol::rfc3339_millis;

/// Longest session title, in characters.
pub const MAX_TITLE_CHARS: usize = 200;
/// Title of a session created without one.
pub const DEFAULT_TITLE: &str = "New session";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/sessions").post(create).get(list))
        .service(
            web::resource("/api/sessions/{id}")
                .get(get)
                .patch(rename)
                .delete(delete),
        )
        .service(
            web::resource("/api/sessions/{id}/messages")
                .get(history)
                .post(ask),
        );
}

/// A new session: both fields optional, and so is the body.
#[derive(Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSession {
    /// At most 200 characters; empty or absent: "New session".
    #[schema(max_length = 200)]
    title: Option<String>,
    /// One of the caller's tracks, for the audio tools.
    #[schema(format = Uuid)]
    track_id: Option<String>,
}

/// A session's new title.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Rename {
    /// At most 200 characters; empty: "New session".
    #[schema(max_length = 200)]
    title: String,
}

/// A question, answered whole.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Not empty or only spaces; at most `analysis.max_question_chars`
    /// (4000 by default) characters.
    // "Not white space only" as the server's `str::trim` sees it: Unicode
    // White_Space spelled out, since regex engines disagree on `\s`
    // (ECMAScript's lacks U+0085 and has U+FEFF; Python's adds
    // U+001C–U+001F). Schemathesis found it: one U+0085 matched `\S`.
    #[schema(
        min_length = 1,
        max_length = 4000,
        pattern = r"[^\t\n\u000B\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]"
    )]
    text: String,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1–100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<usize>,
    /// The `next` cursor of the previous page (opaque: hex digits).
    #[param(pattern = "^([0-9a-fA-F]{2}){1,64}$")]
    before: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// Messages after this `seq` (default 0: from the start). Any
    /// non-negative integer: past the last `seq` the page is empty.
    #[serde(default, deserialize_with = "saturating_seq")]
    #[param(minimum = 0)]
    after: Option<u64>,
    /// 1–500 (default 100).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<usize>,
}

/// A `seq` from a query string: ASCII digits; a number past every `seq`
/// there can be (over `u64::MAX`) reads as the largest, so every integer the
/// document allows is answered (schemathesis sent 35-digit ones).
fn saturating_seq<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(raw) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return Err(serde::de::Error::custom(
            "after: expected a non-negative integer",
        ));
    }
    Ok(Some(raw.parse().unwrap_or(u64::MAX)))
}

/// A session (conversation) as the API shows it.
#[derive(Serialize, ToSchema)]
#[schema(as = Session)]
pub struct SessionView {
    #[schema(format = Uuid)]
    pub id: String,
    pub title: String,
    #[schema(format = Uuid)]
    pub track_id: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
    #[schema(format = DateTime)]
    pub updated_at: String,
    pub message_count: u64,
}

/// A page of sessions, newest first.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
    /// The cursor of the next page (`?before=`); null on the last.
    pub next: Option<String>,
}

/// A page of messages, oldest first.
#[derive(Serialize, ToSchema)]
pub struct MessageList {
    pub messages: Vec<MessageView>,
    /// The `after` of the next page (a `seq`, as a string); null on the
    /// last.
    pub next: Option<String>,
}

/// A question and its whole reply.
#[derive(Serialize, ToSchema)]
pub struct Answer {
    pub question: MessageView,
    pub reply: MessageView,
}

pub fn session_view(store: &Store, s: &Session) -> Result<SessionView, ApiError> {
    let activity = store.sessions().activity(s)?;
    Ok(SessionView {
        id: s.id.hyphenated().to_string(),
        title: s.title.clone(),
        track_id: s.track_id.map(|t| t.hyphenated().to_string()),
        created_at: rfc3339_millis(s.created_at),
        updated_at: rfc3339_millis(activity.updated_at),
        message_count: activity.message_count,
    })
}

fn validate_title(title: &str) -> Result<String, ApiError> {
    let title = title.trim();
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(format!(
            "title: at most {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(if title.is_empty() {
        DEFAULT_TITLE
    } else {
        title
    }
    .to_owned())
}

/// The caller's session `id`, or 404 (also for a malformed id and for
/// another user's session).
pub fn owned_session(store: &Store, user: UserId, id: &str) -> Result<Session, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    store
        .sessions()
        .get_owned(user, id)?
        .ok_or(ApiError::NotFound)
}

/// Starts a session, optionally on one of the caller's tracks. The body
/// may be empty.
#[utoipa::path(post, operation_id = "create_session", path = "/api/sessions/", tag = "sessions",
    request_body(content = NewSession, description = "Optional: no body is `{}`"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Created", body = SessionView),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, TooManyRequests,
        ServiceUnavailable,
    ))]
async fn create(
    state: web::Data<AppState>,
    who: Authenticated,
    body: web::Bytes,
) -> Result<HttpResponse, ApiError> {
    let body: NewSession = optional_json(&body)?;
    let title = validate_title(body.title.as_deref().unwrap_or(""))?;
    let track = match body.track_id {
        Some(raw) => {
            Uuid::parse_str(&raw).map_err(|_| ApiError::invalid("track_id: not a UUID"))?;
            Some(owned_track(&state.store, who.0.user.id, &raw)?.id)
        }
        None => None,
    };
    let session = state
        .store
        .sessions()
        .create(who.0.user.id, title, track)
        .await?;
    Ok(HttpResponse::Created().json(session_view(&state.store, &session)?))
}

/// The caller's sessions, newest first.
#[utoipa::path(get, operation_id = "list_sessions", path = "/api/sessions/", tag = "sessions", params(ListQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page", body = SessionList),
        BadRequest, Unauthorized, Forbidden, ServiceUnavailable,
    ))]
async fn list(
    state: web::Data<AppState>,
    who: Authenticated,
    query: web::Query<ListQuery>,
) -> Result<HttpResponse, ApiError> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit: between 1 and 100"));
    }
    let page = state
        .store
        .sessions()
        .list(who.0.user.id, query.before.as_deref(), limit)
        .map_err(|e| match e {
            palaver_storage::StorageError::BadCursor => ApiError::invalid("before: invalid cursor"),
            other => other.into(),
        })?;
    let sessions = page
        .items
        .iter()
        .map(|s| session_view(&state.store, s))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(HttpResponse::Ok().json(SessionList {
        sessions,
        next: page.next,
    }))
}

/// One of the caller's sessions.
#[utoipa::path(get, operation_id = "get_session", path = "/api/sessions/{id}/", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The session", body = SessionView),
        Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    ))]
async fn get(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    Ok(HttpResponse::Ok().json(session_view(&state.store, &session)?))
}

/// Renames a session.
#[utoipa::path(patch, operation_id = "rename_session", path = "/api/sessions/{id}/", tag = "sessions", request_body = Rename,
    params(("id" = Uuid, Path, description = "The session's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "Renamed", body = SessionView),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType,
        TooManyRequests, ServiceUnavailable,
    ))]
async fn rename(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: Json<Rename>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    let title = validate_title(&body.title)?;
    let session = state.store.sessions().rename(session.id, title).await?;
    Ok(HttpResponse::Ok().json(session_view(&state.store, &session)?))
}

/// Deletes a session and its messages; sockets open on it close (4004).
#[utoipa::path(delete, operation_id = "delete_session", path = "/api/sessions/{id}/", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 204, description = "Deleted"),
        Unauthorized, Forbidden, NotFound, TooManyRequests, ServiceUnavailable,
    ))]
async fn delete(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    state.store.sessions().delete(session.id).await?;
    state.supervisor.do_send(SessionDeleted {
        session_id: session.id,
    });
    Ok(HttpResponse::NoContent().finish())
}

/// A session's messages, oldest first.
#[utoipa::path(get, operation_id = "list_messages", path = "/api/sessions/{id}/messages/", tag = "sessions",
    params(("id" = Uuid, Path, description = "The session's id"), HistoryQuery),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "A page", body = MessageList),
        BadRequest, Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    ))]
async fn history(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::invalid("limit: between 1 and 500"));
    }
    let page = state
        .store
        .messages()
        .list(session.id, query.after.unwrap_or(0), limit)?;
    Ok(HttpResponse::Ok().json(MessageList {
        messages: page.items.iter().map(MessageView::from).collect(),
        next: page.next,
    }))
}

/// `POST /api/sessions/{id}/messages/`: the same analysis as over a
/// WebSocket (the same lifecycle, question.rs), answered whole once the
/// reply is complete and stored. The quota middleware counted the request.
#[utoipa::path(post, operation_id = "ask", path = "/api/sessions/{id}/messages/", tag = "sessions", request_body = Question,
    params(("id" = Uuid, Path, description = "The session's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The question and its reply", body = Answer),
        BadRequest, Unauthorized, Forbidden, NotFound, PayloadTooLarge, UnsupportedMediaType,
        TooManyRequests, BadGateway, ServiceUnavailable,
    ))]
async fn ask(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
    body: Json<Question>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    let text = body.into_inner().text;
    let asking = Asking {
        store: &state.store,
        quotas: &state.quotas,
        pool: &state.pool,
        max_chars: state.config.analysis.max_question_chars,
    };
    let stored = match asking.reserve(text, None) {
        Ok(reserved) => reserved.store(session.id).await,
        Err(refusal) => Err(refusal),
    }
    .map_err(|refusal| match refusal {
        Refusal::TooLong { max } => {
            ApiError::InvalidQuestion(format!("text: at most {max} characters"))
        }
        Refusal::Empty => ApiError::InvalidQuestion("text: the question is empty".into()),
        Refusal::Busy => ApiError::Busy("the analysis pool is full"),
        Refusal::Quota(s) => ApiError::QuotaExceeded {
            count: s.count,
            limit: s.limit(),
        },
        Refusal::Storage(e) => e.into(),
    })?;
    let question = stored.question.clone();
    let mut events = stored.submit(Arc::new(Cancel::default()));
    let mut failure = None;
    while let Some(event) = events.recv().await {
        match event {
            // The partial reply is stored; the quota middleware refunds
            // the 502.
            Event::Failed { message } => failure = Some(message),
            Event::Done { .. } if failure.is_some() => {
                return Err(ApiError::AnalysisFailed(failure.unwrap_or_default()))
            }
            Event::Done { reply, .. } => {
                return Ok(HttpResponse::Ok().json(Answer {
                    question: MessageView::from(&question),
                    reply: MessageView::from(&reply),
                }));
            }
            _ => {}
        }
    }
    Err(ApiError::internal("the analysis ended without a reply"))
}
