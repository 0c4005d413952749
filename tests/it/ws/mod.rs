//! WebSocket chat (API.md §7) with a real client against the real server:
//! every credential form, every close code, every event. The shared helpers
//! are here; the tests, by area, in the submodules.

// The submodules take their imports from here (`use super::*`).
#![allow(unused_imports)]

pub(crate) use serde_json::{json, Value};

pub(crate) use crate::support::{
    assert_error, auth_options, client, close_code, new_session, next_frame, send_json, signed_in,
    ticket, until_done, ws_connected, ws_open, JsonValue, ServerOptions, TestServer, Ws,
};

mod backpressure;
mod handshake;
mod protocol;
mod resume;
mod revocation;

fn echo() -> ServerOptions {
    auth_options().env("PALAVER_ANALYSIS__ENGINE", "echo")
}

struct User {
    access: String,
    refresh: String,
    session: String,
}

impl User {
    /// The socket path of the user's session, with the access token.
    fn token_path(&self) -> String {
        path(&self.session, &format!("?token={}", self.access))
    }

    /// Connects with the access token; the socket once `connected` came.
    async fn connect(&self, server: &TestServer) -> (Ws, Value) {
        ws_connected(server, &self.token_path(), &[]).await
    }
}

async fn user(server: &TestServer, email: &str) -> User {
    let tokens = signed_in(server, email).await;
    let access = tokens["access"].as_str().unwrap().to_owned();
    let session = new_session(server, &access).await;
    User {
        refresh: tokens["refresh"].as_str().unwrap().to_owned(),
        access,
        session,
    }
}

/// A session's messages, oldest first (the history endpoint's body).
async fn history(server: &TestServer, token: &str, session: &str) -> Value {
    client()
        .get(server.url(&format!("/api/sessions/{session}/messages/")))
        .bearer_auth(token)
        .json_value()
        .await
}

fn path(session: &str, query: &str) -> String {
    format!("/ws/sessions/{session}/{query}")
}

async fn api_key(server: &TestServer, access: &str) -> String {
    let res = client()
        .post(server.url("/api/auth/api-keys/"))
        .bearer_auth(access)
        .json(&json!({"name": "ws"}))
        .send()
        .await
        .unwrap();
    res.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned()
}
