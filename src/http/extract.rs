//! Extractors: [`Json`], every JSON request body (one that cannot be read is
//! the contract's 413, 415, or 400 naming the field), and [`Authenticated`],
//! the one piece of code that turns request credentials into a principal or
//! a 401.

use std::future::{ready, Future};
use std::pin::Pin;

use actix_web::dev::{JsonBody, Payload};
use actix_web::error::JsonPayloadError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest};
use futures_util::future::LocalBoxFuture;
use palaver_actors::auth::{Auth, AuthError, Principal};
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;

use super::ApiError;
use crate::app::AppState;

/// A JSON request body, for every handler that reads one (`web::Json` is
/// not used: its error names a wrong-typed field's type but not the field).
/// actix-web reads the body as before (415 without a JSON content type, 413
/// over `server.max_json_bytes`, 400 for malformed JSON); the value is then
/// deserialized through [`parse`], so every 400 names the field.
pub struct Json<T>(pub T);

impl<T> Json<T> {
    pub fn into_inner(self) -> T {
        self.0
    }
}

impl<T> std::ops::Deref for Json<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, ApiError>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return Box::pin(ready(Err(ApiError::internal("application state missing"))));
        };
        // The raw value only checks the syntax; `parse` builds the `T`.
        let body = JsonBody::<Box<RawValue>>::new(req, payload, None, true)
            .limit(state.config.server.max_json_bytes);
        let deadline = state.config.server.body_timeout;
        Box::pin(async move {
            // A body trickled a byte at a time would otherwise hold the
            // request (and its connection) for as long as the client likes.
            let Ok(read) = actix_web::rt::time::timeout(deadline, body).await else {
                palaver_actors::telemetry::http_timeout("body");
                return Err(ApiError::RequestTimeout(deadline.as_secs()));
            };
            let raw = read.map_err(payload_error)?;
            parse(raw.get().as_bytes()).map(Json)
        })
    }
}

/// Why actix-web could not read a JSON body, as the contract's error.
fn payload_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::Overflow { limit }
        | JsonPayloadError::OverflowKnownLength { limit, .. } => {
            ApiError::PayloadTooLarge { limit }
        }
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("expected Content-Type: application/json".into())
        }
        JsonPayloadError::Deserialize(e) => malformed(&e),
        other => ApiError::invalid(other.to_string()),
    }
}

fn malformed(e: &serde_json::Error) -> ApiError {
    ApiError::invalid(format!("malformed JSON: {e}"))
}

/// Deserializes a JSON document into `T`. A field that is missing, of the
/// wrong type or unknown is named: ``text: invalid type: integer `5`,
/// expected a string`` (nested fields as `a.b`, array items as `a[0]`).
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    // Every request body is an object: serde would also build a struct
    // from an array of its fields in order (`[null, null]`), which no
    // client means and the contract does not allow.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::invalid(
            "invalid request body: expected a JSON object",
        ));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        let path = e.path().to_string();
        let e = e.into_inner();
        if !e.is_data() {
            malformed(&e)
        } else if path == "." {
            // A missing or unknown field: serde's own message names it.
            ApiError::invalid(format!("invalid request body: {e}"))
        } else {
            ApiError::invalid(format!("{path}: {e}"))
        }
    })?;
    deserializer.end().map_err(|e| malformed(&e))?;
    Ok(value)
}

/// `web::Query` errors as the contract's 400, naming the parameter.
pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default()
        .error_handler(|err, _req| ApiError::invalid(format!("invalid query: {err}")).into())
}

/// Parses a body that may be empty (then `T::default()`) or JSON.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse(body)
}

/// The authenticated caller of a protected handler: from
/// `Authorization: Bearer <access JWT>` (palaver's own or another issuer's)
/// or, failing that, `X-API-Key`. Anything else is the right 401
/// (`token_missing`, `token_invalid`, `token_expired`, `token_revoked`) with
/// `WWW-Authenticate`.
pub struct Authenticated(pub Principal);

impl FromRequest for Authenticated {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The quota middleware may have verified the credential already:
        // its outcome, success or failure, is used as it is.
        if let Some(Verified(outcome)) = req.extensions_mut().remove::<Verified>() {
            return Box::pin(ready(outcome.map(Authenticated)));
        }
        let req = req.clone();
        Box::pin(async move { authenticate(&req).await.map(Authenticated) })
    }
}

/// The outcome of verifying a request's credential, kept in the request's
/// extensions by the quota middleware so the handler's extractor does not
/// verify (and count a failure) a second time.
pub struct Verified(pub Result<Principal, ApiError>);

/// Verifies the request's credential (used by the extractor and the quota
/// middleware); on success the request's span gets the `user_id`.
pub async fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let state = req
        .app_data::<web::Data<AppState>>()
        .ok_or_else(|| ApiError::internal("application state missing"))?;
    let auth = &state.auth;
    let principal = match bearer_header(req) {
        Some(Ok(token)) => auth.verify_access(token).await,
        Some(Err(malformed)) => Err(malformed),
        None => api_key_header(req, auth).unwrap_or_else(missing),
    }?;
    tracing::Span::current().record("user_id", tracing::field::display(principal.user.id));
    Ok(principal)
}

/// The token of `Authorization: Bearer <token>`, if the header is present
/// (a present header of another form is an invalid credential).
pub fn bearer_header(req: &HttpRequest) -> Option<Result<&str, AuthError>> {
    let value = req.headers().get(header::AUTHORIZATION)?;
    Some(
        value
            .to_str()
            .ok()
            .and_then(bearer_token)
            .ok_or(AuthError::Invalid(
                "expected `Authorization: Bearer <token>`",
            )),
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
    use super::{bearer_token, parse, ApiError};

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        #[serde(default)]
        tags: Vec<String>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Inner {
        count: u32,
    }

    fn message(body: &str) -> String {
        match parse::<Outer>(body.as_bytes()) {
            Err(ApiError::InvalidRequest(message)) => message,
            other => panic!("{body}: {other:?}"),
        }
    }

    #[test]
    fn parse_names_the_field() {
        assert!(parse::<Outer>(br#"{"name": "a", "inner": {"count": 1}}"#).is_ok());
        let m = message(r#"{"name": 5}"#);
        assert!(m.starts_with("name: invalid type: integer `5`"), "{m}");
        let m = message(r#"{"name": "a", "inner": {"count": "x"}}"#);
        assert!(m.starts_with("inner.count: invalid type: string"), "{m}");
        let m = message(r#"{"name": "a", "tags": ["x", 1]}"#);
        assert!(m.starts_with("tags[1]: invalid type: integer"), "{m}");
        let m = message(r#"{"inner": null}"#);
        assert!(m.contains("missing field `name`"), "{m}");
        let m = message(r#"{"name": "a", "extra": 1}"#);
        assert!(m.contains("unknown field `extra`"), "{m}");
        let m = message(r#"{"name": "a"} trailing"#);
        assert!(m.starts_with("malformed JSON"), "{m}");
        let m = message(r#"{"name": "#);
        assert!(m.starts_with("malformed JSON"), "{m}");
    }

    #[test]
    fn a_body_is_an_object_never_an_array_of_the_fields() {
        // serde alone would build the struct from `["a", null]`.
        for body in [r#"["a", null]"#, " [\"a\"]", "null", "5", r#""a""#] {
            let m = message(body);
            assert!(m.contains("expected a JSON object"), "{body}: {m}");
        }
        assert!(parse::<Outer>(b" \n{\"name\": \"a\"}").is_ok());
    }

    #[test]
    fn bearer_parsing() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer  abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
    }
}
