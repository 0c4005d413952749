//! The `openai` engine (API.md §8) against an OpenAI-compatible server run
//! by the test itself ([`Upstream`]): a small HTTP/1.1 server on loopback,
//! scripted per request, that speaks the real wire format (chunked
//! `text/event-stream`, `data: {chunk}` events, `data: [DONE]`), records
//! every request's headers and body, and notices when palaver closes a
//! connection it holds open.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

use crate::metrics::sample;
use crate::support::{
    assert_error, auth_options, client, new_session, next_frame, send_json, signed_in, until_done,
    ws_connected, JsonValue, ServerOptions, TestServer, Ws,
};

/// The key palaver reads from the environment and must send upstream.
const KEY: &str = "sk-test-upstream-key-0123456789abcdefXYZ";

/// One step of a scripted response body.
#[derive(Clone)]
pub(crate) enum Step {
    /// Bytes of the body, written (and flushed) as one HTTP chunk.
    Send(String),
    /// Send nothing more; wait for the client to close the connection.
    Hold,
    /// Close the connection mid-body (no terminating chunk).
    Cut,
}

/// One scripted response.
pub(crate) struct Reply {
    status: u16,
    content_type: &'static str,
    steps: Vec<Step>,
}

/// A request as the upstream received it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
struct Shared {
    replies: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Seen>>,
    /// Connections held open (`Hold`) that the client then closed.
    closed: Mutex<usize>,
    changed: Notify,
}

pub(crate) struct Upstream {
    /// `http://127.0.0.1:PORT/v1`
    pub(crate) base_url: String,
    shared: Arc<Shared>,
}

impl Upstream {
    pub(crate) async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        let shared = Arc::new(Shared::default());
        let accepting = shared.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(serve(socket, accepting.clone()));
            }
        });
        Upstream { base_url, shared }
    }

    /// Queues the response to the next request.
    pub(crate) fn script(&self, reply: Reply) {
        self.shared.replies.lock().unwrap().push_back(reply);
    }

    fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    fn last(&self) -> Seen {
        self.seen().pop().expect("a request reached the upstream")
    }

    /// Waits until `n` held connections have been closed by the client.
    async fn closed(&self, n: usize) {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                if *self.shared.closed.lock().unwrap() >= n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(Duration::from_secs(20), wait)
            .await
            .expect("palaver closed the upstream connection");
    }
}

/// Serves one connection: one request, one scripted response, then close.
async fn serve(mut socket: TcpStream, shared: Arc<Shared>) {
    let mut raw = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(pos) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break pos;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = raw[head_end + 4..].to_vec();
    while body.len() < length {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.seen.lock().unwrap().push(Seen {
        path,
        headers,
        body,
    });
    shared.changed.notify_waiters();
    let reply = shared
        .replies
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or_else(|| error_reply(500, "the test scripted no reply for this request"));
    let head = format!(
        "HTTP/1.1 {} Scripted\r\ncontent-type: {}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        reply.status, reply.content_type
    );
    if socket.write_all(head.as_bytes()).await.is_err() {
        return;
    }
    for step in reply.steps {
        match step {
            Step::Send(data) => {
                let chunk = format!("{:x}\r\n{data}\r\n", data.len());
                if socket.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                let _ = socket.flush().await;
            }
            Step::Hold => {
                // Until the client goes: a read of 0 bytes (or an error).
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                *shared.closed.lock().unwrap() += 1;
                shared.changed.notify_waiters();
                return;
            }
            Step::Cut => return,
        }
    }
    let _ = socket.write_all(b"0\r\n\r\n").await;
    let _ = socket.shutdown().await;
}

pub(crate) fn event(data: Value) -> String {
    format!("data: {data}\n\n")
}

/// A `chat.completion.chunk` with one choice.
pub(crate) fn chunk(delta: Value, finish_reason: Option<&str>) -> String {
    event(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }))
}

pub(crate) fn text(piece: &str) -> Step {
    Step::Send(chunk(json!({"content": piece}), None))
}

pub(crate) fn role() -> Step {
    Step::Send(chunk(json!({"role": "assistant", "content": ""}), None))
}

pub(crate) fn finish(reason: &str) -> Step {
    Step::Send(chunk(json!({}), Some(reason)))
}

/// The usage chunk `stream_options.include_usage` asks for.
pub(crate) fn usage(completion_tokens: u64) -> Step {
    Step::Send(event(json!({
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "choices": [],
        "usage": {"prompt_tokens": 12, "completion_tokens": completion_tokens, "total_tokens": 12 + completion_tokens},
    })))
}

pub(crate) fn done() -> Step {
    Step::Send("data: [DONE]\n\n".into())
}

/// Tool-call deltas in one chunk.
pub(crate) fn calls(deltas: Value) -> Step {
    Step::Send(chunk(json!({"tool_calls": deltas}), None))
}

pub(crate) fn streamed(steps: Vec<Step>) -> Reply {
    Reply {
        status: 200,
        content_type: "text/event-stream",
        steps,
    }
}

/// A whole answer: role, the pieces, `stop`, usage, `[DONE]`.
pub(crate) fn answer(pieces: &[&str], completion_tokens: u64) -> Reply {
    let mut steps = vec![role()];
    steps.extend(pieces.iter().map(|p| text(p)));
    steps.extend([finish("stop"), usage(completion_tokens), done()]);
    streamed(steps)
}

pub(crate) fn error_reply(status: u16, message: &str) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        steps: vec![Step::Send(
            json!({"error": {"message": message, "type": "test_error"}}).to_string(),
        )],
    }
}

/// palaver with the `openai` engine pointed at `base_url`, the key in the
/// environment.
pub(crate) fn options(base_url: &str) -> ServerOptions {
    auth_options()
        .env("PALAVER_ANALYSIS__ENGINE", "openai")
        .env("PALAVER_ANALYSIS__OPENAI__BASE_URL", base_url)
        .env("PALAVER_ANALYSIS__OPENAI__MODEL", "test-model")
        .env("PALAVER_ANALYSIS__OPENAI__API_KEY_ENV", "UPSTREAM_KEY")
        .env("UPSTREAM_KEY", KEY)
}

struct Chat {
    access: String,
    session: String,
    ws: Ws,
}

async fn open_chat(server: &TestServer, access: String) -> Chat {
    let session = new_session(server, &access).await;
    let (ws, _) = ws_connected(
        server,
        &format!("/ws/sessions/{session}/?token={access}"),
        &[],
    )
    .await;
    Chat {
        access,
        session,
        ws,
    }
}

/// A registered user's chat.
async fn chat(server: &TestServer, email: &str) -> Chat {
    let tokens = signed_in(server, email).await;
    open_chat(server, tokens["access"].as_str().unwrap().to_owned()).await
}

/// A demo user's chat (its quota counts the session it created).
async fn demo_chat(server: &TestServer) -> Chat {
    let demo: Value = client()
        .post(server.url("/api/auth/demo/"))
        .json_value()
        .await;
    open_chat(server, demo["access"].as_str().unwrap().to_owned()).await
}

impl Chat {
    /// Asks; every frame after `message` (and `quota`), through `done`.
    async fn ask(&mut self, question: &str) -> Vec<Value> {
        send_json(&mut self.ws, json!({"type": "question", "text": question})).await;
        let message = next_frame(&mut self.ws).await;
        assert_eq!(message["type"], "message", "{message}");
        let mut frames = until_done(&mut self.ws).await;
        frames.retain(|f| f["type"] != "quota");
        frames
    }

    async fn messages(&self, server: &TestServer) -> Vec<Value> {
        let page: Value = client()
            .get(server.url(&format!("/api/sessions/{}/messages/", self.session)))
            .bearer_auth(&self.access)
            .json_value()
            .await;
        page["messages"].as_array().unwrap().clone()
    }

    async fn request_count(&self, server: &TestServer) -> u64 {
        let me: Value = client()
            .get(server.url("/api/auth/me/"))
            .bearer_auth(&self.access)
            .json_value()
            .await;
        me["quota"]["request_count"].as_u64().unwrap()
    }
}

fn of_type<'a>(frames: &'a [Value], kind: &str) -> Vec<&'a Value> {
    frames.iter().filter(|f| f["type"] == kind).collect()
}

fn tokens(frames: &[Value]) -> String {
    of_type(frames, "token")
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn text_deltas_stream_as_tokens_and_the_request_has_the_contracts_shape() {
    let upstream = Upstream::start().await;
    let pieces = [
        "Hel", "lo", ",", " wor", "ld", "!", " How", " can", " I", " he", "lp", "?",
    ];
    upstream.script(answer(&pieces, 42));
    let server = TestServer::with(options(&upstream.base_url));
    let mut chat = chat(&server, "ann@example.com").await;

    let frames = chat.ask("hi there").await;
    let relayed: Vec<&str> = of_type(&frames, "token")
        .iter()
        .map(|f| f["text"].as_str().unwrap())
        .collect();
    assert_eq!(relayed, pieces, "one token per delta, in order");
    let done = frames.last().unwrap();
    assert_eq!(done["status"], "complete", "{done}");
    assert_eq!(
        done["usage"]["tokens"], 42,
        "the upstream's completion tokens"
    );
    let reply = chat.messages(&server).await.pop().unwrap();
    assert_eq!(reply["text"], "Hello, world! How can I help?");
    assert_eq!(reply["status"], "complete");
    assert_eq!(reply["id"], done["message_id"]);

    let request = upstream.last();
    assert_eq!(request.path, "/v1/chat/completions");
    assert_eq!(
        request.header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert!(request
        .header("content-type")
        .is_some_and(|v| v.starts_with("application/json")));
    let body = &request.body;
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"], json!({"include_usage": true}));
    assert!(body.get("temperature").is_none(), "unset: the server's");
    let messages = body["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{body}");
    assert_eq!(messages[0]["role"], "system");
    assert!(messages[0]["content"].as_str().unwrap().len() > 10);
    assert_eq!(messages[1], json!({"role": "user", "content": "hi there"}));
    let tools: Vec<&str> = body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["type"], "function");
            assert_eq!(t["function"]["parameters"]["type"], "object");
            t["function"]["name"].as_str().unwrap()
        })
        .collect();
    assert_eq!(tools, ["message_count", "word_count", "session_summary"]);
}

/// A call as the follow-up request must carry it: id, tool, arguments.
type Expected = (&'static str, &'static str, &'static str);

#[tokio::test]
async fn tool_calls_are_assembled_run_reported_and_sent_back() {
    let upstream = Upstream::start().await;
    let server = TestServer::with(options(&upstream.base_url));
    let mut chat = chat(&server, "ann@example.com").await;
    // Each case: the first round's tool-call deltas, and the calls they
    // make (id, tool, arguments as sent back).
    let cases: Vec<(&str, Vec<Step>, Vec<Expected>)> = vec![
        (
            "arguments across four chunks",
            vec![
                calls(
                    json!([{"index": 0, "id": "call_w", "type": "function", "function": {"name": "word_count", "arguments": ""}}]),
                ),
                calls(json!([{"index": 0, "function": {"arguments": "{\"sco"}}])),
                calls(json!([{"index": 0, "function": {"arguments": "pe\": "}}])),
                calls(json!([{"index": 0, "function": {"arguments": "\"all"}}])),
                calls(json!([{"index": 0, "function": {"arguments": "\"}"}}])),
                finish("tool_calls"),
            ],
            vec![("call_w", "word_count", "{\"scope\": \"all\"}")],
        ),
        (
            "two interleaved calls",
            vec![
                calls(
                    json!([{"index": 0, "id": "call_a", "type": "function", "function": {"name": "message_count", "arguments": ""}}]),
                ),
                calls(
                    json!([{"index": 1, "id": "call_b", "type": "function", "function": {"name": "session_summary", "arguments": "{\"de"}}]),
                ),
                calls(json!([{"index": 0, "function": {"arguments": "{}"}}])),
                calls(json!([{"index": 1, "function": {"arguments": "tail\": 1}"}}])),
                finish("tool_calls"),
            ],
            vec![
                ("call_a", "message_count", "{}"),
                ("call_b", "session_summary", "{\"detail\": 1}"),
            ],
        ),
        (
            "a call without index",
            vec![
                calls(
                    json!([{"id": "call_n", "type": "function", "function": {"name": "message_count", "arguments": "{\"x\""}}]),
                ),
                calls(json!([{"function": {"arguments": ": true}"}}])),
                finish("tool_calls"),
            ],
            vec![("call_n", "message_count", "{\"x\": true}")],
        ),
        (
            "finish_reason stop after a tool call",
            vec![
                calls(
                    json!([{"index": 0, "id": "call_s", "type": "function", "function": {"name": "word_count", "arguments": "{}"}}]),
                ),
                finish("stop"),
            ],
            vec![("call_s", "word_count", "{}")],
        ),
        (
            "index 0 reused for parallel calls",
            vec![
                calls(
                    json!([{"index": 0, "id": "call_p", "type": "function", "function": {"name": "message_count", "arguments": "{}"}}]),
                ),
                calls(
                    json!([{"index": 0, "id": "call_q", "type": "function", "function": {"name": "word_count", "arguments": "{"}}]),
                ),
                calls(json!([{"index": 0, "function": {"arguments": "}"}}])),
                finish("tool_calls"),
            ],
            vec![
                ("call_p", "message_count", "{}"),
                ("call_q", "word_count", "{}"),
            ],
        ),
    ];
    for (case, steps, expected) in cases {
        let mut first = vec![role()];
        first.extend(steps);
        first.extend([usage(5), done()]);
        upstream.script(streamed(first));
        upstream.script(answer(&["Here", " is", " what", " I", " found."], 7));
        let before = upstream.seen().len();

        let frames = chat.ask(&format!("count things ({case})")).await;
        let seen = upstream.seen();
        assert_eq!(seen.len(), before + 2, "{case}: two rounds");

        // Announced, run and reported, one call after the other.
        let kinds: Vec<&str> = frames.iter().map(|f| f["type"].as_str().unwrap()).collect();
        let mut expected_kinds = Vec::new();
        for _ in &expected {
            expected_kinds.extend(["tool_call", "tool_result"]);
        }
        expected_kinds.extend(["token"; 5]);
        expected_kinds.push("done");
        assert_eq!(kinds, expected_kinds, "{case}");
        let announced = of_type(&frames, "tool_call");
        let reported = of_type(&frames, "tool_result");
        for (i, (_, tool, arguments)) in expected.iter().enumerate() {
            assert_eq!(announced[i]["tool"], *tool, "{case}");
            let args: Value = serde_json::from_str(arguments).unwrap();
            assert_eq!(announced[i]["args"], args, "{case}");
            assert_eq!(reported[i]["tool"], *tool, "{case}");
            assert_eq!(reported[i]["success"], true, "{case}: {}", reported[i]);
        }
        assert_eq!(tokens(&frames), "Here is what I found.");
        let done = frames.last().unwrap();
        assert_eq!(done["status"], "complete", "{case}");
        assert_eq!(done["usage"]["tokens"], 12, "{case}: both rounds' usage");

        // The follow-up request: the assistant's calls, then one `tool`
        // message per call carrying its result.
        let follow_up = seen[before + 1].body["messages"]
            .as_array()
            .unwrap()
            .clone();
        let n = expected.len();
        let assistant = &follow_up[follow_up.len() - n - 1];
        assert_eq!(assistant["role"], "assistant", "{case}");
        let sent_calls = assistant["tool_calls"].as_array().unwrap();
        assert_eq!(sent_calls.len(), n, "{case}: {assistant}");
        for (i, (id, tool, arguments)) in expected.iter().enumerate() {
            assert_eq!(
                sent_calls[i],
                json!({"id": id, "type": "function", "function": {"name": tool, "arguments": arguments}}),
                "{case}"
            );
            let result = &follow_up[follow_up.len() - n + i];
            assert_eq!(result["role"], "tool", "{case}");
            assert_eq!(result["tool_call_id"], *id, "{case}");
            let content: Value = serde_json::from_str(result["content"].as_str().unwrap()).unwrap();
            assert_eq!(content, reported[i]["result"], "{case}");
        }
        // The first request of the pair ended with the question.
        let opening = seen[before].body["messages"].as_array().unwrap();
        assert_eq!(
            opening.last().unwrap()["content"],
            format!("count things ({case})")
        );

        // Stored with its tools.
        let reply = chat.messages(&server).await.pop().unwrap();
        assert_eq!(reply["text"], "Here is what I found.");
        let stored: Vec<&str> = reply["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["tool"].as_str().unwrap())
            .collect();
        let tools: Vec<&str> = expected.iter().map(|(_, tool, _)| *tool).collect();
        assert_eq!(stored, tools, "{case}");
    }
}

/// Whether and how a failure shows: what the error names, the text that
/// arrived before it.
struct Failure {
    case: &'static str,
    replies: Vec<Reply>,
    names: Vec<&'static str>,
    partial: &'static str,
    /// The engine gave up on a connection the upstream held open.
    closes: bool,
}

#[tokio::test]
async fn upstream_failures_end_failed_keep_the_text_and_refund_the_question() {
    let upstream = Upstream::start().await;
    let server = TestServer::with(
        options(&upstream.base_url)
            .env("PALAVER_ANALYSIS__OPENAI__FIRST_TOKEN_TIMEOUT", "1500ms")
            .env("PALAVER_ANALYSIS__OPENAI__IDLE_TIMEOUT", "700ms")
            .env("PALAVER_ANALYSIS__OPENAI__MAX_TOOL_ROUNDS", "2"),
    );
    let mut chat = demo_chat(&server).await;
    // Creating the session was counted; each failed question is refunded.
    assert_eq!(chat.request_count(&server).await, 1);
    let tool_round = || {
        streamed(vec![
            role(),
            calls(
                json!([{"index": 0, "id": "call_1", "type": "function", "function": {"name": "message_count", "arguments": "{}"}}]),
            ),
            finish("tool_calls"),
            done(),
        ])
    };
    let cases = vec![
        Failure {
            case: "upstream 500",
            replies: vec![error_reply(500, "the model crashed")],
            names: vec!["500", "the model crashed"],
            partial: "",
            closes: false,
        },
        Failure {
            case: "upstream 401",
            replies: vec![error_reply(401, "Incorrect API key provided")],
            names: vec!["401", "Incorrect API key"],
            partial: "",
            closes: false,
        },
        Failure {
            case: "upstream 429",
            replies: vec![error_reply(429, "Rate limit reached")],
            names: vec!["429", "Rate limit reached"],
            partial: "",
            closes: false,
        },
        Failure {
            case: "malformed JSON in a chunk",
            replies: vec![streamed(vec![
                role(),
                text("Partial "),
                text("answer"),
                Step::Send("data: {\"choices\": [{\"delta\": \n\n".into()),
                done(),
            ])],
            names: vec!["not valid JSON"],
            partial: "Partial answer",
            closes: false,
        },
        Failure {
            case: "connection cut mid-stream",
            replies: vec![streamed(vec![role(), text("Cut "), text("off"), Step::Cut])],
            names: vec!["broke off"],
            partial: "Cut off",
            closes: false,
        },
        Failure {
            case: "no first delta",
            replies: vec![streamed(vec![role(), Step::Hold])],
            names: vec!["first_token_timeout", "1s 500ms"],
            partial: "",
            closes: true,
        },
        Failure {
            case: "a stall between deltas",
            replies: vec![streamed(vec![
                role(),
                text("Stalled "),
                text("here"),
                Step::Hold,
            ])],
            names: vec!["idle_timeout", "700ms"],
            partial: "Stalled here",
            closes: true,
        },
        Failure {
            case: "an error event mid-stream",
            replies: vec![streamed(vec![
                text("Half"),
                Step::Send(event(json!({"error": {"message": "out of memory"}}))),
            ])],
            names: vec!["mid-stream", "out of memory"],
            partial: "Half",
            closes: false,
        },
        Failure {
            case: "more than max_tool_rounds",
            replies: vec![tool_round(), tool_round(), tool_round()],
            names: vec!["max_tool_rounds", "2"],
            partial: "",
            closes: false,
        },
    ];
    let mut closes = 0;
    for failure in cases {
        let case = failure.case;
        for reply in failure.replies {
            upstream.script(reply);
        }
        let frames = chat.ask(&format!("a question ({case})")).await;
        let n = frames.len();
        assert!(n >= 2, "{case}: {frames:?}");
        let error = &frames[n - 2];
        assert_eq!(error["type"], "error", "{case}: {frames:?}");
        assert_eq!(error["code"], "analysis_failed", "{case}");
        let message = error["message"].as_str().unwrap();
        for name in &failure.names {
            assert!(message.contains(name), "{case}: {message:?} lacks {name:?}");
        }
        assert!(!message.contains(KEY), "{case}: {message}");
        assert_eq!(frames[n - 1]["type"], "done");
        assert_eq!(frames[n - 1]["status"], "failed", "{case}");
        assert_eq!(tokens(&frames), failure.partial, "{case}");
        if case == "more than max_tool_rounds" {
            assert_eq!(
                of_type(&frames, "tool_result").len(),
                2,
                "{case}: two rounds ran"
            );
        }
        // The count given back, and said so.
        let quota = next_frame(&mut chat.ws).await;
        assert_eq!(quota["type"], "quota", "{case}: {quota}");
        assert_eq!(quota["request_count"], 1, "{case}");
        assert_eq!(chat.request_count(&server).await, 1, "{case}");
        // Whatever arrived is stored.
        let reply = chat.messages(&server).await.pop().unwrap();
        assert_eq!(reply["status"], "failed", "{case}");
        assert_eq!(reply["text"], failure.partial, "{case}");
        if failure.closes {
            closes += 1;
            upstream.closed(closes).await;
        }
    }

    // Over HTTP: 502 analysis_failed, refunded by the middleware.
    upstream.script(error_reply(503, "loading the model"));
    let res = client()
        .post(server.url(&format!("/api/sessions/{}/messages/", chat.session)))
        .bearer_auth(&chat.access)
        .json(&json!({"text": "over http"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 502, "analysis_failed").await;
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("503") && error.contains("loading the model"),
        "{error}"
    );
    assert_eq!(chat.request_count(&server).await, 1);
    assert_eq!(
        chat.messages(&server).await.pop().unwrap()["status"],
        "failed"
    );

    // Still healthy: a question answers.
    let health = client().get(server.url("/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    upstream.script(answer(&["Fine", " again."], 2));
    let frames = chat.ask("still there?").await;
    assert_eq!(frames.last().unwrap()["status"], "complete");
    assert_eq!(tokens(&frames), "Fine again.");
    assert_eq!(chat.request_count(&server).await, 2);

    // Counted by outcome, timed to the first delta, rounds per reply; a
    // valid exposition.
    let text = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let check = crate::metrics::promtool(&text);
    assert!(
        check.status.success(),
        "promtool: {}",
        String::from_utf8_lossy(&check.stdout)
    );
    let requests = |outcome| {
        sample(
            &text,
            "palaver_analysis_upstream_requests_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(requests("http_5xx"), Some(2.0), "500 and 503");
    assert_eq!(requests("http_4xx"), Some(2.0), "401 and 429");
    assert_eq!(requests("malformed"), Some(1.0));
    assert_eq!(requests("cut"), Some(1.0));
    assert_eq!(requests("first_token_timeout"), Some(1.0));
    assert_eq!(requests("idle_timeout"), Some(1.0));
    assert_eq!(requests("error"), Some(1.0), "the error event");
    assert_eq!(
        requests("ok"),
        Some(4.0),
        "three tool rounds and the last answer"
    );
    assert!(
        sample(
            &text,
            "palaver_analysis_upstream_first_delta_seconds_count",
            &[]
        )
        .is_some_and(|n| n >= 7.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "palaver_analysis_tool_rounds_bucket", &[("le", "1")]),
        Some(10.0),
        "every reply but the one that ran 2 rounds"
    );
}

#[tokio::test]
async fn a_refused_connection_is_analysis_failed_over_both_transports() {
    // A port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let server = TestServer::with(options(&format!("http://127.0.0.1:{port}/v1")));
    let mut chat = demo_chat(&server).await;
    let frames = chat.ask("anyone?").await;
    let error = &frames[frames.len() - 2];
    assert_eq!(error["code"], "analysis_failed", "{frames:?}");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("cannot connect") && message.contains(&format!("127.0.0.1:{port}")),
        "{message}"
    );
    assert_eq!(frames.last().unwrap()["status"], "failed");
    assert_eq!(next_frame(&mut chat.ws).await["request_count"], 1);

    let res = client()
        .post(server.url(&format!("/api/sessions/{}/messages/", chat.session)))
        .bearer_auth(&chat.access)
        .json(&json!({"text": "anyone over http?"}))
        .send()
        .await
        .unwrap();
    let body = assert_error(res, 502, "analysis_failed").await;
    assert!(
        body["error"].as_str().unwrap().contains("cannot connect"),
        "{body}"
    );
    assert_eq!(chat.request_count(&server).await, 1);
}

#[tokio::test]
async fn cancel_closes_the_upstream_connection_at_once() {
    let upstream = Upstream::start().await;
    upstream.script(streamed(vec![
        role(),
        text("one "),
        text("two "),
        Step::Hold,
    ]));
    let server = TestServer::with(options(&upstream.base_url));
    let mut chat = chat(&server, "ann@example.com").await;
    send_json(&mut chat.ws, json!({"type": "question", "text": "go on"})).await;
    assert_eq!(next_frame(&mut chat.ws).await["type"], "message");
    let mut text = String::new();
    while text != "one two " {
        let frame = next_frame(&mut chat.ws).await;
        assert_eq!(frame["type"], "token", "{frame}");
        text.push_str(frame["text"].as_str().unwrap());
    }
    send_json(&mut chat.ws, json!({"type": "cancel"})).await;
    let done = next_frame(&mut chat.ws).await;
    assert_eq!(done["type"], "done", "{done}");
    assert_eq!(done["status"], "cancelled");
    upstream.closed(1).await;
    let reply = chat.messages(&server).await.pop().unwrap();
    assert_eq!(reply["status"], "cancelled");
    assert_eq!(reply["text"], "one two ");
}

#[tokio::test]
async fn the_history_sent_is_the_sessions_own_and_bounded() {
    let upstream = Upstream::start().await;
    let server = TestServer::with(
        options(&upstream.base_url)
            .env("PALAVER_ANALYSIS__OPENAI__MAX_HISTORY_MESSAGES", "4")
            .env("PALAVER_ANALYSIS__OPENAI__SYSTEM_PROMPT", "Be brief.")
            .env("PALAVER_ANALYSIS__OPENAI__TOOLS", "false")
            .env("PALAVER_ANALYSIS__OPENAI__TEMPERATURE", "0.25"),
    );
    let tokens = signed_in(&server, "ann@example.com").await;
    let access = tokens["access"].as_str().unwrap();
    let mine = new_session(&server, access).await;
    let other = new_session(&server, access).await;
    let ask = |session: String, text: &'static str| {
        let url = server.url(&format!("/api/sessions/{session}/messages/"));
        async move {
            let res = client()
                .post(url)
                .bearer_auth(access)
                .json(&json!({"text": text}))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    for (session, question, reply) in [
        (&mine, "q1", "a1"),
        (&other, "elsewhere", "not yours"),
        (&mine, "q2", "a2"),
        (&mine, "q3", "a3"),
    ] {
        upstream.script(answer(&[reply], 1));
        let body = ask(session.clone(), question).await;
        assert_eq!(body["reply"]["text"], reply);
        assert_eq!(body["reply"]["status"], "complete");
    }
    upstream.script(answer(&["a4"], 1));
    ask(mine.clone(), "q4").await;

    let messages = |seen: &Seen| -> Vec<(String, String)> {
        seen.body["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["role"].as_str().unwrap().to_owned(),
                    m["content"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter()
            .map(|(r, c)| (r.to_string(), c.to_string()))
            .collect()
    };
    let seen = upstream.seen();
    assert_eq!(seen.len(), 5);
    assert_eq!(
        messages(&seen[2]),
        pairs(&[
            ("system", "Be brief."),
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2")
        ]),
        "the session's own history, not the other session's"
    );
    assert_eq!(
        messages(&seen[4]),
        pairs(&[
            ("system", "Be brief."),
            ("user", "q2"),
            ("assistant", "a2"),
            ("user", "q3"),
            ("assistant", "a3"),
            ("user", "q4")
        ]),
        "the newest max_history_messages (4), in order"
    );
    assert!(seen[4].body.get("tools").is_none(), "tools = false");
    assert_eq!(seen[4].body["temperature"], 0.25);
}

#[tokio::test]
async fn the_api_key_goes_upstream_and_into_no_log_line() {
    let upstream = Upstream::start().await;
    upstream.script(answer(&["Hi."], 1));
    // An upstream that quotes the key back in its error body.
    upstream.script(error_reply(
        401,
        &format!("Incorrect API key provided: {KEY}. Check your key."),
    ));
    for format in ["pretty", "json"] {
        let server = TestServer::with(
            options(&upstream.base_url)
                .env("RUST_LOG", "trace")
                .env("PALAVER_LOGGING__FORMAT", format),
        );
        let mut chat = chat(&server, &format!("{format}@example.com")).await;
        let frames = chat.ask("hello").await;
        if format == "pretty" {
            assert_eq!(frames.last().unwrap()["status"], "complete");
            let frames = chat.ask("again").await;
            let error = &frames[frames.len() - 2];
            assert_eq!(error["code"], "analysis_failed");
            let message = error["message"].as_str().unwrap();
            assert!(message.contains("401"), "{message}");
            assert!(!message.contains(&KEY[8..24]), "{message}");
        }
        let output = server.output_once("analysis");
        assert!(output.contains("openai"), "the engine's start is logged");
        for seen in upstream.seen() {
            assert_eq!(
                seen.header("authorization"),
                Some(format!("Bearer {KEY}").as_str())
            );
        }
        for probe in [KEY, &KEY[..20], &KEY[KEY.len() - 20..]] {
            assert!(
                !output.contains(probe),
                "the API key leaked into the logs ({format})"
            );
        }
        if format == "pretty" {
            upstream.script(answer(&["Hi."], 1));
        }
    }
}

/// On a session bound to a track, the model is offered the audio tools as
/// function tools, and a call to one reads the track's analysis.
#[tokio::test]
async fn a_tracks_audio_tools_are_function_tools_the_model_can_call() {
    use crate::fixtures::{click_track, wav};
    let upstream = Upstream::start().await;
    let server = TestServer::with(options(&upstream.base_url));
    let ann = crate::tracks::api(&server, "ann@example.com").await;
    let track = ann
        .uploaded(
            "beat.wav",
            &wav(44_100, 2, &click_track(44_100, 120.0, 12.0)),
        )
        .await;
    let id = track["track_id"].as_str().unwrap();
    assert_eq!(ann.analysed(id).await["analysis_status"], "ready");
    let session: Value = client()
        .post(server.url("/api/sessions/"))
        .bearer_auth(&ann.token)
        .json(&json!({"track_id": id}))
        .json_value()
        .await;
    let (ws, _) = ws_connected(
        &server,
        &format!(
            "/ws/sessions/{}/?token={}",
            session["id"].as_str().unwrap(),
            ann.token
        ),
        &[],
    )
    .await;
    let mut chat = Chat {
        access: ann.token.clone(),
        session: session["id"].as_str().unwrap().to_owned(),
        ws,
    };
    upstream.script(streamed(vec![
        role(),
        calls(
            json!([{"index": 0, "id": "call_t", "type": "function", "function": {"name": "tempo", "arguments": "{}"}}]),
        ),
        finish("tool_calls"),
        done(),
    ]));
    upstream.script(answer(&["It is", " 120 BPM."], 4));
    let frames = chat.ask("how fast is it?").await;

    let offered: Vec<String> = upstream.seen()[0].body["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap().to_owned())
        .collect();
    for tool in [
        "track_info",
        "tempo",
        "loudness",
        "peaks",
        "clipping",
        "dynamics",
        "silence",
        "spectrum",
        "message_count",
    ] {
        assert!(
            offered.iter().any(|o| o == tool),
            "{tool} not in {offered:?}"
        );
    }
    let reported = of_type(&frames, "tool_result");
    assert_eq!(reported[0]["tool"], "tempo");
    let bpm = reported[0]["result"]["tempo_bpm"].as_f64().unwrap();
    assert!((bpm - 120.0).abs() <= 1.2, "{bpm}");
    // The result went back to the model as the tool message.
    let follow_up = upstream.seen()[1].body["messages"]
        .as_array()
        .unwrap()
        .clone();
    let content: Value =
        serde_json::from_str(follow_up.last().unwrap()["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, reported[0]["result"]);
    assert_eq!(tokens(&frames), "It is 120 BPM.");
}
