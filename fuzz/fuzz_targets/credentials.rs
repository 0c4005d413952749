//! Credential extraction: a WebSocket upgrade request's query string and
//! headers through the handshake's `ws::authenticate` (ticket, then
//! `Sec-WebSocket-Protocol: bearer.<jwt>`, `?token=`, `Authorization`,
//! `?api_key=`, `X-API-Key`: the first present decides) and the same
//! headers through the HTTP extractor's `extract::authenticate`
//! (`Authorization: Bearer`, `X-API-Key`), and the Origin check, against
//! the real server state.
//!
//! Input: text. The first line is the query string, each further line a
//! header `Name: value`. `$ACCESS`, `$REFRESH`, `$MINTED`, `$APIKEY`,
//! `$EXTERNAL` become the harness user's real credentials (palaver's own
//! access and refresh tokens, an operator-minted token, an API key, a
//! Django source's token) and `$TICKET` a fresh single-use ticket, so the
//! fuzzer mixes real credentials into hostile requests.
//!
//! Whatever is accepted must be the harness user or the Django source's
//! user 42: no request without a real credential gets a principal.
#![no_main]

use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::http::Uri;
use actix_web::test::TestRequest;
use actix_web::web;
use libfuzzer_sys::fuzz_target;
use palaver::http::{extract, origin, ws};
use palaver_actors::auth::Principal;
use palaver_fuzz::{server, Server};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let server = server();
    let text = substitute(text, server);
    let mut lines = text.split('\n');
    let query = lines.next().unwrap_or_default();
    let uri = format!("/ws/sessions/0190c7a4-7e1c-7000-8000-000000000000/?{query}");
    if Uri::try_from(uri.as_str()).is_err() {
        // Not a request line actix-web's parser would hand to a handler.
        return;
    }
    let mut request = TestRequest::get()
        .uri(&uri)
        .app_data(web::Data::new(server.state.clone()));
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.trim().as_bytes()),
            HeaderValue::from_bytes(value.trim_start().as_bytes()),
        ) else {
            continue;
        };
        request = request.append_header((name, value));
    }
    let req = request.to_http_request();
    let state = &server.state;
    let _ = origin::allowed(req.headers(), &state.config.server.allowed_origins);
    if let Ok(principal) = server.system.block_on(ws::authenticate(&req, state)) {
        check(&principal, server);
    }
    if let Ok(principal) = server.system.block_on(extract::authenticate(&req)) {
        check(&principal, server);
    }
});

fn check(principal: &Principal, server: &Server) {
    let external = principal
        .user
        .external
        .as_ref()
        .map(|e| (e.issuer.as_str(), e.id.as_str()));
    assert!(
        principal.user.id == server.user.id || external == Some(("django", "42")),
        "a principal for a user no credential named: {:?}",
        principal.user
    );
}

fn substitute(text: &str, server: &Server) -> String {
    let mut text = text
        .replace("$ACCESS", &server.access)
        .replace("$REFRESH", &server.refresh)
        .replace("$MINTED", &server.minted)
        .replace("$APIKEY", &server.api_key)
        .replace("$EXTERNAL", &server.external);
    while text.contains("$TICKET") {
        let ticket = server
            .state
            .auth
            .issue_ticket(&server.principal)
            .map(|(ticket, _)| ticket)
            .unwrap_or_default();
        text = text.replacen("$TICKET", &ticket, 1);
    }
    text
}
