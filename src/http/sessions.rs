//! `/api/sessions/…`: conversations and their history (API.md §5). Every call
//! checks ownership; another user's session is a plain 404.

use actix_web::{web, HttpResponse};
use std::sync::Arc;

use palaver_actors::analysis::{Cancel, Event};
use palaver_actors::messages::SessionDeleted;
use palaver_actors::protocol::message_json;
use palaver_actors::question::{Asking, Refusal};
use palaver_storage::{Session, Store, UserId};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::extract::{optional_json, Authenticated, Json};
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

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewSession {
    title: Option<String>,
    track_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    title: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Question {
    text: String,
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
    before: Option<String>,
}

#[derive(Deserialize)]
struct HistoryQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

pub fn session_view(store: &Store, s: &Session) -> Result<Value, ApiError> {
    Ok(json!({
        "id": s.id.hyphenated().to_string(),
        "title": s.title,
        "track_id": s.track_id.map(|t| t.hyphenated().to_string()),
        "created_at": rfc3339_millis(s.created_at),
        "updated_at": rfc3339_millis(s.updated_at),
        "message_count": store.sessions().message_count(s.id)?,
    }))
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
    Ok(HttpResponse::Ok().json(json!({ "sessions": sessions, "next": page.next })))
}

async fn get(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let session = owned_session(&state.store, who.0.user.id, &path)?;
    Ok(HttpResponse::Ok().json(session_view(&state.store, &session)?))
}

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
    let messages: Vec<_> = page.items.iter().map(message_json).collect();
    Ok(HttpResponse::Ok().json(json!({ "messages": messages, "next": page.next })))
}

/// `POST /api/sessions/{id}/messages/`: the same analysis as over a
/// WebSocket (the same lifecycle, question.rs), answered whole once the
/// reply is complete and stored. The quota middleware counted the request.
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
    let mut events = stored.submit(session, Arc::new(Cancel::default()));
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
                return Ok(HttpResponse::Ok().json(json!({
                    "question": message_json(&question),
                    "reply": message_json(&reply),
                })));
            }
            _ => {}
        }
    }
    Err(ApiError::internal("the analysis ended without a reply"))
}
