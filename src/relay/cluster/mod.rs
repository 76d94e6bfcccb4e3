//! A relay cluster on Redis: any number of `webrtcd relay --redis URL` processes share one
//! registry, so devices registered with different relays reach each other.
//!
//! In Redis (all keys under `webrtcd:`):
//! - `webrtcd:peers`, a hash: id → `NODE ACCESS` (the relay that holds it). An id is claimed
//!   atomically (a script): free, or held by a relay that is gone, or it is `id-taken`.
//! - `webrtcd:node:NODE`: each relay's heartbeat, a key that expires after two heartbeats.
//!   A relay whose key expired is dead: the first relay to notice removes its ids and says so.
//! - channel `webrtcd:events`: `joined` / `left` announcements (every relay tells its peers);
//! - channel `webrtcd:to:NODE`: messages routed to a peer of relay NODE.
//!
//! Every quarter of a heartbeat each relay also reads the whole hash and reconciles what it
//! believes with it: a lost announcement (pub/sub delivers at most once) or a Redis restart
//! heals within that time, and the ids of a relay found dead are swept. Without Redis a
//! relay keeps serving its own peers; when Redis is back, it claims them again.

mod relay_side;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures::StreamExt;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::registry::{ClusterInbox, RemotePeer, ToCluster};
use super::{Access, Relay};
use crate::backoff::Backoff;
use crate::protocol::Signal;

/// Each relay says it is alive this often…
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// …and is taken for dead once its heartbeat is this old.
const NODE_TTL: Duration = Duration::from_secs(2);
/// How often each relay reconciles its view with Redis (and sweeps dead relays' ids).
const RECONCILE: Duration = Duration::from_millis(250);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A Redis command that takes longer than this counts as Redis being gone.
const COMMAND_WITHIN: Duration = Duration::from_secs(2);
/// A heartbeat that takes longer than this is retried on a new connection (well inside
/// `NODE_TTL`: a slow Redis must not get a live relay swept).
const HEARTBEAT_WITHIN: Duration = Duration::from_millis(500);

const PEERS: &str = "webrtcd:peers";
const EVENTS: &str = "webrtcd:events";

fn node_key(node: &str) -> String {
    format!("webrtcd:node:{node}")
}

/// Says relay `node` is alive for another [`NODE_TTL`].
async fn beat(conn: &mut redis::aio::MultiplexedConnection, node: &str) -> redis::RedisResult<()> {
    let ttl = u64::try_from(NODE_TTL.as_millis()).unwrap_or(u64::MAX);
    conn.pset_ex(node_key(node), 1, ttl).await
}

/// Publishes an announcement to every relay.
async fn announce(
    conn: &mut redis::aio::MultiplexedConnection,
    said: &Announcement,
) -> anyhow::Result<()> {
    let text = serde_json::to_string(said)?;
    let _: i64 = within("announce", conn.publish(EVENTS, text)).await?;
    Ok(())
}

fn inbox_channel(node: &str) -> String {
    format!("webrtcd:to:{node}")
}

/// Claims `ARGV[1]` for `ARGV[2]` (`NODE ACCESS`): 1 if it was free, already ours, or held
/// by a relay whose heartbeat is gone; 0 if another live relay holds it.
const CLAIM: &str = r"
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held then
  local node = string.match(held, '^(%S+)')
  if node ~= ARGV[3] and redis.call('EXISTS', 'webrtcd:node:' .. node) == 1 then
    return 0
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
";

/// Removes `ARGV[1]` if it still holds exactly `ARGV[2]`: 1 if removed.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

/// Removes `ARGV[1]` if it still holds exactly `ARGV[2]` and relay `ARGV[3]` has no
/// heartbeat, in one step (a relay that comes back meanwhile keeps its peers): 1 if removed.
const SWEEP: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2]
   and redis.call('EXISTS', 'webrtcd:node:' .. ARGV[3]) == 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return 1
end
return 0
";

#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    /// `joined` or `left`.
    event: String,
    id: String,
    node: String,
    access: Option<String>,
    /// `left` because the peer's relay died (not the peer).
    #[serde(default)]
    relay_gone: bool,
}

fn access_name(access: Access) -> &'static str {
    match access {
        Access::Full => "full",
        Access::ViewOnly => "view",
    }
}

fn parse_access(text: &str) -> Access {
    if text == "full" {
        Access::Full
    } else {
        Access::ViewOnly
    }
}

/// `NODE ACCESS`, as the hash holds it.
fn holder(node: &str, access: Access) -> String {
    format!("{node} {}", access_name(access))
}

fn parse_holder(text: &str) -> Option<RemotePeer> {
    let (node, access) = text.split_once(' ')?;
    Some(RemotePeer {
        node: node.to_string(),
        access: parse_access(access),
    })
}

/// A random name for this relay in the cluster.
pub fn new_node_name() -> anyhow::Result<String> {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Joins `relay` to the cluster whose registry is in Redis at `url`, until `shutdown`.
/// Returns once its first connection to Redis is up (or failed: it keeps trying).
pub fn start(
    relay: Arc<Relay>,
    url: &str,
    shutdown: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> anyhow::Result<String> {
    let client = redis::Client::open(url).context("--redis: not a redis:// URL")?;
    let node = new_node_name()?;
    let inbox = relay.join_cluster(&node);
    tasks.spawn(heartbeat(client.clone(), node.clone(), shutdown.clone()));
    let mut member = Member {
        relay,
        client,
        node: node.clone(),
        inbox,
        claim: redis::Script::new(CLAIM),
        release: redis::Script::new(RELEASE),
        sweep: redis::Script::new(SWEEP),
    };
    tasks.spawn(async move {
        let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
        loop {
            let session = member.session(&mut backoff);
            let ended = tokio::select! {
                _ = shutdown.cancelled() => break,
                ended = session => ended,
            };
            if let Err(err) = ended {
                tracing::warn!("relay cluster: Redis: {err:#}; reconnecting");
            }
            // Meanwhile what the relay asks is dropped, not queued: once back, the relay's
            // peers are claimed again from what it holds then, and routed messages are lost
            // as on any relay that went away.
            let pause = tokio::time::sleep(backoff.next_pause());
            tokio::pin!(pause);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = &mut pause => break,
                    _ = member.inbox.control.recv() => {}
                    _ = member.inbox.routes.recv() => {}
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        member.leave().await;
    });
    Ok(node)
}

/// Says this relay is alive, every [`HEARTBEAT`], on a connection of its own: nothing the
/// relay routes can delay it.
async fn heartbeat(client: redis::Client, node: String, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    let mut conn = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if conn.is_none() {
            conn =
                tokio::time::timeout(HEARTBEAT_WITHIN, client.get_multiplexed_async_connection())
                    .await
                    .ok()
                    .and_then(Result::ok);
        }
        let Some(c) = conn.as_mut() else {
            tracing::warn!("relay cluster: no heartbeat (Redis unreachable)");
            continue;
        };
        let beaten = tokio::time::timeout(HEARTBEAT_WITHIN, beat(c, &node)).await;
        if !matches!(beaten, Ok(Ok(()))) {
            tracing::warn!("relay cluster: a heartbeat failed; reconnecting");
            conn = None;
        }
    }
}

struct Member {
    relay: Arc<Relay>,
    client: redis::Client,
    node: String,
    inbox: ClusterInbox,
    claim: redis::Script,
    release: redis::Script,
    sweep: redis::Script,
}

/// Bounds a Redis command in time.
async fn within<T>(
    what: &str,
    command: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(COMMAND_WITHIN, command)
        .await
        .map_err(|_| anyhow::anyhow!("{what}: no answer within {COMMAND_WITHIN:?}"))?
        .with_context(|| what.to_string())
}

impl Member {
    /// One connection to Redis, until it fails.
    async fn session(&mut self, backoff: &mut Backoff) -> anyhow::Result<()> {
        let mut conn = within("connect", self.client.get_multiplexed_async_connection()).await?;
        let mut pubsub = within("connect (pub/sub)", self.client.get_async_pubsub()).await?;
        within("subscribe", pubsub.subscribe(EVENTS)).await?;
        within("subscribe", pubsub.subscribe(inbox_channel(&self.node))).await?;
        let mut messages = pubsub.into_on_message();
        // Alive before claiming anything (the heartbeat task may not have said so yet: a
        // claim of a relay without one could be swept at once); our peers are then claimed
        // (again: whatever Redis lost meanwhile) by the first reconcile.
        within("heartbeat", beat(&mut conn, &self.node)).await?;
        self.reconcile(&mut conn).await?;
        tracing::info!(node = %self.node, "relay cluster: joined through Redis");
        backoff.reset();
        let mut reconcile = tokio::time::interval(RECONCILE);
        loop {
            tokio::select! {
                biased;
                request = self.inbox.control.recv() => match request {
                    Some(ToCluster::Claim { id, access, conn: conn_id }) => {
                        self.claim_id(&mut conn, &id, access, conn_id).await?;
                    }
                    Some(ToCluster::Release { id }) => {
                        // What it sent before it left goes first.
                        while let Ok(ToCluster::Route { node, msg }) = self.inbox.routes.try_recv() {
                            self.publish_route(&mut conn, &node, &msg).await?;
                        }
                        self.release_id(&mut conn, &id).await?;
                    }
                    Some(ToCluster::Route { .. }) => {}
                    None => return Ok(()),
                },
                message = messages.next() => match message {
                    Some(message) => self.heard(&message),
                    None => anyhow::bail!("the pub/sub connection closed"),
                },
                request = self.inbox.routes.recv() => match request {
                    Some(ToCluster::Route { node, msg }) => {
                        self.publish_route(&mut conn, &node, &msg).await?;
                    }
                    Some(_) => {}
                    None => return Ok(()),
                },
                _ = reconcile.tick() => self.reconcile(&mut conn).await?,
            }
        }
    }

    async fn publish_route(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        node: &str,
        msg: &Signal,
    ) -> anyhow::Result<()> {
        let _: i64 = within("publish", conn.publish(inbox_channel(node), msg.encode())).await?;
        Ok(())
    }

    async fn claim_id(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &str,
        access: Access,
        conn_id: u64,
    ) -> anyhow::Result<()> {
        let claimed: i64 = within(
            "claim",
            self.claim
                .key(PEERS)
                .arg(id)
                .arg(holder(&self.node, access))
                .arg(&self.node)
                .invoke_async(conn),
        )
        .await?;
        if claimed == 1 {
            self.announce_ours(conn, "joined", id, Some(access)).await
        } else {
            tracing::info!(peer = %id, "relay cluster: the id is held by another relay");
            self.relay.claim_refused(id, conn_id);
            Ok(())
        }
    }

    async fn release_id(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        id: &str,
    ) -> anyhow::Result<()> {
        // Whatever access it had: try both forms.
        for access in [Access::Full, Access::ViewOnly] {
            let released: i64 = within(
                "release",
                self.release
                    .key(PEERS)
                    .arg(id)
                    .arg(holder(&self.node, access))
                    .invoke_async(conn),
            )
            .await?;
            if released == 1 {
                return self.announce_ours(conn, "left", id, None).await;
            }
        }
        Ok(())
    }

    /// Announces one of our own peers.
    async fn announce_ours(
        &self,
        conn: &mut redis::aio::MultiplexedConnection,
        event: &str,
        id: &str,
        access: Option<Access>,
    ) -> anyhow::Result<()> {
        let said = Announcement {
            event: event.to_string(),
            id: id.to_string(),
            node: self.node.clone(),
            access: access.map(|a| access_name(a).to_string()),
            relay_gone: false,
        };
        announce(conn, &said).await
    }

    /// Something another relay published.
    fn heard(&self, message: &redis::Msg) {
        let Ok(payload) = message.get_payload::<String>() else {
            return;
        };
        if message.get_channel_name() == EVENTS {
            let Ok(said) = serde_json::from_str::<Announcement>(&payload) else {
                return;
            };
            if said.node == self.node {
                return;
            }
            match said.event.as_str() {
                "joined" => self.relay.remote_joined(
                    &said.id,
                    RemotePeer {
                        node: said.node,
                        access: parse_access(said.access.as_deref().unwrap_or("view")),
                    },
                ),
                "left" => self
                    .relay
                    .remote_left(&said.id, Some(&said.node), said.relay_gone),
                _ => {}
            }
        } else if let Ok(msg) = Signal::decode(&payload) {
            self.relay.deliver_routed(msg);
        }
    }

    /// Makes Redis and the relay agree: our own peers are claimed (again, if Redis lost
    /// them or swept them), ids of ours that left are released, the relay's view of the
    /// other relays' peers becomes what Redis says, and the ids of relays whose heartbeat is
    /// gone are swept.
    async fn reconcile(&self, conn: &mut redis::aio::MultiplexedConnection) -> anyhow::Result<()> {
        let held: HashMap<String, String> = within("read the peers", conn.hgetall(PEERS)).await?;
        let local = self.relay.local_peers();
        for (id, access, conn_id) in &local {
            let ours = held
                .get(id)
                .and_then(|h| parse_holder(h))
                .is_some_and(|p| p.node == self.node);
            if !ours {
                self.claim_id(conn, id, *access, *conn_id).await?;
            }
        }
        let nodes: HashSet<String> = held
            .values()
            .filter_map(|h| parse_holder(h).map(|p| p.node))
            .filter(|n| *n != self.node)
            .collect();
        let mut alive = HashSet::new();
        for node in &nodes {
            let exists: bool = within("heartbeats", conn.exists(node_key(node))).await?;
            if exists {
                alive.insert(node.clone());
            }
        }
        let mut present = HashSet::new();
        for (id, text) in &held {
            let Some(peer) = parse_holder(text) else {
                continue;
            };
            if peer.node == self.node {
                if !local.iter().any(|(l, _, _)| l == id) {
                    // Left while its release was lost (Redis was away).
                    let _: i64 = within(
                        "release",
                        self.release.key(PEERS).arg(id).arg(text).invoke_async(conn),
                    )
                    .await?;
                }
                continue;
            }
            if alive.contains(&peer.node) {
                present.insert(id.clone());
                self.relay.remote_joined(id, peer);
                continue;
            }
            // A dead relay's peer: the first relay to remove it says so.
            let removed: i64 = within(
                "sweep",
                self.sweep
                    .key(PEERS)
                    .arg(id)
                    .arg(text)
                    .arg(&peer.node)
                    .invoke_async(conn),
            )
            .await?;
            if removed == 1 {
                tracing::info!(peer = %id, node = %peer.node, "relay cluster: its relay is gone");
                let left = Announcement {
                    event: "left".into(),
                    id: id.clone(),
                    node: peer.node.clone(),
                    access: None,
                    relay_gone: true,
                };
                announce(conn, &left).await?;
            }
        }
        for (id, peer) in self.relay.remote_peers() {
            if !present.contains(&id) {
                let relay_gone = !alive.contains(&peer.node);
                self.relay.remote_left(&id, Some(&peer.node), relay_gone);
            }
        }
        Ok(())
    }

    /// Shutting down: our ids go, and the others hear it now rather than after two
    /// heartbeats (best effort, bounded).
    async fn leave(&mut self) {
        let Ok(Ok(mut conn)) = tokio::time::timeout(
            COMMAND_WITHIN,
            self.client.get_multiplexed_async_connection(),
        )
        .await
        else {
            return;
        };
        // Peers that left as the relay stopped, and those still attached.
        let mut ids = Vec::new();
        while let Ok(request) = self.inbox.control.try_recv() {
            if let ToCluster::Release { id } = request {
                ids.push(id);
            }
        }
        ids.extend(self.relay.local_peers().into_iter().map(|(id, _, _)| id));
        for id in ids {
            if self.release_id(&mut conn, &id).await.is_err() {
                return;
            }
        }
        let _ = within("leave", conn.del::<_, ()>(node_key(&self.node))).await;
    }
}
