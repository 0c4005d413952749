//! `GET /` and `/assets/…`: the browser client from `static/`, embedded in
//! the binary (or read from `server.static_dir` during development), with
//! security headers: a Content-Security-Policy allowing only this origin,
//! `nosniff`, no referrer, no framing.

use std::borrow::Cow;

use actix_web::http::header;
use actix_web::{web, HttpResponse};
use rust_embed::RustEmbed;

use super::ApiError;
use crate::app::AppState;

#[derive(RustEmbed)]
#[folder = "static/"]
struct Assets;

/// Only this origin: scripts, styles, fetches and WebSockets (`'self'`
/// covers `ws:`/`wss:` to the same host in CSP Level 3).
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/").get(index))
        .service(web::resource("/assets/{file}").get(asset));
}

async fn index(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    serve(&state, "index.html").await
}

async fn asset(
    state: web::Data<AppState>,
    file: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    serve(&state, &file).await
}

async fn serve(state: &AppState, name: &str) -> Result<HttpResponse, ApiError> {
    // One path segment of plain characters: no traversal out of the folder.
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(ApiError::NotFound);
    }
    let body: Cow<'static, [u8]> = match &state.config.server.static_dir {
        Some(dir) => Cow::Owned(
            tokio::fs::read(dir.join(name))
                .await
                .map_err(|_| ApiError::NotFound)?,
        ),
        None => Assets::get(name).ok_or(ApiError::NotFound)?.data,
    };
    Ok(HttpResponse::Ok()
        .content_type(content_type(name))
        .insert_header((header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(match body {
            // Embedded in the binary: served from there, not copied.
            Cow::Borrowed(bytes) => actix_web::web::Bytes::from_static(bytes),
            Cow::Owned(bytes) => actix_web::web::Bytes::from(bytes),
        }))
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next() {
        Some("html") => "text/html; charset=utf-8",
        Some("js") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("png") => "image/png",
        Some("svg") => "image/svg+xml",
        Some("ico") => "image/x-icon",
        _ => "application/octet-stream",
    }
}
