//! The browser client end to end, in a real headless Chromium driven over
//! WebDriver (Debian's `chromium` and `chromium-driver`; `scripts/test`
//! installs them). Missing browsers fail these tests: they are never skipped.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::fixtures::{click_track, stereo_sine, wav};
use crate::support::{auth_options, client, register, require_tool, TestServer};

/// How long the page may take to reach a state (a cold Chromium on a loaded
/// 2-core machine).
const UI_TIMEOUT: Duration = Duration::from_secs(30);

/// One Chromium at a time: several at once would starve the 2 cores.
static ONE_BROWSER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Browser {
    driver: Child,
    client: Client,
    _profile: tempfile::TempDir,
}

impl Browser {
    async fn start() -> Browser {
        Self::launch(None, false).await
    }

    /// With `phone`, a Chromium whose viewport is that many CSS pixels wide
    /// (emulated: a window cannot be narrower than 500 px); with `logs`, one
    /// that keeps its console and DevTools network events for
    /// [`Browser::log`].
    async fn launch(phone: Option<u32>, logs: bool) -> Browser {
        let chromium = require_tool("chromium");
        let chromedriver = require_tool("chromedriver");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + UI_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not listen");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    "--no-first-run", "--window-size=1100,760",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        if let Some(width) = phone {
            if let Some(options) = caps["goog:chromeOptions"].as_object_mut() {
                options.insert(
                    "mobileEmulation".into(),
                    // Not `mobile`: a mobile viewport zooms out to fit
                    // what overflows, which would hide the overflow.
                    json!({"deviceMetrics": {
                        "width": width, "height": 844, "pixelRatio": 3.0, "mobile": false,
                    }}),
                );
            }
        }
        if logs {
            caps.insert(
                "goog:loggingPrefs".into(),
                json!({"browser": "ALL", "performance": "ALL"}),
            );
        }
        // Two providers are built in (ring for reqwest, aws-lc-rs for
        // fantoccini): name the default, or rustls panics choosing.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = ClientBuilder::rustls()
            .expect("TLS roots")
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a WebDriver session");
        Browser {
            driver,
            client,
            _profile: profile,
        }
    }

    async fn testid(&self, id: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(UI_TIMEOUT)
            .for_element(Locator::Css(&format!("[data-testid=\"{id}\"]")))
            .await
            .unwrap_or_else(|e| panic!("no [data-testid={id}]: {e}"))
    }

    async fn click(&self, id: &str) {
        self.testid(id)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {id}: {e}"));
    }

    async fn text(&self, id: &str) -> String {
        self.testid(id).await.text().await.unwrap_or_default()
    }

    /// Polls `check` (on page state read by `read`) until it holds.
    async fn until<F: Fn(&str) -> bool>(&self, id: &str, what: &str, check: F) -> String {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let text = self.text(id).await;
            if check(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: [data-testid={id}] is {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The texts of the messages shown, as (role, text).
    async fn messages(&self) -> Vec<(String, String)> {
        let value = self
            .client
            .execute(
                "return [...document.querySelectorAll('[data-testid=\"message-list\"] > [data-role]')]
                   .map(m => [m.dataset.role, m.querySelector('.body').textContent, m.dataset.status || '']);",
                vec![],
            )
            .await
            .unwrap();
        value
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m[0].as_str().unwrap().to_owned(),
                    m[1].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    /// Opens the page, signs in through the form, waits for the socket.
    async fn log_in(&self, base: &str, email: &str, password: &str) {
        self.client.goto(base).await.unwrap();
        self.testid("login-email")
            .await
            .send_keys(email)
            .await
            .unwrap();
        self.testid("login-password")
            .await
            .send_keys(password)
            .await
            .unwrap();
        self.click("login-submit").await;
        self.until("connection-status", "connected", |t| t == "online")
            .await;
    }

    async fn ask(&self, question: &str) {
        self.testid("question-input")
            .await
            .send_keys(question)
            .await
            .unwrap();
        self.click("send-button").await;
    }

    /// Waits until the last reply is finished (the send button is enabled).
    async fn reply_done(&self) {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let enabled = self.testid("send-button").await.is_enabled().await.unwrap();
            if enabled {
                return;
            }
            assert!(Instant::now() < deadline, "the reply never finished");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What `script` returns (its arguments are `arguments[0]`, …).
    async fn script(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"))
    }

    /// Polls `script` until it returns something other than null or false.
    async fn until_script(&self, what: &str, script: &str, args: Vec<Value>) -> Value {
        let deadline = Instant::now() + UI_TIMEOUT;
        loop {
            let value = self.script(script, args.clone()).await;
            if !(value.is_null() || value == false) {
                return value;
            }
            assert!(Instant::now() < deadline, "{what}: never so");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Chooses `path` in the upload input (which uploads it at once).
    async fn upload(&self, path: &std::path::Path) {
        self.testid("track-upload")
            .await
            .send_keys(path.to_str().unwrap())
            .await
            .unwrap_or_else(|e| panic!("choose {}: {e}", path.display()));
    }

    /// Waits until the track named `filename` is listed as analysed; its id.
    async fn ready_track(&self, filename: &str) -> String {
        let id = self
            .until_script(
                &format!("{filename} listed and ready"),
                "const item = [...document.querySelectorAll('[data-testid=\"track-list\"] [data-track-id]')]
                   .find(li => li.querySelector('.name').textContent === arguments[0]);
                 if (item && item.dataset.status === 'failed') return 'failed: ' + item.textContent;
                 return item && item.dataset.status === 'ready' ? item.dataset.trackId : null;",
                vec![json!(filename)],
            )
            .await;
        let id = id.as_str().unwrap().to_owned();
        assert!(!id.starts_with("failed"), "{id}");
        id
    }

    /// Waits until the overview canvas shows track `id`; (pixels painted,
    /// pixels of the loudness curve's colour, canvas width, its CSS width
    /// times the device pixel ratio).
    async fn overview_drawn(&self, id: &str) -> (u64, u64, u64, u64) {
        let drawn = self
            .until_script(
                "the overview drawn",
                "const c = document.querySelector('[data-testid=\"track-overview\"]');
                 if (c.dataset.trackId !== arguments[0] || !c.width || !c.height) return null;
                 const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                 let painted = 0, curve = 0;
                 for (let i = 0; i < d.length; i += 4) {
                   if (d[i + 3]) painted++;
                   if (d[i + 3] > 200 && d[i] > 180 && d[i + 1] < 150 && d[i + 2] < 90) curve++;
                 }
                 return painted ? [painted, curve, c.width, Math.round(c.clientWidth * devicePixelRatio)] : null;",
                vec![json!(id)],
            )
            .await;
        let n = |i: usize| drawn[i].as_u64().unwrap();
        (n(0), n(1), n(2), n(3))
    }

    /// The numbers of the track panel, as {key: text}.
    async fn analysis(&self) -> Value {
        self.script(
            "return Object.fromEntries([...document.querySelectorAll('[data-testid=\"track-analysis\"] [data-key]')]
               .map(row => [row.dataset.key, row.querySelector('dd').textContent]));",
            vec![],
        )
        .await
    }

    /// The tool cards shown, as (tool, state, text).
    async fn tool_cards(&self) -> Vec<(String, String, String)> {
        let cards = self
            .script(
                "return [...document.querySelectorAll('[data-testid=\"tool-call\"]')]
                   .map(c => [c.dataset.tool, c.dataset.state, c.textContent]);",
                vec![],
            )
            .await;
        cards
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let s = |i: usize| c[i].as_str().unwrap_or_default().to_owned();
                (s(0), s(1), s(2))
            })
            .collect()
    }

    /// The entries of one of Chromium's logs since the last call: `browser`
    /// (the console) or `performance` (DevTools events, each a JSON string).
    async fn log(&self, kind: &'static str) -> Vec<Value> {
        let entries = self
            .client
            .issue_cmd(GetLog(kind))
            .await
            .unwrap_or_else(|e| panic!("the {kind} log: {e}"));
        entries.as_array().cloned().unwrap_or_default()
    }

    /// Fails unless the window is `width` CSS pixels wide and the page fits
    /// in it (no sideways scrolling: nothing wider than the viewport, whose
    /// width is less a vertical scrollbar's if there is one).
    async fn assert_fits(&self, width: u32, what: &str) {
        let sizes = self
            .client
            .execute(
                "const root = document.documentElement;
                 return [window.innerWidth, root.clientWidth, root.scrollWidth];",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(sizes[0], width, "{what}: the window is not {width} px wide");
        assert!(
            sizes[2].as_u64() <= sizes[1].as_u64(),
            "{what}: the page is {} px wide in a {} px viewport",
            sizes[2],
            sizes[1]
        );
    }

    async fn stop(mut self) {
        let _ = self.client.close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// chromedriver's log endpoint (outside W3C WebDriver, so fantoccini has no
/// method for it): the entries of one log since it was last read.
#[derive(Debug)]
struct GetLog(&'static str);

impl WebDriverCompatibleCommand for GetLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            http::Method::POST,
            Some(json!({ "type": self.0 }).to_string()),
        )
    }
}

/// At a phone's width (390 px) the page never scrolls sideways: the sign-in
/// page, and the chat with its question box and buttons, a long title and
/// a long unbroken word. The page's icon loads (no 404 in the console).
#[tokio::test]
async fn the_page_fits_a_phone_and_has_an_icon() {
    const PHONE: u32 = 390;
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(auth_options().env("PALAVER_ANALYSIS__ENGINE", "echo"));
    register(&server, "ann@example.com", "correct horse battery").await;
    let browser = Browser::launch(Some(PHONE), true).await;
    browser.client.goto(&server.base).await.unwrap();
    browser.testid("login-email").await;

    // The icon: wait for the browser's answer to its request, whatever it is.
    let deadline = Instant::now() + UI_TIMEOUT;
    let icon = loop {
        let answer = browser
            .log("performance")
            .await
            .into_iter()
            .find_map(|entry| {
                let event: Value = serde_json::from_str(entry["message"].as_str()?).ok()?;
                let event = &event["message"];
                let response = &event["params"]["response"];
                let url = response["url"].as_str()?;
                (event["method"] == "Network.responseReceived"
                    && url.starts_with(&server.base)
                    && url.contains("favicon"))
                .then(|| response.clone())
            });
        if let Some(answer) = answer {
            break answer;
        }
        assert!(
            Instant::now() < deadline,
            "the page's icon was never asked for"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(
        icon["url"],
        format!("{}/assets/favicon.svg", server.base),
        "{icon}"
    );
    assert_eq!(icon["status"], 200, "{icon}");
    assert_eq!(icon["mimeType"], "image/svg+xml", "{icon}");
    let console = browser.log("browser").await;
    assert!(
        !console
            .iter()
            .any(|e| e["message"].as_str().unwrap_or("").contains("404")),
        "{console:?}"
    );
    browser.assert_fits(PHONE, "the sign-in page").await;

    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;
    browser.assert_fits(PHONE, "the chat").await;
    let long_word = "x".repeat(120);
    browser.ask(&format!("a long word: {long_word}")).await;
    browser.reply_done().await;
    browser.assert_fits(PHONE, "a chat with a long word").await;

    // A long title (set through the API with the page's own token), shown
    // after a reload.
    let title = format!("A title with a long word: {}", "w".repeat(60));
    let stored = browser
        .client
        .execute("return sessionStorage.getItem('palaver.auth');", vec![])
        .await
        .unwrap();
    let auth: Value = serde_json::from_str(stored.as_str().unwrap()).unwrap();
    let access = auth["access"].as_str().unwrap();
    let sessions: Value = client()
        .get(server.url("/api/sessions/"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = sessions["sessions"][0]["id"].as_str().unwrap();
    let res = client()
        .patch(server.url(&format!("/api/sessions/{id}/")))
        .bearer_auth(access)
        .json(&json!({ "title": title }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    browser.client.refresh().await.unwrap();
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let shown = browser
            .client
            .execute(
                "return document.getElementById('session-title').textContent;",
                vec![],
            )
            .await
            .unwrap();
        if shown == title.as_str() {
            break;
        }
        assert!(Instant::now() < deadline, "the title shown is {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser.assert_fits(PHONE, "a chat with a long title").await;

    // A track with a long name, its panel open (the picture, the numbers).
    let dir = tempfile::tempdir().unwrap();
    let name = format!("a-track-with-a-long-name-{}.wav", "n".repeat(40));
    let path = dir.path().join(&name);
    std::fs::write(
        &path,
        wav(44_100, 2, &stereo_sine(44_100, 440.0, -12.0, 2.0)),
    )
    .unwrap();
    browser.upload(&path).await;
    let id = browser.ready_track(&name).await;
    let (_, _, width, css_width) = browser.overview_drawn(&id).await;
    assert_eq!(
        width, css_width,
        "drawn at the phone's 3 device pixels per CSS pixel"
    );
    browser
        .assert_fits(PHONE, "a chat with a track's panel")
        .await;
    browser.stop().await;
}

#[tokio::test]
async fn a_demo_user_chats_with_streaming_and_meets_the_limit() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_ANALYSIS__TOKEN_DELAY", "40ms"),
    );
    let browser = Browser::start().await;
    browser.client.goto(&server.base).await.unwrap();
    browser.click("demo-button").await;
    browser
        .until("connection-status", "connected", |t| t == "online")
        .await;
    // The demo made one counted request: its first session.
    browser
        .until("quota-remaining", "quota after the session", |t| {
            t.starts_with("4 of 5 requests left")
        })
        .await;
    assert!(browser.text("quota-remaining").await.contains("demo ends"));

    // A long question streams: the reply is seen partial, then whole.
    let question = (1..=30)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    browser.ask(&question).await;
    let deadline = Instant::now() + UI_TIMEOUT;
    let mut saw_partial = false;
    loop {
        let msgs = browser.messages().await;
        if let Some((_, text)) = msgs.iter().rev().find(|(role, _)| role == "assistant") {
            if !text.is_empty() && text.len() < question.len() {
                saw_partial = true;
            }
            if *text == question {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no complete reply: {msgs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(saw_partial, "the reply appeared token by token");
    let msgs = browser.messages().await;
    assert_eq!(msgs[0], ("user".to_owned(), question.clone()));
    browser
        .until("quota-remaining", "quota after a question", |t| {
            t.starts_with("3 of 5")
        })
        .await;
    browser.reply_done().await;

    // Use the rest, then the limit is named plainly.
    for n in [2, 1, 0] {
        browser.ask("short question").await;
        browser
            .until("quota-remaining", "quota counting down", |t| {
                t.starts_with(&format!("{n} of 5"))
            })
            .await;
        browser.reply_done().await;
    }
    browser.ask("one too many").await;
    browser
        .until("error-banner", "the limit message", |t| {
            t.contains("demo limit is reached")
        })
        .await;
    browser.stop().await;
}

#[tokio::test]
async fn history_survives_a_reload_after_login() {
    let _one = ONE_BROWSER.lock().await;
    // The builtin engine, so the reply shows its tool calls.
    let server = TestServer::with(auth_options().env("PALAVER_ANALYSIS__TOKEN_DELAY", "10ms"));
    register(&server, "ann@example.com", "correct horse battery").await;
    let browser = Browser::start().await;
    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;
    assert!(!browser
        .testid("quota-remaining")
        .await
        .is_displayed()
        .await
        .unwrap());

    // A second session, and a question in it.
    browser.click("new-session-button").await;
    let deadline = Instant::now() + UI_TIMEOUT;
    while browser
        .client
        .find_all(Locator::Css("[data-testid=\"session-list\"] li"))
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "the new session is not listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    browser
        .until("connection-status", "connected to the new session", |t| {
            t == "online"
        })
        .await;
    browser.ask("Hi! How many messages so far?").await;
    browser.reply_done().await;
    browser.ask("Summarize this session").await;
    browser.reply_done().await;
    let before = browser.messages().await;
    assert_eq!(before.len(), 4, "{before:?}");
    let tools = browser
        .client
        .execute(
            "return [...document.querySelectorAll('.msg .tools li')].map(li => li.dataset.tool);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        tools,
        json!(["message_count", "session_summary", "session_summary"])
    );
    browser.client.refresh().await.unwrap();
    browser
        .until("connection-status", "reconnected after reload", |t| {
            t == "online"
        })
        .await;
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let after = browser.messages().await;
        if after == before {
            break;
        }
        assert!(Instant::now() < deadline, "history after reload: {after:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        before[0],
        (
            "user".to_owned(),
            "Hi! How many messages so far?".to_owned()
        )
    );
    assert!(
        before[1].1.starts_with("This conversation has 1 message"),
        "{before:?}"
    );
    browser.stop().await;
}

#[tokio::test]
async fn a_server_side_logout_asks_to_sign_in_again() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(auth_options().env("PALAVER_ANALYSIS__ENGINE", "echo"));
    register(&server, "ann@example.com", "correct horse battery").await;
    let browser = Browser::start().await;
    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;

    // Tokens are in sessionStorage (never localStorage): take the refresh
    // token from there and log the family out from elsewhere.
    let stored = browser
        .client
        .execute(
            "return [sessionStorage.getItem('palaver.auth'), localStorage.length];",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(stored[1], 0, "nothing in localStorage");
    let auth: Value = serde_json::from_str(stored[0].as_str().unwrap()).unwrap();
    let res = client()
        .post(server.url("/api/auth/logout/"))
        .json(&json!({"refresh": auth["refresh"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    browser
        .until("error-banner", "the sign-in message", |t| {
            t.contains("sign in again")
        })
        .await;
    assert!(browser
        .testid("login-email")
        .await
        .is_displayed()
        .await
        .unwrap());
    assert!(!browser
        .testid("logout-button")
        .await
        .is_displayed()
        .await
        .unwrap());
    browser.stop().await;
}

#[tokio::test]
async fn an_openai_answer_streams_into_the_page_with_its_tool_cards_and_failures_show() {
    use crate::openai::{answer, calls, error_reply, finish, options, role, streamed, Upstream};
    let _one = ONE_BROWSER.lock().await;
    let upstream = Upstream::start().await;
    let server = TestServer::with(options(&upstream.base_url));
    let browser = Browser::start().await;
    browser.client.goto(&server.base).await.unwrap();
    browser.click("demo-button").await;
    browser
        .until("quota-remaining", "quota after the session", |t| {
            t.starts_with("4 of 5")
        })
        .await;

    // The model calls a tool, then answers: the tool card, then the text.
    upstream.script(streamed(vec![
        role(),
        calls(json!([{"index": 0, "id": "call_1", "type": "function",
            "function": {"name": "message_count", "arguments": "{}"}}])),
        finish("tool_calls"),
        crate::openai::done(),
    ]));
    upstream.script(answer(&["One", " question", " so", " far."], 4));
    browser.ask("how many messages so far?").await;
    browser.reply_done().await;
    let msgs = browser.messages().await;
    assert_eq!(msgs.last().unwrap().1, "One question so far.", "{msgs:?}");
    let card = browser
        .client
        .find(Locator::Css(
            r#"[data-role="assistant"] .tools li[data-tool="message_count"]"#,
        ))
        .await
        .expect("a tool card")
        .text()
        .await
        .unwrap();
    assert!(
        card.contains("message_count") && card.contains("messages"),
        "{card}"
    );
    browser
        .until("quota-remaining", "a counted question", |t| {
            t.starts_with("3 of 5")
        })
        .await;

    // The upstream fails: the page says why, the count comes back.
    upstream.script(error_reply(500, "the model crashed"));
    browser.ask("and now?").await;
    browser
        .until("error-banner", "the failure", |t| {
            t.contains("500") && t.contains("the model crashed")
        })
        .await;
    browser.reply_done().await;
    browser
        .until("quota-remaining", "the refund", |t| t.starts_with("3 of 5"))
        .await;
    browser.stop().await;
}

/// A track goes up through the page, is analysed (the list asks until it is
/// ready), and its panel draws the waveform with the loudness curve over it
/// and shows the numbers; a session on the track asks about the tempo, the
/// reply shows its tool cards, and after a reload the session shows the
/// track's panel and the same cards from history.
///
/// The tempo (and the `tempo` tool card) need the tempo estimator and the
/// builtin engine's audio tools, both on `main` and not yet merged here:
/// they are checked last (all of it passes with `main` merged in).
#[tokio::test]
async fn a_track_uploaded_in_the_page_is_analysed_drawn_and_asked_about() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(auth_options().env("PALAVER_ANALYSIS__TOKEN_DELAY", "5ms"));
    register(&server, "ann@example.com", "correct horse battery").await;
    let dir = tempfile::tempdir().unwrap();
    let name = "click-120.wav";
    let path = dir.path().join(name);
    std::fs::write(&path, wav(44_100, 2, &click_track(44_100, 120.0, 12.0))).unwrap();
    let browser = Browser::start().await;
    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;

    browser.upload(&path).await;
    let id = browser.ready_track(name).await;
    assert!(!browser
        .testid("upload-progress")
        .await
        .is_displayed()
        .await
        .unwrap());
    // Selected from the keyboard.
    let pick = browser
        .client
        .find(Locator::Css(&format!("[data-track-id=\"{id}\"] .pick")))
        .await
        .unwrap();
    pick.send_keys(&fantoccini::key::Key::Enter.to_string())
        .await
        .unwrap();
    let picked = browser
        .script(
            "const focused = document.activeElement;
             return [focused.closest('[data-track-id]')?.dataset.trackId, focused.getAttribute('aria-current')];",
            vec![],
        )
        .await;
    assert_eq!(picked, json!([id, "true"]), "selected, and the focus stays");
    let listed = browser.text("track-list").await;
    assert!(
        listed.contains("0:12.0") && listed.contains("WAV") && listed.contains("ready"),
        "{listed}"
    );

    let (painted, curve, width, css_width) = browser.overview_drawn(&id).await;
    assert_eq!(width, css_width, "the canvas is drawn in device pixels");
    assert!(painted > 10 * width, "a waveform: {painted} pixels painted");
    assert!(curve > 0, "the loudness curve is drawn over it");
    let label = browser
        .testid("track-overview")
        .await
        .attr("aria-label")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(label.contains(name) && label.contains("LUFS"), "{label}");
    let analysis = browser.analysis().await;
    assert_eq!(analysis["duration_seconds"], "0:12.0", "{analysis}");
    assert_eq!(analysis["format"], "WAV · 44.1 kHz · stereo", "{analysis}");
    let level = |key: &str, unit: &str| -> f64 {
        let text = analysis[key].as_str().unwrap_or_default();
        text.strip_suffix(unit)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("{key}: {text:?} in {analysis}"))
    };
    assert!((-40.0..0.0).contains(&level("loudness_lufs", "LUFS")));
    assert!((-10.0..0.0).contains(&level("true_peak_dbtp", "dBTP")));
    assert!((-10.0..0.0).contains(&level("peak_dbfs", "dBFS")));
    assert_eq!(analysis["clipping"], "none", "{analysis}");

    // A session on the track: opened, titled after it, connected.
    browser.click("track-new-session").await;
    browser
        .until_script(
            "the track's session opened",
            "return document.getElementById('session-title').textContent === arguments[0];",
            vec![json!(name)],
        )
        .await;
    browser
        .until(
            "connection-status",
            "connected to the track's session",
            |t| t == "online",
        )
        .await;
    browser.ask("what's the tempo?").await;
    browser.reply_done().await;
    let msgs = browser.messages().await;
    assert_eq!(msgs.len(), 2, "{msgs:?}");
    let cards = browser.tool_cards().await;
    assert!(
        cards.iter().all(|(_, state, _)| state != "pending"),
        "{cards:?}"
    );

    // After a reload the newest session (the track's) opens with its panel
    // and the cards again, from history.
    browser.client.refresh().await.unwrap();
    browser
        .until("connection-status", "reconnected after reload", |t| {
            t == "online"
        })
        .await;
    browser.overview_drawn(&id).await;
    let deadline = Instant::now() + UI_TIMEOUT;
    while browser.messages().await != msgs {
        assert!(Instant::now() < deadline, "history after reload");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(browser.tool_cards().await, cards);

    // What needs the tempo estimator and the audio tools.
    let tempo = level("tempo_bpm", "BPM");
    assert!((118.0..122.0).contains(&tempo), "tempo {tempo}");
    let tempo_card = cards.iter().find(|(tool, _, _)| tool == "tempo");
    let Some((_, state, text)) = tempo_card else {
        panic!("no tempo card: {cards:?} for {msgs:?}");
    };
    assert_eq!(state, "ok", "{text}");
    // The result's numbers, compactly: `tempo_bpm 120`.
    let shown = text
        .split_once("tempo_bpm ")
        .and_then(|(_, rest)| rest.split_whitespace().next()?.parse::<f64>().ok());
    assert!(
        shown.is_some_and(|bpm| (118.0..122.0).contains(&bpm)),
        "{text}"
    );
    // The screenshot in docs/ (the README shows it) is taken here, so it
    // always shows the page as it is: a track, its picture and numbers, and
    // a question about it answered with its tool cards.
    let page = browser.client.screenshot().await.unwrap();
    std::fs::write(
        concat!(env!("CARGO_MANIFEST_DIR"), "/docs/screenshot.png"),
        page,
    )
    .unwrap();
    browser.stop().await;
}

/// What the server refuses to keep is named plainly, with nothing listed:
/// a file that is not audio, one over the size limit, one track too many.
/// A good upload clears the message; a track is deleted (after a confirm).
#[tokio::test]
async fn refused_uploads_are_named_plainly_and_a_track_can_be_deleted() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_ANALYSIS__ENGINE", "echo")
            .env("PALAVER_STORAGE__MAX_UPLOAD_BYTES", "200000")
            .env("PALAVER_STORAGE__MAX_TRACKS_PER_USER", "1"),
    );
    register(&server, "ann@example.com", "correct horse battery").await;
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, bytes: Vec<u8>| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let tone = |seconds: f64| wav(44_100, 2, &stereo_sine(44_100, 440.0, -12.0, seconds));
    let browser = Browser::start().await;
    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;
    let listed = || async {
        browser
            .client
            .find_all(Locator::Css("[data-testid=\"track-list\"] li"))
            .await
            .unwrap()
            .len()
    };
    let refused = |name: &'static str, words: &'static str| {
        let browser = &browser;
        async move {
            let said = browser
                .until("error-banner", "the refusal", |t| t.contains(name))
                .await;
            assert!(said.contains(words), "{said}");
            let input = browser.testid("track-upload").await;
            assert!(input.is_enabled().await.unwrap());
            assert_eq!(input.prop("value").await.unwrap().as_deref(), Some(""));
            assert!(!browser
                .testid("upload-progress")
                .await
                .is_displayed()
                .await
                .unwrap());
        }
    };

    let notes = file(
        "notes.txt",
        "Not a song: just some notes.\n".repeat(50).into(),
    );
    browser.upload(&notes).await;
    refused("notes.txt", "is not audio").await;
    assert_eq!(listed().await, 0);

    browser.upload(&file("long.wav", tone(3.0))).await;
    refused("long.wav", "too large to upload (the limit is 195.3 KiB)").await;
    assert_eq!(listed().await, 0);

    browser.upload(&file("tone.wav", tone(1.0))).await;
    let id = browser.ready_track("tone.wav").await;
    assert!(!browser
        .testid("error-banner")
        .await
        .is_displayed()
        .await
        .unwrap());

    browser.upload(&file("another.wav", tone(1.0))).await;
    refused("delete one", "as many tracks as this server keeps").await;
    assert_eq!(listed().await, 1);

    browser
        .client
        .find(Locator::Css(&format!("[data-track-id=\"{id}\"] .remove")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.client.accept_alert().await.unwrap();
    let deadline = Instant::now() + UI_TIMEOUT;
    while listed().await != 0 {
        assert!(Instant::now() < deadline, "the track is still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!browser
        .testid("track-panel")
        .await
        .is_displayed()
        .await
        .unwrap());
    browser.stop().await;
}

#[tokio::test]
async fn a_reload_mid_reply_continues_where_it_stopped_once() {
    let _one = ONE_BROWSER.lock().await;
    // The builtin engine (a tool card, then words), paced so that the
    // reload lands mid-reply.
    let server = TestServer::with(auth_options().env("PALAVER_ANALYSIS__TOKEN_DELAY", "300ms"));
    register(&server, "ann@example.com", "correct horse battery").await;
    let browser = Browser::start().await;
    browser
        .log_in(&server.base, "ann@example.com", "correct horse battery")
        .await;
    browser.ask("Hi! How many messages so far?").await;
    // Some words of the reply are shown: reload.
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let shown = browser.messages().await;
        if shown.len() == 2 && shown[1].1.split_whitespace().count() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the reply never started: {shown:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    browser.client.refresh().await.unwrap();
    browser
        .until("connection-status", "reconnected after reload", |t| {
            t == "online"
        })
        .await;
    browser.reply_done().await;
    let tools = || async {
        browser
            .client
            .execute(
                "return [...document.querySelectorAll('.msg .tools li')].map(li => li.textContent);",
                vec![],
            )
            .await
            .unwrap()
    };
    let resumed = browser.messages().await;
    let resumed_tools = tools().await;
    // What the page shows is what was stored: the same after a reload
    // that reads it all from history.
    browser.client.refresh().await.unwrap();
    browser
        .until("connection-status", "online again", |t| t == "online")
        .await;
    let deadline = Instant::now() + UI_TIMEOUT;
    loop {
        let stored = browser.messages().await;
        if stored.len() == 2 && !stored[1].1.is_empty() {
            assert_eq!(resumed, stored);
            break;
        }
        assert!(Instant::now() < deadline, "history: {stored:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        resumed[1].1.starts_with("This conversation has 1 message"),
        "{resumed:?}"
    );
    assert_eq!(resumed_tools, tools().await);
    assert!(!resumed_tools.as_array().unwrap().is_empty());
    // The reply was resumed (live: it was still streaming), not reloaded
    // from history once finished.
    let metrics = client()
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("palaver_ws_messages_total")
                && l.contains(r#"type="resumed""#)
                && !l.ends_with(" 0")),
        "{metrics}"
    );
    browser.stop().await;
}

/// `/api/docs` renders the API's operations in Chromium with nothing
/// fetched from anywhere but the server: every resource the page loaded
/// (`performance.getEntriesByType('resource')`) is the server's, and the
/// console shows no error (a load the page's CSP refused would be one).
#[tokio::test]
async fn the_api_docs_page_renders_every_operation_from_the_server_alone() {
    let _one = ONE_BROWSER.lock().await;
    let server = TestServer::with(auth_options());
    let browser = Browser::start().await;
    browser.client.goto(&server.url("/api/docs")).await.unwrap();
    let document: Value = client()
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    // Swagger UI draws one block per operation once it has the document.
    let shown = browser
        .until_script(
            "the operations are drawn",
            "const blocks = document.querySelectorAll('.opblock-summary-path');
             return blocks.length >= arguments[0]
                 ? Array.from(blocks, b => b.getAttribute('data-path')) : null;",
            vec![json!(operations)],
        )
        .await;
    let shown: Vec<&str> = shown
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(shown.len(), operations, "{shown:?}");
    for path in [
        "/api/auth/login/",
        "/api/sessions/{id}/messages/",
        "/api/tracks/",
    ] {
        assert!(shown.contains(&path), "{path} not shown: {shown:?}");
    }
    let title = browser.client.title().await.unwrap();
    assert_eq!(title, "palaver API");

    let resources = browser
        .script(
            "return performance.getEntriesByType('resource').map(r => r.name);",
            vec![],
        )
        .await;
    let resources: Vec<&str> = resources
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        resources.contains(&format!("{}/api/openapi.json", server.base).as_str()),
        "{resources:?}"
    );
    assert!(
        resources
            .iter()
            .any(|r| r.ends_with("/api/docs/swagger-ui-bundle.js")),
        "{resources:?}"
    );
    for resource in &resources {
        assert!(
            resource.starts_with(&format!("{}/", server.base)) || resource.starts_with("data:"),
            "a resource from elsewhere: {resource}"
        );
    }
    browser.stop().await;
}
