//! Relay routing latency: how long one signaling message takes from its sender to its
//! recipient through one relay, and through two relays sharing a Redis (a relay cluster).
//! One message in flight at a time; each relay allows far more messages per second than a
//! client sends here, so no rate limit is measured.

use crate::procs::Killed;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_tungstenite::tungstenite::Message as Frame;
use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};

type Ws = async_tungstenite::WebSocketStream<async_tungstenite::tokio::ConnectStream>;

#[derive(Debug, Serialize)]
pub struct Routing {
    pub messages: usize,
    /// Through one relay (no Redis): p50, p99, max (ms).
    pub one_relay: Quantiles,
    /// Across two relays sharing one Redis.
    pub two_relays: Quantiles,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Quantiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

fn relay(dir: &Path, name: &str, redis: Option<&str>) -> anyhow::Result<(Killed, String)> {
    let mut args: Vec<std::ffi::OsString> = [
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--messages-per-second",
        "100000",
    ]
    .iter()
    .map(Into::into)
    .collect();
    if let Some(url) = redis {
        args.extend(["--redis".into(), url.into()]);
    }
    let (child, addr) = crate::procs::spawn_webrtcd(dir, name, &args, &[])?;
    Ok((Killed(child), format!("ws://{addr}/signaling")))
}

async fn next_json(ws: &mut Ws) -> anyhow::Result<Value> {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .context("no message within 5 s")?
            .context("closed")??;
        if let Frame::Text(text) = frame {
            return Ok(serde_json::from_str(text.as_str())?);
        }
    }
}

async fn register(url: &str, id: &str) -> anyhow::Result<Ws> {
    let (mut ws, _) = async_tungstenite::tokio::connect_async(url).await?;
    ws.send(Frame::text(
        json!({"type": "register", "id": id}).to_string(),
    ))
    .await?;
    let reply = next_json(&mut ws).await?;
    anyhow::ensure!(reply["type"] == "registered", "register {id}: {reply}");
    Ok(ws)
}

/// `messages` messages from a client of `from` to a client of `to`, one at a time.
async fn route(from: &str, to: &str, messages: usize, tag: &str) -> anyhow::Result<Quantiles> {
    let sender_id = format!("bench-sender-{tag}");
    let receiver_id = format!("bench-receiver-{tag}");
    let mut receiver = register(to, &receiver_id).await?;
    let mut sender = register(from, &sender_id).await?;
    // The receiver's relay knows the sender once it announced it (across Redis, a moment).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let joined = next_json(&mut receiver).await?;
        if joined["type"] == "peer-joined" && joined["id"] == sender_id.as_str() {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "the sender never joined");
    }
    let mut ms = Vec::with_capacity(messages);
    for i in 0..messages {
        let text = json!({"type": "candidate", "to": receiver_id, "session": "bench",
                          "candidate": format!("c{i}")})
        .to_string();
        let sent = Instant::now();
        sender.send(Frame::text(text)).await?;
        loop {
            let got = next_json(&mut receiver).await?;
            if got["type"] == "candidate" {
                anyhow::ensure!(
                    got["candidate"] == format!("c{i}").as_str(),
                    "out of order: {got}"
                );
                break;
            }
        }
        ms.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    Ok(Quantiles {
        p50_ms: at(0.5),
        p99_ms: at(0.99),
        max_ms: ms[ms.len() - 1],
    })
}

pub async fn measure(dir: &Path, messages: usize) -> anyhow::Result<Routing> {
    anyhow::ensure!(messages > 0, "no messages to route");
    let (_single, single_url) = relay(dir, "relay-single", None)?;
    let one_relay = route(&single_url, &single_url, messages, "one").await?;
    let redis = crate::harness::RedisServer::start(&dir.join("redis.log"))?;
    let (_r1, r1) = relay(dir, "relay-r1", Some(&redis.url))?;
    let (_r2, r2) = relay(dir, "relay-r2", Some(&redis.url))?;
    let two_relays = route(&r1, &r2, messages, "two").await?;
    Ok(Routing {
        messages,
        one_relay,
        two_relays,
    })
}

pub fn markdown(r: &Routing) -> String {
    let row = |name: &str, q: &Quantiles| {
        format!(
            "| {name} | {:.2} | {:.2} | {:.2} |\n",
            q.p50_ms, q.p99_ms, q.max_ms
        )
    };
    format!(
        "| {} routed messages, one at a time | p50 ms | p99 ms | max ms |\n|---|---|---|---|\n{}{}",
        r.messages,
        row("one relay (no Redis)", &r.one_relay),
        row("two relays through Redis", &r.two_relays)
    )
}
