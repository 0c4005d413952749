//! docs/asyncapi.yaml against the protocol's own types
//! (`palaver_actors::protocol`): every client and server frame variant,
//! serialized, validates against the schema the document gives its `type`,
//! and every `type` the document lists is one the server speaks. A new frame
//! type, a new field (the schemas forbid unlisted ones) or a new error code
//! fails here until the document says it.

use std::collections::BTreeSet;
use std::path::Path;

use palaver_actors::protocol::{
    message_json, ClientFrame, ConnectedUser, ErrorCode, QuotaView, ServerFrame, Status, Usage,
};
use palaver_storage::{Message, MessageStatus, Role, ToolUse};
use serde_json::{json, Value};

fn document() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/asyncapi.yaml");
    let text = std::fs::read_to_string(&path).expect("docs/asyncapi.yaml");
    serde_yaml_ng::from_str(&text).expect("docs/asyncapi.yaml is YAML")
}

/// The payload schema of the message the document names `kind`, by the
/// operation (`sendToServer` or `receiveFromServer`) that lists it.
fn payload_schema(doc: &Value, operation: &str, kind: &str) -> Value {
    let listed = message_names(doc, operation);
    assert!(
        listed.contains(kind),
        "docs/asyncapi.yaml: {operation} lists no `{kind}` message (it lists {listed:?})"
    );
    let payload = &doc["components"]["messages"][kind]["payload"];
    assert!(payload.is_object(), "{kind}: no payload schema");
    payload.clone()
}

/// The message names an operation lists (its `$ref`s' last segment).
fn message_names(doc: &Value, operation: &str) -> BTreeSet<String> {
    doc["operations"][operation]["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("operation {operation} has no messages"))
        .iter()
        .map(|m| {
            let reference = m["$ref"].as_str().unwrap();
            let name = reference.rsplit('/').next().unwrap().to_owned();
            assert_eq!(
                doc["channels"]["session"]["messages"][&name]["$ref"],
                format!("#/components/messages/{name}"),
                "the channel lists {name}"
            );
            name
        })
        .collect()
}

/// Validates `frame` against `schema`, whose `$ref`s point into the
/// document's components.
fn assert_valid(doc: &Value, schema: &Value, frame: &Value) {
    let mut root = schema.clone();
    root["components"] = doc["components"].clone();
    root["$schema"] = json!("http://json-schema.org/draft-07/schema#");
    let validator = jsonschema::draft7::new(&root).expect("a valid JSON Schema");
    let errors: Vec<String> = validator
        .iter_errors(frame)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{frame} does not match docs/asyncapi.yaml:\n{}",
        errors.join("\n")
    );
}

/// Every `ClientFrame` variant. The `match` has no wildcard: a new variant
/// does not compile until it is listed here (and so checked).
fn every_client_frame() -> Vec<ClientFrame> {
    let frames = vec![
        ClientFrame::Question {
            text: "How loud is it?".into(),
            id: Some("c1".into()),
        },
        ClientFrame::Question {
            text: "And now?".into(),
            id: None,
        },
        ClientFrame::Cancel,
        ClientFrame::Refresh {
            token: "eyJ.e30.sig".into(),
        },
        ClientFrame::Ping,
        ClientFrame::Resume {
            message_id: "0192a7c4-3b6e-7cc1-9d1e-5f0a2b7c9e11".into(),
            after: 3,
        },
    ];
    let covered: BTreeSet<usize> = frames
        .iter()
        .map(|f| match f {
            ClientFrame::Question { .. } => 0,
            ClientFrame::Cancel => 1,
            ClientFrame::Refresh { .. } => 2,
            ClientFrame::Ping => 3,
            ClientFrame::Resume { .. } => 4,
        })
        .collect();
    assert_eq!(covered.len(), 5, "every client frame variant is listed");
    frames
}

fn stored_message() -> Message {
    Message {
        id: uuid::Uuid::now_v7(),
        session_id: uuid::Uuid::now_v7(),
        seq: 2,
        role: Role::Assistant,
        text: "It is loud.".into(),
        status: MessageStatus::Complete,
        tools: vec![ToolUse {
            tool: "loudness".into(),
            args: "{}".into(),
            success: true,
            result: r#"{"lufs": -9.8}"#.into(),
        }],
        created_at: 1_700_000_000_000,
        replay: None,
    }
}

/// Every `ServerFrame` variant, optional fields both present and absent.
/// As above, the `match` has no wildcard.
fn every_server_frame() -> Vec<ServerFrame> {
    let id: std::sync::Arc<str> = "0192a7c4-3b6e-7cc1-9d1e-5f0a2b7c9e11".into();
    let frames = vec![
        ServerFrame::Connected {
            session_id: uuid::Uuid::now_v7().to_string(),
            user: ConnectedUser {
                id: uuid::Uuid::now_v7().to_string(),
                is_demo: true,
            },
            expires_at: Some(1_700_000_900),
            quota: Some(QuotaView {
                request_count: 1,
                request_limit: 5,
            }),
        },
        ServerFrame::Connected {
            session_id: uuid::Uuid::now_v7().to_string(),
            user: ConnectedUser {
                id: uuid::Uuid::now_v7().to_string(),
                is_demo: false,
            },
            expires_at: None,
            quota: None,
        },
        ServerFrame::Message {
            message: message_json(&stored_message()),
            client_id: Some("c1".into()),
        },
        ServerFrame::Message {
            message: message_json(&Message {
                role: Role::User,
                tools: vec![],
                status: MessageStatus::Streaming,
                ..stored_message()
            }),
            client_id: None,
        },
        ServerFrame::ToolCall {
            message_id: id.clone(),
            seq: 1,
            tool: "loudness".into(),
            args: json!({}),
        },
        ServerFrame::ToolResult {
            message_id: id.clone(),
            seq: 2,
            tool: "loudness".into(),
            success: true,
            result: json!({"lufs": -9.8}),
        },
        ServerFrame::Token {
            message_id: id.clone(),
            seq: 3,
            text: "It ".into(),
        },
        ServerFrame::Done {
            message_id: id.clone(),
            status: Status::Cancelled,
            usage: Usage {
                tokens: 1,
                first_token_ms: 3,
                total_ms: 9,
            },
            last_seq: 3,
        },
        ServerFrame::Resumed {
            message_id: id.to_string(),
            after: 1,
            live: true,
        },
        ServerFrame::Error {
            code: ErrorCode::QuotaExceeded,
            message: "request quota exceeded".into(),
            request_count: Some(5),
            request_limit: Some(5),
        },
        ServerFrame::Quota {
            request_count: 2,
            request_limit: 5,
            reset_in: 600,
        },
        ServerFrame::Refreshed {
            expires_at: Some(1_700_001_800),
        },
        ServerFrame::Refreshed { expires_at: None },
        ServerFrame::TokenExpiring { expires_in: 60 },
        ServerFrame::Pong,
    ];
    let covered: BTreeSet<usize> = frames
        .iter()
        .map(|f| match f {
            ServerFrame::Connected { .. } => 0,
            ServerFrame::Message { .. } => 1,
            ServerFrame::ToolCall { .. } => 2,
            ServerFrame::ToolResult { .. } => 3,
            ServerFrame::Token { .. } => 4,
            ServerFrame::Done { .. } => 5,
            ServerFrame::Resumed { .. } => 6,
            ServerFrame::Error { .. } => 7,
            ServerFrame::Quota { .. } => 8,
            ServerFrame::Refreshed { .. } => 9,
            ServerFrame::TokenExpiring { .. } => 10,
            ServerFrame::Pong => 11,
        })
        .collect();
    assert_eq!(covered.len(), 12, "every server frame variant is listed");
    frames
}

/// Every `ErrorCode`, each with an error frame (no wildcard either).
fn every_error_code() -> Vec<ErrorCode> {
    let codes = [
        ErrorCode::QuotaExceeded,
        ErrorCode::InvalidMessage,
        ErrorCode::QuestionTooLong,
        ErrorCode::StreamInProgress,
        ErrorCode::Busy,
        ErrorCode::TokenInvalid,
        ErrorCode::AnalysisFailed,
        ErrorCode::RateLimited,
        ErrorCode::ResumeUnavailable,
    ];
    let covered: BTreeSet<usize> = codes
        .iter()
        .map(|c| match c {
            ErrorCode::QuotaExceeded => 0,
            ErrorCode::InvalidMessage => 1,
            ErrorCode::QuestionTooLong => 2,
            ErrorCode::StreamInProgress => 3,
            ErrorCode::Busy => 4,
            ErrorCode::TokenInvalid => 5,
            ErrorCode::AnalysisFailed => 6,
            ErrorCode::RateLimited => 7,
            ErrorCode::ResumeUnavailable => 8,
        })
        .collect();
    assert_eq!(covered.len(), 9, "every error code is listed");
    codes.to_vec()
}

#[test]
fn the_document_is_asyncapi_3_for_the_session_socket() {
    let doc = document();
    assert_eq!(doc["asyncapi"], "3.0.0");
    assert_eq!(
        doc["channels"]["session"]["address"],
        "/ws/sessions/{session_id}/"
    );
    assert_eq!(doc["operations"]["sendToServer"]["action"], "receive");
    assert_eq!(doc["operations"]["receiveFromServer"]["action"], "send");
}

#[test]
fn every_client_frame_matches_the_document() {
    let doc = document();
    let mut spoken = BTreeSet::new();
    for frame in every_client_frame() {
        let value = serde_json::to_value(&frame).unwrap();
        let kind = value["type"].as_str().unwrap().to_owned();
        assert_eq!(kind, frame.kind());
        let schema = payload_schema(&doc, "sendToServer", &kind);
        assert_valid(&doc, &schema, &value);
        spoken.insert(kind);
    }
    assert_eq!(spoken, message_names(&doc, "sendToServer"));
    // The document's examples are frames the server reads.
    for kind in &spoken {
        for example in doc["components"]["messages"][kind]["examples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let payload = &example["payload"];
            let parsed: ClientFrame = serde_json::from_value(payload.clone())
                .unwrap_or_else(|e| panic!("the {kind} example {payload}: {e}"));
            assert_eq!(parsed.kind(), kind);
            assert_valid(
                &doc,
                &doc["components"]["messages"][kind]["payload"],
                payload,
            );
        }
    }
}

#[test]
fn every_server_frame_matches_the_document() {
    let doc = document();
    let mut spoken = BTreeSet::new();
    let mut frames = every_server_frame();
    frames.extend(
        every_error_code()
            .into_iter()
            .map(|code| ServerFrame::error(code, "why")),
    );
    for frame in frames {
        let value: Value = serde_json::from_str(&frame.to_json()).unwrap();
        let kind = value["type"].as_str().unwrap().to_owned();
        assert_eq!(kind, frame.kind());
        let schema = payload_schema(&doc, "receiveFromServer", &kind);
        assert_valid(&doc, &schema, &value);
        spoken.insert(kind);
    }
    assert_eq!(spoken, message_names(&doc, "receiveFromServer"));
    for kind in &spoken {
        for example in doc["components"]["messages"][kind]["examples"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert_valid(
                &doc,
                &doc["components"]["messages"][kind]["payload"],
                &example["payload"],
            );
        }
    }
}

/// The check has teeth: a frame with a field the document does not list,
/// or without one it requires, is refused.
#[test]
fn a_field_the_document_does_not_know_fails() {
    let doc = document();
    let schema = payload_schema(&doc, "receiveFromServer", "token");
    let mut token = json!({"type": "token", "message_id": "m", "seq": 1, "text": "a"});
    let validator = |frame: &Value| {
        let mut root = schema.clone();
        root["components"] = doc["components"].clone();
        jsonschema::draft7::new(&root).unwrap().is_valid(frame)
    };
    assert!(validator(&token));
    token["new_field"] = json!(1);
    assert!(!validator(&token));
    let missing = json!({"type": "token", "message_id": "m", "text": "a"});
    assert!(!validator(&missing));
}
