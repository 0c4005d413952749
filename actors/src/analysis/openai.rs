//! The `openai` engine: palaver in front of any OpenAI-compatible
//! `POST {base_url}/chat/completions` server with `stream: true` (Ollama,
//! llama.cpp's `llama-server`, vLLM, LiteLLM, OpenAI). API.md §8.
//!
//! One answer is one or more upstream requests ("rounds"): the system
//! prompt, the session's recent history and the question (and, with
//! `tools = true`, the tool registry as function tools) go up; text deltas
//! come back as `token` events as they arrive; tool-call deltas are assembled
//! ([`ToolCalls`]); if the model called tools, each is announced, run
//! locally and reported ([`Run::tool`]), the results go back as `tool`
//! messages, and the model continues, at most `max_tool_rounds` times.
//!
//! Every wait on the upstream is bounded (first delta, between deltas, the
//! whole answer) and races the job's [`Cancel`]: a cancel drops the
//! response, which closes its connection. A failure becomes
//! [`Stop::Failed`] with a message that names the cause and the upstream's
//! status and never carries the API key.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palaver_storage::{Message, MessageStatus, Role, StorageError, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::sse::SseDecoder;
use super::tools::{tools_for, Tool, ToolInput};
use super::{Cancel, Run, Stop};
use crate::telemetry;

/// The longest line or event accepted from an upstream (bytes).
const MAX_EVENT_BYTES: usize = 1 << 20;
/// How much of an error response's body is read.
const ERROR_BODY_BYTES: usize = 4096;
/// How much of it a failure message quotes (characters).
const EXCERPT_CHARS: usize = 200;
/// What a failure message shows in place of anything that looks like a key.
const REDACTED: &str = "[redacted]";

/// An API key: sent as `Authorization: Bearer …`, never printed.
#[derive(Clone)]
pub struct ApiKey(String);

impl ApiKey {
    /// A key as read from the environment; `Err` says why it cannot go in
    /// a header (without quoting it).
    pub fn new(key: String) -> Result<ApiKey, String> {
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("holds characters an HTTP header cannot carry (or is empty)".into());
        }
        Ok(ApiKey(key))
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(REDACTED)
    }
}

/// `[analysis.openai]`, with the key read from the environment at start.
#[derive(Clone, Debug)]
pub struct OpenAiSettings {
    pub base_url: String,
    pub model: String,
    /// The name of the variable the key was read from (for messages).
    pub api_key_env: String,
    /// `None`: no `Authorization` header.
    pub api_key: Option<ApiKey>,
    /// Empty: no system message.
    pub system_prompt: String,
    pub max_history_messages: usize,
    pub max_tool_rounds: u32,
    pub tools: bool,
    /// `None`: the server's default.
    pub temperature: Option<f64>,
    pub connect_timeout: Duration,
    pub first_token_timeout: Duration,
    pub idle_timeout: Duration,
    pub total_timeout: Duration,
}

/// Checks a `base_url`: http or https, a host, and no credentials, query or
/// fragment (a key goes in the environment, never in the URL).
pub fn parse_base_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = crate::parse_http_url(
        raw,
        "name the variable holding the key in analysis.openai.api_key_env",
    )?;
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("{raw:?} must not have a query or a fragment"));
    }
    Ok(url)
}

/// The engine: its settings and the one HTTP client every reply shares
/// (cheap to clone: a handle on one connection pool).
pub struct OpenAi {
    settings: OpenAiSettings,
    client: reqwest::Client,
    /// `{base_url}/chat/completions`.
    endpoint: reqwest::Url,
    /// The upstream's scheme, host and port: what messages name.
    origin: String,
}

impl std::fmt::Debug for OpenAi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAi")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl OpenAi {
    /// Builds the client (once, at start).
    pub fn new(settings: OpenAiSettings) -> Result<OpenAi, String> {
        let base = parse_base_url(&settings.base_url)?;
        let endpoint = format!("{}/chat/completions", base.as_str().trim_end_matches('/'));
        let endpoint = reqwest::Url::parse(&endpoint).map_err(|e| e.to_string())?;
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .tcp_nodelay(true)
            // An API does not redirect; following one could carry the key
            // somewhere unexpected. A 3xx is reported as a failure.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("palaver/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(OpenAi {
            origin: base.origin().ascii_serialization(),
            settings,
            client,
            endpoint,
        })
    }

    pub fn settings(&self) -> &OpenAiSettings {
        &self.settings
    }

    /// Where requests go (for the start-up log line).
    pub fn endpoint(&self) -> &str {
        self.endpoint.as_str()
    }
}

/// Answers the job's question through the upstream.
pub async fn answer(run: &mut Run<'_>, engine: &OpenAi) -> Result<(), Stop> {
    let mut rounds = 0;
    let outcome = converse(run, engine, &mut rounds).await;
    telemetry::tool_rounds(rounds);
    outcome
}

async fn converse(run: &mut Run<'_>, engine: &OpenAi, rounds: &mut u32) -> Result<(), Stop> {
    let s = &engine.settings;
    let deadline = Instant::now() + s.total_timeout;
    let tools = if s.tools {
        tools_for(&run.job.session)
    } else {
        Vec::new()
    };
    let mut messages = opening_messages(run, s)?;
    let input = ToolInput::new(
        run.store.clone(),
        run.job.session.clone(),
        run.job.question.text.clone(),
    );
    loop {
        let body = request_body(s, &messages, &tools);
        let turn = engine.request(run, &body, deadline).await?;
        if turn.calls.is_empty() {
            return Ok(());
        }
        if *rounds >= s.max_tool_rounds {
            return Err(Stop::Failed(format!(
                "the model asked for tools more than {} times (analysis.openai.max_tool_rounds)",
                s.max_tool_rounds
            )));
        }
        *rounds += 1;
        messages.push(assistant_message(&turn));
        for call in turn.calls {
            let content = run_call(run, &tools, &input, &call).await?;
            messages.push(json!({"role": "tool", "tool_call_id": call.id, "content": content}));
        }
    }
}

/// Runs one call the model made (announced, run on a blocking thread,
/// reported and recorded by [`Run::tool`]); the `tool` message's content.
/// A call to an unknown tool, or with arguments that are not JSON, fails
/// like a tool would: the model reads why and may try again.
async fn run_call(
    run: &mut Run<'_>,
    tools: &[Arc<dyn Tool>],
    input: &ToolInput,
    call: &Call,
) -> Result<String, Stop> {
    let parsed: Result<Value, String> = if call.arguments.trim().is_empty() {
        Ok(json!({}))
    } else {
        serde_json::from_str(&call.arguments)
            .map_err(|e| format!("the arguments are not valid JSON ({e})"))
    };
    let args = match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(call.arguments.clone()),
    };
    let name = if call.name.is_empty() {
        "unnamed".to_owned()
    } else {
        call.name.clone()
    };
    let tool = tools.iter().find(|t| t.name() == call.name).cloned();
    let input = input.with_args(args.clone());
    let unknown = format!("there is no tool named {name:?}");
    let outcome = run
        .tool(&name, args, move || {
            parsed?;
            match tool {
                Some(tool) => tool.call(&input),
                None => Err(unknown),
            }
        })
        .await?;
    Ok(match outcome {
        Ok(result) => result.to_string(),
        Err(error) => json!({ "error": error }).to_string(),
    })
}

/// The system prompt, the session's history and the question.
fn opening_messages(run: &Run<'_>, s: &OpenAiSettings) -> Result<Vec<Value>, Stop> {
    let question = &run.job.question;
    let mut messages = Vec::new();
    if !s.system_prompt.trim().is_empty() {
        messages.push(json!({"role": "system", "content": s.system_prompt}));
    }
    let earlier = earlier_messages(run.store, question, s.max_history_messages)
        .map_err(|e| Stop::Failed(format!("cannot read the conversation: {e}")))?;
    for m in conversation(&earlier, s.max_history_messages) {
        messages.push(json!({"role": role_name(m.role), "content": m.text}));
    }
    messages.push(json!({"role": "user", "content": question.text}));
    Ok(messages)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::User => "user",
        Role::Assistant => "assistant",
    }
}

/// The messages of the question's session stored before it, enough of the
/// newest for [`conversation`] to keep `max`.
fn earlier_messages(
    store: &Store,
    question: &Message,
    max: usize,
) -> Result<Vec<Message>, StorageError> {
    if max == 0 {
        return Ok(Vec::new());
    }
    // Twice the bound and a little more: unanswered questions are left out.
    let window = (max as u64).saturating_mul(2).saturating_add(2);
    let after = question.seq.saturating_sub(1).saturating_sub(window);
    let page = store
        .messages()
        .list(question.session_id, after, window as usize)?;
    Ok(page
        .items
        .into_iter()
        .filter(|m| m.seq < question.seq)
        .collect())
}

/// The history as a model takes it: finished messages with text, in order,
/// alternating question and reply, starting with a question, at most `max`.
/// A question whose reply has no text (it failed before saying anything, or
/// is still being written) is left out with it: strict chat templates
/// (Gemma's) refuse two user turns in a row.
pub fn conversation(messages: &[Message], max: usize) -> Vec<&Message> {
    let mut turns: Vec<&Message> = Vec::new();
    let usable = messages
        .iter()
        .filter(|m| m.status != MessageStatus::Streaming && !m.text.trim().is_empty());
    for m in usable {
        match (turns.last().map(|last| last.role), m.role) {
            // The earlier question went unanswered.
            (Some(Role::User), Role::User) => {
                turns.pop();
                turns.push(m);
            }
            // A reply without its question.
            (None | Some(Role::Assistant), Role::Assistant) => {}
            _ => turns.push(m),
        }
    }
    if turns.last().is_some_and(|m| m.role == Role::User) {
        turns.pop();
    }
    let mut start = turns.len().saturating_sub(max);
    if turns.get(start).is_some_and(|m| m.role == Role::Assistant) {
        start += 1;
    }
    turns.split_off(start.min(turns.len()))
}

/// The registry as OpenAI function tools.
pub fn function_tools(tools: &[Arc<dyn Tool>]) -> Value {
    tools
        .iter()
        .map(|t| {
            let mut function = json!({"name": t.name(), "parameters": t.parameters()});
            if !t.description().is_empty() {
                function["description"] = json!(t.description());
            }
            json!({"type": "function", "function": function})
        })
        .collect()
}

fn request_body(s: &OpenAiSettings, messages: &[Value], tools: &[Arc<dyn Tool>]) -> Value {
    let mut body = json!({
        "model": s.model,
        "messages": messages,
        "stream": true,
        "stream_options": {"include_usage": true},
    });
    if let Some(temperature) = s.temperature {
        body["temperature"] = json!(temperature);
    }
    if !tools.is_empty() {
        body["tools"] = function_tools(tools);
    }
    body
}

/// The assistant's turn that called tools, as the follow-up request
/// carries it.
fn assistant_message(turn: &Turn) -> Value {
    let calls: Vec<Value> = turn
        .calls
        .iter()
        .map(|c| {
            let arguments = if c.arguments.trim().is_empty() {
                "{}"
            } else {
                c.arguments.as_str()
            };
            json!({
                "id": c.id,
                "type": "function",
                "function": {"name": c.name, "arguments": arguments},
            })
        })
        .collect();
    json!({"role": "assistant", "content": turn.text, "tool_calls": calls})
}

/// What one round streamed.
struct Turn {
    text: String,
    calls: Vec<Call>,
}

/// A failed round: its outcome label and why.
type Failure = (&'static str, Stop);

fn failed(outcome: &'static str, message: String) -> Failure {
    (outcome, Stop::Failed(message))
}

enum Interrupted {
    Cancelled,
    TimedOut,
}

/// `work`, unless the job is cancelled or `until` passes first.
async fn within<F: Future>(
    cancel: &Cancel,
    until: Instant,
    work: F,
) -> Result<F::Output, Interrupted> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Interrupted::Cancelled),
        _ = tokio::time::sleep_until(until) => Err(Interrupted::TimedOut),
        out = work => Ok(out),
    }
}

/// Which bound a wait ran into.
#[derive(Clone, Copy)]
enum Bound {
    FirstDelta,
    Idle,
    Total,
}

impl OpenAi {
    /// One round: sends `body`, relays the text as it arrives, returns the
    /// text and the assembled tool calls once the stream says `[DONE]`.
    async fn request(
        &self,
        run: &mut Run<'_>,
        body: &Value,
        deadline: Instant,
    ) -> Result<Turn, Stop> {
        match self.stream(run, body, deadline).await {
            Ok(turn) => {
                telemetry::upstream_request("ok");
                Ok(turn)
            }
            Err((outcome, stop)) => {
                telemetry::upstream_request(outcome);
                Err(stop)
            }
        }
    }

    async fn stream(
        &self,
        run: &mut Run<'_>,
        body: &Value,
        deadline: Instant,
    ) -> Result<Turn, Failure> {
        let s = &self.settings;
        let cancel = run.job.cancel.clone();
        let sent = Instant::now();
        let (first_by, first_bound) =
            earlier(sent + s.first_token_timeout, Bound::FirstDelta, deadline);
        let mut request = self.client.post(self.endpoint.clone()).json(body);
        if let Some(key) = &s.api_key {
            request = request.bearer_auth(&key.0);
        }
        let mut response = match within(&cancel, first_by, request.send()).await {
            Err(interrupted) => return Err(self.interrupted(interrupted, first_bound)),
            Ok(Err(e)) => return Err(self.transport_error(&e)),
            Ok(Ok(response)) => response,
        };
        let status = response.status();
        if !status.is_success() {
            let outcome = if status.is_client_error() {
                "http_4xx"
            } else if status.is_server_error() {
                "http_5xx"
            } else {
                "error"
            };
            let excerpt = self.error_body(&cancel, response, deadline).await;
            return Err(failed(
                outcome,
                format!("the upstream answered {status}{excerpt}"),
            ));
        }
        let is_json = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if is_json {
            let excerpt = self.error_body(&cancel, response, deadline).await;
            return Err(failed(
                "malformed",
                format!("the upstream answered {status} with a JSON document, not an event stream{excerpt}"),
            ));
        }

        let mut decoder = SseDecoder::new(MAX_EVENT_BYTES);
        let mut events = Vec::new();
        let mut calls = ToolCalls::default();
        let mut text = String::new();
        let mut last_delta: Option<Instant> = None;
        loop {
            let (until, bound) = match last_delta {
                None => (first_by, first_bound),
                Some(at) => earlier(at + s.idle_timeout, Bound::Idle, deadline),
            };
            let bytes = match within(&cancel, until, response.chunk()).await {
                Err(interrupted) => return Err(self.interrupted(interrupted, bound)),
                Ok(Err(e)) => {
                    return Err(failed(
                        "cut",
                        format!("the upstream's stream broke off ({})", cause(&e)),
                    ))
                }
                Ok(Ok(None)) => {
                    return Err(failed(
                        "cut",
                        "the upstream's stream ended before [DONE]".into(),
                    ))
                }
                Ok(Ok(Some(bytes))) => bytes,
            };
            decoder.feed(&bytes, &mut events).map_err(|e| {
                failed(
                    "malformed",
                    format!("the upstream sent a malformed event stream: {e}"),
                )
            })?;
            for data in std::mem::take(&mut events) {
                if data.trim() == "[DONE]" {
                    return Ok(Turn {
                        text,
                        calls: calls.finish(),
                    });
                }
                let chunk: Chunk = serde_json::from_str(&data).map_err(|e| {
                    failed(
                        "malformed",
                        format!("the upstream sent a chunk that is not valid JSON ({e})"),
                    )
                })?;
                if let Some(error) = chunk.error {
                    let excerpt = excerpt(error.to_string().as_bytes(), s.api_key.as_ref());
                    return Err(failed(
                        "error",
                        format!("the upstream reported an error mid-stream{excerpt}"),
                    ));
                }
                if let Some(tokens) = chunk.usage.and_then(|u| u.completion_tokens) {
                    run.count_upstream_tokens(tokens);
                }
                for delta in chunk.choices.into_iter().filter_map(|c| c.delta) {
                    let content = delta.content.filter(|t| !t.is_empty());
                    let thinking = [&delta.reasoning_content, &delta.reasoning]
                        .iter()
                        .any(|r| r.as_deref().is_some_and(|r| !r.is_empty()));
                    let tool_calls = delta.tool_calls.unwrap_or_default();
                    if content.is_none() && !thinking && tool_calls.is_empty() {
                        continue;
                    }
                    if last_delta.is_none() {
                        telemetry::upstream_first_delta(sent.elapsed());
                    }
                    last_delta = Some(Instant::now());
                    for call in tool_calls {
                        calls.push(call);
                    }
                    if let Some(content) = content {
                        text.push_str(&content);
                        run.token(content)
                            .await
                            .map_err(|stop| ("cancelled", stop))?;
                    }
                }
            }
        }
    }

    fn interrupted(&self, interrupted: Interrupted, bound: Bound) -> Failure {
        let s = &self.settings;
        let human = |d: Duration| humantime::format_duration(d).to_string();
        match (interrupted, bound) {
            (Interrupted::Cancelled, _) => ("cancelled", Stop::Cancelled),
            (Interrupted::TimedOut, Bound::FirstDelta) => failed(
                "first_token_timeout",
                format!(
                    "the upstream sent no delta within analysis.openai.first_token_timeout ({})",
                    human(s.first_token_timeout)
                ),
            ),
            (Interrupted::TimedOut, Bound::Idle) => failed(
                "idle_timeout",
                format!(
                    "the upstream stalled: no delta for analysis.openai.idle_timeout ({})",
                    human(s.idle_timeout)
                ),
            ),
            (Interrupted::TimedOut, Bound::Total) => failed(
                "total_timeout",
                format!(
                    "the answer took longer than analysis.openai.total_timeout ({})",
                    human(s.total_timeout)
                ),
            ),
        }
    }

    fn transport_error(&self, e: &reqwest::Error) -> Failure {
        if e.is_connect() {
            let why = if e.is_timeout() {
                format!(
                    "no connection within analysis.openai.connect_timeout ({})",
                    humantime::format_duration(self.settings.connect_timeout)
                )
            } else {
                cause(e)
            };
            return failed(
                "connect_error",
                format!("cannot connect to the upstream at {}: {why}", self.origin),
            );
        }
        failed(
            "error",
            format!(
                "the request to the upstream at {} failed ({})",
                self.origin,
                cause(e)
            ),
        )
    }

    /// `": <excerpt>"` of an error response's body, or nothing: read for a
    /// short while, at most [`ERROR_BODY_BYTES`].
    async fn error_body(
        &self,
        cancel: &Cancel,
        mut response: reqwest::Response,
        deadline: Instant,
    ) -> String {
        let (until, _) = earlier(
            Instant::now() + self.settings.idle_timeout,
            Bound::Idle,
            deadline,
        );
        let mut body = Vec::new();
        while body.len() < ERROR_BODY_BYTES {
            match within(cancel, until, response.chunk()).await {
                Ok(Ok(Some(bytes))) => body.extend_from_slice(&bytes),
                _ => break,
            }
        }
        excerpt(&body, self.settings.api_key.as_ref())
    }
}

/// The earlier of a phase's bound and the answer's deadline, and which.
fn earlier(at: Instant, bound: Bound, deadline: Instant) -> (Instant, Bound) {
    if at < deadline {
        (at, bound)
    } else {
        (deadline, Bound::Total)
    }
}

/// The innermost cause of a transport error (`Connection refused (os
/// error 111)`), which names no URL.
fn cause(e: &reqwest::Error) -> String {
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    let mut innermost = None;
    while let Some(s) = source {
        innermost = Some(s);
        source = s.source();
    }
    match innermost {
        Some(s) => s.to_string(),
        None if e.is_body() || e.is_decode() => "the response body could not be read".into(),
        None => "the HTTP request failed".into(),
    }
}

/// `": <message>"` from an upstream's error body (an OpenAI-style
/// `{"error": {"message": …}}`, else its text): one line, at most
/// [`EXCERPT_CHARS`] characters, with the key and anything that looks like a
/// key (`sk-…`, or sharing 8 characters with the key) redacted. Empty for an
/// empty body.
pub fn excerpt(body: &[u8], key: Option<&ApiKey>) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(ERROR_BODY_BYTES)]);
    let message = serde_json::from_str::<Value>(&text)
        .ok()
        .and_then(|v| {
            [
                &v["error"]["message"],
                &v["error"],
                &v["message"],
                &v["detail"],
            ]
            .iter()
            .find_map(|m| m.as_str().map(str::to_owned))
        })
        .unwrap_or_else(|| text.into_owned());
    let key = key.map(|k| k.0.as_str()).filter(|k| !k.is_empty());
    let message = match key {
        Some(key) => message.replace(key, REDACTED),
        None => message,
    };
    let looks_like_key = |word: &str| {
        word.contains("sk-")
            || key.is_some_and(|key| {
                let chars: Vec<char> = word.chars().collect();
                chars.len() >= 8
                    && chars
                        .windows(8)
                        .any(|w| key.contains(&w.iter().collect::<String>()))
            })
    };
    let words: Vec<&str> = message
        .split_whitespace()
        .map(|w| if looks_like_key(w) { REDACTED } else { w })
        .collect();
    let mut line = words.join(" ");
    if line.chars().count() > EXCERPT_CHARS {
        line = line.chars().take(EXCERPT_CHARS).collect::<String>() + "…";
    }
    if line.is_empty() {
        line
    } else {
        format!(": {line}")
    }
}

/// One `chat.completion.chunk` (only what palaver reads; anything else is
/// ignored).
#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Vec<Choice>,
    #[serde(default)]
    usage: Option<ChunkUsage>,
    /// Some servers (vLLM, LiteLLM) report a failure mid-stream this way.
    #[serde(default)]
    error: Option<Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
    /// A thinking model's reasoning (llama-server, vLLM; `reasoning` on
    /// some): not shown, but it is the upstream making progress.
    #[serde(default)]
    reasoning_content: Option<String>,
    #[serde(default)]
    reasoning: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCallDelta>>,
}

#[derive(Deserialize)]
struct ChunkUsage {
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// A piece of a tool call, as a chunk's `delta.tool_calls[]` carries it.
#[derive(Debug, Default, Deserialize)]
pub struct ToolCallDelta {
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub function: Option<FunctionDelta>,
}

#[derive(Debug, Default, Deserialize)]
pub struct FunctionDelta {
    #[serde(default)]
    pub name: Option<String>,
    /// A string to concatenate (an object, from lenient servers, is taken
    /// whole).
    #[serde(default)]
    pub arguments: Option<Value>,
}

/// A tool call, assembled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    pub id: String,
    pub name: String,
    /// JSON text, as the model wrote it.
    pub arguments: String,
}

/// Assembles tool calls from their deltas: by `index` (the `id` and the
/// name come in a call's first delta, the arguments in pieces, calls may
/// interleave); a new `id` at an index already taken is a new call (servers
/// that reuse index 0 for parallel calls); a delta with neither index nor
/// id continues the latest call (servers that omit `index`).
#[derive(Debug, Default)]
pub struct ToolCalls {
    calls: Vec<Call>,
    by_index: HashMap<u64, usize>,
}

impl ToolCalls {
    pub fn push(&mut self, delta: ToolCallDelta) {
        let id = delta.id.filter(|id| !id.is_empty());
        let known = id
            .as_ref()
            .and_then(|id| self.calls.iter().position(|c| &c.id == id));
        let at_index = delta
            .index
            .and_then(|i| self.by_index.get(&i).copied())
            .filter(|&pos| id.is_none() || self.calls[pos].id.is_empty());
        let pos = match (known, at_index) {
            (Some(pos), _) | (None, Some(pos)) => pos,
            (None, None) if id.is_none() && delta.index.is_none() && !self.calls.is_empty() => {
                self.calls.len() - 1
            }
            (None, None) => {
                self.calls.push(Call {
                    id: String::new(),
                    name: String::new(),
                    arguments: String::new(),
                });
                self.calls.len() - 1
            }
        };
        if let Some(index) = delta.index {
            self.by_index.insert(index, pos);
        }
        let call = &mut self.calls[pos];
        if let Some(id) = id {
            if call.id.is_empty() {
                call.id = id;
            }
        }
        if let Some(function) = delta.function {
            if let Some(name) = function.name.filter(|n| !n.is_empty()) {
                if call.name.is_empty() {
                    call.name = name;
                }
            }
            match function.arguments {
                Some(Value::String(piece)) => call.arguments.push_str(&piece),
                Some(Value::Null) | None => {}
                Some(whole) => call.arguments.push_str(&whole.to_string()),
            }
        }
    }

    /// The calls in the order they began; one without an id gets one (the
    /// `tool` message must name it), an empty one is dropped.
    pub fn finish(self) -> Vec<Call> {
        self.calls
            .into_iter()
            .filter(|c| !(c.name.is_empty() && c.arguments.is_empty()))
            .enumerate()
            .map(|(i, mut c)| {
                if c.id.is_empty() {
                    c.id = format!("call_{i}");
                }
                c
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn delta(
        index: Option<u64>,
        id: Option<&str>,
        name: Option<&str>,
        args: &str,
    ) -> ToolCallDelta {
        ToolCallDelta {
            index,
            id: id.map(str::to_owned),
            function: Some(FunctionDelta {
                name: name.map(str::to_owned),
                arguments: Some(Value::String(args.to_owned())),
            }),
        }
    }

    fn call(id: &str, name: &str, arguments: &str) -> Call {
        Call {
            id: id.into(),
            name: name.into(),
            arguments: arguments.into(),
        }
    }

    fn assemble(deltas: Vec<ToolCallDelta>) -> Vec<Call> {
        let mut calls = ToolCalls::default();
        for d in deltas {
            calls.push(d);
        }
        calls.finish()
    }

    #[test]
    fn arguments_across_chunks() {
        let calls = assemble(vec![
            delta(Some(0), Some("c1"), Some("word_count"), ""),
            delta(Some(0), None, None, "{\"sc"),
            delta(Some(0), None, None, "ope\": "),
            delta(Some(0), None, None, "\"all\"}"),
        ]);
        assert_eq!(calls, [call("c1", "word_count", "{\"scope\": \"all\"}")]);
    }

    #[test]
    fn interleaved_calls_by_index() {
        let calls = assemble(vec![
            delta(Some(0), Some("a"), Some("message_count"), ""),
            delta(Some(1), Some("b"), Some("word_count"), ""),
            delta(Some(1), None, None, "{\"x\""),
            delta(Some(0), None, None, "{\"y\""),
            delta(Some(0), None, None, ":1}"),
            delta(Some(1), None, None, ":2}"),
        ]);
        assert_eq!(
            calls,
            [
                call("a", "message_count", "{\"y\":1}"),
                call("b", "word_count", "{\"x\":2}")
            ]
        );
    }

    #[test]
    fn index_zero_reused_for_parallel_calls() {
        let calls = assemble(vec![
            delta(Some(0), Some("a"), Some("message_count"), "{}"),
            delta(Some(0), Some("b"), Some("word_count"), "{"),
            delta(Some(0), None, None, "}"),
        ]);
        assert_eq!(
            calls,
            [
                call("a", "message_count", "{}"),
                call("b", "word_count", "{}")
            ]
        );
    }

    #[test]
    fn no_index_at_all() {
        let calls = assemble(vec![
            delta(None, Some("a"), Some("message_count"), "{\"q\":"),
            delta(None, None, None, "1}"),
            delta(None, Some("b"), Some("word_count"), "{}"),
            // An id repeated on every delta is the same call.
            delta(None, Some("b"), None, ""),
        ]);
        assert_eq!(
            calls,
            [
                call("a", "message_count", "{\"q\":1}"),
                call("b", "word_count", "{}")
            ]
        );
    }

    #[test]
    fn missing_ids_are_made_and_empty_calls_dropped() {
        let calls = assemble(vec![
            delta(Some(0), None, Some("session_summary"), ""),
            ToolCallDelta {
                index: Some(1),
                ..Default::default()
            },
            ToolCallDelta {
                index: Some(2),
                id: None,
                function: Some(FunctionDelta {
                    name: Some("word_count".into()),
                    arguments: Some(json!({"whole": true})),
                }),
            },
        ]);
        assert_eq!(
            calls,
            [
                call("call_0", "session_summary", ""),
                call("call_1", "word_count", "{\"whole\":true}")
            ]
        );
    }

    fn message(seq: u64, role: Role, text: &str, status: MessageStatus) -> Message {
        Message {
            id: Uuid::new_v4(),
            session_id: Uuid::nil(),
            seq,
            role,
            text: text.into(),
            status,
            tools: vec![],
            created_at: 0,
            replay: None,
        }
    }

    #[test]
    fn history_alternates_is_bounded_and_skips_unanswered_questions() {
        use MessageStatus::*;
        use Role::*;
        let all = [
            message(1, User, "q1", Complete),
            message(2, Assistant, "a1", Complete),
            message(3, User, "q2", Complete),
            message(4, Assistant, "", Failed),
            message(5, User, "q3", Complete),
            message(6, Assistant, "a3 partial", Cancelled),
            message(7, User, "q4", Complete),
            message(8, Assistant, "a4", Streaming),
        ];
        let texts = |max| -> Vec<String> {
            conversation(&all, max)
                .iter()
                .map(|m| m.text.clone())
                .collect()
        };
        assert_eq!(texts(40), ["q1", "a1", "q3", "a3 partial"]);
        assert_eq!(texts(2), ["q3", "a3 partial"]);
        // An odd bound never starts with a reply.
        assert_eq!(texts(3), ["q3", "a3 partial"]);
        assert!(texts(0).is_empty());
    }

    #[test]
    fn excerpts_are_short_single_line_and_never_carry_the_key() {
        let key = ApiKey::new("sk-test-abcdefghijklmnop0123456789".into()).unwrap();
        let body = br#"{"error": {"message": "Incorrect API key provided: sk-test-abcdefghijklmnop0123456789. Or masked: sk-tes************6789, or bare: abcdefghijklmnop.\nSee docs.", "type": "invalid_request_error"}}"#;
        let text = excerpt(body, Some(&key));
        assert!(text.starts_with(": Incorrect API key provided:"), "{text}");
        assert!(!text.contains("abcdefgh"), "{text}");
        assert!(!text.contains("sk-"), "{text}");
        assert!(!text.contains('\n'), "{text}");
        let long = "x ".repeat(1000);
        assert!(excerpt(long.as_bytes(), None).chars().count() <= EXCERPT_CHARS + 3);
        assert_eq!(excerpt(b"", None), "");
        assert_eq!(excerpt(b"upstream exploded", None), ": upstream exploded");
    }

    #[test]
    fn the_key_never_prints() {
        let key = ApiKey::new("sk-secret-value-123456".into()).unwrap();
        let settings = OpenAiSettings {
            base_url: "http://127.0.0.1:11434/v1".into(),
            model: "m".into(),
            api_key_env: "KEY".into(),
            api_key: Some(key),
            system_prompt: String::new(),
            max_history_messages: 40,
            max_tool_rounds: 4,
            tools: true,
            temperature: None,
            connect_timeout: Duration::from_secs(5),
            first_token_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(30),
            total_timeout: Duration::from_secs(300),
        };
        let engine = OpenAi::new(settings).unwrap();
        let printed = format!("{engine:?}");
        assert!(!printed.contains("secret-value"), "{printed}");
        assert!(printed.contains(REDACTED), "{printed}");
        assert_eq!(
            engine.endpoint(),
            "http://127.0.0.1:11434/v1/chat/completions"
        );
        assert!(ApiKey::new("has space".into()).is_err());
    }

    #[test]
    fn base_urls() {
        assert!(parse_base_url("https://api.openai.com/v1").is_ok());
        assert!(parse_base_url("http://127.0.0.1:8080/v1/").is_ok());
        for bad in [
            "ftp://host/v1",
            "not a url",
            "127.0.0.1:11434/v1",
            "http://user:pass@host/v1",
            "http://host/v1?x=1",
        ] {
            assert!(parse_base_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tools_become_function_tools_with_schemas() {
        let tools = function_tools(&crate::analysis::tools::registry());
        let names: Vec<&str> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["function"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["message_count", "word_count", "session_summary"]);
        for t in tools.as_array().unwrap() {
            assert_eq!(t["type"], "function");
            assert_eq!(t["function"]["parameters"]["type"], "object");
            assert!(t["function"]["description"].as_str().is_some());
        }
    }
}
