//! One logical connection to Redis (a multiplexed connection, or a Cluster
//! connection), re-made with backoff when it breaks, and the scripts it runs.
//!
//! Nothing here waits long: a broken connection is dropped at once, the next
//! call reconnects (within `connect_timeout`) unless the previous attempt
//! failed less than a backoff ago, in which case it fails at once.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::future::join_all;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How to reach Redis.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) max_backoff: Duration,
}

// One per store, built once: the size of its variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
pub(crate) enum Mode {
    Single(redis::Client),
    Cluster(ClusterClient),
}

#[derive(Clone)]
enum Conn {
    Single(MultiplexedConnection),
    Cluster(ClusterConnection),
}

struct Slot {
    conn: Option<(u64, Conn)>,
    generation: u64,
    failures: u32,
    retry_at: Option<Instant>,
}

pub(crate) struct Connection {
    mode: Mode,
    settings: Settings,
    /// Every script this connection runs, (re)loaded on NOSCRIPT.
    scripts: Vec<&'static str>,
    slot: Mutex<Slot>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field(
                "mode",
                &match self.mode {
                    Mode::Single(_) => "single",
                    Mode::Cluster(_) => "cluster",
                },
            )
            .field("settings", &self.settings)
            .finish()
    }
}

fn unavailable(msg: String) -> RedisError {
    RedisError::from((ErrorKind::Io, "Redis unavailable", msg))
}

fn timed_out(what: &str, d: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out after {d:?}"),
    ))
}

/// Whether an error means the connection itself is gone or stuck.
fn breaks_connection(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

impl Connection {
    pub(crate) fn new(mode: Mode, settings: Settings, scripts: Vec<&'static str>) -> Self {
        Connection {
            mode,
            settings,
            scripts,
            slot: Mutex::new(Slot {
                conn: None,
                generation: 0,
                failures: 0,
                retry_at: None,
            }),
        }
    }

    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self.mode, Mode::Cluster(_))
    }

    async fn connect(&self) -> RedisResult<Conn> {
        let d = self.settings.connect_timeout;
        let fut = async {
            match &self.mode {
                Mode::Single(client) => {
                    let config = redis::AsyncConnectionConfig::new()
                        .set_connection_timeout(Some(d))
                        .set_response_timeout(Some(self.settings.response_timeout));
                    client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map(Conn::Single)
                }
                Mode::Cluster(client) => client.get_async_connection().await.map(Conn::Cluster),
            }
        };
        match tokio::time::timeout(d, fut).await {
            Ok(r) => r,
            Err(_) => Err(timed_out("connecting to Redis", d)),
        }
    }

    async fn get(&self) -> RedisResult<(u64, Conn)> {
        let mut slot = self.slot.lock().await;
        if let Some((generation, conn)) = &slot.conn {
            return Ok((*generation, conn.clone()));
        }
        if let Some(at) = slot.retry_at {
            let now = Instant::now();
            if now < at {
                return Err(unavailable(format!(
                    "reconnecting in {:?}",
                    at.saturating_duration_since(now)
                )));
            }
        }
        match self.connect().await {
            Ok(conn) => {
                slot.generation += 1;
                slot.failures = 0;
                slot.retry_at = None;
                slot.conn = Some((slot.generation, conn.clone()));
                Ok((slot.generation, conn))
            }
            Err(e) => {
                slot.failures = slot.failures.saturating_add(1);
                let backoff = Duration::from_millis(25)
                    .saturating_mul(1 << slot.failures.min(16))
                    .min(self.settings.max_backoff);
                slot.retry_at = Some(Instant::now() + backoff);
                Err(e)
            }
        }
    }

    async fn broken(&self, generation: u64) {
        let mut slot = self.slot.lock().await;
        if slot.conn.as_ref().is_some_and(|(g, _)| *g == generation) {
            slot.conn = None;
        }
    }

    /// Drops the connection (if any): the next use makes a new one. For a
    /// connection to a server that another connection found gone.
    pub(crate) async fn forget(&self) {
        self.slot.lock().await.conn = None;
    }

    /// Whether an error means the connection itself is gone or stuck.
    pub(crate) fn breaks(e: &RedisError) -> bool {
        breaks_connection(e)
    }

    /// Connects now (for an eager build).
    pub(crate) async fn ensure(&self) -> RedisResult<()> {
        self.get().await.map(|_| ())
    }

    /// Loads every script (into every master of a Cluster).
    pub(crate) async fn load_scripts(&self) -> RedisResult<()> {
        for s in &self.scripts {
            let mut cmd = redis::cmd("SCRIPT");
            cmd.arg("LOAD").arg(*s);
            let v = self.attempt_one(&cmd).await?;
            if let Value::ServerError(e) = v {
                return Err(e.into());
            }
        }
        Ok(())
    }

    async fn attempt_one(&self, cmd: &Cmd) -> RedisResult<Value> {
        let (generation, conn) = self.get().await?;
        let d = self.settings.response_timeout;
        let r = match conn {
            Conn::Single(mut c) => tokio::time::timeout(d, c.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out("Redis command", d))),
            Conn::Cluster(mut c) => tokio::time::timeout(d, c.req_packed_command(cmd))
                .await
                .unwrap_or_else(|_| Err(timed_out("Redis command", d))),
        };
        if let Err(e) = &r {
            if breaks_connection(e) {
                self.broken(generation).await;
            }
        }
        r
    }

    /// Runs commands (each with the Cluster slot of its keys) in one round
    /// trip: one pipeline, or in a Cluster one pipeline per slot, all sent at
    /// once. A reply may be a [`Value::ServerError`]. Reloads the scripts and
    /// tries once more if Redis forgot them (restart, failover).
    pub(crate) async fn query_many(&self, cmds: &[(u16, Cmd)]) -> RedisResult<Vec<Value>> {
        let first = self.attempt_many(cmds).await;
        let reload = match &first {
            Ok(values) => values.iter().any(is_noscript),
            Err(e) => e.kind() == ErrorKind::Server(redis::ServerErrorKind::NoScript),
        };
        if !reload {
            return first;
        }
        self.load_scripts().await?;
        self.attempt_many(cmds).await
    }

    /// One command, as [`query_many`](Self::query_many).
    pub(crate) async fn query(&self, slot: u16, cmd: Cmd) -> RedisResult<Value> {
        let mut v = self.query_many(&[(slot, cmd)]).await?;
        v.pop()
            .ok_or_else(|| RedisError::from((ErrorKind::Parse, "no reply")))
    }

    async fn attempt_many(&self, cmds: &[(u16, Cmd)]) -> RedisResult<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        let (generation, conn) = self.get().await?;
        let d = self.settings.response_timeout;
        let r = match conn {
            Conn::Single(mut c) => {
                let mut pipe = redis::pipe();
                for (_, cmd) in cmds {
                    pipe.add_command(cmd.clone());
                }
                tokio::time::timeout(d, c.req_packed_commands(&pipe, 0, cmds.len()))
                    .await
                    .unwrap_or_else(|_| Err(timed_out("Redis pipeline", d)))
            }
            Conn::Cluster(c) => tokio::time::timeout(d, cluster_many(c, cmds))
                .await
                .unwrap_or_else(|_| Err(timed_out("Redis pipeline", d))),
        };
        if let Err(e) = &r {
            if breaks_connection(e) {
                self.broken(generation).await;
            }
        }
        r
    }

    /// Every key matching `pattern` (`SCAN` on every master of a Cluster).
    pub(crate) async fn scan(&self, pattern: &str) -> RedisResult<Vec<String>> {
        let (generation, conn) = self.get().await?;
        let d = self.settings.response_timeout;
        let r = async {
            match conn {
                Conn::Single(c) => {
                    scan_node(pattern, d, |cmd| {
                        let mut c = c.clone();
                        async move { c.req_packed_command(&cmd).await }
                    })
                    .await
                }
                Conn::Cluster(mut c) => {
                    let nodes = tokio::time::timeout(
                        d,
                        c.route_command(
                            redis::cmd("CLUSTER").arg("NODES").clone(),
                            RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random),
                        ),
                    )
                    .await
                    .unwrap_or_else(|_| Err(timed_out("CLUSTER NODES", d)))?;
                    let text: String = redis::from_redis_value(nodes)?;
                    let mut keys = Vec::new();
                    for (host, port) in masters(&text) {
                        let c = c.clone();
                        let found = scan_node(pattern, d, |cmd| {
                            let mut c = c.clone();
                            let host = host.clone();
                            async move {
                                c.route_command(
                                    cmd,
                                    RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                                        host,
                                        port,
                                    }),
                                )
                                .await
                            }
                        })
                        .await?;
                        keys.extend(found);
                    }
                    Ok(keys)
                }
            }
        }
        .await;
        if let Err(e) = &r {
            if breaks_connection(e) {
                self.broken(generation).await;
            }
        }
        r
    }
}

async fn scan_node<F, Fut>(pattern: &str, d: Duration, mut send: F) -> RedisResult<Vec<String>>
where
    F: FnMut(Cmd) -> Fut,
    Fut: std::future::Future<Output = RedisResult<Value>>,
{
    let mut cursor: u64 = 0;
    let mut keys = Vec::new();
    loop {
        let mut cmd = redis::cmd("SCAN");
        cmd.arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(500);
        let v = tokio::time::timeout(d, send(cmd))
            .await
            .unwrap_or_else(|_| Err(timed_out("SCAN", d)))?;
        let (next, batch): (u64, Vec<String>) = redis::from_redis_value(v)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// `(host, port)` of every master that is not failing, from `CLUSTER NODES`.
fn masters(nodes: &str) -> Vec<(String, u16)> {
    let mut out = Vec::new();
    for line in nodes.lines() {
        let mut fields = line.split_whitespace();
        let (Some(_id), Some(addr), Some(flags)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        let addr = addr.split(['@', ',']).next().unwrap_or("");
        if let Some((host, port)) = addr.rsplit_once(':') {
            if let Ok(port) = port.parse() {
                out.push((host.trim_matches(['[', ']']).to_string(), port));
            }
        }
    }
    out
}

/// One pipeline per slot, all in flight at once; replies back in order.
async fn cluster_many(c: ClusterConnection, cmds: &[(u16, Cmd)]) -> RedisResult<Vec<Value>> {
    let mut groups: BTreeMap<u16, Vec<usize>> = BTreeMap::new();
    for (i, (slot, _)) in cmds.iter().enumerate() {
        groups.entry(*slot).or_default().push(i);
    }
    let runs = groups.into_values().map(|idx| {
        let mut c = c.clone();
        async move {
            let mut pipe = redis::pipe();
            for &i in &idx {
                pipe.add_command(cmds[i].1.clone());
            }
            let r = c.req_packed_commands(&pipe, 0, idx.len()).await;
            (idx, r)
        }
    });
    let mut out: Vec<Option<Value>> = vec![None; cmds.len()];
    for (idx, r) in join_all(runs).await {
        let values = r?;
        for (i, v) in idx.into_iter().zip(values) {
            out[i] = Some(v);
        }
    }
    out.into_iter()
        .map(|v| v.ok_or_else(|| RedisError::from((ErrorKind::Parse, "missing reply"))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::masters;

    #[test]
    fn cluster_nodes_masters() {
        let text = "\
07c3 127.0.0.1:30004@40004 replica e7d1 0 1426238317239 4 connected
67ed 127.0.0.1:30002@40002,host2 master - 0 1426238316232 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1426238318243 3 connected 10923-16383
e7d1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
";
        assert_eq!(
            masters(text),
            vec![
                ("127.0.0.1".to_string(), 30002),
                ("127.0.0.1".to_string(), 30001)
            ]
        );
    }
}
