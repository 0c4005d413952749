//! The SessionActor: one per WebSocket connection, created by the Supervisor
//! (`Supervisor::reserve_session`) only after the handshake authenticated the
//! client and checked the session's ownership. It owns the socket (the
//! incoming stream is added to its context; outgoing frames are queued into
//! the socket's byte-bounded outbox, which is the 101 response's body), speaks
//! the protocol of API.md §7, and never blocks: storage and analysis run as
//! futures and report back as messages or stream items; a question's first
//! step (question.rs: validate, reserve, admit) is one short synchronous call.
//! A reply's frames do not pass through it: the reply hub (replies.rs)
//! queues them into the socket's outbox and tells the actor only what it
//! must act on ([`ReplyNotice`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::ProtocolError;
use palaver_storage::{Session, Store, UserId};
use uuid::Uuid;

use crate::analysis::{AnalysisPool, Cancel, Sink};
use crate::auth::{now_secs, Auth, AuthError, Principal};
use crate::messages::{ReplyNotice, ToSocket};
use crate::protocol::{
    message_json, ClientFrame, Close, ConnectedUser, ErrorCode, QuotaView, ServerFrame,
};
use crate::question::{Asking, Refusal, Stored};
use crate::quota::{Policy, QuotaRegistry};
use crate::registry::Connections;
use crate::replies::{Follower, Replies, Resume};
use crate::socket::{Incoming, Out, Outbox, Received};
use crate::telemetry;

/// The `[ws]` limits a session actor enforces.
#[derive(Clone, Debug)]
pub struct WsLimits {
    pub max_messages_per_minute: u32,
    pub max_message_bytes: usize,
    pub max_buffered_bytes: usize,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub expiry_warning: Duration,
    pub max_question_chars: usize,
    /// How long a finished reply stays resumable (`ws.resume_window`).
    pub resume_window: Duration,
}

/// What every session actor shares (one per server).
pub struct SessionDeps {
    pub store: Store,
    pub auth: Auth,
    pub quotas: QuotaRegistry,
    pub pool: AnalysisPool,
    pub connections: Arc<Connections>,
    /// Replies streaming to sockets, their followers and logs.
    pub replies: Arc<Replies>,
    pub limits: WsLimits,
}

impl SessionDeps {
    /// What a question's first step needs (question.rs).
    pub fn asking(&self) -> Asking<'_> {
        Asking {
            store: &self.store,
            quotas: &self.quotas,
            pool: &self.pool,
            max_chars: self.limits.max_question_chars,
        }
    }
}

/// How many frames past the per-minute limit get `rate_limited` before the
/// connection is closed with 1008.
const RATE_LIMIT_GRACE: u32 = 10;
/// How long a close frame may wait behind a reader that does not read.
const CLOSE_DEADLINE: Duration = Duration::from_secs(5);

/// The question this socket asked, while its reply is not done.
enum Streaming {
    /// Admission and storage of the question in progress; the reply's stop
    /// flag (taken with the session's place in the reply hub).
    Starting {
        cancel: Arc<Cancel>,
    },
    Running,
}

pub struct SessionActor {
    deps: Arc<SessionDeps>,
    conn_id: u64,
    user_id: UserId,
    is_demo: bool,
    /// The session the socket is on (what a question is answered against
    /// is read when it is stored: `Stored::session`).
    session_id: Uuid,
    /// When the credential expires (Unix seconds), if it does.
    expires_at: Option<u64>,
    policy: Option<Policy>,
    out: Outbox,
    last_heard: Instant,
    /// When the next ping (and idle check) is due.
    next_ping: Instant,
    /// The server's pings not answered yet (their pongs are not counted
    /// against the rate limit).
    pings_unanswered: u32,
    window_started: Instant,
    frames_in_window: u32,
    streaming: Option<Streaming>,
    /// The reply this socket's question started (its `done` ends `streaming`).
    current_reply: Option<Uuid>,
    /// `?resume=<message_id>:<seq>`, acted on right after `connected`.
    resume_at_connect: Option<String>,
    /// The connection's one timer (`tick`): the next ping, expiry warning
    /// or expiry, whichever comes first.
    timer: Option<SpawnHandle>,
    /// `token_expiring` was sent for the current credential.
    warned: bool,
    /// Asked to stop while a question was starting: stop once it started.
    stop_when_started: bool,
    /// The streaming reply failed and its question's count was given back:
    /// where the user stands now, told after `done`.
    refunded: Option<Box<crate::quota::Standing>>,
    /// A shutdown close waiting for the streaming reply's `done`.
    close_after_done: Option<Close>,
    closing: bool,
    /// `connected` fitted in the outbox (queued before the actor ran).
    greeted: bool,
}

/// What the handshake established.
pub struct Opened {
    pub principal: Principal,
    pub session: Session,
    pub policy: Option<Policy>,
    /// `?resume=` of the handshake, unparsed.
    pub resume: Option<String>,
}

impl SessionActor {
    /// Runs the actor in `ctx` (created by the handshake, which registered
    /// its address) over the upgraded socket.
    pub(crate) fn launch(
        ctx: Context<Self>,
        deps: Arc<SessionDeps>,
        opened: Opened,
        conn_id: u64,
        out: Outbox,
        incoming: Incoming,
    ) -> Addr<Self> {
        let mut ctx = ctx;
        ctx.add_stream(incoming);
        let now = Instant::now();
        let ping_every = deps.limits.ping_interval;
        let mut actor = SessionActor {
            out,
            conn_id,
            user_id: opened.principal.user.id,
            is_demo: opened.principal.user.is_demo,
            expires_at: opened.principal.expires_at(),
            session_id: opened.session.id,
            policy: opened.policy,
            deps,
            last_heard: now,
            next_ping: now + ping_every,
            pings_unanswered: 0,
            window_started: now,
            frames_in_window: 0,
            streaming: None,
            current_reply: None,
            resume_at_connect: opened.resume,
            timer: None,
            warned: false,
            stop_when_started: false,
            refunded: None,
            close_after_done: None,
            closing: false,
            greeted: false,
        };
        // `connected` is queued before the actor runs, so the HTTP
        // dispatcher finds it when it first polls the 101 response's body
        // and writes both in one `sendto` (one system call and one wake-up
        // less per handshake; docs/BENCHMARKS.md).
        let connected = actor.connected_frame();
        telemetry::ws_message("out", connected.kind());
        actor.greeted = actor.out.text(connected.to_json());
        if actor.greeted {
            // From now on (not before: `connected` is first) the session's
            // new replies are queued into this socket.
            actor
                .deps
                .connections
                .attach(actor.user_id, conn_id, actor.out.sender());
        }
        ctx.run(actor)
    }

    /// This socket as a reply's follower (for the reply hub).
    fn follower(&self, ctx: &mut Context<Self>) -> Follower {
        Follower {
            conn: self.conn_id,
            out: self.out.sender(),
            actor: ctx.address().recipient(),
        }
    }

    /// The `connected` frame: the session, the user, the credential's
    /// expiry and the quota standing.
    fn connected_frame(&self) -> ServerFrame {
        let standing = self.policy.and_then(|policy| {
            let peeked = self.deps.quotas.peek(self.user_id, policy, now_secs());
            peeked
                .map_err(|e| tracing::error!(error = %e, "cannot read a quota counter"))
                .ok()
        });
        ServerFrame::Connected {
            session_id: self.session_id.hyphenated().to_string(),
            user: ConnectedUser {
                id: self.user_id.to_string(),
                is_demo: self.is_demo,
            },
            expires_at: self.expires_at,
            quota: standing.map(|s| QuotaView {
                request_count: s.count,
                request_limit: s.limit(),
            }),
        }
    }

    fn send(&mut self, frame: ServerFrame, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        telemetry::ws_message("out", frame.kind());
        if !self.out.text(frame.to_json()) {
            self.close_slow_reader(ctx);
        }
    }

    /// The outbox is full (`ws.max_buffered_bytes`): the client reads too
    /// slowly, the socket closes 1008.
    fn close_slow_reader(&mut self, ctx: &mut Context<Self>) {
        if !self.closing {
            tracing::info!(
                conn = self.conn_id,
                "slow reader: outgoing buffer full, closing"
            );
        }
        self.close(Close::SlowReader, ctx);
    }

    /// Queues a frame encoded once for several sockets (a reply's).
    fn send_shared(&mut self, kind: &'static str, json: Arc<str>, ctx: &mut Context<Self>) {
        if self.closing {
            return;
        }
        telemetry::ws_message("out", kind);
        if !self.out.shared(json) {
            self.close_slow_reader(ctx);
        }
    }

    fn close(&mut self, why: Close, ctx: &mut Context<Self>) {
        let (code, reason) = (why.code(), why.reason());
        if self.closing {
            return;
        }
        self.closing = true;
        telemetry::ws_close(code);
        tracing::info!(conn = self.conn_id, user_id = %self.user_id, session_id = %self.session_id, code, reason, "websocket closed");
        self.out.control(Out::Close(code, reason));
        // A reader that never reads never receives the close: give up on it
        // after a while so what is queued for it is released.
        let abandon = self.out.abandon_handle();
        actix_rt::spawn(async move {
            tokio::time::sleep(CLOSE_DEADLINE).await;
            abandon.abandon();
        });
        ctx.stop();
    }

    /// The connection's timer: does what is due (the ping with the idle
    /// check; the `token_expiring` warning, once per credential; the 4001
    /// close at expiry) and arms itself for whichever comes next. One timer
    /// rather than one per duty: an idle connection holds one (its memory,
    /// docs/BENCHMARKS.md). Called again when the credential changes.
    fn tick(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.timer.take() {
            ctx.cancel_future(handle);
        }
        let now = Instant::now();
        if now >= self.next_ping {
            if now.duration_since(self.last_heard) >= self.deps.limits.idle_timeout {
                tracing::info!(conn = self.conn_id, "idle timeout: closing");
                return self.close(Close::IdleTimeout, ctx);
            }
            self.out.control(Out::Ping);
            self.pings_unanswered = self.pings_unanswered.saturating_add(1);
            self.next_ping = now + self.deps.limits.ping_interval;
        }
        let mut next = self.next_ping - now;
        if let Some(expires_at) = self.expires_at {
            // To the millisecond: a timer rounded to whole seconds would
            // leave up to a second after expiry in which the socket still
            // admits questions.
            let left = Duration::from_millis(
                expires_at
                    .saturating_mul(1000)
                    .saturating_sub(palaver_storage::now_millis()),
            );
            if left.is_zero() {
                return self.close(Close::CredentialExpired, ctx);
            }
            let warn_in = left.saturating_sub(self.deps.limits.expiry_warning);
            if !self.warned && warn_in.is_zero() {
                self.warned = true;
                self.send(
                    ServerFrame::TokenExpiring {
                        expires_in: left.as_secs(),
                    },
                    ctx,
                );
            }
            next = next.min(if self.warned { left } else { warn_in });
        }
        self.timer = Some(ctx.run_later(next, |act, ctx| {
            act.timer = None;
            act.tick(ctx);
        }));
    }

    /// Counts a frame against `ws.max_messages_per_minute`; `false` when the
    /// frame must be dropped.
    fn within_rate(&mut self, ctx: &mut Context<Self>) -> bool {
        let now = Instant::now();
        if now.duration_since(self.window_started) >= Duration::from_secs(60) {
            self.window_started = now;
            self.frames_in_window = 0;
        }
        self.frames_in_window += 1;
        let limit = self.deps.limits.max_messages_per_minute;
        if self.frames_in_window <= limit {
            return true;
        }
        if self.frames_in_window > limit + RATE_LIMIT_GRACE {
            self.close(Close::TooManyMessages, ctx);
        } else {
            self.send(
                ServerFrame::error(
                    ErrorCode::RateLimited,
                    format!("at most {limit} messages per minute"),
                ),
                ctx,
            );
        }
        false
    }

    fn on_text(&mut self, text: &str, ctx: &mut Context<Self>) {
        if !self.within_rate(ctx) {
            return;
        }
        let frame = match serde_json::from_str::<ClientFrame>(text) {
            Ok(frame) => {
                telemetry::ws_message("in", frame.kind());
                frame
            }
            Err(e) => {
                telemetry::ws_message("in", "invalid");
                let message = format!("not a valid message: {e}");
                self.send(ServerFrame::error(ErrorCode::InvalidMessage, message), ctx);
                return;
            }
        };
        match frame {
            ClientFrame::Ping => self.send(ServerFrame::Pong, ctx),
            ClientFrame::Question { text, id } => self.on_question(text, id, ctx),
            // Any socket of the session stops its reply.
            ClientFrame::Cancel => self.deps.replies.cancel(self.session_id),
            ClientFrame::Refresh { token } => self.on_refresh(token, ctx),
            ClientFrame::Resume { message_id, after } => self.on_resume(&message_id, after, ctx),
        }
    }

    /// Verifies the new token. palaver's own (and another issuer's with its
    /// key cached) verify at once, in this turn, so frames after it see the
    /// new expiry; one that must wait (for its JWKS or, the first time, its
    /// user) finishes off the actor's turn while frames go on being served.
    fn on_refresh(&mut self, token: String, ctx: &mut Context<Self>) {
        use futures_util::FutureExt;
        let auth = self.deps.auth.clone();
        let mut verify = Box::pin(async move { auth.verify_access(&token).await });
        match (&mut verify).now_or_never() {
            Some(verified) => self.refreshed(verified, ctx),
            None => {
                ctx.spawn(
                    verify
                        .into_actor(self)
                        .map(|verified, act, ctx| act.refreshed(verified, ctx)),
                );
            }
        }
    }

    fn refreshed(&mut self, verified: Result<Principal, AuthError>, ctx: &mut Context<Self>) {
        match verified {
            Ok(principal) if principal.user.id == self.user_id => {
                self.expires_at = principal.expires_at();
                // The registry tracks the family (for revocations).
                self.deps
                    .connections
                    .set_family(self.user_id, self.conn_id, principal.family());
                self.warned = false;
                self.tick(ctx);
                self.send(
                    ServerFrame::Refreshed {
                        expires_at: self.expires_at,
                    },
                    ctx,
                );
            }
            Ok(_) => self.send(
                ServerFrame::error(ErrorCode::TokenInvalid, "the token belongs to another user"),
                ctx,
            ),
            Err(e) => self.send(
                ServerFrame::error(ErrorCode::TokenInvalid, e.to_string()),
                ctx,
            ),
        }
    }

    fn on_question(&mut self, text: String, client_id: Option<String>, ctx: &mut Context<Self>) {
        // The expiry timer may not have run yet: an expired credential never
        // gets a question admitted.
        if self.expires_at.is_some_and(|at| now_secs() >= at) {
            return self.close(Close::CredentialExpired, ctx);
        }
        if client_id.as_ref().is_some_and(|id| id.chars().count() > 64) {
            return self.send(
                ServerFrame::error(ErrorCode::InvalidMessage, "id: at most 64 characters"),
                ctx,
            );
        }
        // One reply streams per session, whichever socket asked.
        let in_progress =
            || ServerFrame::error(ErrorCode::StreamInProgress, "a reply is still streaming");
        if matches!(self.streaming, Some(Streaming::Starting { .. })) {
            return self.send(in_progress(), ctx);
        }
        let Ok(cancel) = self.deps.replies.claim(self.session_id) else {
            return self.send(in_progress(), ctx);
        };
        if self.streaming.is_some() {
            // Running, but the hub gave the session's place back: the
            // reply ended, its `done` is in the outbox and its
            // `ReplyNotice::Done` on the way (the client answered `done`
            // before this actor was told). Do now what the notice would.
            // (A `Failed` notice is sent before the reply is even stored,
            // and a context handles its mailbox before its stream: it has
            // been handled, and the refund is told here.)
            self.reply_done(ctx);
            if self.closing {
                self.deps.replies.release(self.session_id);
                return;
            }
        }
        // Validated, given a place in the pool and counted in one step; a
        // refusal leaves nothing behind (question.rs).
        let counting = self.policy.map(|policy| (self.user_id, policy));
        let reserved = match self.deps.asking().reserve(text, counting) {
            Ok(reserved) => reserved,
            Err(refusal) => return self.refuse(refusal, ctx),
        };
        self.streaming = Some(Streaming::Starting { cancel });
        let start = reserved.store(self.session_id);
        ctx.spawn(start.into_actor(self).map(move |result, act, ctx| {
            match result {
                Ok(stored) => act.started(stored, client_id, ctx),
                Err(refusal) => act.refuse(refusal, ctx),
            }
            // The client left while the question was starting: the
            // reply was submitted (it finishes and is stored), now stop.
            if act.stop_when_started {
                ctx.stop();
            }
        }));
    }

    /// A question that did not start: nothing streams, the client is told why.
    fn refuse(&mut self, refusal: Refusal, ctx: &mut Context<Self>) {
        self.streaming = None;
        self.deps.replies.release(self.session_id);
        let frame = match refusal {
            Refusal::TooLong { max } => ServerFrame::error(
                ErrorCode::QuestionTooLong,
                format!("at most {max} characters"),
            ),
            Refusal::Empty => {
                ServerFrame::error(ErrorCode::InvalidMessage, "the question is empty")
            }
            Refusal::Busy => ServerFrame::error(
                ErrorCode::Busy,
                "the analysis pool is full; try again shortly",
            ),
            Refusal::Quota(s) => ServerFrame::Error {
                code: ErrorCode::QuotaExceeded,
                message: "request quota exceeded".into(),
                request_count: Some(s.count),
                request_limit: Some(s.limit()),
            },
            Refusal::Storage(e) => {
                tracing::error!(error = %e, "cannot store a question");
                ServerFrame::error(
                    ErrorCode::AnalysisFailed,
                    "the question could not be stored",
                )
            }
        };
        self.send(frame, ctx);
    }

    fn started(&mut self, stored: Stored, client_id: Option<String>, ctx: &mut Context<Self>) {
        let cancel = match self.streaming.take() {
            Some(Streaming::Starting { cancel }) => cancel,
            _ => Arc::default(),
        };
        // Encoded once: every socket of the session is handed the same.
        let message: Arc<str> = ServerFrame::Message {
            message: message_json(&stored.question),
            client_id,
        }
        .to_json()
        .into();
        self.send_shared("message", message.clone(), ctx);
        if let Some(s) = stored.standing {
            self.send(ServerFrame::quota(&s), ctx);
        }
        let reply = stored.reply.id;
        self.current_reply = Some(reply);
        // Every socket of the session attached in the registry, this one
        // included (attached at launch).
        let followers = self
            .deps
            .connections
            .on_session(self.user_id, self.session_id);
        let publisher =
            self.deps
                .replies
                .open(self.session_id, reply, message, self.conn_id, followers);
        stored.submit_to(cancel, Sink::Hub(publisher));
        self.streaming = Some(Streaming::Running);
    }

    /// `resume` (or `?resume=`): `resumed`, then the reply's events after
    /// `after` as first sent, then (live) the rest as it streams, all
    /// queued by the reply hub (so no live event lands before `resumed` or
    /// among the replayed ones).
    fn on_resume(&mut self, message_id: &str, after: u64, ctx: &mut Context<Self>) {
        let Ok(reply) = Uuid::parse_str(message_id) else {
            return self.resume_unavailable(ctx);
        };
        let follower = self.follower(ctx);
        match self
            .deps
            .replies
            .resume(self.session_id, reply, after, follower)
        {
            Ok(Resume::Replayed) => {}
            Ok(Resume::Unavailable) => self.resume_unavailable(ctx),
            Err(e) => {
                tracing::error!(error = %e, "cannot read a reply's events");
                self.resume_unavailable(ctx);
            }
        }
    }

    fn resume_unavailable(&mut self, ctx: &mut Context<Self>) {
        self.send(
            ServerFrame::error(
                ErrorCode::ResumeUnavailable,
                "this reply cannot be resumed; reload the history",
            ),
            ctx,
        );
    }

    /// This socket's reply ended (its `done` is queued): another question
    /// may start; a refunded count is told (after `done`), a shutdown close
    /// that waited for it happens.
    fn reply_done(&mut self, ctx: &mut Context<Self>) {
        self.streaming = None;
        self.current_reply = None;
        if let Some(s) = self.refunded.take() {
            self.send(ServerFrame::quota(&s), ctx);
        }
        if let Some(why) = self.close_after_done.take() {
            self.close(why, ctx);
        }
    }
}

impl SessionActor {
    /// The engine failed the streaming reply: the question's count is given
    /// back (a failed answer is the server's fault, like a 5xx). The write
    /// rides on the reply's own flush, which follows.
    fn refund(&mut self) {
        let Some(policy) = self.policy else { return };
        let quotas = &self.deps.quotas;
        let now = now_secs();
        match quotas
            .refund(self.user_id, policy, now)
            .and_then(|()| quotas.peek(self.user_id, policy, now))
        {
            Ok(standing) => self.refunded = Some(Box::new(standing)),
            Err(e) => tracing::error!(error = %e, "quota refund failed"),
        }
    }
}

impl Actor for SessionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        telemetry::ws_connection_opened();
        // `connected` went first (queued by `launch`), then (for a
        // credential already inside its warning window) `token_expiring`.
        if !self.greeted {
            self.close_slow_reader(ctx);
            return;
        }
        self.tick(ctx);
        if let Some(resume) = self.resume_at_connect.take() {
            match resume
                .rsplit_once(':')
                .and_then(|(id, seq)| Some((id, seq.parse::<u64>().ok()?)))
            {
                Some((id, after)) => self.on_resume(id, after, ctx),
                None => self.send(
                    ServerFrame::error(
                        ErrorCode::InvalidMessage,
                        "resume: expected <message_id>:<seq>",
                    ),
                    ctx,
                ),
            }
        }
    }

    fn stopping(&mut self, _ctx: &mut Self::Context) -> Running {
        // A question being stored runs as a future of this
        // context, which stopping would drop: its quota spent, its reply
        // never written. Finish starting it first.
        if matches!(self.streaming, Some(Streaming::Starting { .. })) {
            self.stop_when_started = true;
            return Running::Continue;
        }
        Running::Stop
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        telemetry::ws_connection_closed();
        self.deps.connections.unregister(self.user_id, self.conn_id);
        self.deps.replies.unsubscribe(self.session_id, self.conn_id);
    }
}

impl StreamHandler<Result<Received, ProtocolError>> for SessionActor {
    fn handle(&mut self, item: Result<Received, ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        match item {
            Ok(Received::Text(text)) => self.on_text(&text, ctx),
            Ok(Received::Binary(_)) => self.close(Close::BinaryFrame, ctx),
            Ok(Received::Ping(bytes)) => {
                // Pings are frames like any other (rate limit), and their
                // pongs count against the outbox bound.
                if self.within_rate(ctx) && !self.out.pong(&bytes) {
                    self.close(Close::SlowReader, ctx);
                }
            }
            Ok(Received::Fragment) => {
                // Counted like any frame; the message is handled once whole.
                self.within_rate(ctx);
            }
            Ok(Received::Pong(_)) => {
                // A pong answering the server's ping is free; one nobody
                // asked for is a frame like any other (rate limit).
                if self.pings_unanswered > 0 {
                    self.pings_unanswered -= 1;
                } else {
                    self.within_rate(ctx);
                }
            }
            Ok(Received::Close(_)) => self.close(Close::Normal, ctx),
            Err(ProtocolError::Overflow) => self.close(Close::TooBig, ctx),
            Err(e) if crate::socket::is_invalid_text(&e) => self.close(Close::InvalidText, ctx),
            Err(e) => {
                tracing::debug!(conn = self.conn_id, error = %e, "websocket protocol error");
                self.close(Close::ProtocolError, ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

impl Handler<ToSocket> for SessionActor {
    type Result = ();

    fn handle(&mut self, msg: ToSocket, ctx: &mut Self::Context) {
        match msg {
            ToSocket::Reply(notice) => self.on_reply_notice(notice, ctx),
            ToSocket::Close(why) => self.on_close_asked(why, ctx),
        }
    }
}

impl SessionActor {
    fn on_reply_notice(&mut self, notice: ReplyNotice, ctx: &mut Context<Self>) {
        match notice {
            ReplyNotice::Overflowed => self.close_slow_reader(ctx),
            ReplyNotice::Failed { reply } if self.current_reply == Some(reply) => self.refund(),
            ReplyNotice::Done { reply } if self.current_reply == Some(reply) => {
                self.reply_done(ctx)
            }
            // A reply this socket did not ask, or one already seen ended
            // (see `on_question`).
            ReplyNotice::Failed { .. } | ReplyNotice::Done { .. } => {}
        }
    }

    /// Told to close (by the Supervisor, through the registry).
    fn on_close_asked(&mut self, why: Close, ctx: &mut Context<Self>) {
        // Shutdown closes after the streams finished: a reply's `done` may
        // still be on its way through the event stream, so let it arrive
        // first (bounded). Revocations close at once.
        if why == Close::Shutdown && matches!(self.streaming, Some(Streaming::Running)) {
            self.close_after_done = Some(why);
            ctx.run_later(Duration::from_secs(1), move |act, ctx| act.close(why, ctx));
            return;
        }
        self.close(why, ctx);
    }
}
