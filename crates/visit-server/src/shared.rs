//! Where visit state lives and how messages reach connections.
//!
//! One process: state in memory, messages handed straight to the local [`Hub`]. With Redis:
//! each visit is one JSON value (`hv:visit:<id>`) changed by compare-and-set, the ids of live
//! visits are a set (`hv:visits`), each instance announces itself (`hv:instance:<id>`, expiring)
//! and every message is published on one channel (`hv:bus`); every instance delivers the ones
//! for connections it holds. A visit therefore survives the instance that served it. Every
//! Redis call is bounded by `redis_timeout_ms`: past it the request is refused `unavailable`
//! (503) rather than left hanging. When the bus subscription drops, the instance subscribes
//! again and sends its clinicians the rosters of their visits (changes published meanwhile
//! were missed).

use crate::error::{Refusal, SetupError};
use crate::settings::RedisOptions;
use crate::visit::{Delivery, Out, Visit};
use futures_util::StreamExt;
use redis::IntoConnectionInfo;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

/// How many messages may wait for a slow connection before it is aborted (it will resume).
pub const CONNECTION_QUEUE: usize = 256;

/// One connection as the hub reaches it: its outgoing queue, and a way to abort the socket
/// when the queue is full (a close would wait behind the queue, so it is not sent).
#[derive(Clone)]
pub struct Link {
    pub tx: mpsc::Sender<Delivery>,
    pub abort: Arc<tokio::sync::Notify>,
}

impl Link {
    /// Queues `delivery`; a connection whose queue is full is aborted.
    pub fn push(&self, delivery: Delivery) -> bool {
        if self.tx.try_send(delivery).is_ok() {
            return true;
        }
        self.abort.notify_one();
        false
    }
}

/// The connections this instance holds, by participant.
#[derive(Default)]
pub struct Hub {
    conns: Mutex<HashMap<String, (String, Link)>>,
}

impl Hub {
    pub fn register(&self, participant: &str, conn: &str, link: Link) {
        let previous = self
            .lock()
            .insert(participant.to_owned(), (conn.to_owned(), link));
        if let Some((_, old)) = previous {
            old.push(Delivery::Close);
        }
    }

    pub fn unregister(&self, participant: &str, conn: &str) {
        let mut conns = self.lock();
        if conns.get(participant).is_some_and(|(c, _)| c == conn) {
            conns.remove(participant);
        }
    }

    pub fn connections(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (String, Link)>> {
        self.conns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Hands `out` to its connection if this instance holds it. A connection whose queue is
    /// full is aborted (it drops out of the visit as any dropped connection does): its client
    /// resumes and gets a fresh state.
    pub fn deliver(&self, out: Out) {
        let mut conns = self.lock();
        let Some((conn, link)) = conns.get(&out.to) else {
            return;
        };
        if out.conn.as_ref().is_some_and(|c| c != conn) {
            return;
        }
        if !link.push(out.msg) {
            conns.remove(&out.to);
        }
    }
}

/// The visit state store and message bus: in memory, or in Redis.
#[derive(Clone)]
pub enum Shared {
    Memory(Arc<Memory>),
    Redis(Arc<RedisShared>),
}

pub struct Memory {
    /// Each visit with the time of its last change (epoch ms).
    visits: Mutex<HashMap<String, (Visit, u64)>>,
    hub: Arc<Hub>,
    forget_after: Duration,
}

pub struct RedisShared {
    conn: redis::aio::ConnectionManager,
    /// The compare-and-set script (its SHA is computed once).
    cas: redis::Script,
    client: redis::Client,
    instance: String,
    forget_after: Duration,
    /// The bound on every call.
    timeout: Duration,
    /// Whether this instance is subscribed to the bus now.
    subscribed: AtomicBool,
}

const BUS: &str = "hv:bus";
const VISITS: &str = "hv:visits";
/// An instance that has not announced itself for this long is gone.
pub const INSTANCE_TTL: Duration = Duration::from_secs(10);
pub const INSTANCE_BEAT: Duration = Duration::from_secs(3);

fn visit_key(id: &str) -> String {
    format!("hv:visit:{id}")
}

const CAS: &str = r"
local cur = redis.call('GET', KEYS[1])
if (cur == false and ARGV[1] == '') or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  if cur == false then redis.call('SADD', KEYS[2], ARGV[4]) end
  return 1
end
return 0
";

fn redis_down(e: redis::RedisError) -> Refusal {
    Refusal::unavailable(e.category())
}

impl Shared {
    /// State in this process; a visit nobody is connected to is forgotten `forget_after`
    /// after its last change.
    pub fn memory(hub: Arc<Hub>, forget_after: Duration) -> Self {
        Self::Memory(Arc::new(Memory {
            visits: Mutex::new(HashMap::new()),
            hub,
            forget_after,
        }))
    }

    /// Connects to Redis, and starts delivering the bus's messages to `hub`. A visit expires
    /// `forget_after` after its last change.
    pub async fn redis(
        url: &str,
        options: &RedisOptions,
        hub: Arc<Hub>,
        instance: &str,
        forget_after: Duration,
    ) -> Result<Self, SetupError> {
        let client = client(url, options)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(options.timeout)
            .set_response_timeout(options.timeout);
        let conn = tokio::time::timeout(
            options.timeout,
            redis::aio::ConnectionManager::new_with_config(client.clone(), config),
        )
        .await
        .map_err(|_| SetupError::Redis("no answer in time".into()))?
        .map_err(|e| SetupError::Redis(e.to_string()))?;
        let shared = Arc::new(RedisShared {
            conn,
            cas: redis::Script::new(CAS),
            client,
            instance: instance.to_owned(),
            forget_after,
            timeout: options.timeout,
            subscribed: AtomicBool::new(false),
        });
        // A wrong password or ACL user shows now, not at the first visit.
        let mut conn = shared.conn.clone();
        let _: String =
            tokio::time::timeout(options.timeout, redis::cmd("PING").query_async(&mut conn))
                .await
                .map_err(|_| SetupError::Redis("no answer in time".into()))?
                .map_err(|e| SetupError::Redis(e.to_string()))?;
        // Subscribe before serving, so no message published after start is missed.
        let pubsub = shared.subscribe().await?;
        tokio::spawn(listen(shared.clone(), pubsub, hub));
        let beat = shared.clone();
        tokio::spawn(async move {
            loop {
                beat.announce().await;
                tokio::time::sleep(INSTANCE_BEAT).await;
            }
        });
        shared.announce().await;
        Ok(Self::Redis(shared))
    }

    /// Reads a visit.
    pub async fn get(&self, id: &str) -> Result<Option<Visit>, Refusal> {
        match self {
            Self::Memory(m) => Ok(m.lock().get(id).map(|(v, _)| v.clone())),
            Self::Redis(r) => {
                let raw = r.read(id).await?;
                raw.map(|s| parse(&s)).transpose()
            }
        }
    }

    /// Changes a visit (made if new) with `change`; nothing is written if it refuses. With
    /// Redis the change is retried if another instance changed the visit meanwhile.
    pub async fn update<R>(
        &self,
        id: &str,
        mut change: impl FnMut(&mut Visit) -> Result<R, Refusal>,
    ) -> Result<R, Refusal> {
        match self {
            Self::Memory(m) => {
                let mut visits = m.lock();
                let mut visit = visits
                    .get(id)
                    .map_or_else(|| Visit::new(id), |(v, _)| v.clone());
                let result = change(&mut visit)?;
                visits.insert(id.to_owned(), (visit, crate::now_ms()));
                Ok(result)
            }
            Self::Redis(r) => {
                for _ in 0..64 {
                    let raw = r.read(id).await?;
                    let mut visit = match &raw {
                        Some(s) => parse(s)?,
                        None => Visit::new(id),
                    };
                    let result = change(&mut visit)?;
                    let new = serde_json::to_string(&visit)
                        .map_err(|e| Refusal::unavailable(e.to_string()))?;
                    let mut conn = r.conn.clone();
                    let mut invocation = r.cas.key(visit_key(id));
                    invocation
                        .key(VISITS)
                        .arg(raw.as_deref().unwrap_or(""))
                        .arg(new)
                        .arg((r.forget_after.as_millis() as u64).max(1))
                        .arg(id);
                    let swapped: i32 = r.call(invocation.invoke_async(&mut conn)).await?;
                    if swapped == 1 {
                        return Ok(result);
                    }
                }
                Err(Refusal::unavailable("the visit is changing too fast"))
            }
        }
    }

    /// Sends messages to their connections, wherever they are.
    pub async fn publish(&self, outs: Vec<Out>) {
        match self {
            Self::Memory(m) => {
                for out in outs {
                    m.hub.deliver(out);
                }
            }
            Self::Redis(r) => {
                if outs.is_empty() {
                    return;
                }
                let mut pipe = redis::pipe();
                for out in &outs {
                    if let Ok(text) = serde_json::to_string(out) {
                        pipe.cmd("PUBLISH").arg(BUS).arg(text).ignore();
                    }
                }
                let mut conn = r.conn.clone();
                if let Err(e) = r.call(pipe.query_async::<()>(&mut conn)).await {
                    tracing::warn!(error = %e.message, "publishing to Redis failed");
                }
            }
        }
    }

    /// Ids of the visits that may need housekeeping. In memory, visits nobody is connected to
    /// whose last change is `forget_after` old are forgotten first (Redis expires them).
    pub async fn visit_ids(&self) -> Vec<String> {
        match self {
            Self::Memory(m) => {
                let forget_after = m.forget_after.as_millis() as u64;
                let now = crate::now_ms();
                let mut visits = m.lock();
                visits.retain(|_, (visit, changed)| {
                    now.saturating_sub(*changed) < forget_after
                        || visit.members.iter().any(|m| m.conn.is_some())
                });
                visits.keys().cloned().collect()
            }
            Self::Redis(r) => r.visit_ids().await.unwrap_or_default(),
        }
    }

    /// Forgets a visit id that no longer has state (expired in Redis).
    pub async fn forget(&self, id: &str) {
        match self {
            Self::Memory(m) => {
                m.lock().remove(id);
            }
            Self::Redis(r) => {
                let mut conn = r.conn.clone();
                let _: Result<(), _> = r
                    .call(
                        redis::cmd("SREM")
                            .arg(VISITS)
                            .arg(id)
                            .query_async(&mut conn),
                    )
                    .await;
            }
        }
    }

    /// Which of `instances` are running (they announced themselves recently).
    pub async fn alive(&self, instances: &[String], me: &str) -> Vec<String> {
        match self {
            Self::Memory(_) => instances.iter().filter(|i| *i == me).cloned().collect(),
            Self::Redis(r) => {
                let mut alive = Vec::new();
                let mut conn = r.conn.clone();
                for i in instances {
                    let exists: Result<bool, _> = r
                        .call(
                            redis::cmd("EXISTS")
                                .arg(format!("hv:instance:{i}"))
                                .query_async(&mut conn),
                        )
                        .await;
                    // When Redis cannot say, assume alive: never drop people on a blip.
                    if exists.unwrap_or(true) {
                        alive.push(i.clone());
                    }
                }
                alive
            }
        }
    }
}

impl Shared {
    /// Whether the shared state answers: always in memory; with Redis, a PING within the time
    /// limit and the bus subscribed.
    pub async fn healthy(&self) -> Result<(), Refusal> {
        match self {
            Self::Memory(_) => Ok(()),
            Self::Redis(r) => {
                let mut conn = r.conn.clone();
                let _: String = r.call(redis::cmd("PING").query_async(&mut conn)).await?;
                if !r.subscribed.load(Ordering::Acquire) {
                    return Err(Refusal::unavailable("not subscribed to the Redis bus"));
                }
                Ok(())
            }
        }
    }
}

impl Memory {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Visit, u64)>> {
        self.visits
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl RedisShared {
    /// `call` within the time limit: an error or no answer in time is `unavailable`.
    async fn call<T>(
        &self,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, Refusal> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(redis_down(e)),
            Err(_) => Err(Refusal::unavailable("Redis did not answer in time")),
        }
    }

    async fn read(&self, id: &str) -> Result<Option<String>, Refusal> {
        let mut conn = self.conn.clone();
        self.call(redis::cmd("GET").arg(visit_key(id)).query_async(&mut conn))
            .await
    }

    async fn visit_ids(&self) -> Result<Vec<String>, Refusal> {
        let mut conn = self.conn.clone();
        self.call(redis::cmd("SMEMBERS").arg(VISITS).query_async(&mut conn))
            .await
    }

    async fn announce(&self) {
        let mut conn = self.conn.clone();
        let _: Result<(), _> = self
            .call(
                redis::cmd("SET")
                    .arg(format!("hv:instance:{}", self.instance))
                    .arg(1)
                    .arg("PX")
                    .arg(INSTANCE_TTL.as_millis() as u64)
                    .query_async(&mut conn),
            )
            .await;
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, SetupError> {
        let subscribed = tokio::time::timeout(self.timeout, async {
            let mut pubsub = self.client.get_async_pubsub().await?;
            pubsub.subscribe(BUS).await?;
            Ok::<_, redis::RedisError>(pubsub)
        })
        .await
        .map_err(|_| SetupError::Redis("no answer in time".into()))?
        .map_err(|e| SetupError::Redis(e.to_string()))?;
        self.subscribed.store(true, Ordering::Release);
        Ok(subscribed)
    }

    /// After a gap in the subscription: every clinician connected here gets their visit's
    /// roster as it is now.
    async fn resync(&self, hub: &Hub) {
        let Ok(ids) = self.visit_ids().await else {
            return;
        };
        let mine = format!("{}:", self.instance);
        for id in ids {
            let Ok(Some(raw)) = self.read(&id).await else {
                continue;
            };
            let Ok(visit) = parse(&raw) else {
                continue;
            };
            if visit
                .members
                .iter()
                .any(|m| m.conn.as_deref().is_some_and(|c| c.starts_with(&mine)))
            {
                for out in visit.roster() {
                    hub.deliver(out);
                }
            }
        }
    }
}

/// A client for `url` with the user, password and TLS roots of `options`.
fn client(url: &str, options: &RedisOptions) -> Result<redis::Client, SetupError> {
    let mut info = url
        .into_connection_info()
        .map_err(|e| SetupError::Redis(format!("redis_url: {}", e.category())))?;
    if options.username.is_some() {
        info.redis.username.clone_from(&options.username);
    }
    if options.password.is_some() {
        info.redis.password.clone_from(&options.password);
    }
    let tls = matches!(info.addr, redis::ConnectionAddr::TcpTls { .. });
    let client = match &options.ca_pem {
        Some(ca) if tls => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(ca.clone()),
            },
        ),
        Some(_) => {
            return Err(SetupError::Redis(
                "redis_ca_file is for a rediss:// (TLS) redis_url".into(),
            ))
        }
        None => redis::Client::open(info),
    };
    client.map_err(|e| SetupError::Redis(e.to_string()))
}

fn parse(raw: &str) -> Result<Visit, Refusal> {
    serde_json::from_str(raw)
        .map_err(|e| Refusal::unavailable(format!("unreadable visit state: {e}")))
}

/// Delivers the bus's messages to this instance's connections; subscribes again if the
/// subscription drops, then resyncs the rosters of this instance's clinicians.
async fn listen(shared: Arc<RedisShared>, first: redis::aio::PubSub, hub: Arc<Hub>) {
    let mut pubsub = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let current = match pubsub.take() {
            Some(p) => p,
            None => match shared.subscribe().await {
                Ok(p) => {
                    tracing::info!("resubscribed to the Redis bus");
                    backoff = Duration::from_millis(100);
                    shared.resync(&hub).await;
                    p
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis bus unavailable; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    continue;
                }
            },
        };
        let mut messages = current.into_on_message();
        while let Some(message) = messages.next().await {
            let Ok(text) = message.get_payload::<String>() else {
                continue;
            };
            match serde_json::from_str::<Out>(&text) {
                Ok(out) => hub.deliver(out),
                Err(e) => tracing::warn!(error = %e, "unreadable message on the Redis bus"),
            }
        }
        shared.subscribed.store(false, Ordering::Release);
        tracing::warn!("the Redis bus subscription ended");
    }
}
