//! The API description: `/api/openapi.json` and `/api/docs/` served publicly
//! and uncounted, the document equal to its committed snapshot and valid
//! OpenAPI 3.1 (`openapi-spec-validator`), and schemathesis, a
//! property-based fuzzer, run over every operation of a live server with
//! both credentials, finding no 5xx, no answer off its schema, no
//! undocumented status and no answer slower than 5 s.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use serde_json::{json, Value};

use crate::support::{
    auth_options, client, palaver, require_tool, signed_in, JsonValue, TestServer,
};

fn snapshot_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/openapi.json")
}

const REGENERATE: &str = "cargo run -q -- openapi > docs/openapi.json";

#[test]
fn the_document_equals_its_snapshot() {
    let snapshot = std::fs::read_to_string(snapshot_path()).expect("docs/openapi.json");
    let generated = palaver::http::openapi::document_json();
    assert!(
        generated == snapshot,
        "the OpenAPI document differs from docs/openapi.json: a handler's types or \
         annotations changed. Review the difference, then regenerate the snapshot with\n  \
         {REGENERATE}"
    );
    // `palaver openapi` prints exactly that, with no configuration at all.
    let dir = tempfile::tempdir().unwrap();
    let out = palaver(dir.path(), &["openapi"], &[], "");
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout) == snapshot);
}

/// Every operation of API.md's REST sections is in the document, and
/// nothing else.
#[test]
fn every_rest_operation_is_described() {
    let doc: Value = serde_json::from_str(&palaver::http::openapi::document_json()).unwrap();
    let mut operations: Vec<String> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "post", "put", "patch", "delete"].contains(&k.as_str()))
                .map(move |method| format!("{} {path}", method.to_uppercase()))
        })
        .collect();
    operations.sort();
    let mut expected = vec![
        "POST /api/auth/login/",
        "POST /api/auth/demo/",
        "POST /api/auth/refresh/",
        "POST /api/auth/logout/",
        "GET /api/auth/me/",
        "POST /api/auth/register/",
        "POST /api/auth/ws-ticket/",
        "POST /api/auth/api-keys/",
        "GET /api/auth/api-keys/",
        "DELETE /api/auth/api-keys/{id}/",
        "POST /api/sessions/",
        "GET /api/sessions/",
        "GET /api/sessions/{id}/",
        "PATCH /api/sessions/{id}/",
        "DELETE /api/sessions/{id}/",
        "GET /api/sessions/{id}/messages/",
        "POST /api/sessions/{id}/messages/",
        "POST /api/tracks/",
        "GET /api/tracks/",
        "GET /api/tracks/{id}/",
        "GET /api/tracks/{id}/overview/",
        "DELETE /api/tracks/{id}/",
        "GET /health",
        "GET /ready",
    ];
    expected.sort();
    assert_eq!(operations, expected);
    // Every protected operation names both credentials.
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let public = path.starts_with("/health")
                || path.starts_with("/ready")
                || ["login", "demo", "refresh", "logout", "register"]
                    .iter()
                    .any(|p| path == &format!("/api/auth/{p}/"));
            let security = &operation["security"];
            if public {
                assert!(security.is_null(), "{method} {path}: {security}");
            } else {
                assert_eq!(
                    security,
                    &json!([{"bearer": []}, {"api_key": []}]),
                    "{method} {path}"
                );
            }
        }
    }
    // The error body's codes are the server's.
    let codes = &doc["components"]["schemas"]["ErrorCode"]["enum"];
    for code in [
        "token_expired",
        "quota_exceeded",
        "not_ready",
        "analysis_failed",
    ] {
        assert!(
            codes.as_array().unwrap().contains(&json!(code)),
            "{code}: {codes}"
        );
    }
}

#[test]
fn the_document_is_valid_openapi() {
    let validator = require_tool("openapi-spec-validator");
    let out = Command::new(validator)
        .arg(snapshot_path())
        .output()
        .expect("run openapi-spec-validator");
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{printed}");
    assert!(printed.contains(": OK"), "{printed}");
}

#[tokio::test]
async fn the_document_and_the_docs_page_are_public_and_not_counted() {
    let server = TestServer::with(auth_options().env("PALAVER_DEMO__REQUEST_LIMIT", "1"));
    let http = client();
    let served = http
        .get(server.url("/api/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert!(served.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    let served = served.text().await.unwrap();
    assert_eq!(served, palaver::http::openapi::document_json());

    for path in ["/api/docs", "/api/docs/"] {
        let page = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(page.status(), 200, "{path}");
        let csp = page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("default-src 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self'"), "{csp}");
        let html = page.text().await.unwrap();
        assert!(html.contains("<base href=\"/api/docs/\">"), "{html}");
        assert!(html.contains("swagger-ui-bundle.js"), "{html}");
    }
    let init = http
        .get(server.url("/api/docs/swagger-initializer.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(init.status(), 200);
    let init = init.text().await.unwrap();
    assert!(init.contains("/api/openapi.json"), "{init}");
    assert!(init.contains("\"validatorUrl\": \"none\""), "{init}");
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "index.css"] {
        let res = http
            .get(server.url(&format!("/api/docs/{asset}")))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{asset}");
    }
    let missing = http
        .get(server.url("/api/docs/nothing.js"))
        .send()
        .await
        .unwrap();
    crate::support::assert_error(missing, 404, "not_found").await;

    // A demo user with one counted request reads both and still has it.
    let demo = http.post(server.url("/api/auth/demo/")).json_value().await;
    let token = demo["access"].as_str().unwrap();
    for path in [
        "/api/openapi.json",
        "/api/docs/",
        "/api/docs/swagger-ui.css",
    ] {
        let res = http
            .get(server.url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(!res.headers().contains_key("ratelimit"), "{path}");
    }
    let me: Value = crate::support::me(&server, token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(me["quota"]["request_count"], 0, "{me}");
}

/// A schemathesis configuration filling the security scheme `scheme`
/// (`bearer` or `api_key`) with `credential`.
fn schemathesis_config(dir: &Path, scheme: &str, credential: &str) -> PathBuf {
    let path = dir.join(format!("{scheme}.toml"));
    let mut text = format!("[auth.openapi.{scheme}]\n{scheme} = \"{credential}\"\n");
    // A run must not delete the key it authenticates with (schemathesis
    // feeds ids it has seen, the key's own from the listing included, to
    // later requests): the key's run leaves that operation to the other.
    if scheme == "api_key" {
        text.push_str(
            "\n[[operations]]\ninclude-operation-id = \"delete_api_key\"\nenabled = false\n",
        );
    }
    // A track is accepted only when its bytes decode as audio, which no
    // schema can say: a generated, schema-valid upload is rightly refused
    // (415, or 400 for a multipart body without its `file`).
    text.push_str(
        "\n[[operations]]\ninclude-operation-id = \"upload_track\"\n\
         checks.positive_data_acceptance.expected-statuses = [201, 400, 415]\n",
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// The number in schemathesis's summary line `N generated, …`.
fn generated_cases(output: &str) -> Option<u64> {
    output.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let n = words.next()?.parse().ok()?;
        (words.next()? == "generated,").then_some(n)
    })
}

/// Runs schemathesis over every operation; panics with its output unless it
/// passes. Answers how many cases it generated.
fn run_schemathesis(server: &TestServer, config: &Path, examples: u32, phases: &str) -> u64 {
    let schemathesis = require_tool("schemathesis");
    let args = [
        "--config-file".to_owned(),
        config.display().to_string(),
        "run".to_owned(),
        server.url("/api/openapi.json"),
        "--checks".to_owned(),
        "all".to_owned(),
        "--max-response-time".to_owned(),
        "5".to_owned(),
        "--max-examples".to_owned(),
        examples.to_string(),
        "--phases".to_owned(),
        phases.to_owned(),
        "--workers".to_owned(),
        "1".to_owned(),
    ];
    println!("schemathesis {}", args.join(" "));
    let started = Instant::now();
    // Run where it may write its cache (`.schemathesis/`): beside the
    // configuration, not in the checkout.
    let out = Command::new(&schemathesis)
        .current_dir(config.parent().expect("the configuration's folder"))
        .args(&args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run schemathesis");
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        // The server's own account of what went wrong (not every request).
        let server_output = server.output();
        let warnings: Vec<_> = server_output
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .collect();
        panic!(
            "schemathesis found problems:\n{printed}\nthe server's warnings and errors:\n{}",
            warnings.join("\n")
        );
    }
    let cases =
        generated_cases(&printed).unwrap_or_else(|| panic!("no `N generated` line in:\n{printed}"));
    println!(
        "schemathesis: {cases} cases generated and passed in {:.0?} ({phases})",
        started.elapsed()
    );
    cases
}

/// schemathesis over every operation, as a user with a bearer token (every
/// phase, stateful included: a created session's id feeds the operations on
/// it through the document's links) and then with an API key. The user has
/// a (large) quota, so the counted operations' RateLimit headers are there
/// to be checked.
#[tokio::test(flavor = "multi_thread")]
async fn schemathesis_finds_no_fault_in_any_operation() {
    let server = TestServer::with(
        auth_options()
            .env("PALAVER_QUOTA__USER_REQUEST_LIMIT", "1000000")
            .env("PALAVER_ANALYSIS__ENGINE", "builtin"),
    );
    let login = signed_in(&server, "fuzz@example.com").await;
    let token = login["access"].as_str().unwrap().to_owned();
    let key = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(&token)
        .json(&json!({"name": "schemathesis"}))
        .json_value()
        .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = tempfile::tempdir().unwrap();
    let bearer = schemathesis_config(dir.path(), "bearer", &token);
    let api_key = schemathesis_config(dir.path(), "api_key", &key);
    // The API key first: the bearer run may delete keys.
    let with_key = tokio::task::block_in_place(|| {
        run_schemathesis(&server, &api_key, 10, "examples,coverage,fuzzing")
    });
    let keys = client()
        .get(server.url("/api/auth/api-keys/"))
        .bearer_auth(&token)
        .json_value()
        .await;
    assert!(
        keys["api_keys"][0]["last_used_at"].is_string(),
        "the API key run did not authenticate: {keys}"
    );
    let with_bearer = tokio::task::block_in_place(|| {
        run_schemathesis(&server, &bearer, 30, "examples,coverage,fuzzing,stateful")
    });
    println!(
        "schemathesis: {} cases in all ({with_bearer} with a bearer token, {with_key} with an API key)",
        with_bearer + with_key
    );
    // The bearer run authenticated too: the fuzzed user has sessions.
    let sessions = client()
        .get(server.url("/api/sessions/?limit=1"))
        .bearer_auth(&token)
        .json_value()
        .await;
    assert_eq!(
        sessions["sessions"].as_array().map(Vec::len),
        Some(1),
        "{sessions}"
    );
}

/// The document's "not white space only" (a question, an API key's name)
/// and the server's `str::trim` agree on every Unicode white space
/// character, and on two that are not (U+FEFF, U+001C): schemathesis found
/// a question of U+0085 valid by the document (`\S`) and refused.
#[tokio::test(flavor = "multi_thread")]
async fn the_documents_white_space_is_the_servers() {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(snapshot_path()).unwrap()).unwrap();
    let text_schema = &doc["components"]["schemas"]["Question"]["properties"]["text"];
    let documented = jsonschema::draft7::new(text_schema).unwrap();
    // Spelled out: `\s` means one set in ECMAScript, another in Python
    // (schemathesis) and a third in Rust's regex (this test's validator).
    for schema in [
        text_schema,
        &doc["components"]["schemas"]["ApiKeyBody"]["properties"]["name"],
    ] {
        let pattern = schema["pattern"].as_str().unwrap();
        assert!(
            !pattern.contains("\\s") && !pattern.contains("\\S"),
            "{pattern}"
        );
    }
    let server =
        TestServer::with(auth_options().env("PALAVER_QUOTA__USER_REQUEST_LIMIT", "1000000"));
    let login = signed_in(&server, "spaces@example.com").await;
    let token = login["access"].as_str().unwrap();
    let session = client()
        .post(server.url("/api/sessions/"))
        .bearer_auth(token)
        .json(&json!({}))
        .json_value()
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let chars = [
        '\t', '\n', '\u{b}', '\u{c}', '\r', ' ', '\u{85}', '\u{a0}', '\u{1680}', '\u{2000}',
        '\u{200a}', '\u{2028}', '\u{2029}', '\u{202f}', '\u{205f}', '\u{3000}', '\u{feff}',
        '\u{1c}', 'x',
    ];
    for c in chars {
        let text = format!("{c}{c}");
        let res = client()
            .post(server.url(&format!("/api/sessions/{session}/messages/")))
            .bearer_auth(token)
            .json(&json!({ "text": text }))
            .send()
            .await
            .unwrap();
        let accepted = res.status().is_success();
        assert!(accepted || res.status() == 400, "{c:?}: {}", res.status());
        assert_eq!(
            documented.is_valid(&json!(text)),
            accepted,
            "{c:?}: the document and the server disagree"
        );
    }
}
