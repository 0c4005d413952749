//! The WebSocket wire protocol of API.md §7: what clients send and what the
//! server sends back. Only this module defines frames; actors build values of
//! these types and serialize them once.

use std::sync::Arc;

use palaver_storage::{Message, MessageStatus, Role};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

pub use crate::analysis::Usage;

/// RFC 3339 (UTC, seconds) for a Unix-milliseconds time.
pub fn rfc3339_millis(millis: u64) -> String {
    // RFC 3339 has four-digit years: clamp a corrupt or absurd time to the
    // last representable second rather than fail to format it.
    const MAX_MILLIS: u64 = 253_402_300_799_000; // 9999-12-31T23:59:59Z
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(millis.min(MAX_MILLIS));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// A message's status on the wire (`done`, history), serialized once here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Complete,
    Streaming,
    Cancelled,
    Failed,
}

impl From<MessageStatus> for Status {
    fn from(status: MessageStatus) -> Self {
        match status {
            MessageStatus::Complete => Status::Complete,
            MessageStatus::Streaming => Status::Streaming,
            MessageStatus::Cancelled => Status::Cancelled,
            MessageStatus::Failed => Status::Failed,
        }
    }
}

impl Status {
    /// The wire name (also the `status` label of metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Complete => "complete",
            Status::Streaming => "streaming",
            Status::Cancelled => "cancelled",
            Status::Failed => "failed",
        }
    }
}

/// A stored status's wire name.
pub fn status_name(status: MessageStatus) -> &'static str {
    Status::from(status).as_str()
}

/// The `code` of an `error` event (API.md §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    QuotaExceeded,
    InvalidMessage,
    QuestionTooLong,
    StreamInProgress,
    Busy,
    TokenInvalid,
    AnalysisFailed,
    RateLimited,
    ResumeUnavailable,
}

/// Who wrote a message, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleView {
    User,
    Assistant,
}

/// One tool the engine used for a reply, as the API shows it.
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = ToolUse)]
pub struct ToolView {
    pub tool: String,
    /// The arguments (any JSON).
    pub args: Value,
    pub success: bool,
    /// What the tool answered (any JSON).
    pub result: Value,
}

/// A stored message as the API shows it (history, `message` events, the
/// whole-answer endpoint).
#[derive(Clone, Debug, Serialize, ToSchema)]
#[schema(as = Message)]
pub struct MessageView {
    #[schema(format = Uuid)]
    pub id: String,
    /// 1, 2, 3, … within the session.
    pub seq: u64,
    pub role: RoleView,
    pub text: String,
    pub status: Status,
    pub tools: Vec<ToolView>,
    /// RFC 3339, UTC.
    #[schema(format = DateTime)]
    pub created_at: String,
}

impl From<&Message> for MessageView {
    fn from(m: &Message) -> Self {
        let parse = |text: &str| {
            serde_json::from_str::<Value>(text).unwrap_or(Value::String(text.to_owned()))
        };
        MessageView {
            id: m.id.hyphenated().to_string(),
            seq: m.seq,
            role: match m.role {
                Role::User => RoleView::User,
                Role::Assistant => RoleView::Assistant,
            },
            text: m.text.clone(),
            status: m.status.into(),
            tools: m
                .tools
                .iter()
                .map(|t| ToolView {
                    tool: t.tool.clone(),
                    args: parse(&t.args),
                    success: t.success,
                    result: parse(&t.result),
                })
                .collect(),
            created_at: rfc3339_millis(m.created_at),
        }
    }
}

/// [`MessageView`] as a JSON value (the `message` event carries one).
pub fn message_json(m: &Message) -> Value {
    serde_json::to_value(MessageView::from(m)).unwrap_or(Value::Null)
}

/// Why the server closes a socket: each reason has its close code (API.md
/// §7) and the short text sent in the close frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// The client closed first.
    Normal,
    /// The server is shutting down (waits for a streaming reply's `done`).
    Shutdown,
    IdleTimeout,
    ProtocolError,
    BinaryFrame,
    InvalidText,
    SlowReader,
    TooManyMessages,
    OriginRejected,
    TooBig,
    ServerError,
    AuthFailed,
    CredentialExpired,
    LoggedOut,
    CredentialsRevoked,
    ApiKeyDeleted,
    AccountUnavailable,
    AccountDeleted,
    SessionNotFound,
    SessionDeleted,
    TooManyConnections,
}

impl Close {
    pub fn code(self) -> u16 {
        use close::*;
        match self {
            Close::Normal => NORMAL,
            Close::Shutdown | Close::IdleTimeout => GOING_AWAY,
            Close::ProtocolError => PROTOCOL_ERROR,
            Close::BinaryFrame => UNSUPPORTED,
            Close::InvalidText => INVALID_TEXT,
            Close::SlowReader | Close::TooManyMessages | Close::OriginRejected => POLICY,
            Close::TooBig => TOO_BIG,
            Close::ServerError => SERVER_ERROR,
            Close::AuthFailed
            | Close::CredentialExpired
            | Close::LoggedOut
            | Close::CredentialsRevoked
            | Close::ApiKeyDeleted => AUTH,
            Close::AccountUnavailable | Close::AccountDeleted => USER_INACTIVE,
            Close::SessionNotFound | Close::SessionDeleted => NOT_FOUND,
            Close::TooManyConnections => TOO_MANY,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Close::Normal => "",
            Close::Shutdown => "server shutting down",
            Close::IdleTimeout => "idle timeout",
            Close::ProtocolError => "protocol error",
            Close::BinaryFrame => "only text frames are spoken",
            Close::InvalidText => "text frames must be UTF-8",
            Close::SlowReader => "slow reader: outgoing buffer full",
            Close::TooManyMessages => "too many messages",
            Close::OriginRejected => "origin not allowed",
            Close::TooBig => "message too big",
            Close::ServerError => "server error",
            Close::AuthFailed => "authentication failed",
            Close::CredentialExpired => "credential expired",
            Close::LoggedOut => "logged out",
            Close::CredentialsRevoked => "credentials revoked",
            Close::ApiKeyDeleted => "API key deleted",
            Close::AccountUnavailable => "account unavailable",
            Close::AccountDeleted => "account deleted",
            Close::SessionNotFound => "session not found",
            Close::SessionDeleted => "session deleted",
            Close::TooManyConnections => "too many connections",
        }
    }
}

/// Close codes (API.md §7).
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_TEXT: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const SERVER_ERROR: u16 = 1011;
    pub const AUTH: u16 = 4001;
    pub const USER_INACTIVE: u16 = 4002;
    pub const FORBIDDEN: u16 = 4003;
    pub const NOT_FOUND: u16 = 4004;
    pub const TOO_MANY: u16 = 4029;
}

/// A frame from the client. Fields the server does not know are ignored (a
/// newer client stays compatible); an unknown `type` is `invalid_message`.
/// (`Serialize`: the AsyncAPI test checks every variant against
/// docs/asyncapi.yaml.)
#[derive(Debug, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Question {
        text: String,
        #[serde(default)]
        id: Option<String>,
    },
    Cancel,
    Refresh {
        token: String,
    },
    Ping,
    /// Replay a reply's events after `after`, then its live rest.
    Resume {
        message_id: String,
        after: u64,
    },
}

impl ClientFrame {
    /// The `type` of the frame (for metrics).
    pub fn kind(&self) -> &'static str {
        match self {
            ClientFrame::Question { .. } => "question",
            ClientFrame::Cancel => "cancel",
            ClientFrame::Refresh { .. } => "refresh",
            ClientFrame::Ping => "ping",
            ClientFrame::Resume { .. } => "resume",
        }
    }
}

/// The user as `connected` shows it.
#[derive(Debug, Serialize)]
pub struct ConnectedUser {
    pub id: String,
    pub is_demo: bool,
}

#[derive(Debug, Serialize)]
pub struct QuotaView {
    pub request_count: u32,
    pub request_limit: u32,
}

/// A frame from the server.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Connected {
        session_id: String,
        user: ConnectedUser,
        expires_at: Option<u64>,
        quota: Option<QuotaView>,
    },
    Message {
        message: Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
    },
    ToolCall {
        message_id: Arc<str>,
        seq: u64,
        tool: String,
        args: Value,
    },
    ToolResult {
        message_id: Arc<str>,
        seq: u64,
        tool: String,
        success: bool,
        result: Value,
    },
    Token {
        message_id: Arc<str>,
        seq: u64,
        text: String,
    },
    Done {
        message_id: Arc<str>,
        status: Status,
        usage: Usage,
        /// The `seq` of the reply's last event (0: it had none).
        last_seq: u64,
    },
    /// A `resume` was accepted: the events after `after` follow.
    Resumed {
        message_id: String,
        after: u64,
        live: bool,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_count: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        request_limit: Option<u32>,
    },
    Quota {
        request_count: u32,
        request_limit: u32,
        reset_in: u64,
    },
    Refreshed {
        expires_at: Option<u64>,
    },
    TokenExpiring {
        expires_in: u64,
    },
    Pong,
}

impl ServerFrame {
    /// `quota`: where the user stands now.
    pub fn quota(standing: &crate::quota::Standing) -> Self {
        ServerFrame::Quota {
            request_count: standing.count,
            request_limit: standing.limit(),
            reset_in: standing.reset_in,
        }
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerFrame::Error {
            code,
            message: message.into(),
            request_count: None,
            request_limit: None,
        }
    }

    /// The `type` of the frame (for metrics and logs).
    pub fn kind(&self) -> &'static str {
        match self {
            ServerFrame::Connected { .. } => "connected",
            ServerFrame::Message { .. } => "message",
            ServerFrame::ToolCall { .. } => "tool_call",
            ServerFrame::ToolResult { .. } => "tool_result",
            ServerFrame::Token { .. } => "token",
            ServerFrame::Done { .. } => "done",
            ServerFrame::Resumed { .. } => "resumed",
            ServerFrame::Error { .. } => "error",
            ServerFrame::Quota { .. } => "quota",
            ServerFrame::Refreshed { .. } => "refreshed",
            ServerFrame::TokenExpiring { .. } => "token_expiring",
            ServerFrame::Pong => "pong",
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these types cannot fail (string keys, no maps with
        // non-string keys); fall back to an error frame rather than panic.
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"cannot encode frame"}"#.to_owned()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_frames_parse_and_reject_unknown_shapes() {
        let q: ClientFrame =
            serde_json::from_str(r#"{"type":"question","text":"hi","id":"c1"}"#).unwrap();
        assert!(
            matches!(q, ClientFrame::Question { ref text, id: Some(ref id) } if text == "hi" && id == "c1")
        );
        assert!(matches!(
            serde_json::from_str(r#"{"type":"cancel"}"#).unwrap(),
            ClientFrame::Cancel
        ));
        assert!(matches!(
            serde_json::from_str(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping
        ));
        assert!(matches!(
            serde_json::from_str(r#"{"type":"resume","message_id":"m","after":2}"#).unwrap(),
            ClientFrame::Resume { ref message_id, after: 2 } if message_id == "m"
        ));
        for bad in [
            r#"{"type":"question"}"#,
            r#"{"type":"shout","text":"x"}"#,
            r#"{"text":"x"}"#,
            "[]",
            "not json",
        ] {
            assert!(serde_json::from_str::<ClientFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn times_format_and_never_panic() {
        assert_eq!(rfc3339_millis(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_millis(u64::MAX), "9999-12-31T23:59:59Z");
    }

    #[test]
    fn server_frames_have_the_contract_shape() {
        let done = ServerFrame::Done {
            message_id: "m".into(),
            status: Status::Complete,
            usage: Usage {
                tokens: 3,
                first_token_ms: 1,
                total_ms: 2,
            },
            last_seq: 3,
        };
        let v: Value = serde_json::from_str(&done.to_json()).unwrap();
        assert_eq!(v["type"], "done");
        assert_eq!(v["last_seq"], 3);
        assert_eq!(v["usage"]["tokens"], 3);
        let err: Value =
            serde_json::from_str(&ServerFrame::error(ErrorCode::Busy, "full").to_json()).unwrap();
        assert_eq!(
            err,
            serde_json::json!({"type":"error","code":"busy","message":"full"})
        );
        let pong: Value = serde_json::from_str(&ServerFrame::Pong.to_json()).unwrap();
        assert_eq!(pong, serde_json::json!({"type":"pong"}));
        let exp: Value =
            serde_json::from_str(&ServerFrame::TokenExpiring { expires_in: 60 }.to_json()).unwrap();
        assert_eq!(exp["type"], "token_expiring");
    }
}
