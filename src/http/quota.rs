//! Quota admission for HTTP (API.md §4), in one place: a middleware that
//! counts every POST, PUT, PATCH and DELETE under `/api/` (except
//! `/api/auth/`) that reaches a route, before its handler runs, through the
//! QuotaRegistry; refunds it when the handler answers 5xx (or marks the
//! response [`Uncounted`]: an invalid question); and puts the
//! `RateLimit` / `RateLimit-Policy` fields on counted responses.
//!
//! Requests that do not authenticate pass through uncounted: the handler's
//! extractor answers them 401. The verification's outcome is stashed in the
//! request's extensions so the handler does not verify the credential twice.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use palaver_actors::auth::now_secs;
use palaver_actors::quota::{Admission, Standing};

use super::extract::{authenticate, Verified};
use super::ApiError;
use crate::app::AppState;

/// Whether a request is counted (API.md §4), given that it reaches a route.
pub fn is_counted(method: &Method, path: &str) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    ) && path.starts_with("/api/")
        && !path.starts_with("/api/auth/")
        && path != "/api/auth"
}

pub async fn admit_counted(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody>>, actix_web::Error> {
    // The decoded path, as the router matches it: the raw one would let
    // `/api/sessions/x/m%65ssages` skip counting yet reach its handler.
    let path = req.match_info().as_str();
    let counted = is_counted(req.method(), path) && req.resource_map().has_resource(path);
    if !counted {
        return Ok(next.call(req).await?.map_into_left_body());
    }
    let Some(state) = req.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(req).await?.map_into_left_body());
    };
    // Verified once: the handler's extractor takes this outcome (and
    // answers the 401 of a failure itself, uncounted).
    let outcome = authenticate(req.request()).await;
    let caller = outcome
        .as_ref()
        .ok()
        .map(|p| (p.user.id, state.quota_policy(&p.user)));
    req.extensions_mut().insert(Verified(outcome));
    let Some((user, Some(policy))) = caller else {
        return Ok(next.call(req).await?.map_into_left_body());
    };

    let admission = state
        .quotas
        .admit(user, policy, now_secs())
        .map_err(ApiError::from)?;
    let standing = match admission {
        Admission::Rejected(standing) => {
            let (req, _) = req.into_parts();
            let mut res = ApiError::QuotaExceeded {
                count: standing.count,
                limit: standing.limit(),
            }
            .error_response();
            set_headers(res.headers_mut(), &standing, true);
            return Ok(ServiceResponse::new(req, res).map_into_right_body());
        }
        Admission::Admitted(standing) => standing,
    };
    // The count is written; it must be durable before the response goes out.
    // The handler's own durable write usually covers it.
    let mark = state.store.durability_mark();

    let mut res = next.call(req).await?;
    state
        .store
        .durable_since(mark)
        .await
        .map_err(ApiError::from)?;
    let mut standing = standing;
    let uncounted = res.response().extensions().contains::<Uncounted>();
    if res.status().is_server_error() || uncounted {
        let refunded = state.quotas.refund(user, policy, now_secs());
        match refunded {
            Ok(()) => match state.store.durable().await {
                Ok(()) => standing.count = standing.count.saturating_sub(1),
                Err(e) => tracing::error!(error = %e, "quota refund not made durable"),
            },
            Err(e) => tracing::error!(error = %e, "quota refund failed"),
        }
    }
    set_headers(res.headers_mut(), &standing, false);
    Ok(res.map_into_left_body())
}

/// Marks a response whose request is not to be counted after all (an
/// invalid question, refused before the pool or storage saw it: the same
/// rule as over a WebSocket).
pub struct Uncounted;

/// `RateLimit-Policy: "demo";q=5;w=900` and `RateLimit: "demo";r=3;t=612`
/// (draft-ietf-httpapi-ratelimit-headers); `Retry-After` on a 429.
fn set_headers(headers: &mut actix_web::http::header::HeaderMap, s: &Standing, rejected: bool) {
    let name = s.policy.name();
    let policy = format!("\"{name}\";q={};w={}", s.limit(), s.policy.window());
    let limit = format!("\"{name}\";r={};t={}", s.remaining(), s.reset_in);
    let mut set = |header: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(HeaderName::from_static(header), value);
        }
    };
    set("ratelimit-policy", policy);
    set("ratelimit", limit);
    if rejected {
        set("retry-after", s.reset_in.max(1).to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Config, Secret};
    use actix_web::middleware::from_fn;
    use actix_web::{test as awtest, App, HttpResponse};
    use palaver_storage::Store;
    use std::net::{IpAddr, Ipv4Addr};

    /// An app with the admission middleware and two counted probe routes, one
    /// that succeeds and one that fails with a 500; plus a demo user's token.
    async fn app_and_demo(
        limit: u32,
    ) -> (
        impl actix_web::dev::Service<
            actix_http::Request,
            Response = ServiceResponse<impl MessageBody>,
            Error = actix_web::Error,
        >,
        String,
    ) {
        let mut config = Config::default();
        config.auth.secret = Some(Secret::new("quota-test-secret-0123456789-0123456789"));
        config.demo.request_limit = limit;
        config.demo.per_ip_per_hour = 0;
        let state = AppState::start(
            config,
            Store::temporary().unwrap(),
            crate::metrics::Metrics::detached(),
        )
        .unwrap();
        let demo = state
            .auth
            .demo(IpAddr::V4(Ipv4Addr::LOCALHOST))
            .await
            .unwrap();
        let app = awtest::init_service(
            App::new()
                .app_data(web::Data::new(state))
                .route("/api/probe/ok", web::post().to(HttpResponse::Ok))
                .route(
                    "/api/probe/fail",
                    web::post().to(HttpResponse::InternalServerError),
                )
                .route("/api/probe/ok", web::get().to(HttpResponse::Ok))
                .wrap(from_fn(admit_counted)),
        )
        .await;
        (app, demo.access)
    }

    fn post(path: &str, token: &str) -> actix_http::Request {
        awtest::TestRequest::post()
            .uri(path)
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request()
    }

    #[actix_web::test]
    async fn exactly_the_limit_passes_among_concurrent_requests() {
        for _round in 0..20 {
            let (app, token) = app_and_demo(5).await;
            let calls = (0..50).map(|_| awtest::call_service(&app, post("/api/probe/ok", &token)));
            let responses = futures_util::future::join_all(calls).await;
            let ok = responses.iter().filter(|r| r.status() == 200).count();
            let over: Vec<_> = responses.iter().filter(|r| r.status() == 429).collect();
            assert_eq!((ok, over.len()), (5, 45));
            let last = over[0].headers();
            assert_eq!(last.get("ratelimit-policy").unwrap(), "\"demo\";q=5;w=900");
            assert!(last
                .get("ratelimit")
                .unwrap()
                .to_str()
                .unwrap()
                .starts_with("\"demo\";r=0;t="));
            assert!(last.contains_key("retry-after"));
        }
    }

    #[actix_web::test]
    async fn rejections_carry_the_counts_and_5xx_is_refunded() {
        let (app, token) = app_and_demo(2).await;
        let res = awtest::call_service(&app, post("/api/probe/fail", &token)).await;
        assert_eq!(res.status(), 500);
        assert_eq!(
            res.headers()
                .get("ratelimit")
                .unwrap()
                .to_str()
                .unwrap()
                .split(';')
                .nth(1),
            Some("r=2")
        );
        for remaining in [1, 0] {
            let res = awtest::call_service(&app, post("/api/probe/ok", &token)).await;
            assert_eq!(res.status(), 200);
            let expected = format!("r={remaining}");
            assert_eq!(
                res.headers()
                    .get("ratelimit")
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .split(';')
                    .nth(1),
                Some(expected.as_str())
            );
        }
        let res = awtest::call_service(&app, post("/api/probe/ok", &token)).await;
        assert_eq!(res.status(), 429);
        let body: serde_json::Value = awtest::read_body_json(res).await;
        assert_eq!(body["code"], "quota_exceeded");
        assert_eq!(body["request_count"], 2);
        assert_eq!(body["request_limit"], 2);
        // GETs are never counted, nor refused.
        let get = awtest::TestRequest::get()
            .uri("/api/probe/ok")
            .insert_header(("authorization", format!("Bearer {token}")))
            .to_request();
        let res = awtest::call_service(&app, get).await;
        assert_eq!(res.status(), 200);
        assert!(!res.headers().contains_key("ratelimit"));
    }

    #[test]
    fn what_is_counted() {
        for (method, path, counted) in [
            (Method::POST, "/api/sessions", true),
            (Method::DELETE, "/api/tracks/x", true),
            (Method::PATCH, "/api/sessions/x", true),
            (Method::PUT, "/api/x", true),
            (Method::GET, "/api/sessions", false),
            (Method::POST, "/api/auth/login", false),
            (Method::POST, "/api/auth", false),
            (Method::POST, "/health", false),
        ] {
            assert_eq!(is_counted(&method, path), counted, "{method} {path}");
        }
    }
}
