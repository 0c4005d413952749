//! The WebSocket client-frame parser: the bytes a client sends after the
//! handshake, split into network reads, through `socket::Incoming` (frame
//! decoding, continuations joined, size bounds, UTF-8), each text message
//! parsed as the session actor parses it (`ClientFrame`, question
//! validation, resume id); pings answered through the outbox and the
//! 101 body's bytes decoded as a client would.
//!
//! Input: byte 0 picks the read size, byte 1 `ws.max_message_bytes`
//! (16 B to 32 KiB); the rest is what the client sent.
#![no_main]

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_codec::Decoder;
use actix_http::body::MessageBody;
use actix_http::ws::{Codec, ProtocolError};
use futures_util::task::noop_waker_ref;
use futures_util::Stream;
use libfuzzer_sys::fuzz_target;
use palaver_actors::protocol::ClientFrame;
use palaver_actors::socket::{self, Received};
use palaver_fuzz::{chunk_size, payload};

fuzz_target!(|data: &[u8]| {
    let [read, limit, wire @ ..] = data else {
        return;
    };
    let max_message_bytes = 16usize << (limit % 12);
    let mut socket = socket::open(
        payload(wire, chunk_size(*read)),
        max_message_bytes,
        64 << 10,
    );
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut failed = false;
    loop {
        match Pin::new(&mut socket.incoming).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(message))) => {
                assert!(!failed, "a message after a protocol error");
                match message {
                    Received::Text(text) => {
                        assert!(text.len() <= max_message_bytes, "text over the bound");
                        on_text(&text);
                    }
                    Received::Binary(bytes) => {
                        assert!(bytes.len() <= max_message_bytes, "binary over the bound");
                    }
                    Received::Ping(bytes) => {
                        socket.outbox.pong(&bytes);
                    }
                    // A message not yet whole: counted by the session
                    // actor's rate limit, nothing to deliver.
                    Received::Fragment | Received::Pong(_) | Received::Close(_) => {}
                }
            }
            Poll::Ready(Some(Err(e))) => {
                assert!(!failed, "a second error after a protocol error");
                failed = true;
                // How the session actor classifies it (close code).
                let _ = matches!(e, ProtocolError::Overflow) || socket::is_invalid_text(&e);
            }
            Poll::Ready(None) => break,
            Poll::Pending => panic!("a payload that ended left the stream pending"),
        }
    }
    // What was queued (pongs) encodes into frames a client can read.
    socket.outbox.control(socket::Out::Close(1000, ""));
    let mut client = Codec::new().client_mode().max_size(1 << 20);
    loop {
        match Pin::new(&mut socket.body).poll_next(&mut cx) {
            Poll::Ready(Some(Ok(bytes))) => {
                let mut buf = bytes::BytesMut::from(&bytes[..]);
                while let Some(_frame) =
                    client.decode(&mut buf).expect("the server's frames decode")
                {}
                assert!(buf.is_empty(), "a partial frame in a chunk");
            }
            Poll::Ready(Some(Err(e))) => panic!("body failed: {e}"),
            Poll::Ready(None) | Poll::Pending => break,
        }
    }
});

/// What the session actor does with a text message before any state.
fn on_text(text: &str) {
    let Ok(frame) = serde_json::from_str::<ClientFrame>(text) else {
        return;
    };
    let _ = frame.kind();
    match frame {
        ClientFrame::Question { text, .. } => {
            let _ = palaver_actors::question::validate(&text, 4000);
        }
        ClientFrame::Resume { message_id, .. } => {
            let _ = uuid::Uuid::parse_str(&message_id);
        }
        ClientFrame::Refresh { .. } | ClientFrame::Cancel | ClientFrame::Ping => {}
    }
}
