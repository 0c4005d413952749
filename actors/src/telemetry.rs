//! Every metric palaver exports, named and described in one place (the
//! `metrics` facade; the root crate installs the Prometheus recorder). Names
//! start with `palaver_`, carry their unit, and every label takes a bounded set
//! of values (route patterns, outcome and code enums; never ids or raw paths).

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;

use metrics::{
    counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram, Counter,
    Histogram, Unit,
};

pub const HTTP_REQUESTS: &str = "palaver_http_requests_total";
pub const HTTP_DURATION: &str = "palaver_http_request_duration_seconds";
pub const HTTP_CONNECTIONS: &str = "palaver_http_connections";
pub const HTTP_CONNECTIONS_REFUSED: &str = "palaver_http_connections_refused_total";
pub const HTTP_TIMEOUTS: &str = "palaver_http_timeouts_total";
pub const WS_CONNECTIONS: &str = "palaver_ws_connections";
pub const WS_HANDSHAKES: &str = "palaver_ws_handshakes_total";
pub const WS_MESSAGES: &str = "palaver_ws_messages_total";
pub const WS_CLOSES: &str = "palaver_ws_closes_total";
pub const AUTH_TOKENS_ISSUED: &str = "palaver_auth_tokens_issued_total";
pub const AUTH_FAILURES: &str = "palaver_auth_failures_total";
pub const AUTH_REFRESH_REUSE: &str = "palaver_auth_refresh_reuse_total";
pub const AUTH_EXTERNAL_VERIFICATIONS: &str = "palaver_auth_external_verifications_total";
pub const AUTH_JWKS_FETCHES: &str = "palaver_auth_jwks_fetches_total";
pub const AUTH_JWKS_KEYS: &str = "palaver_auth_jwks_keys";
pub const QUOTA_REJECTIONS: &str = "palaver_quota_rejections_total";
pub const ANALYSIS_QUEUE_DEPTH: &str = "palaver_analysis_queue_depth";
pub const ANALYSIS_ACTIVE_STREAMS: &str = "palaver_analysis_active_streams";
pub const ANALYSIS_WORKERS_BUSY: &str = "palaver_analysis_workers_busy";
pub const ANALYSIS_BUSY: &str = "palaver_analysis_busy_total";
pub const ANALYSIS_FIRST_TOKEN: &str = "palaver_analysis_first_token_seconds";
pub const ANALYSIS_STREAM_DURATION: &str = "palaver_analysis_stream_duration_seconds";
pub const UPSTREAM_REQUESTS: &str = "palaver_analysis_upstream_requests_total";
pub const UPSTREAM_FIRST_DELTA: &str = "palaver_analysis_upstream_first_delta_seconds";
pub const TOOL_ROUNDS: &str = "palaver_analysis_tool_rounds";
pub const STORAGE_FLUSH: &str = "palaver_storage_flush_seconds";
pub const DEMO_USERS: &str = "palaver_demo_users";
pub const SESSIONS_EXPIRED: &str = "palaver_sessions_expired_total";
pub const TRACK_ANALYSES: &str = "palaver_track_analyses_total";
pub const TRACK_ANALYSIS_DURATION: &str = "palaver_track_analysis_seconds";
pub const TRACK_UPLOADS: &str = "palaver_track_uploads_total";

/// Registers the description and unit of every metric (call once at start).
pub fn describe() {
    describe_counter!(
        HTTP_REQUESTS,
        "HTTP requests answered, by method, route pattern and status."
    );
    describe_histogram!(
        HTTP_DURATION,
        Unit::Seconds,
        "HTTP request latency, by method and route pattern."
    );
    describe_gauge!(
        HTTP_CONNECTIONS,
        "TCP connections open now (HTTP and WebSocket)."
    );
    describe_counter!(
        HTTP_CONNECTIONS_REFUSED,
        "TCP connections closed at accept, by reason (per_ip_limit)."
    );
    describe_counter!(
        HTTP_TIMEOUTS,
        "Requests cut off for being too slow, by phase (header, body, upload)."
    );
    describe_gauge!(WS_CONNECTIONS, "WebSocket connections open now.");
    describe_counter!(WS_HANDSHAKES, "WebSocket handshakes, by outcome.");
    describe_counter!(
        WS_MESSAGES,
        "WebSocket frames, by direction (in/out) and type."
    );
    describe_counter!(
        WS_CLOSES,
        "WebSocket connections closed by the server, by close code."
    );
    describe_counter!(
        AUTH_TOKENS_ISSUED,
        "Credentials issued, by kind (access, refresh, ticket, api_key)."
    );
    describe_counter!(AUTH_FAILURES, "Authentication failures, by reason.");
    describe_counter!(
        AUTH_REFRESH_REUSE,
        "Spent refresh tokens presented again (each revoked a family)."
    );
    describe_counter!(
        AUTH_EXTERNAL_VERIFICATIONS,
        "Verifications of tokens from another issuer, by source (a configured [[auth.external]] name) and outcome (ok, invalid, expired, disabled, error)."
    );
    describe_counter!(
        AUTH_JWKS_FETCHES,
        "JWKS fetches, by source and outcome (ok, error)."
    );
    describe_gauge!(
        AUTH_JWKS_KEYS,
        "Usable keys in a source's JWKS as last fetched, by source."
    );
    describe_counter!(
        QUOTA_REJECTIONS,
        "Counted requests refused over quota, by policy (demo, user)."
    );
    describe_gauge!(
        ANALYSIS_QUEUE_DEPTH,
        "CPU jobs (tool calls) waiting for an analysis worker."
    );
    describe_gauge!(
        ANALYSIS_ACTIVE_STREAMS,
        "Replies being generated now (bounded by analysis.max_streams)."
    );
    describe_gauge!(
        ANALYSIS_WORKERS_BUSY,
        "Analysis worker threads running a CPU job now."
    );
    describe_counter!(
        ANALYSIS_BUSY,
        "Work refused as busy, by the capacity that was full (streams, cpu)."
    );
    describe_histogram!(
        ANALYSIS_FIRST_TOKEN,
        Unit::Seconds,
        "Time from a job's start to its first token."
    );
    describe_histogram!(
        ANALYSIS_STREAM_DURATION,
        Unit::Seconds,
        "Duration of a reply, by engine and final status."
    );
    describe_counter!(
        UPSTREAM_REQUESTS,
        "Requests to the openai engine's upstream, by outcome."
    );
    describe_histogram!(
        UPSTREAM_FIRST_DELTA,
        Unit::Seconds,
        "Time from sending a request upstream to its first delta (text or tool call)."
    );
    describe_histogram!(
        TOOL_ROUNDS,
        "Tool rounds (model asks, tools run, results sent back) per openai reply."
    );
    describe_histogram!(
        STORAGE_FLUSH,
        Unit::Seconds,
        "Duration of one group-commit flush of the database."
    );
    describe_gauge!(
        DEMO_USERS,
        "Demo users stored (live or awaiting the sweep)."
    );
    describe_counter!(
        SESSIONS_EXPIRED,
        "Sessions deleted for being idle past storage.retention."
    );
    describe_counter!(
        TRACK_ANALYSES,
        "Track analyses finished, by outcome (ready, failed)."
    );
    describe_histogram!(
        TRACK_ANALYSIS_DURATION,
        Unit::Seconds,
        "Time from a track's analysis being queued for a worker to its result."
    );
    describe_counter!(
        TRACK_UPLOADS,
        "Track uploads answered, by outcome (accepted, too_large, not_audio, limit, busy, timeout, invalid)."
    );
}

/// HTTP methods as a bounded label.
pub fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "PATCH" => "PATCH",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

pub fn http_request(method: &str, route: &str, status: u16, elapsed: Duration) {
    // Every request (each WebSocket handshake too): the handles are looked
    // up once per thread and (method, status, route), not built from label
    // strings and hashed in the registry each time. Route patterns and
    // statuses are bounded, so is this.
    type Handles = HashMap<(&'static str, u16), Vec<(Box<str>, Counter, Histogram)>>;
    thread_local! {
        static HANDLES: RefCell<Handles> = RefCell::new(HashMap::new());
    }
    let method = method_label(method);
    HANDLES.with_borrow_mut(|handles| {
        let routes = handles.entry((method, status)).or_default();
        let i = match routes.iter().position(|(r, _, _)| &**r == route) {
            Some(i) => i,
            None => {
                let counter = counter!(HTTP_REQUESTS, "method" => method, "route" => route.to_owned(), "status" => status.to_string());
                let histogram = histogram!(HTTP_DURATION, "method" => method, "route" => route.to_owned());
                routes.push((route.into(), counter, histogram));
                routes.len() - 1
            }
        };
        let (_, counter, histogram) = &routes[i];
        counter.increment(1);
        histogram.record(elapsed.as_secs_f64());
    });
}

/// Handshake outcomes: `ok`, `auth_failed`, `user_inactive`, `forbidden`,
/// `not_found`, `origin_rejected`, `too_many`, `error`.
pub fn ws_handshake(outcome: &'static str) {
    thread_local! {
        static HANDLES: RefCell<Vec<(&'static str, Counter)>> = const { RefCell::new(Vec::new()) };
    }
    HANDLES.with_borrow_mut(
        |handles| match handles.iter().find(|(o, _)| *o == outcome) {
            Some((_, counter)) => counter.increment(1),
            None => {
                let counter = counter!(WS_HANDSHAKES, "outcome" => outcome);
                counter.increment(1);
                handles.push((outcome, counter));
            }
        },
    );
}

/// A TCP connection was accepted (`1.0`) or ended (`-1.0`).
pub fn http_connections(delta: f64) {
    gauge!(HTTP_CONNECTIONS).increment(delta);
}

/// A connection closed at accept: `per_ip_limit`.
pub fn http_connection_refused(reason: &'static str) {
    counter!(HTTP_CONNECTIONS_REFUSED, "reason" => reason).increment(1);
}

/// A request cut off for slowness: `header` (its head, or the bytes between
/// requests), `body` (a JSON body), `upload` (a track upload).
pub fn http_timeout(phase: &'static str) {
    counter!(HTTP_TIMEOUTS, "phase" => phase).increment(1);
}

pub fn ws_connection_opened() {
    gauge!(WS_CONNECTIONS).increment(1.0);
}

pub fn ws_connection_closed() {
    gauge!(WS_CONNECTIONS).decrement(1.0);
}

/// `direction`: `in` or `out`; `kind`: a frame type (bounded by the protocol).
pub fn ws_message(direction: &'static str, kind: &'static str) {
    // Counted for every frame of every reply: the handle is looked up in
    // the recorder's registry (hashing the key and its labels) once per
    // thread and (direction, type), not once per frame. Cached handles stay
    // valid because the exporter never drops an idle metric (no
    // `idle_timeout` in src/metrics.rs; with one, they would outlive it).
    thread_local! {
        static HANDLES: RefCell<Vec<(&'static str, &'static str, Counter)>> =
            const { RefCell::new(Vec::new()) };
    }
    HANDLES.with_borrow_mut(|handles| {
        if let Some((_, _, counter)) = handles
            .iter()
            .find(|(d, k, _)| *d == direction && *k == kind)
        {
            counter.increment(1);
            return;
        }
        let counter = counter!(WS_MESSAGES, "direction" => direction, "type" => kind);
        counter.increment(1);
        handles.push((direction, kind, counter));
    });
}

pub fn ws_close(code: u16) {
    // Close codes come from the protocol's fixed table.
    counter!(WS_CLOSES, "code" => code.to_string()).increment(1);
}

/// `kind`: `access`, `refresh`, `ticket`, `api_key`.
pub fn token_issued(kind: &'static str) {
    counter!(AUTH_TOKENS_ISSUED, "kind" => kind).increment(1);
}

/// `reason`: `missing`, `invalid`, `expired`, `revoked`, `disabled`,
/// `invalid_credentials`, `rate_limited`.
pub fn auth_failure(reason: &'static str) {
    counter!(AUTH_FAILURES, "reason" => reason).increment(1);
}

/// The counters of one `[[auth.external]]` source, registered once at start
/// (its configured name is the `source` label: the set is bounded by the
/// configuration), so counting a verification is an atomic add.
#[derive(Clone)]
pub struct ExternalCounters {
    source: String,
    ok: Counter,
    invalid: Counter,
    expired: Counter,
    disabled: Counter,
    error: Counter,
}

impl ExternalCounters {
    pub fn new(source: &str) -> ExternalCounters {
        let outcome = |outcome: &'static str| counter!(AUTH_EXTERNAL_VERIFICATIONS, "source" => source.to_owned(), "outcome" => outcome);
        ExternalCounters {
            source: source.to_owned(),
            ok: outcome("ok"),
            invalid: outcome("invalid"),
            expired: outcome("expired"),
            disabled: outcome("disabled"),
            error: outcome("error"),
        }
    }

    /// A verification ended: `None` when it succeeded, else the
    /// `palaver_auth_failures_total` reason of its failure (`None` inside:
    /// a server-side error).
    pub fn verified(&self, failure: Option<Option<&'static str>>) {
        let counter = match failure {
            None => &self.ok,
            Some(Some("invalid")) => &self.invalid,
            Some(Some("expired")) => &self.expired,
            Some(Some("disabled")) => &self.disabled,
            Some(_) => &self.error,
        };
        counter.increment(1);
    }

    /// A JWKS fetch ended; `keys`: how many usable keys it brought.
    pub fn jwks_fetched(&self, ok: bool, keys: Option<usize>) {
        let outcome = if ok { "ok" } else { "error" };
        counter!(AUTH_JWKS_FETCHES, "source" => self.source.clone(), "outcome" => outcome)
            .increment(1);
        if let Some(keys) = keys {
            gauge!(AUTH_JWKS_KEYS, "source" => self.source.clone()).set(keys as f64);
        }
    }
}

pub fn refresh_reuse() {
    counter!(AUTH_REFRESH_REUSE).increment(1);
}

pub fn quota_rejection(policy: &'static str) {
    counter!(QUOTA_REJECTIONS, "kind" => policy).increment(1);
}

/// The pool's gauges start at 0 (so they are exported before any work).
pub fn analysis_pool_started() {
    gauge!(ANALYSIS_QUEUE_DEPTH).set(0.0);
    gauge!(ANALYSIS_ACTIVE_STREAMS).set(0.0);
    gauge!(ANALYSIS_WORKERS_BUSY).set(0.0);
}

/// A CPU job joined (`1.0`) or left (`-1.0`) the queue.
pub fn analysis_cpu_queued(delta: f64) {
    gauge!(ANALYSIS_QUEUE_DEPTH).increment(delta);
}

pub fn analysis_cpu_job_started() {
    gauge!(ANALYSIS_WORKERS_BUSY).increment(1.0);
}

pub fn analysis_cpu_job_ended() {
    gauge!(ANALYSIS_WORKERS_BUSY).decrement(1.0);
}

/// `capacity`: `streams` (a question refused: `analysis.max_streams`) or
/// `cpu` (a tool call refused: `analysis.queue`).
pub fn analysis_busy(capacity: &'static str) {
    counter!(ANALYSIS_BUSY, "capacity" => capacity).increment(1);
}

pub fn analysis_stream_started() {
    gauge!(ANALYSIS_ACTIVE_STREAMS).increment(1.0);
}

pub fn analysis_stream_ended(
    engine: &'static str,
    status: &'static str,
    first_token: Option<Duration>,
    total: Duration,
) {
    gauge!(ANALYSIS_ACTIVE_STREAMS).decrement(1.0);
    if let Some(first) = first_token {
        histogram!(ANALYSIS_FIRST_TOKEN).record(first.as_secs_f64());
    }
    histogram!(ANALYSIS_STREAM_DURATION, "engine" => engine, "status" => status)
        .record(total.as_secs_f64());
}

/// The outcome of one upstream request, a fixed set: `ok`, `connect_error`,
/// `http_4xx`, `http_5xx`, `first_token_timeout`, `idle_timeout`,
/// `total_timeout`, `malformed`, `cut`, `cancelled`, `error`.
pub fn upstream_request(outcome: &'static str) {
    counter!(UPSTREAM_REQUESTS, "outcome" => outcome).increment(1);
}

pub fn upstream_first_delta(elapsed: Duration) {
    histogram!(UPSTREAM_FIRST_DELTA).record(elapsed.as_secs_f64());
}

pub fn tool_rounds(rounds: u32) {
    histogram!(TOOL_ROUNDS).record(f64::from(rounds));
}

pub fn storage_flush(elapsed: Duration) {
    histogram!(STORAGE_FLUSH).record(elapsed.as_secs_f64());
}

/// The number of demo users, counted by the sweep.
pub fn demo_users(count: usize) {
    gauge!(DEMO_USERS).set(count as f64);
}

/// Sessions the retention sweep deleted.
pub fn sessions_expired(count: usize) {
    counter!(SESSIONS_EXPIRED).increment(count as u64);
}

/// One more demo user (between sweeps; no count of the tree per creation).
pub fn demo_user_created() {
    gauge!(DEMO_USERS).increment(1.0);
}

/// A track's analysis ended (`ready` or `failed`).
pub fn track_analysis(outcome: &'static str, elapsed: Duration) {
    counter!(TRACK_ANALYSES, "outcome" => outcome).increment(1);
    histogram!(TRACK_ANALYSIS_DURATION).record(elapsed.as_secs_f64());
}

/// An upload was answered: `accepted`, `too_large`, `not_audio`, `limit`,
/// `busy`, `timeout` or `invalid`.
pub fn track_upload(outcome: &'static str) {
    counter!(TRACK_UPLOADS, "outcome" => outcome).increment(1);
}
