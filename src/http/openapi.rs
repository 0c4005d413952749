//! The API description: the OpenAPI 3.1 document of every REST operation,
//! generated from the handlers' own annotations and types
//! (`#[utoipa::path]` next to each handler, `ToSchema` on the types they
//! read and answer), served at `GET /api/openapi.json`; and Swagger UI at
//! `GET /api/docs/`, its assets embedded in the binary (the crates.io
//! package `utoipa-swagger-ui-vendored`), so the page fetches nothing from
//! anywhere but this server. Both are public, like `/health`: they describe
//! the contract, nothing of any user (docs/DECISIONS.md).
//!
//! What the annotations cannot say is added here, in one place, by
//! [`Contract`]: the security schemes, the `RateLimit` headers of every
//! counted operation (decided by the quota middleware's own
//! [`is_counted`]), and the links from a created resource to the operations
//! on it. The error responses are shared components, one per status, each
//! with the error body and its `code`.
//!
//! `palaver openapi` prints the document; `docs/openapi.json` is a snapshot
//! of it that a test keeps equal.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use actix_web::http::{header, Method};
use actix_web::{web, HttpResponse};
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation};
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, Required, Type};
use utoipa::{IntoResponses, Modify, OpenApi, ToResponse};

use super::error::{ErrorBody, ErrorCode};
use super::quota::is_counted;
use super::ApiError;

pub fn config(cfg: &mut web::ServiceConfig) {
    cfg.service(web::resource("/api/openapi.json").get(openapi_json))
        .service(web::resource("/api/docs").get(docs_index))
        .service(web::resource("/api/docs/{file}").get(docs_file));
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "palaver",
        description = "A self-hosted realtime chat server: REST for accounts, sessions, \
messages and tracks. The WebSocket chat protocol (`/ws/sessions/{id}/`) is described by \
the AsyncAPI document docs/asyncapi.yaml.\n\n\
Every error is `{\"error\": \"<sentence>\", \"code\": \"<code>\"}`; any operation can also \
answer 500 `internal`. Paths are shown with a trailing slash; the same path without it \
works too. Counted requests (POST, PUT, PATCH, DELETE under /api/ except /api/auth/) of a \
user with a quota carry the `RateLimit` and `RateLimit-Policy` headers.",
        license(name = "MIT", identifier = "MIT"),
    ),
    paths(
        super::auth::login,
        super::auth::demo,
        super::auth::refresh,
        super::auth::logout,
        super::auth::me,
        super::auth::register,
        super::auth::ws_ticket,
        super::auth::create_api_key,
        super::auth::list_api_keys,
        super::auth::delete_api_key,
        super::sessions::create,
        super::sessions::list,
        super::sessions::get,
        super::sessions::rename,
        super::sessions::delete,
        super::sessions::history,
        super::sessions::ask,
        super::tracks::upload,
        super::tracks::list,
        super::tracks::get,
        super::tracks::overview,
        super::tracks::delete,
        super::ops::health,
        super::ops::ready,
    ),
    components(
        schemas(ErrorBody, ErrorCode),
        responses(
            BadRequest,
            Unauthorized,
            Forbidden,
            NotFound,
            Conflict,
            PayloadTooLarge,
            RequestTimeout,
            UnsupportedMediaType,
            TooManyRequests,
            BadGateway,
            ServiceUnavailable,
            NotReady,
        ),
    ),
    modifiers(&Contract),
    tags(
        (name = "auth", description = "Sign in, tokens, WebSocket tickets (never counted)"),
        (name = "api keys", description = "Per-user keys for `X-API-Key`"),
        (name = "sessions", description = "Conversations and their messages"),
        (name = "tracks", description = "Uploaded audio and its analysis"),
        (name = "operations", description = "Liveness and readiness"),
    ),
)]
struct ApiDoc;

/// The document (built once).
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOCUMENT: OnceLock<utoipa::openapi::OpenApi> = OnceLock::new();
    DOCUMENT.get_or_init(ApiDoc::openapi)
}

/// The document as pretty JSON with a final newline: what
/// `/api/openapi.json` serves, `palaver openapi` prints and
/// `docs/openapi.json` holds.
pub fn document_json() -> String {
    let mut json = document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes");
    json.push('\n');
    json
}

/// An error response shared by every operation that can give it: one
/// component per status, its body [`ErrorBody`] with an example of its
/// `code`, and the headers that status carries.
macro_rules! error_response {
    ($name:ident, $status:literal, $code:expr, $description:literal $(, $header:literal => $header_description:literal)*) => {
        #[doc = $description]
        pub struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                let example = serde_json::to_value(ErrorBody::new($description, $code))
                    .expect("an error body serializes");
                #[allow(unused_mut)]
                let mut response = ResponseBuilder::new().description($description).content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                        .example(Some(example))
                        .build(),
                );
                $(
                    response = response.header(
                        $header,
                        string_header($header_description),
                    );
                )*
                (stringify!($name), RefOr::T(response.build()))
            }
        }

        impl IntoResponses for $name {
            fn responses() -> BTreeMap<String, RefOr<Response>> {
                BTreeMap::from([(
                    $status.to_owned(),
                    RefOr::Ref(Ref::from_response_name(stringify!($name))),
                )])
            }
        }
    };
}

error_response!(
    BadRequest,
    "400",
    ErrorCode::InvalidRequest,
    "invalid_request: malformed JSON, or a missing or invalid field (the message names it)"
);
error_response!(
    Unauthorized,
    "401",
    ErrorCode::TokenInvalid,
    "token_missing, token_invalid, token_expired, token_revoked or invalid_credentials",
    "WWW-Authenticate" => "Bearer, with error=\"invalid_token\" when a token was presented"
);
error_response!(
    Forbidden,
    "403",
    ErrorCode::Forbidden,
    "account_disabled, registration_closed, or forbidden (a cross-site Origin, demo mode off, \
     or not for demo users)"
);
error_response!(
    NotFound,
    "404",
    ErrorCode::NotFound,
    "not_found: no such resource, or not the caller's"
);
error_response!(
    Conflict,
    "409",
    ErrorCode::NotReady,
    "email_taken, track_limit, or not_ready (a track's analysis is still running: Retry-After)",
    "Retry-After" => "Seconds to wait (not_ready while the analysis runs)"
);
error_response!(
    PayloadTooLarge,
    "413",
    ErrorCode::PayloadTooLarge,
    "payload_too_large: over server.max_json_bytes, or storage.max_upload_bytes for an upload, or more audio than storage.max_track_duration"
);
error_response!(
    RequestTimeout,
    "408",
    ErrorCode::RequestTimeout,
    "request_timeout: the body did not arrive within server.body_timeout (server.upload_timeout \
     for an upload); the connection is closed"
);
error_response!(
    UnsupportedMediaType,
    "415",
    ErrorCode::UnsupportedMediaType,
    "unsupported_media_type: not JSON (or, for an upload, not multipart audio that decodes)"
);
error_response!(
    TooManyRequests,
    "429",
    ErrorCode::QuotaExceeded,
    "quota_exceeded (with request_count and request_limit), or rate_limited",
    "Retry-After" => "Seconds until a retry can succeed"
);
error_response!(
    BadGateway,
    "502",
    ErrorCode::AnalysisFailed,
    "analysis_failed: the analysis engine's upstream failed (the count is refunded)"
);
error_response!(
    ServiceUnavailable,
    "503",
    ErrorCode::Busy,
    "busy: the analysis pool or password hashing is full",
    "Retry-After" => "Seconds to wait"
);
error_response!(
    NotReady,
    "503",
    ErrorCode::NotReady,
    "not_ready: storage does not accept writes"
);

fn string_header(description: &str) -> utoipa::openapi::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

/// What the annotations cannot say, added to the generated document.
struct Contract;

impl Modify for Contract {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some(
                        "An access token from /api/auth/login/ (or demo, refresh)",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "X-API-Key",
                "A key from POST /api/auth/api-keys/ or `palaver apikey create`",
            ))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            for (method, operation) in [
                (Method::POST, item.post.as_mut()),
                (Method::PUT, item.put.as_mut()),
                (Method::PATCH, item.patch.as_mut()),
                (Method::DELETE, item.delete.as_mut()),
            ] {
                let Some(operation) = operation else { continue };
                if is_counted(&method, path) {
                    rate_limit_headers(operation);
                }
                // Every body has a deadline (server.body_timeout, or
                // server.upload_timeout for an upload).
                if operation.request_body.is_some() {
                    operation.responses.responses.insert(
                        "408".to_owned(),
                        RefOr::Ref(Ref::from_response_name("RequestTimeout")),
                    );
                }
            }
        }
        // A session can be created with no body at all.
        if let Some(RefOr::T(body)) = doc
            .paths
            .paths
            .get_mut("/api/sessions/")
            .and_then(|item| item.post.as_mut())
            .and_then(|operation| operation.request_body.as_mut())
        {
            body.required = Some(Required::False);
        }
        link(
            doc,
            "/api/sessions/",
            HttpMethod::Post,
            "201",
            "id",
            SESSION_OPERATIONS,
        );
        link(
            doc,
            "/api/tracks/",
            HttpMethod::Post,
            "201",
            "track_id",
            TRACK_OPERATIONS,
        );
        link(
            doc,
            "/api/auth/api-keys/",
            HttpMethod::Post,
            "201",
            "id",
            &["delete_api_key"],
        );
    }
}

const SESSION_OPERATIONS: &[&str] = &[
    "get_session",
    "rename_session",
    "delete_session",
    "list_messages",
    "ask",
];
const TRACK_OPERATIONS: &[&str] = &["get_track", "track_overview", "delete_track"];

/// The `RateLimit` fields on every answer of a counted operation except the
/// shared error components (a 429 of one carries them too, said in its
/// description).
fn rate_limit_headers(operation: &mut Operation) {
    for (status, response) in operation.responses.responses.iter_mut() {
        let RefOr::T(response) = response else {
            continue;
        };
        if !status.starts_with('2') {
            continue;
        }
        for (name, description) in [
            (
                "RateLimit-Policy",
                "For a user with a quota: `\"demo\";q=5;w=900` (q quota, w window in seconds; \
                 policy `\"user\"` for the regular-user limit)",
            ),
            (
                "RateLimit",
                "For a user with a quota: `\"demo\";r=3;t=612` (r remaining, t seconds until \
                 it resets or the demo ends)",
            ),
        ] {
            response
                .headers
                .insert(name.to_owned(), RefOr::T(string_header(description)));
        }
    }
}

/// Links from the `status` answer of `path`'s `method` to `operations`,
/// whose `id` path parameter is the answer's `field`.
fn link(
    doc: &mut utoipa::openapi::OpenApi,
    path: &str,
    method: HttpMethod,
    status: &str,
    field: &str,
    operations: &[&str],
) {
    let Some(item) = doc.paths.paths.get_mut(path) else {
        return;
    };
    let operation = match method {
        HttpMethod::Post => item.post.as_mut(),
        _ => None,
    };
    let Some(RefOr::T(response)) = operation.and_then(|o| o.responses.responses.get_mut(status))
    else {
        return;
    };
    for id in operations {
        response.links.insert(
            (*id).to_owned(),
            RefOr::T(
                LinkBuilder::new()
                    .operation_id(*id)
                    .parameter("id", format!("$response.body#/{field}"))
                    .build(),
            ),
        );
    }
}

/// `GET /api/openapi.json`.
async fn openapi_json() -> HttpResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    HttpResponse::Ok()
        .content_type("application/json")
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(JSON.get_or_init(document_json).as_str())
}

/// The docs page may load only what this server serves: Swagger UI sets
/// inline styles and SVG data URIs, nothing else beyond `'self'`.
const DOCS_CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; \
connect-src 'self'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'";

/// Swagger UI's configuration: this server's document; no validator badge
/// (it would send the document's URL to a public validator).
fn swagger_config() -> Arc<utoipa_swagger_ui::Config<'static>> {
    static CONFIG: OnceLock<Arc<utoipa_swagger_ui::Config<'static>>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            Arc::new(
                utoipa_swagger_ui::Config::new(["/api/openapi.json"])
                    .validator_url("none")
                    .try_it_out_enabled(true)
                    .persist_authorization(false),
            )
        })
        .clone()
}

/// `GET /api/docs/`: Swagger UI's page, with a `<base>` so its relative
/// asset URLs resolve under `/api/docs/` with or without the trailing slash
/// (the router trims it).
async fn docs_index() -> Result<HttpResponse, ApiError> {
    let page = swagger_file("index.html")?;
    let page = String::from_utf8_lossy(&page.bytes)
        .replacen("<head>", "<head>\n    <base href=\"/api/docs/\">", 1)
        .replacen("<title>Swagger UI</title>", "<title>palaver API</title>", 1);
    Ok(docs_response("text/html; charset=utf-8").body(page))
}

/// `GET /api/docs/{file}`: Swagger UI's assets.
async fn docs_file(file: web::Path<String>) -> Result<HttpResponse, ApiError> {
    if file.as_str() == "index.html" {
        return docs_index().await;
    }
    let found = swagger_file(&file)?;
    let content_type = found.content_type.clone();
    let body = match found.bytes {
        std::borrow::Cow::Borrowed(bytes) => web::Bytes::from_static(bytes),
        std::borrow::Cow::Owned(bytes) => web::Bytes::from(bytes),
    };
    Ok(docs_response(&content_type).body(body))
}

fn swagger_file(name: &str) -> Result<utoipa_swagger_ui::SwaggerFile<'static>, ApiError> {
    utoipa_swagger_ui::serve(name, swagger_config())
        .map_err(ApiError::internal)?
        .ok_or(ApiError::NotFound)
}

fn docs_response(content_type: &str) -> actix_web::HttpResponseBuilder {
    let mut builder = HttpResponse::Ok();
    builder
        .content_type(content_type)
        .insert_header((
            header::CONTENT_SECURITY_POLICY,
            DOCS_CONTENT_SECURITY_POLICY,
        ))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"))
        .insert_header((header::X_FRAME_OPTIONS, "DENY"))
        .insert_header((header::CACHE_CONTROL, "no-cache"));
    builder
}
