//! Extractors: how a JSON body that cannot be read becomes the contract's
//! error (413, 415, or 400 naming the field), and [`Authenticated`], the one
//! piece of code that turns request credentials into a principal or a 401.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use palaver_actors::auth::{Auth, AuthError, Principal};

use super::ApiError;
use crate::app::AppState;

/// `web::Json` limits and error mapping for the whole app.
pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(move |err, _req| {
            let api = match err {
                JsonPayloadError::Overflow { limit }
                | JsonPayloadError::OverflowKnownLength { limit, .. } => {
                    ApiError::PayloadTooLarge { limit }
                }
                JsonPayloadError::ContentType => {
                    ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
                }
                JsonPayloadError::Deserialize(e) if e.is_data() => {
                    ApiError::invalid(format!("invalid field: {e}"))
                }
                JsonPayloadError::Deserialize(e) => {
                    ApiError::invalid(format!("malformed JSON: {e}"))
                }
                other => ApiError::invalid(other.to_string()),
            };
            api.into()
        })
}

/// `web::Query` errors as the contract's 400, naming the parameter.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::invalid(format!("invalid query: {err}")).into())
}

/// Parses a body that may be empty (then `T::default()`) or JSON.
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        if e.is_data() {
            ApiError::invalid(format!("invalid field: {e}"))
        } else {
            ApiError::invalid(format!("malformed JSON: {e}"))
        }
    })
}

/// The authenticated caller of a protected handler: from
/// `Authorization: Bearer <access JWT>` or, failing that, `X-API-Key`.
/// Anything else is the right 401 (`token_missing`, `token_invalid`,
/// `token_expired`, `token_revoked`) with `WWW-Authenticate`.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The quota middleware may have verified the credential already:
        // its outcome, success or failure, is used as it is.
        let outcome = match req.extensions_mut().remove::<Verified>() {
            Some(Verified(outcome)) => outcome,
            None => authenticate(req),
        };
        ready(outcome.map(Authenticated))
    }
}

/// The outcome of verifying a request's credential, kept in the request's
/// extensions by the quota middleware so the handler's extractor does not
/// verify (and count a failure) a second time.
pub struct Verified(pub Result<Principal, ApiError>);

/// Verifies the request's credential (used by the extractor and the quota
/// middleware); on success the request's span gets the `user_id`.
pub fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let auth = &state.auth;
    let principal = authorization_header(req, auth)
        .or_else(|| api_key_header(req, auth))
        .unwrap_or_else(missing)?;
    tracing::Span::current().record("user_id", tracing::field::display(principal.user.id));
    Ok(principal)
}

/// `Authorization: Bearer <access JWT>`, verified, if the header is present.
pub fn authorization_header(
    req: &HttpRequest,
    auth: &Auth,
) -> Option<Result<Principal, AuthError>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(AuthError::Invalid(
                "expected `Authorization: Bearer <token>`",
            ))
            .and_then(|token| auth.verify_access(token)),
    )
}

/// `X-API-Key: <key>`, verified, if the header is present.
pub fn api_key_header(req: &HttpRequest, auth: &Auth) -> Option<Result<Principal, AuthError>> {
    let value = req.headers().get("x-api-key")?;
    Some(
        value
            .to_str()
            .map_err(|_| AuthError::Invalid("malformed API key"))
            .and_then(|key| auth.verify_api_key(key.trim())),
    )
}

/// No credential at all (counted like every other authentication failure).
pub fn missing<T>() -> Result<T, AuthError> {
    palaver_actors::telemetry::auth_failure("missing");
    Err(AuthError::Missing)
}

/// The token of an `Authorization: Bearer <token>` value (scheme
/// case-insensitive, as RFC 7235 says).
pub fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
