//! The multipart upload path, from the client's bytes: `Content-Type` and
//! body through `tracks::stream_to_file` (actix-multipart's parser, the
//! `file` field chosen, the file name cleaned, every byte counted against
//! the bound, the part streamed to a staged file), then the staged file
//! through `palaver_audio::probe` (the container sniff and first decode
//! that decide 201 or 415), as `POST /api/tracks/` runs them.
//!
//! Input: byte 0 picks the network read size, byte 1 the upload bound
//! (256 B to 32 KiB), then the `Content-Type` value up to the first
//! newline, then the body.
#![no_main]

use actix_web::dev::Payload;
use actix_web::test::TestRequest;
use actix_web::{web, FromRequest};
use libfuzzer_sys::fuzz_target;
use palaver::http::tracks::stream_to_file;
use palaver::http::ApiError;
use palaver_fuzz::{chunk_size, payload, server};

fuzz_target!(|data: &[u8]| {
    let [read, bound, rest @ ..] = data else {
        return;
    };
    let limit = 256u64 << (bound % 8);
    let (content_type, body) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &b""[..]),
    };
    let Ok(content_type) = actix_web::http::header::HeaderValue::from_bytes(content_type) else {
        return;
    };
    let server = server();
    let req = TestRequest::post()
        .uri("/api/tracks/")
        .insert_header((actix_web::http::header::CONTENT_TYPE, content_type))
        .to_http_request();
    let mut raw: Payload = payload(body, chunk_size(*read));
    let outcome = server.system.block_on(async {
        let payload = web::Payload::from_request(&req, &mut raw)
            .await
            .expect("a payload extracts");
        stream_to_file(&server.state, &req, payload, limit).await
    });
    match outcome {
        Ok((staged, filename, size)) => {
            assert!(size <= limit, "{size} bytes passed a {limit}-byte bound");
            assert!(!filename.is_empty(), "a cleaned file name is never empty");
            assert!(
                !filename.contains(['/', '\\']),
                "a file name with a path: {filename:?}"
            );
            assert_eq!(
                std::fs::metadata(staged.path()).map(|m| m.len()).ok(),
                Some(size),
                "the staged file holds what was counted"
            );
            let _ = palaver_audio::probe(staged.path());
        }
        Err(ApiError::PayloadTooLarge { .. } | ApiError::InvalidRequest(_)) => {}
        Err(other) => panic!("an upload body gave {other:?}"),
    }
});
