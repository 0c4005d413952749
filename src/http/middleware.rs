//! Middleware: the per-request tracing span, and the guard that turns any
//! error response actix-web produced on its own (405, an unmatched route, a
//! body it refused) into the contract's JSON error body.

use std::time::Instant;

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::{ErrorHandlerResponse, Next};
use actix_web::HttpResponse;
use tracing::Instrument;

use super::error::{ErrorBody, ErrorCode};

/// One span per request with method, route pattern (never the raw path or
/// query: those may carry credentials), status, latency and a request id,
/// echoed as `X-Request-Id`. Logged once, when the response is ready.
pub async fn trace_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let request_id = uuid::Uuid::new_v4();
    let span = tracing::info_span!(
        "request",
        method = %req.method(),
        route = tracing::field::Empty,
        status = tracing::field::Empty,
        user_id = tracing::field::Empty,
        %request_id,
    );
    let result = next.call(req).instrument(span.clone()).await;
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let _enter = span.enter();
    match result {
        Ok(mut res) => {
            let route = res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            span.record("route", route.as_str());
            span.record("status", res.status().as_u16());
            palaver_actors::telemetry::http_request(
                res.request().method().as_str(),
                &route,
                res.status().as_u16(),
                started.elapsed(),
            );
            if let Ok(value) = HeaderValue::from_str(&request_id.to_string()) {
                res.headers_mut()
                    .insert(header::HeaderName::from_static("x-request-id"), value);
            }
            if res.status().is_server_error() {
                tracing::warn!(latency_ms, "request failed");
            } else {
                tracing::info!(latency_ms, "request");
            }
            Ok(res)
        }
        Err(e) => {
            tracing::warn!(latency_ms, error = %e, "request error");
            Err(e)
        }
    }
}

/// Rewrites a non-JSON error response into `{"error","code"}`, keeping its
/// status (and an `Allow` header, for 405). JSON errors pass untouched.
pub fn json_error_body<B: MessageBody + 'static>(
    res: ServiceResponse<B>,
) -> actix_web::Result<ErrorHandlerResponse<B>> {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if is_json {
        return Ok(ErrorHandlerResponse::Response(res.map_into_left_body()));
    }
    let status = res.status();
    let allow = res.headers().get(header::ALLOW).cloned();
    let (req, _) = res.into_parts();
    let (code, message) = describe(status);
    let mut builder = HttpResponse::build(status);
    if let Some(allow) = allow {
        builder.insert_header((header::ALLOW, allow));
    }
    let body: HttpResponse<BoxBody> = builder.json(ErrorBody::new(message, code));
    Ok(ErrorHandlerResponse::Response(
        ServiceResponse::new(req, body).map_body(|_, b| EitherBody::right(b)),
    ))
}

fn describe(status: StatusCode) -> (ErrorCode, &'static str) {
    match status {
        StatusCode::BAD_REQUEST => (ErrorCode::InvalidRequest, "the request is malformed"),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "not found"),
        StatusCode::METHOD_NOT_ALLOWED => (ErrorCode::MethodNotAllowed, "method not allowed"),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "the request body is too large")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            (ErrorCode::UnsupportedMediaType, "unsupported content type")
        }
        StatusCode::URI_TOO_LONG => (ErrorCode::InvalidRequest, "the request URI is too long"),
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => (
            ErrorCode::InvalidRequest,
            "the request headers are too large",
        ),
        s if s.is_server_error() => (ErrorCode::Internal, "internal server error"),
        _ => (ErrorCode::InvalidRequest, "the request cannot be served"),
    }
}

/// The cross-site guard and CORS for `/api/` (API.md §1, §7; the Origin
/// policy drives both).
///
/// A POST, PUT, PATCH or DELETE under `/api/` whose `Origin` the policy does
/// not allow is answered 403 `forbidden` before anything else runs: such
/// requests need no preflight when they carry no JSON (`POST
/// /api/auth/demo/`), so a foreign page could otherwise make its visitors'
/// browsers send them. Requests without `Origin` (non-browser clients) pass.
///
/// CORS: a request whose `Origin` is listed gets `Access-Control-Allow-Origin`
/// (and a preflight is answered 204); anything else gets no CORS headers, so
/// the browser keeps it same-origin. No cookies are used, so no credentials
/// mode.
pub async fn cors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // Cheap checks first: most requests carry no `Origin` or are not API.
    if !req.headers().contains_key(header::ORIGIN) || !req.path().starts_with("/api/") {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(state) = req
        .app_data::<actix_web::web::Data<crate::app::AppState>>()
        .cloned()
    else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let allowed = &state.config.server.allowed_origins;
    let changes_state = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if changes_state && !super::origin::allowed(req.headers(), allowed) {
        tracing::info!("cross-site request refused: origin not allowed");
        let (req, _) = req.into_parts();
        let res = HttpResponse::Forbidden()
            .json(ErrorBody::new("origin not allowed", ErrorCode::Forbidden));
        return Ok(ServiceResponse::new(req, res).map_into_right_body());
    }
    let origin = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .filter(|o| super::origin::listed(o, allowed))
        .map(str::to_owned);
    let Some(origin) = origin else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    let preflight = req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    if preflight {
        let (req, _) = req.into_parts();
        let res = HttpResponse::NoContent()
            .insert_header((header::ACCESS_CONTROL_ALLOW_ORIGIN, origin))
            .insert_header((header::VARY, "Origin"))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_METHODS,
                "GET, POST, PUT, PATCH, DELETE",
            ))
            .insert_header((
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                "authorization, content-type, x-api-key",
            ))
            .insert_header((header::ACCESS_CONTROL_MAX_AGE, "600"))
            .finish();
        return Ok(ServiceResponse::new(req, res).map_into_right_body());
    }
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&origin) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("ratelimit, ratelimit-policy, retry-after, x-request-id"),
        );
    }
    Ok(res.map_into_left_body())
}
