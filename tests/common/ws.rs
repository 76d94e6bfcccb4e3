//! Raw WebSocket clients of a relay: connect, send, receive (bounded), register.

use std::time::Duration;

use async_tungstenite::tungstenite::Message as Frame;
use futures::StreamExt;
use serde_json::{Value, json};

pub type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>;

pub async fn connect(url: &str) -> Ws {
    async_tungstenite::tokio::connect_async(url)
        .await
        .unwrap_or_else(|e| panic!("connect {url}: {e}"))
        .0
}

pub async fn send(ws: &mut Ws, v: Value) {
    ws.send(Frame::text(v.to_string())).await.expect("send");
}

pub async fn send_text(ws: &mut Ws, text: String) {
    ws.send(Frame::text(text)).await.expect("send");
}

/// The next JSON message, skipping control frames; bounded in time.
pub async fn recv(ws: &mut Ws) -> Value {
    recv_within(ws, Duration::from_secs(5)).await
}

/// [`recv`] within `within`.
pub async fn recv_within(ws: &mut Ws, within: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let frame = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time")
            .expect("connection open")
            .expect("frame");
        if let Frame::Text(text) = frame {
            return serde_json::from_str(text.as_str()).expect("JSON");
        }
    }
}

pub async fn register(url: &str, id: &str) -> Ws {
    let mut ws = connect(url).await;
    send(&mut ws, json!({"type": "register", "id": id})).await;
    let reply = recv(&mut ws).await;
    assert_eq!(reply["type"], "registered", "{reply}");
    assert_eq!(reply["id"], id);
    ws
}
