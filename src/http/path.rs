//! Paths are declared without a trailing slash and served with or without
//! one (API.md writes them with one): [`TrimSlashes`] rewrites a request's
//! path before it is routed, as actix-web's `NormalizePath::trim()` does (a
//! trailing `/` trimmed, a run of `/` merged into one, the root kept), the
//! query untouched.
//!
//! Why not `NormalizePath`: it runs a regex over every path and rebuilds the
//! URI through `format!` and a second copy even when only the trailing slash
//! goes, about 3 % of a WebSocket handshake's server CPU in a profile
//! (docs/BENCHMARKS.md). Here a path with nothing to change costs one scan,
//! and one that only loses its trailing slash one copy of the path and
//! query.

use std::future::{ready, Ready};

use actix_web::dev::{Service, ServiceRequest, ServiceResponse, Transform, Url};
use actix_web::http::uri::{PathAndQuery, Uri};
use actix_web::web::Bytes;

/// The middleware (see the module's documentation).
pub struct TrimSlashes;

impl<S, B> Transform<S, ServiceRequest> for TrimSlashes
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Transform = TrimSlashesService<S>;
    type InitError = ();
    type Future = Ready<Result<Self::Transform, Self::InitError>>;

    fn new_transform(&self, service: S) -> Self::Future {
        ready(Ok(TrimSlashesService { service }))
    }
}

pub struct TrimSlashesService<S> {
    service: S,
}

impl<S, B> Service<ServiceRequest> for TrimSlashesService<S>
where
    S: Service<ServiceRequest, Response = ServiceResponse<B>, Error = actix_web::Error>,
{
    type Response = ServiceResponse<B>;
    type Error = actix_web::Error;
    type Future = S::Future;

    actix_web::dev::forward_ready!(service);

    fn call(&self, mut req: ServiceRequest) -> Self::Future {
        if let Some(uri) = trimmed(req.uri()) {
            // Outermost, before routing: nothing has been matched yet.
            *req.match_info_mut().get_mut() = Url::new(uri.clone());
            req.match_info_mut().reset();
            req.head_mut().uri = uri;
        }
        self.service.call(req)
    }
}

/// The URI with its path normalized, or `None` when there is nothing to
/// change (or no path to change: an empty one stays as it is).
fn trimmed(uri: &Uri) -> Option<Uri> {
    let mut path_and_query = normal_path(uri.path())?;
    if let Some(query) = uri.query() {
        // A handshake's query holds a token: hundreds of bytes.
        path_and_query.reserve_exact(1 + query.len());
        path_and_query.push('?');
        path_and_query.push_str(query);
    }
    let path_and_query = Bytes::from(path_and_query);
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(PathAndQuery::from_maybe_shared(path_and_query).ok()?);
    Uri::from_parts(parts).ok()
}

/// `path` without its trailing `/` and with every run of `/` merged into
/// one (`/` for a path of slashes only); `None` when that is `path` itself.
fn normal_path(path: &str) -> Option<String> {
    let doubled = path.contains("//");
    let trailing = path.len() > 1 && path.ends_with('/');
    if path.is_empty() || !(doubled || trailing) {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c != '/' || !out.ends_with('/') {
            out.push(c);
        }
    }
    if out.len() > 1 && out.ends_with('/') {
        out.pop();
    }
    (out != path).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_lose_their_trailing_slash_and_doubled_slashes() {
        let cases = [
            ("/api/sessions/", Some("/api/sessions")),
            ("/api/sessions", None),
            ("/ws/sessions/abc/", Some("/ws/sessions/abc")),
            ("/", None),
            ("//", Some("/")),
            ("///", Some("/")),
            ("/api//sessions///x//", Some("/api/sessions/x")),
            (
                "/api/sessions/x/messages/",
                Some("/api/sessions/x/messages"),
            ),
            ("", None),
            ("/é/", Some("/é")),
        ];
        for (path, want) in cases {
            assert_eq!(normal_path(path).as_deref(), want, "{path:?}");
        }
    }

    #[test]
    fn the_query_is_kept() {
        let uri: Uri = "/ws/sessions/x/?token=a/b//c&resume=1:2".parse().unwrap();
        let normal = trimmed(&uri).unwrap();
        assert_eq!(normal.path(), "/ws/sessions/x");
        assert_eq!(normal.query(), Some("token=a/b//c&resume=1:2"));
        let absolute: Uri = "http://h:1/a/?q".parse().unwrap();
        assert_eq!(trimmed_str(&absolute), "http://h:1/a?q");
        assert!(trimmed(&"/a?q=/".parse().unwrap()).is_none());
    }

    fn trimmed_str(uri: &Uri) -> String {
        trimmed(uri).unwrap().to_string()
    }
}
