//! `/api/tracks/…`: uploaded audio (API.md §6). An upload is streamed to a
//! staged file as it arrives (never whole in memory), cut off with 413 the
//! moment it passes `storage.max_upload_bytes`, accepted only when a CPU
//! worker decodes it as audio (415 otherwise), then recorded and handed to
//! the TrackAnalyst. Every call checks ownership; another user's track is a
//! plain 404.

use actix_multipart::{Multipart, MultipartError};
use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use palaver_actors::analysis::cpu::CpuError;
use palaver_actors::messages::AnalyzeTrack;
use palaver_actors::protocol::rfc3339_millis;
use palaver_actors::telemetry;
use palaver_audio::AudioError;
use palaver_storage::tracks::{clean_filename, Staged};
use palaver_storage::{AnalysisStatus, NewTrack, Store, Track, UserId};
use serde::Serialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use utoipa::ToSchema;
use uuid::Uuid;

use super::extract::Authenticated;
use super::openapi::{
    BadRequest, Conflict, Forbidden, NotFound, PayloadTooLarge, ServiceUnavailable,
    TooManyRequests, Unauthorized, UnsupportedMediaType,
};
use super::ApiError;
use crate::app::AppState;

/// Room for the multipart framing around the file (boundaries, part
/// headers) when a `Content-Length` is judged before reading the body.
const MULTIPART_OVERHEAD: u64 = 64 << 10;

/// What a 415 says.
const NOT_AUDIO: &str =
    "the file is not audio in a supported format (WAV, FLAC, MP3, Ogg Vorbis, M4A/AAC)";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/tracks").post(upload).get(list))
        .service(web::resource("/api/tracks/{id}").get(get).delete(delete))
        .service(web::resource("/api/tracks/{id}/overview").get(overview));
}

/// Where a track's analysis stands.
#[derive(Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnalysisState {
    Pending,
    Ready,
    Failed,
}

impl From<&AnalysisStatus> for AnalysisState {
    fn from(status: &AnalysisStatus) -> Self {
        match status {
            AnalysisStatus::Pending => AnalysisState::Pending,
            AnalysisStatus::Ready => AnalysisState::Ready,
            AnalysisStatus::Failed(_) => AnalysisState::Failed,
        }
    }
}

/// A track as API.md §6 shows it (without its analysis).
#[derive(Serialize, ToSchema)]
#[schema(as = Track)]
pub struct TrackView {
    #[schema(format = Uuid)]
    pub track_id: String,
    /// The client's file name, cleaned.
    pub filename: String,
    pub size_bytes: u64,
    /// What the file decoded as (not its extension).
    #[schema(value_type = palaver_audio::Format)]
    pub format: String,
    pub duration_seconds: f64,
    pub sample_rate: u32,
    pub channels: u16,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub analysis_status: AnalysisState,
}

pub fn track_view(t: &Track) -> TrackView {
    TrackView {
        track_id: t.id.hyphenated().to_string(),
        filename: t.filename.clone(),
        size_bytes: t.size_bytes,
        format: t.format.clone(),
        duration_seconds: t.duration_seconds,
        sample_rate: t.sample_rate,
        channels: t.channels,
        created_at: rfc3339_millis(t.created_at),
        analysis_status: (&t.analysis).into(),
    }
}

/// A track with its analysis: null until `analysis_status` is `ready`.
#[derive(Serialize, ToSchema)]
pub struct TrackDetail {
    #[serde(flatten)]
    pub track: TrackView,
    /// The stored measurement (computed once, cached).
    #[schema(value_type = Option<palaver_audio::Analysis>)]
    pub analysis: Option<Value>,
    /// Why the analysis failed (`analysis_status` `failed` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis_error: Option<String>,
}

/// The caller's tracks.
#[derive(Serialize, ToSchema)]
pub struct TrackList {
    pub tracks: Vec<TrackView>,
}

/// `POST /api/tracks/`'s body: the audio in the field `file`.
#[derive(ToSchema)]
#[allow(dead_code)] // read as a stream, never as this type: it only describes
pub struct Upload {
    /// WAV, FLAC, MP3, Ogg Vorbis or M4A/AAC; at most
    /// `storage.max_upload_bytes` (50 MiB).
    #[schema(value_type = String, format = Binary, content_media_type = "application/octet-stream")]
    file: Vec<u8>,
}

/// The caller's track `id`, or 404 (also for a malformed id and for
/// another user's track).
pub fn owned_track(store: &Store, user: UserId, id: &str) -> Result<Track, ApiError> {
    let id = Uuid::parse_str(id).map_err(|_| ApiError::NotFound)?;
    store
        .tracks()
        .get_owned(user, id)?
        .ok_or(ApiError::NotFound)
}

/// Uploads a track. Accepted only if it decodes as audio, whatever its
/// name or declared type; its analysis then runs in the background.
#[utoipa::path(post, operation_id = "upload_track", path = "/api/tracks/", tag = "tracks",
    request_body(content = Upload, content_type = "multipart/form-data"),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 201, description = "Stored; analysis pending", body = TrackView),
        BadRequest, Unauthorized, Forbidden, Conflict, PayloadTooLarge, UnsupportedMediaType,
        TooManyRequests, ServiceUnavailable,
    ))]
async fn upload(
    state: web::Data<AppState>,
    who: Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let outcome = receive(&state, who.0.user.id, &req, payload).await;
    telemetry::track_upload(match &outcome {
        Ok(_) => "accepted",
        Err(ApiError::PayloadTooLarge { .. } | ApiError::TrackTooLong(_)) => "too_large",
        Err(ApiError::UnsupportedMediaType(_)) => "not_audio",
        Err(ApiError::TrackLimit { .. }) => "limit",
        Err(ApiError::RequestTimeout(_)) => "timeout",
        Err(ApiError::Busy(_)) => "busy",
        Err(_) => "invalid",
    });
    let track = outcome?;
    state.tracks.do_send(AnalyzeTrack { track: track.id });
    Ok(HttpResponse::Created().json(track_view(&track)))
}

/// Receives, checks and records one upload.
async fn receive(
    state: &AppState,
    user: UserId,
    req: &HttpRequest,
    payload: web::Payload,
) -> Result<Track, ApiError> {
    let limit = state.config.storage.max_upload_bytes;
    let max_tracks = state.config.storage.max_tracks_per_user;
    // Refused before a byte of the body is read when the answer is known:
    // a declared length past the bound, or a user at the track bound (checked
    // again, exactly, when the track is recorded).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit.saturating_add(MULTIPART_OVERHEAD)) {
        return Err(too_large(limit));
    }
    if state.store.tracks().list(user)?.len() >= max_tracks {
        return Err(ApiError::TrackLimit { limit: max_tracks });
    }
    let is_multipart = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        });
    if !is_multipart {
        return Err(ApiError::UnsupportedMediaType(
            "an upload is multipart/form-data with the audio in the field `file`".into(),
        ));
    }
    // A body trickled a byte at a time would otherwise hold the request,
    // its connection and a staged file for as long as the client likes (the
    // staged file is removed when the read is dropped).
    let deadline = state.config.server.upload_timeout;
    let streamed =
        actix_web::rt::time::timeout(deadline, stream_to_file(state, req, payload, limit)).await;
    let Ok(streamed) = streamed else {
        telemetry::http_timeout("upload");
        return Err(ApiError::RequestTimeout(deadline.as_secs()));
    };
    let (staged, filename, size) = streamed?;
    let path = staged.path().to_path_buf();
    let probe = state
        .pool
        .cpu()
        .run(move || palaver_audio::probe(&path))
        .await;
    let probe = match probe {
        Ok(Ok(probe)) => probe,
        Ok(Err(AudioError::NotAudio(why))) => {
            tracing::debug!(reason = %why, "upload refused: not audio");
            return Err(ApiError::UnsupportedMediaType(NOT_AUDIO.into()));
        }
        Ok(Err(e @ (AudioError::Io(_) | AudioError::TooLong { .. }))) => {
            return Err(ApiError::internal(e))
        }
        // A file that crashed the decoder is not audio we can use.
        Err(CpuError::Crashed) => return Err(ApiError::UnsupportedMediaType(NOT_AUDIO.into())),
        Err(CpuError::Busy) => return Err(ApiError::Busy("the analysis workers are busy")),
    };
    if probe.samples() > state.config.max_track_samples() {
        return Err(ApiError::TrackTooLong(format!(
            "the track is {:.0} s of {} Hz audio in {} channels: more than storage.max_track_duration \
             ({} s of stereo 48 kHz audio) allows",
            probe.duration_seconds,
            probe.sample_rate,
            probe.channels,
            state.config.storage.max_track_duration.as_secs(),
        )));
    }
    let track = state
        .store
        .tracks()
        .create(
            staged,
            NewTrack {
                user_id: user,
                filename,
                size_bytes: size,
                format: probe.format.as_str().to_owned(),
                duration_seconds: probe.duration_seconds,
                sample_rate: probe.sample_rate,
                channels: probe.channels,
            },
            max_tracks,
        )
        .await?;
    Ok(track)
}

fn too_large(limit: u64) -> ApiError {
    ApiError::PayloadTooLarge {
        limit: usize::try_from(limit).unwrap_or(usize::MAX),
    }
}

/// Writes the `file` field of the multipart body to a staged file, counting
/// as it goes. Answers the staged file, the client's (cleaned) file name
/// and the size in bytes. Public as the entry point of the upload fuzz
/// target (`fuzz/`), which then probes the file as [`upload`] does.
pub async fn stream_to_file(
    state: &AppState,
    req: &HttpRequest,
    payload: web::Payload,
    limit: u64,
) -> Result<(Staged, String, u64), ApiError> {
    let (staged, file) = state.store.tracks().stage()?;
    let mut file = tokio::fs::File::from_std(file);
    let mut multipart = Multipart::new(req.headers(), payload);
    let mut received: Option<(String, u64)> = None;
    // Every byte of every part counts toward the bound, so a body cannot
    // stream without end through parts that are not `file`.
    let mut total = 0u64;
    while let Some(field) = multipart.next().await {
        let mut field = field.map_err(malformed)?;
        let is_file = field.name() == Some("file");
        if is_file && received.is_some() {
            return Err(ApiError::invalid("file: send one file per upload"));
        }
        let filename = field
            .content_disposition()
            .and_then(|cd| cd.get_filename())
            .map(clean_filename)
            .unwrap_or_else(|| clean_filename(""));
        let mut size = 0u64;
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(malformed)?;
            total += chunk.len() as u64;
            if total > limit {
                return Err(too_large(limit));
            }
            if is_file {
                size += chunk.len() as u64;
                file.write_all(&chunk).await.map_err(ApiError::internal)?;
            }
        }
        if is_file {
            received = Some((filename, size));
        }
    }
    let Some((filename, size)) = received else {
        return Err(ApiError::invalid(
            "file: missing (send the audio in the multipart field `file`)",
        ));
    };
    file.flush().await.map_err(ApiError::internal)?;
    if state.config.storage.fsync {
        file.sync_all().await.map_err(ApiError::internal)?;
    }
    Ok((staged, filename, size))
}

fn malformed(e: MultipartError) -> ApiError {
    match e {
        MultipartError::Payload(actix_web::error::PayloadError::Overflow) => {
            ApiError::PayloadTooLarge { limit: 0 }
        }
        other => ApiError::invalid(format!("file: malformed multipart body ({other})")),
    }
}

/// The caller's tracks.
#[utoipa::path(get, operation_id = "list_tracks", path = "/api/tracks/", tag = "tracks",
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The caller's tracks", body = TrackList),
        Unauthorized, Forbidden, ServiceUnavailable,
    ))]
async fn list(state: web::Data<AppState>, who: Authenticated) -> Result<HttpResponse, ApiError> {
    let tracks = state
        .store
        .tracks()
        .list(who.0.user.id)?
        .iter()
        .map(track_view)
        .collect();
    Ok(HttpResponse::Ok().json(TrackList { tracks }))
}

/// One of the caller's tracks, with its analysis once ready.
#[utoipa::path(get, operation_id = "get_track", path = "/api/tracks/{id}/", tag = "tracks",
    params(("id" = Uuid, Path, description = "The track's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The track", body = TrackDetail),
        Unauthorized, Forbidden, NotFound, ServiceUnavailable,
    ))]
async fn get(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let track = owned_track(&state.store, who.0.user.id, &path)?;
    let (analysis, analysis_error) = match &track.analysis {
        AnalysisStatus::Ready => (
            stored(&state.store, track.id)?.map(|(analysis, _)| analysis),
            None,
        ),
        AnalysisStatus::Failed(reason) => (None, Some(reason.clone())),
        AnalysisStatus::Pending => (None, None),
    };
    Ok(HttpResponse::Ok().json(TrackDetail {
        track: track_view(&track),
        analysis,
        analysis_error,
    }))
}

/// A ready track's analysis and overview documents.
fn stored(store: &Store, id: Uuid) -> Result<Option<(Value, Value)>, ApiError> {
    let Some(documents) = store.tracks().analysis(id)? else {
        return Ok(None);
    };
    let parse = |text: &str| serde_json::from_str::<Value>(text).map_err(ApiError::internal);
    Ok(Some((
        parse(&documents.analysis)?,
        parse(&documents.overview)?,
    )))
}

/// The data for a picture of the track: its envelope and short-term
/// loudness. 409 `not_ready` until the analysis is ready.
#[utoipa::path(get, operation_id = "track_overview", path = "/api/tracks/{id}/overview/", tag = "tracks",
    params(("id" = Uuid, Path, description = "The track's id")),
    security(("bearer" = []), ("api_key" = [])),
    responses(
        (status = 200, description = "The overview", body = palaver_audio::Overview),
        Unauthorized, Forbidden, NotFound, Conflict, ServiceUnavailable,
    ))]
async fn overview(
    state: web::Data<AppState>,
    who: Authenticated,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let track = owned_track(&state.store, who.0.user.id, &path)?;
    match &track.analysis {
        AnalysisStatus::Pending => Err(ApiError::AnalysisNotReady {
            message: "the track's analysis is still running".into(),
            retry: true,
        }),
        AnalysisStatus::Failed(reason) => Err(ApiError::AnalysisNotReady {
            message: format!("the track's analysis failed: {reason}"),
            retry: false,
        }),
        AnalysisStatus::Ready => match stored(&state.store, track.id)? {
            Some((_, overview)) => Ok(HttpResponse::Ok().json(overview)),
            None => Err(ApiError::internal("a ready track has no stored analysis")),
        },
    }
}

/// Deletes a track and its file.
#[utoipa::path(delete, operation_id = "delete_track", path = "/api/tracks/{id}/", tag = "tracks",
    params(("id" = Uuid, Path, description = "The track's id")),
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
    let track = owned_track(&state.store, who.0.user.id, &path)?;
    state.store.tracks().delete(track.id).await?;
    Ok(HttpResponse::NoContent().finish())
}
