//! The WebSocket wire under a SessionActor, on actix-http's frame codec.
//!
//! Incoming frames are decoded from the upgrade request's payload, with
//! continuations joined and sizes bounded ([`Incoming`]). Outgoing frames
//! wait in a byte-bounded queue ([`Outbox`]) that *is* the upgrade
//! response's body ([`Body`]): the connection's own dispatcher encodes them
//! when it can write, several per chunk. There is no task and no channel per
//! connection, and an idle socket costs the queue's header and nothing else.
//! The actor holds the [`Outbox`]; the reply hub holds a [`Sender`] to the
//! same queue, and pushes a reply's frames into it directly (no message
//! through the actor's mailbox per frame).
//!
//! This replaces actix-ws, whose writer task, channel and body queue cost
//! about 2.7 KiB per idle connection (docs/BENCHMARKS.md).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use actix_codec::Decoder;
use actix_http::body::{BodySize, MessageBody};
use actix_http::ws::{CloseReason, Codec, Frame, Item, OpCode, Parser, ProtocolError};
use actix_http::Payload;
use bytes::{Bytes, BytesMut};
use futures_util::Stream;

/// A control frame's payload may be at most 125 bytes (RFC 6455 §5.5).
const MAX_CONTROL_PAYLOAD: usize = 125;
/// The longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_FRAME_HEADER: usize = 14;
/// The most the body hands the connection at once: the rest stays queued,
/// where the outbox bound and the close deadline apply to it.
const MAX_CHUNK: usize = 16 * 1024;
/// What a queued pong is charged beyond its payload (its frame and queue
/// entry), so a ping flood cannot queue pongs for free.
const PONG_OVERHEAD: usize = 16;

/// A frame for the client.
pub enum Out {
    Text(String),
    /// A frame encoded once and sent to several sockets (a reply's events).
    Shared(Arc<str>),
    Ping,
    Pong(Bytes),
    Close(u16, &'static str),
}

impl Out {
    /// What the frame counts against the outbox bound.
    fn cost(&self) -> usize {
        match self {
            Out::Text(text) => text.len(),
            Out::Shared(text) => text.len(),
            Out::Pong(payload) => payload.len() + PONG_OVERHEAD,
            Out::Ping | Out::Close(..) => 0,
        }
    }
}

/// A message from the client, continuations joined.
#[derive(Debug)]
pub enum Received {
    /// A fragment of a message not yet whole (the frame is counted against
    /// the rate limit like any other: endless fragments are not free).
    Fragment,
    Text(bytestring::ByteString),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    Close(Option<CloseReason>),
}

/// The upgraded socket's three ends: the actor queues into the outbox and
/// reads the incoming stream; the body goes into the 101 response.
pub fn open(payload: Payload, max_message_bytes: usize, max_buffered_bytes: usize) -> Socket {
    let shared = Arc::new(Mutex::new(Queue::default()));
    Socket {
        outbox: Outbox(Sender {
            shared: shared.clone(),
            limit: max_buffered_bytes,
        }),
        incoming: Incoming {
            payload,
            buf: BytesMut::new(),
            codec: Codec::new().max_size(max_message_bytes),
            partial: None,
            max_message_bytes,
            shared: shared.clone(),
            ended: false,
        },
        body: Body { shared },
    }
}

pub struct Socket {
    pub outbox: Outbox,
    pub incoming: Incoming,
    pub body: Body,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Out>,
    /// Sum of the queued frames' costs.
    bytes: usize,
    /// The body, waiting for frames.
    body_waker: Option<Waker>,
    /// The incoming stream, waiting for bytes (woken when the body goes).
    incoming_waker: Option<Waker>,
    /// The outbox is gone: the body ends once the queue is empty.
    sender_gone: bool,
    /// A close frame is queued: nothing pushed after it would be written.
    close_queued: bool,
    /// The close frame was written: nothing more is.
    closed: bool,
    /// Given up on (the client did not read its close in time): the body
    /// fails, which drops the connection.
    abandoned: bool,
    /// The body was dropped: the connection is gone.
    disconnected: bool,
}

impl Queue {
    /// Drops every queued frame (nothing more will be written).
    fn discard(&mut self) {
        self.frames = VecDeque::new();
        self.bytes = 0;
    }
}

fn lock(shared: &Mutex<Queue>) -> MutexGuard<'_, Queue> {
    // No code under this lock panics; if some did, the queue is still whole.
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of a frame pushed into a socket's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued: it will be written.
    Queued,
    /// Not queued: it would pass the bound (`ws.max_buffered_bytes`), the
    /// client reads too slowly.
    Full,
    /// Not queued, and nothing more will be written: a close frame is
    /// queued or written, the connection is gone, or its actor is.
    Gone,
}

/// A sending end of a socket's queue that several may hold (the reply hub
/// keeps one per socket that follows a reply), bounded in bytes like the
/// [`Outbox`] it comes from. Dropping it tells the body nothing: only the
/// actor's `Outbox` going ends the body.
#[derive(Clone)]
pub struct Sender {
    shared: Arc<Mutex<Queue>>,
    limit: usize,
}

impl Sender {
    /// Queues a text frame shared with other sockets (a reply's).
    pub fn shared(&self, json: Arc<str>) -> Pushed {
        self.push(Out::Shared(json))
    }

    fn push(&self, out: Out) -> Pushed {
        let cost = out.cost();
        let mut queue = lock(&self.shared);
        if queue.close_queued
            || queue.closed
            || queue.abandoned
            || queue.disconnected
            || queue.sender_gone
        {
            // Nothing more will be written (the body stops at the close
            // and discards what follows): the frame is dropped here.
            return Pushed::Gone;
        }
        if cost > 0 && queue.bytes + cost > self.limit {
            return Pushed::Full;
        }
        if matches!(out, Out::Close(..)) {
            queue.close_queued = true;
        }
        queue.bytes += cost;
        queue.frames.push_back(out);
        if let Some(waker) = queue.body_waker.take() {
            waker.wake();
        }
        Pushed::Queued
    }
}

/// The actor's sending end, bounded in bytes (`ws.max_buffered_bytes`);
/// dropping it ends the body once what is queued is written.
pub struct Outbox(Sender);

impl Outbox {
    /// Queues a text frame; `false` (and nothing queued) if that would pass
    /// the bound. A frame for a closing socket is dropped (`true`): the
    /// actor learns the socket is gone from its incoming stream.
    pub fn text(&self, json: String) -> bool {
        self.0.push(Out::Text(json)) != Pushed::Full
    }

    /// Queues a text frame shared with other sockets; `false` (and nothing
    /// queued) past the bound.
    pub fn shared(&self, json: Arc<str>) -> bool {
        self.0.shared(json) != Pushed::Full
    }

    /// Queues the pong of a client's ping (payload cut to 125 bytes);
    /// `false` past the bound.
    pub fn pong(&self, payload: &[u8]) -> bool {
        // A copy: the ping's bytes are a slice of the whole chunk it was
        // read in, which a queued pong would otherwise keep alive.
        let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
        self.0.push(Out::Pong(Bytes::copy_from_slice(payload))) != Pushed::Full
    }

    /// Queues a ping or a close, which are never refused (nothing is queued
    /// after a close).
    pub fn control(&self, out: Out) {
        self.0.push(out);
    }

    /// Another sending end to the same queue (for the reply hub).
    pub fn sender(&self) -> Sender {
        self.0.clone()
    }

    /// A handle for giving up on the connection later (see [`Abandon`]).
    pub fn abandon_handle(&self) -> Abandon {
        Abandon(Arc::downgrade(&self.0.shared))
    }
}

impl Drop for Outbox {
    fn drop(&mut self) {
        let mut queue = lock(&self.0.shared);
        queue.sender_gone = true;
        if let Some(waker) = queue.body_waker.take() {
            waker.wake();
        }
    }
}

/// Gives up on a connection whose client does not read: drops whatever is
/// still queued and fails the body, so the connection is dropped the next
/// time its dispatcher asks for more. A no-op once the body is gone.
pub struct Abandon(Weak<Mutex<Queue>>);

impl Abandon {
    pub fn abandon(self) {
        if let Some(shared) = self.0.upgrade() {
            let mut queue = lock(&shared);
            if !queue.disconnected {
                queue.abandoned = true;
                queue.discard();
                if let Some(waker) = queue.body_waker.take() {
                    waker.wake();
                }
            }
        }
    }
}

/// The 101 response's body: the queued frames, encoded.
pub struct Body {
    shared: Arc<Mutex<Queue>>,
}

impl MessageBody for Body {
    type Error = io::Error;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let mut queue = lock(&self.shared);
        if queue.abandoned {
            return Poll::Ready(Some(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read its close frame in time",
            ))));
        }
        if queue.closed {
            return Poll::Ready(None);
        }
        let mut buf = BytesMut::new();
        while buf.len() < MAX_CHUNK {
            let Some(out) = queue.frames.pop_front() else {
                break;
            };
            queue.bytes -= out.cost();
            match out {
                Out::Text(text) => Parser::write_message(&mut buf, text, OpCode::Text, true, false),
                Out::Shared(text) => {
                    Parser::write_message(&mut buf, text.as_bytes(), OpCode::Text, true, false)
                }
                Out::Ping => Parser::write_message(&mut buf, b"", OpCode::Ping, true, false),
                Out::Pong(payload) => {
                    Parser::write_message(&mut buf, payload, OpCode::Pong, true, false)
                }
                Out::Close(code, reason) => {
                    // A close frame's reason fits in its 125 bytes.
                    debug_assert!(reason.len() <= MAX_CONTROL_PAYLOAD - 2);
                    let reason = CloseReason {
                        code: code.into(),
                        description: Some(reason.to_owned()),
                    };
                    Parser::write_close(&mut buf, Some(reason), false);
                    // Nothing follows a close frame.
                    queue.closed = true;
                    queue.discard();
                    break;
                }
            }
        }
        if !buf.is_empty() {
            return Poll::Ready(Some(Ok(buf.freeze())));
        }
        if queue.sender_gone {
            return Poll::Ready(None);
        }
        // An idle socket keeps no queue allocation.
        if queue.frames.capacity() > 0 {
            queue.frames = VecDeque::new();
        }
        queue.body_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        let mut queue = lock(&self.shared);
        queue.disconnected = true;
        queue.body_waker = None;
        queue.discard();
        if let Some(waker) = queue.incoming_waker.take() {
            waker.wake();
        }
    }
}

/// The client's messages, decoded from the upgrade request's payload.
pub struct Incoming {
    payload: Payload,
    buf: BytesMut,
    codec: Codec,
    /// A fragmented message being joined: whether it is text, and its bytes.
    partial: Option<(bool, BytesMut)>,
    max_message_bytes: usize,
    shared: Arc<Mutex<Queue>>,
    ended: bool,
}

impl Incoming {
    /// The next whole message in the buffer, if there is one.
    fn decode(&mut self) -> Result<Option<Received>, ProtocolError> {
        while let Some(frame) = self.codec.decode(&mut self.buf)? {
            let joined = match frame {
                Frame::Text(bytes) => return text(bytes).map(Some),
                Frame::Binary(bytes) => return Ok(Some(Received::Binary(bytes))),
                Frame::Ping(bytes) => return Ok(Some(Received::Ping(bytes))),
                Frame::Pong(bytes) => return Ok(Some(Received::Pong(bytes))),
                Frame::Close(reason) => return Ok(Some(Received::Close(reason))),
                Frame::Continuation(item) => self.join(item)?,
            };
            if let Some(message) = joined {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }

    /// Adds a fragment; the whole message once its last fragment is in,
    /// [`Received::Fragment`] before.
    fn join(&mut self, item: Item) -> Result<Option<Received>, ProtocolError> {
        let (bytes, first, last) = match item {
            Item::FirstText(b) => (b, Some(true), false),
            Item::FirstBinary(b) => (b, Some(false), false),
            Item::Continue(b) => (b, None, false),
            Item::Last(b) => (b, None, true),
        };
        match (first, self.partial.as_mut()) {
            (Some(is_text), None) => self.partial = Some((is_text, BytesMut::from(&bytes[..]))),
            (None, Some((_, joined))) => joined.extend_from_slice(&bytes),
            (Some(_), Some(_)) => return Err(ProtocolError::ContinuationStarted),
            (None, None) => return Err(ProtocolError::ContinuationNotStarted),
        }
        if self
            .partial
            .as_ref()
            .is_some_and(|(_, joined)| joined.len() > self.max_message_bytes)
        {
            return Err(ProtocolError::Overflow);
        }
        if !last {
            return Ok(Some(Received::Fragment));
        }
        let Some((is_text, joined)) = self.partial.take() else {
            return Ok(None);
        };
        let joined = joined.freeze();
        if is_text {
            text(joined).map(Some)
        } else {
            Ok(Some(Received::Binary(joined)))
        }
    }
}

impl Incoming {
    /// Ends the stream with `error`: nothing after a protocol error is read.
    fn fail(&mut self, error: ProtocolError) -> Poll<Option<Result<Received, ProtocolError>>> {
        self.ended = true;
        self.buf = BytesMut::new();
        self.partial = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Drop for Incoming {
    fn drop(&mut self) {
        lock(&self.shared).incoming_waker = None;
    }
}

/// Whether a protocol error is a text message that is not UTF-8 (1007).
pub fn is_invalid_text(error: &ProtocolError) -> bool {
    matches!(error, ProtocolError::Io(e) if e.kind() == io::ErrorKind::InvalidData)
}

fn text(bytes: Bytes) -> Result<Received, ProtocolError> {
    bytestring::ByteString::try_from(bytes)
        .map(Received::Text)
        .map_err(|e| ProtocolError::Io(io::Error::new(io::ErrorKind::InvalidData, e)))
}

impl Stream for Incoming {
    type Item = Result<Received, ProtocolError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match this.decode() {
                Ok(Some(message)) => return Poll::Ready(Some(Ok(message))),
                Ok(None) => {}
                Err(e) => return this.fail(e),
            }
            if this.buf.len() > this.max_message_bytes + MAX_FRAME_HEADER {
                // A frame within the limit would have decoded by now: this
                // one announced more, and is not buffered to find out.
                return this.fail(ProtocolError::Overflow);
            }
            if this.buf.is_empty() {
                // An idle socket keeps no read buffer (an empty BytesMut may
                // still share, with no capacity left, the allocation its
                // last frame was split from).
                this.buf = BytesMut::new();
            }
            if this.ended {
                return Poll::Ready(None);
            }
            {
                let mut queue = lock(&this.shared);
                if queue.disconnected {
                    this.ended = true;
                    return Poll::Ready(None);
                }
                queue.incoming_waker = Some(cx.waker().clone());
            }
            match Pin::new(&mut this.payload).poll_next(cx) {
                Poll::Ready(Some(Ok(bytes))) => {
                    if this.buf.is_empty() {
                        this.buf = BytesMut::from(bytes);
                    } else {
                        this.buf.extend_from_slice(&bytes);
                    }
                }
                Poll::Ready(Some(Err(e))) => {
                    // The connection failed (a client that went without a
                    // close frame ends here): the stream just ends.
                    tracing::debug!(error = %e, "websocket payload ended with an error");
                    this.ended = true;
                }
                Poll::Ready(None) => this.ended = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use actix_http::error::PayloadError;
    use actix_http::BoxedPayloadStream;
    use futures_util::task::noop_waker_ref;
    use futures_util::StreamExt;

    /// A payload that yields `chunks`, then stays open (pending) unless `end`.
    fn payload(chunks: Vec<Bytes>, end: bool) -> Payload {
        let items = futures_util::stream::iter(chunks.into_iter().map(Ok::<_, PayloadError>));
        let stream: BoxedPayloadStream = if end {
            Box::pin(items)
        } else {
            Box::pin(items.chain(futures_util::stream::pending()))
        };
        Payload::Stream { payload: stream }
    }

    /// A client frame (masked, as clients must).
    fn frame(op: OpCode, fin: bool, data: &[u8]) -> Bytes {
        let mut buf = BytesMut::new();
        Parser::write_message(&mut buf, data, op, fin, true);
        buf.freeze()
    }

    fn poll<T>(f: impl FnOnce(&mut Context<'_>) -> Poll<T>) -> Poll<T> {
        f(&mut Context::from_waker(noop_waker_ref()))
    }

    fn next(incoming: &mut Incoming) -> Poll<Option<Result<Received, ProtocolError>>> {
        poll(|cx| Pin::new(incoming).poll_next(cx))
    }

    /// Everything the body has ready, decoded as the client would.
    pub(crate) fn drain(body: &mut Body) -> (Vec<Frame>, Poll<()>) {
        let mut frames = Vec::new();
        let mut codec = Codec::new().client_mode();
        loop {
            match poll(|cx| Pin::new(&mut *body).poll_next(cx)) {
                Poll::Ready(Some(Ok(bytes))) => {
                    let mut buf = BytesMut::from(&bytes[..]);
                    while let Some(f) = codec.decode(&mut buf).unwrap() {
                        frames.push(f);
                    }
                }
                Poll::Ready(Some(Err(e))) => panic!("body failed: {e}"),
                Poll::Ready(None) => return (frames, Poll::Ready(())),
                Poll::Pending => return (frames, Poll::Pending),
            }
        }
    }

    #[test]
    fn fragments_are_joined_and_bounded() {
        let chunks = [
            frame(OpCode::Text, false, b"hel"),
            // A control frame may arrive between fragments.
            frame(OpCode::Ping, true, b"p"),
            frame(OpCode::Continue, false, b"lo "),
            frame(OpCode::Continue, true, b"world"),
            frame(OpCode::Text, false, b"0123456789"),
            frame(OpCode::Continue, true, b"0123456789"),
        ];
        // Split across payload chunks at odd places.
        let all: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
        let split = all.chunks(5).map(Bytes::copy_from_slice).collect();
        let mut socket = open(payload(split, true), 16, 1024);
        let fragment = |socket: &mut Socket| {
            assert!(matches!(
                next(&mut socket.incoming),
                Poll::Ready(Some(Ok(Received::Fragment)))
            ))
        };
        fragment(&mut socket);
        assert!(
            matches!(next(&mut socket.incoming), Poll::Ready(Some(Ok(Received::Ping(p)))) if p == "p")
        );
        fragment(&mut socket);
        assert!(
            matches!(next(&mut socket.incoming), Poll::Ready(Some(Ok(Received::Text(t)))) if t == "hello world")
        );
        fragment(&mut socket);
        // 20 bytes joined from two 10-byte fragments: over the 16-byte bound.
        assert!(matches!(
            next(&mut socket.incoming),
            Poll::Ready(Some(Err(ProtocolError::Overflow)))
        ));
        assert!(matches!(next(&mut socket.incoming), Poll::Ready(None)));
    }

    #[test]
    fn bad_frames_are_errors() {
        // (frames, overflow?, invalid text?)
        for (chunks, overflow, invalid_text) in [
            (vec![frame(OpCode::Text, true, &[0xff, 0xfe])], false, true),
            (vec![frame(OpCode::Continue, true, b"x")], false, false),
            (vec![frame(OpCode::Text, true, &[b'x'; 17])], true, false),
        ] {
            // A good frame after the bad one is never read.
            let chunks = [chunks, vec![frame(OpCode::Text, true, b"ok")]].concat();
            let mut socket = open(payload(chunks, false), 16, 1024);
            match next(&mut socket.incoming) {
                Poll::Ready(Some(Err(e))) => {
                    assert_eq!(matches!(e, ProtocolError::Overflow), overflow);
                    assert_eq!(is_invalid_text(&e), invalid_text);
                }
                other => panic!("expected an error, got {other:?}"),
            }
            assert!(matches!(next(&mut socket.incoming), Poll::Ready(None)));
        }
    }

    #[test]
    fn a_frame_announcing_more_than_the_limit_is_not_buffered() {
        // A text frame header announcing 1 GiB, then its bytes arriving.
        let mut announced = vec![0x81, 0x80 | 127];
        announced.extend_from_slice(&(1u64 << 30).to_be_bytes());
        announced.extend_from_slice(&[1, 2, 3, 4]);
        let mut chunks = vec![Bytes::from(announced)];
        chunks.extend((0..8).map(|_| Bytes::from(vec![b'x'; 1024])));
        let mut socket = open(payload(chunks, false), 4096, 1024);
        assert!(matches!(
            next(&mut socket.incoming),
            Poll::Ready(Some(Err(ProtocolError::Overflow)))
        ));
        assert!(socket.incoming.buf.capacity() <= 8192, "nothing kept");
        assert!(matches!(next(&mut socket.incoming), Poll::Ready(None)));
    }

    #[test]
    fn a_failed_connection_ends_the_stream_quietly() {
        let items = futures_util::stream::iter([
            Ok(frame(OpCode::Text, true, b"hi")),
            Err(PayloadError::Incomplete(None)),
        ]);
        // The body stays (a dropped body would end the stream by itself).
        let mut socket = open(
            Payload::Stream {
                payload: Box::pin(items),
            },
            1024,
            1024,
        );
        let incoming = &mut socket.incoming;
        assert!(matches!(next(incoming), Poll::Ready(Some(Ok(Received::Text(t)))) if t == "hi"));
        assert!(matches!(next(incoming), Poll::Ready(None)));
    }

    #[test]
    fn the_body_hands_over_a_bounded_chunk_at_a_time() {
        let mut socket = open(payload(vec![], false), 1024, 1 << 20);
        for _ in 0..3 {
            assert!(socket.outbox.text("x".repeat(10_000)));
        }
        let chunk = poll(|cx| Pin::new(&mut socket.body).poll_next(cx));
        assert!(matches!(chunk, Poll::Ready(Some(Ok(ref b))) if b.len() < 2 * 10_010));
        // The third frame is still queued, and still counted.
        assert_eq!(lock(&socket.outbox.0.shared).bytes, 10_000);
        let (frames, _) = drain(&mut socket.body);
        assert_eq!(frames.len(), 1);
    }

    #[test]
    fn the_outbox_is_bounded_in_bytes_until_the_body_takes_frames() {
        let mut socket = open(payload(vec![], false), 1024, 10);
        assert!(socket.outbox.text("12345".into()));
        assert!(socket.outbox.text("67890".into()));
        assert!(!socket.outbox.text("x".into()), "11 bytes > 10");
        // Pings and closes are never refused.
        socket.outbox.control(Out::Ping);
        let (frames, state) = drain(&mut socket.body);
        assert_eq!(
            frames,
            [
                Frame::Text(Bytes::from("12345")),
                Frame::Text(Bytes::from("67890")),
                Frame::Ping(Bytes::new()),
            ]
        );
        assert!(state.is_pending(), "the body waits for more");
        assert!(socket.outbox.text("1234567890".into()), "room again");
        assert!(!socket.outbox.pong(b"p"), "a pong costs 17");
    }

    #[test]
    fn a_close_frame_is_the_last() {
        let mut socket = open(payload(vec![], false), 1024, 1024);
        socket.outbox.text("before".into());
        socket
            .outbox
            .control(Out::Close(4001, "credential expired"));
        socket.outbox.text("after".into());
        let (frames, state) = drain(&mut socket.body);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], Frame::Text(Bytes::from("before")));
        let Frame::Close(Some(reason)) = &frames[1] else {
            panic!("{:?}", frames[1]);
        };
        assert_eq!(u16::from(reason.code), 4001);
        assert_eq!(reason.description.as_deref(), Some("credential expired"));
        assert!(state.is_ready(), "the body ended");
        // Frames queued after the close are dropped, not kept.
        assert!(socket.outbox.text("later".into()));
        assert_eq!(lock(&socket.outbox.0.shared).frames.len(), 0);
    }

    #[test]
    fn a_sender_is_told_full_or_gone_and_nothing_follows_a_queued_close() {
        let mut socket = open(payload(vec![], false), 1024, 10);
        let sender = socket.outbox.sender();
        assert_eq!(sender.shared("12345".into()), Pushed::Queued);
        assert_eq!(sender.shared("123456".into()), Pushed::Full, "11 > 10");
        // Dropping a sender is not the actor going: the body goes on.
        drop(sender.clone());
        assert_eq!(sender.shared("67890".into()), Pushed::Queued);
        // The actor queues its close while the queue is full: a frame
        // pushed after it is not an overflow, and is never written.
        socket.outbox.control(Out::Close(1008, "slow reader"));
        assert_eq!(sender.shared("x".into()), Pushed::Gone);
        assert!(socket.outbox.text("y".into()), "dropped, not refused");
        let (frames, state) = drain(&mut socket.body);
        assert_eq!(frames.len(), 3, "{frames:?}");
        assert!(matches!(frames[2], Frame::Close(_)));
        assert!(state.is_ready());
        assert_eq!(sender.shared("z".into()), Pushed::Gone);

        // The actor goes without a close: the hub's sender gets nothing in.
        let Socket {
            outbox, mut body, ..
        } = open(payload(vec![], false), 1024, 1024);
        let sender = outbox.sender();
        assert_eq!(sender.shared("last".into()), Pushed::Queued);
        drop(outbox);
        assert_eq!(sender.shared("late".into()), Pushed::Gone);
        let (frames, state) = drain(&mut body);
        assert_eq!(frames, [Frame::Text(Bytes::from("last"))]);
        assert!(state.is_ready());
    }

    #[test]
    fn each_end_learns_when_the_other_goes() {
        // The actor goes: the body ends after what was queued.
        let Socket {
            outbox, mut body, ..
        } = open(payload(vec![], false), 1024, 1024);
        outbox.text("last".into());
        drop(outbox);
        let (frames, state) = drain(&mut body);
        assert_eq!(frames, [Frame::Text(Bytes::from("last"))]);
        assert!(state.is_ready());

        // The connection goes (its body is dropped): the incoming stream ends.
        let Socket {
            mut incoming, body, ..
        } = open(payload(vec![], false), 1024, 1024);
        assert!(next(&mut incoming).is_pending());
        drop(body);
        assert!(matches!(next(&mut incoming), Poll::Ready(None)));
    }

    #[test]
    fn an_abandoned_body_fails_and_frees_its_queue() {
        let mut socket = open(payload(vec![], false), 1024, 1024);
        socket.outbox.text("never read".into());
        socket.outbox.abandon_handle().abandon();
        assert_eq!(lock(&socket.outbox.0.shared).bytes, 0);
        assert!(matches!(
            poll(|cx| Pin::new(&mut socket.body).poll_next(cx)),
            Poll::Ready(Some(Err(_)))
        ));
        // Once the body is gone, abandoning is a no-op.
        let handle = socket.outbox.abandon_handle();
        drop(socket);
        handle.abandon();
    }
}
