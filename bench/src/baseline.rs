//! The bare baseline server: palaver's wire protocol with no authentication,
//! no storage and no actors: tokio + tokio-tungstenite, a task per
//! connection, `serde_json` frames. The practical ceiling of this machine,
//! run in its own process so its CPU time is measured apart from the load
//! generator's.

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

/// Serves until killed. Prints `listening on http://ADDR` first.
pub async fn serve(bind: &str) -> anyhow::Result<()> {
    let listener = TcpListener::bind(bind).await?;
    println!("baseline listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = connection(stream).await;
        });
    }
}

async fn connection(stream: TcpStream) -> anyhow::Result<()> {
    // Small token frames must leave at once (as actix and every chat server
    // set it).
    stream.set_nodelay(true)?;
    // A 4 KiB read buffer and unbuffered writes, as a server built for many
    // connections would use: tungstenite's default 128 KiB read buffer is
    // zeroed when allocated, so each idle connection would hold 140 KiB.
    // `BENCH_BASELINE_BUFFERS=default` runs it with tokio-tungstenite's
    // defaults instead (docs/BENCHMARKS.md compares the two).
    let config = match std::env::var("BENCH_BASELINE_BUFFERS").as_deref() {
        Ok("default") => None,
        _ => Some(
            WebSocketConfig::default()
                .read_buffer_size(4096)
                .write_buffer_size(0),
        ),
    };
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, config).await?;
    let session = uuid::Uuid::new_v4().to_string();
    let connected = json!({"type": "connected", "session_id": session, "user": {"id": "baseline", "is_demo": false}, "expires_at": null, "quota": null});
    ws.send(Message::text(connected.to_string())).await?;
    let mut seq = 0u64;
    while let Some(msg) = ws.next().await {
        let Message::Text(text) = msg? else { continue };
        let Ok(frame) = serde_json::from_str::<Value>(text.as_str()) else {
            continue;
        };
        match frame["type"].as_str() {
            Some("question") => {
                let question = frame["text"].as_str().unwrap_or_default().to_owned();
                seq += 1;
                let message = json!({"type": "message", "message": {"id": uuid::Uuid::new_v4().to_string(), "seq": seq, "role": "user", "text": question, "status": "complete", "tools": [], "created_at": "1970-01-01T00:00:00Z"}});
                ws.send(Message::text(message.to_string())).await?;
                seq += 1;
                let reply = uuid::Uuid::new_v4().to_string();
                let mut tokens = 0;
                for (i, word) in question.split_whitespace().enumerate() {
                    let piece = if i == 0 {
                        word.to_owned()
                    } else {
                        format!(" {word}")
                    };
                    let token =
                        json!({"type": "token", "message_id": reply, "seq": i + 1, "text": piece});
                    ws.send(Message::text(token.to_string())).await?;
                    tokens += 1;
                }
                let done = json!({"type": "done", "message_id": reply, "status": "complete", "usage": {"tokens": tokens, "first_token_ms": 0, "total_ms": 0}, "last_seq": tokens});
                ws.send(Message::text(done.to_string())).await?;
            }
            Some("ping") => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
            _ => {}
        }
    }
    Ok(())
}
