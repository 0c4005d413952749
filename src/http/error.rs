//! [`ApiError`]: the one type handlers return, and the one place that maps
//! errors to the contract's status codes and `code` strings (API.md §1).

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use palaver_actors::auth::AuthError;
use palaver_storage::StorageError;
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON or a missing/invalid field; the message names the field.
    #[error("{0}")]
    InvalidRequest(String),
    /// 400 `invalid_request` for a question that is empty or too long: like
    /// over a WebSocket, it is not counted (the quota middleware gives its
    /// count back).
    #[error("{0}")]
    InvalidQuestion(String),
    /// 401 with one of `token_missing`, `token_invalid`, `token_expired`,
    /// `token_revoked`, `invalid_credentials`.
    #[error("{message}")]
    Unauthorized { code: ErrorCode, message: String },
    #[error("the account is disabled")]
    AccountDisabled,
    #[error("registration is closed on this server")]
    RegistrationClosed,
    #[error("{0}")]
    Forbidden(String),
    #[error("too many requests; retry in {retry_after} s")]
    RateLimited { retry_after: u64 },
    /// 429 with `request_count` and `request_limit` in the body.
    #[error("request quota exceeded ({count} of {limit} used)")]
    QuotaExceeded { count: u32, limit: u32 },
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    #[error("that email address is already taken")]
    EmailTaken,
    #[error("the request body is larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    /// 408 `request_timeout`: the body did not arrive within its bound
    /// (`server.body_timeout`, `server.upload_timeout`); the connection is
    /// closed after the answer.
    #[error("the request body did not arrive within {0} s")]
    RequestTimeout(u64),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 413 `payload_too_large` for an upload that is more audio than
    /// `storage.max_track_duration` allows (the message says how much).
    #[error("{0}")]
    TrackTooLong(String),
    #[error("the server is not ready: {0}")]
    NotReady(String),
    /// 409 `not_ready`: a track's analysis is still running (`Retry-After`),
    /// or failed (no `Retry-After`: it will not become ready).
    #[error("{message}")]
    AnalysisNotReady { message: String, retry: bool },
    /// 409 `track_limit`: the user keeps `storage.max_tracks_per_user`
    /// tracks already.
    #[error("you have {limit} tracks, the most this server keeps per user; delete one to upload another")]
    TrackLimit { limit: usize },
    /// 502 `analysis_failed`: the analysis engine's upstream failed; the
    /// message names the cause (never a credential).
    #[error("the analysis failed: {0}")]
    AnalysisFailed(String),
    /// 503 `busy`: the analysis pool, or password hashing, is full.
    #[error("{0}; try again shortly")]
    Busy(&'static str),
    /// Anything unexpected. The detail is logged, never sent.
    #[error("internal server error")]
    Internal(String),
}

/// Every `code` an error body can carry (API.md §1): the only values
/// [`ApiError::code`] and the middleware's own error bodies produce, so the
/// OpenAPI document's enum is the server's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    TokenMissing,
    TokenInvalid,
    TokenExpired,
    TokenRevoked,
    InvalidCredentials,
    AccountDisabled,
    RegistrationClosed,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    EmailTaken,
    NotReady,
    TrackLimit,
    PayloadTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    QuotaExceeded,
    RateLimited,
    AnalysisFailed,
    Busy,
    Internal,
}

impl ErrorCode {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::TokenMissing => "token_missing",
            ErrorCode::TokenInvalid => "token_invalid",
            ErrorCode::TokenExpired => "token_expired",
            ErrorCode::TokenRevoked => "token_revoked",
            ErrorCode::InvalidCredentials => "invalid_credentials",
            ErrorCode::AccountDisabled => "account_disabled",
            ErrorCode::RegistrationClosed => "registration_closed",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::EmailTaken => "email_taken",
            ErrorCode::NotReady => "not_ready",
            ErrorCode::TrackLimit => "track_limit",
            ErrorCode::PayloadTooLarge => "payload_too_large",
            ErrorCode::RequestTimeout => "request_timeout",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::QuotaExceeded => "quota_exceeded",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::AnalysisFailed => "analysis_failed",
            ErrorCode::Busy => "busy",
            ErrorCode::Internal => "internal",
        }
    }
}

/// Every error response's body (API.md §1): a sentence for people and a
/// code for programs; a 429 `quota_exceeded` adds the counts.
#[derive(Serialize, ToSchema)]
#[schema(example = json!({"error": "not found", "code": "not_found"}))]
pub struct ErrorBody<'a> {
    /// A human sentence (never a stack trace).
    pub error: &'a str,
    pub code: ErrorCode,
    /// `quota_exceeded` only: counted requests made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_count: Option<u32>,
    /// `quota_exceeded` only: counted requests allowed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_limit: Option<u32>,
}

impl<'a> ErrorBody<'a> {
    pub fn new(error: &'a str, code: ErrorCode) -> Self {
        ErrorBody {
            error,
            code,
            request_count: None,
            request_limit: None,
        }
    }
}

impl ApiError {
    /// The contract's snake_case code.
    pub fn code(&self) -> ErrorCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::InvalidQuestion(_) => ErrorCode::InvalidRequest,
            ApiError::Unauthorized { code, .. } => *code,
            ApiError::AccountDisabled => ErrorCode::AccountDisabled,
            ApiError::RegistrationClosed => ErrorCode::RegistrationClosed,
            ApiError::Forbidden(_) => ErrorCode::Forbidden,
            ApiError::RateLimited { .. } => ErrorCode::RateLimited,
            ApiError::QuotaExceeded { .. } => ErrorCode::QuotaExceeded,
            ApiError::NotFound => ErrorCode::NotFound,
            ApiError::MethodNotAllowed => ErrorCode::MethodNotAllowed,
            ApiError::EmailTaken => ErrorCode::EmailTaken,
            ApiError::PayloadTooLarge { .. } | ApiError::TrackTooLong(_) => {
                ErrorCode::PayloadTooLarge
            }
            ApiError::RequestTimeout(_) => ErrorCode::RequestTimeout,
            ApiError::UnsupportedMediaType(_) => ErrorCode::UnsupportedMediaType,
            ApiError::NotReady(_) | ApiError::AnalysisNotReady { .. } => ErrorCode::NotReady,
            ApiError::TrackLimit { .. } => ErrorCode::TrackLimit,
            ApiError::AnalysisFailed(_) => ErrorCode::AnalysisFailed,
            ApiError::Busy(_) => ErrorCode::Busy,
            ApiError::Internal(_) => ErrorCode::Internal,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        ApiError::InvalidRequest(message.into())
    }

    pub fn internal(detail: impl std::fmt::Display) -> Self {
        ApiError::Internal(detail.to_string())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::InvalidRequest(_) | ApiError::InvalidQuestion(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::AccountDisabled | ApiError::RegistrationClosed | ApiError::Forbidden(_) => {
                StatusCode::FORBIDDEN
            }
            ApiError::RateLimited { .. } | ApiError::QuotaExceeded { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::EmailTaken
            | ApiError::AnalysisNotReady { .. }
            | ApiError::TrackLimit { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } | ApiError::TrackTooLong(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::AnalysisFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::NotReady(_) | ApiError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let message = self.to_string();
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CACHE_CONTROL, "no-store"));
        match self {
            // RFC 6750 §3: say which scheme, and that a presented token failed.
            ApiError::Unauthorized { code, message } => {
                let value = if matches!(
                    code,
                    ErrorCode::TokenMissing | ErrorCode::InvalidCredentials
                ) {
                    r#"Bearer realm="palaver""#.to_owned()
                } else {
                    let description = message.replace(['"', '\\'], "'");
                    format!(
                        r#"Bearer realm="palaver", error="invalid_token", error_description="{description}""#
                    )
                };
                response.insert_header((header::WWW_AUTHENTICATE, value));
            }
            ApiError::RateLimited { retry_after } => {
                response.insert_header((header::RETRY_AFTER, retry_after.to_string()));
            }
            ApiError::Busy(_) | ApiError::AnalysisNotReady { retry: true, .. } => {
                response.insert_header((header::RETRY_AFTER, "1"));
            }
            ApiError::InvalidQuestion(_) => {
                response.extensions_mut().insert(super::quota::Uncounted);
            }
            // The rest of the body is not waited for: the connection goes.
            ApiError::RequestTimeout(_) => {
                response.force_close();
            }
            _ => {}
        }
        let mut body = ErrorBody::new(&message, self.code());
        if let ApiError::QuotaExceeded { count, limit } = self {
            body.request_count = Some(*count);
            body.request_limit = Some(*limit);
        }
        response.json(body)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::EmailTaken => ApiError::EmailTaken,
            StorageError::NotFound => ApiError::NotFound,
            StorageError::TrackLimit { limit } => ApiError::TrackLimit { limit },
            other => ApiError::internal(other),
        }
    }
}

impl ApiError {
    fn unauthorized(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError::Unauthorized {
            code,
            message: message.into(),
        }
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Missing => {
                ApiError::unauthorized(ErrorCode::TokenMissing, "authentication required")
            }
            AuthError::Invalid(why) => ApiError::unauthorized(
                ErrorCode::TokenInvalid,
                format!("invalid credential: {why}"),
            ),
            AuthError::UnknownUser => {
                ApiError::unauthorized(ErrorCode::TokenInvalid, "invalid credential: unknown user")
            }
            AuthError::Expired => {
                ApiError::unauthorized(ErrorCode::TokenExpired, "the token has expired")
            }
            AuthError::Revoked => {
                ApiError::unauthorized(ErrorCode::TokenRevoked, "the token has been revoked")
            }
            AuthError::InvalidCredentials => {
                ApiError::unauthorized(ErrorCode::InvalidCredentials, "invalid email or password")
            }
            AuthError::AccountDisabled => ApiError::AccountDisabled,
            AuthError::RateLimited { retry_after } => ApiError::RateLimited {
                // Round up: retrying early would only be refused again.
                retry_after: retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0),
            },
            AuthError::DemoDisabled => {
                ApiError::Forbidden("demo mode is disabled on this server".into())
            }
            AuthError::DemoForbidden => ApiError::Forbidden("demo users cannot do this".into()),
            AuthError::NotFound => ApiError::NotFound,
            AuthError::EmailTaken => ApiError::EmailTaken,
            AuthError::Busy => ApiError::Busy("too many passwords are being checked"),
            AuthError::BadRequest(message) => ApiError::InvalidRequest(message),
            AuthError::Storage(e) => e.into(),
            AuthError::Internal(detail) => ApiError::Internal(detail),
        }
    }
}

impl From<actix_web::error::BlockingError> for ApiError {
    fn from(e: actix_web::error::BlockingError) -> Self {
        ApiError::internal(e)
    }
}
