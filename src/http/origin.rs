//! The server's Origin policy (API.md §7), one place for the WebSocket
//! handshake, CORS and the cross-site guard on state-changing API requests.
//!
//! With `server.allowed_origins` empty only the server's own origin is
//! allowed (`http://` + the request's `Host`); otherwise exactly the listed
//! origins, compared case-insensitively, no wildcards. A request without an
//! `Origin` header is not a cross-site browser request and passes.

use actix_web::http::header;
use actix_web::http::header::HeaderMap;

/// Whether the request's `Origin` (if any) is allowed.
pub fn allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if allowed.is_empty() {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        return !host.is_empty() && same_origin(origin, host);
    }
    listed(origin, allowed)
}

/// Whether `origin` is one of the configured ones.
pub fn listed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| a.eq_ignore_ascii_case(origin))
}

/// `origin` is `http://` + `host` (the listener speaks plain HTTP; behind a
/// TLS proxy the browser's origin is `https://…` and must be listed).
fn same_origin(origin: &str, host: &str) -> bool {
    origin
        .strip_prefix("http://")
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderName, HeaderValue};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        map
    }

    #[test]
    fn same_origin_by_default_listed_ones_otherwise() {
        let none: &[String] = &[];
        assert!(allowed(&headers(&[("host", "a.test:8080")]), none));
        assert!(allowed(
            &headers(&[("host", "a.test:8080"), ("origin", "http://A.test:8080")]),
            none
        ));
        for bad in [
            "https://a.test:8080",
            "http://a.test",
            "http://evil.test",
            "null",
        ] {
            assert!(
                !allowed(&headers(&[("host", "a.test:8080"), ("origin", bad)]), none),
                "{bad}"
            );
        }
        assert!(!allowed(&headers(&[("origin", "http://a.test")]), none));
        let list = vec!["https://chat.example.com".to_owned()];
        assert!(allowed(
            &headers(&[("host", "x"), ("origin", "https://chat.example.com")]),
            &list
        ));
        assert!(!allowed(
            &headers(&[
                ("host", "x"),
                ("origin", "https://chat.example.com.evil.test")
            ]),
            &list
        ));
        assert!(!allowed(
            &headers(&[("host", "x"), ("origin", "http://x")]),
            &list
        ));
    }
}
