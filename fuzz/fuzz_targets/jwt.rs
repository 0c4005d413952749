//! The JWT verification path: `Auth::verify_access` of the real server
//! state (the fuzzing config: palaver's own HS256 tokens and a Django-style
//! `[[auth.external]]` source), which routes by the unverified `iss`, pins
//! the algorithm, looks up the key, verifies signature and claims, then
//! reads the family and the user (and provisions another issuer's user
//! the first time); and `TokenService::decode` on its own.
//!
//! Input: byte 0 picks the mode.
//! - 0: the rest is a token string, as a client sends it.
//! - 1, 2: the rest is a JWT header (JSON, any bytes), a newline, and its
//!   claims, signed HS256 with palaver's own secret (1) or the `django`
//!   source's (2) whatever the header says, so the fuzzer reaches the
//!   claim checks behind the signature. In the claims, `$SUB`, `$FAM`,
//!   `$NOW` and `$EXP` become the harness user's id, its login's family,
//!   now and an hour from now.
#![no_main]

use libfuzzer_sys::fuzz_target;
use palaver_actors::auth::Via;
use palaver_fuzz::{now_secs, server, sign, DJANGO_SECRET, OWN_SECRET};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let server = server();
    let (token, signer) = match mode % 3 {
        0 => match std::str::from_utf8(rest) {
            Ok(token) => (token.to_owned(), None),
            Err(_) => return,
        },
        signer => {
            let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
                Some(at) => (&rest[..at], &rest[at + 1..]),
                None => (rest, &b""[..]),
            };
            let claims = substitute(claims, server);
            let secret = if signer == 1 {
                OWN_SECRET
            } else {
                DJANGO_SECRET
            };
            (sign(secret, header, &claims), Some(signer))
        }
    };
    let _ = server.state.auth.tokens().decode(&token);
    let verified = server
        .system
        .block_on(server.state.auth.verify_access(&token));
    if let Ok(principal) = verified {
        match (signer, &principal.via) {
            // Signed with palaver's key: only palaver's verification may
            // accept it, and only for the user it names.
            (Some(1), Via::Access(claims)) => {
                assert_eq!(claims.user(), Some(principal.user.id));
                assert!(principal.user.external.is_none());
            }
            // Signed with the django source's key: only that source.
            (Some(2), Via::External(grant)) => assert_eq!(&*grant.source, "django"),
            (Some(_), via) => panic!("a token signed with one key verified as {via:?}"),
            (None, Via::Access(_) | Via::External(_)) => {}
            (None, via) => panic!("a token verified as {via:?}"),
        }
    }
});

fn substitute(claims: &[u8], server: &palaver_fuzz::Server) -> Vec<u8> {
    let Ok(text) = std::str::from_utf8(claims) else {
        return claims.to_vec();
    };
    let family = server
        .principal
        .family()
        .map(|f| f.to_string())
        .unwrap_or_default();
    let now = now_secs();
    text.replace("$SUB", &server.user.id.to_string())
        .replace("$FAM", &family)
        .replace("$NOW", &now.to_string())
        .replace("$EXP", &(now + 3600).to_string())
        .into_bytes()
}
