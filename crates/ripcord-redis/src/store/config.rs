//! [`RedisStoreBuilder`]: connection, key prefix, timeouts.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

use super::{listener, Inner, RedisStore};
use crate::connection::{Connection, Mode, Settings};
use crate::error::{redact, BuildError};
use crate::keys::Keys;
use crate::store::scripts::Scripts;

/// Configures a [`RedisStore`].
///
/// ```no_run
/// use ripcord_redis::RedisStore;
/// use std::time::Duration;
///
/// # #[tokio::main] async fn main() -> Result<(), ripcord_redis::BuildError> {
/// let store = RedisStore::builder("redis://app:secret@cache.internal:6379")
///     .key_prefix("checkout")
///     .response_timeout(Duration::from_millis(200))
///     .build()
///     .await?;
/// # let _ = store; Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct RedisStoreBuilder {
    url: String,
    cluster: Option<Vec<String>>,
    prefix: String,
    connect_timeout: Duration,
    response_timeout: Duration,
    max_backoff: Duration,
    lazy: bool,
    pubsub: bool,
    notice_capacity: usize,
    #[cfg(feature = "tls")]
    root_certs: Option<Vec<u8>>,
}

impl RedisStoreBuilder {
    pub(crate) fn new(url: &str) -> Self {
        RedisStoreBuilder {
            url: url.to_string(),
            cluster: None,
            prefix: "ripcord".to_string(),
            connect_timeout: Duration::from_millis(500),
            response_timeout: Duration::from_millis(500),
            max_backoff: Duration::from_millis(500),
            lazy: false,
            pubsub: true,
            notice_capacity: 1024,
            #[cfg(feature = "tls")]
            root_certs: None,
        }
    }

    /// For `rediss://`: trust these root certificates (PEM) instead of the
    /// system's, e.g. a private CA (feature `tls`).
    #[cfg(feature = "tls")]
    pub fn tls_root_certificates(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.root_certs = Some(pem.into());
        self
    }

    /// The first part of every key and of the channel (default `ripcord`):
    /// keys are `<prefix>:{<breaker name>}:<part>`, the channel
    /// `<prefix>:events`. Fleets with different prefixes share nothing.
    pub fn key_prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_string();
        self
    }

    /// Talks to a Redis Cluster: the builder's URL and `seeds` are its seed
    /// nodes (any reachable one is enough; `seeds` may be empty). Commands
    /// follow the cluster's slot map; pub/sub listens on one seed node at a
    /// time (classic pub/sub reaches every node of a cluster).
    pub fn cluster<I, S>(mut self, seeds: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.cluster = Some(seeds.into_iter().map(Into::into).collect());
        self
    }

    /// How long connecting may take (default 500 ms).
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.connect_timeout = d;
        self
    }

    /// How long one command or pipeline may take before the connection is
    /// declared broken and re-made (default 500 ms). Keep it at or below the
    /// [`Fleet`](ripcord::store::Fleet)'s timeout.
    pub fn response_timeout(mut self, d: Duration) -> Self {
        self.response_timeout = d;
        self
    }

    /// The longest pause between reconnection attempts (default 500 ms; the
    /// pause starts at 50 ms and doubles). While it runs, store calls fail at
    /// once instead of waiting.
    pub fn max_reconnect_backoff(mut self, d: Duration) -> Self {
        self.max_backoff = d;
        self
    }

    /// Builds without connecting: the store connects on first use, so a
    /// process can start while Redis is down (its breakers then decide
    /// alone until Redis answers).
    pub fn connect_lazily(mut self) -> Self {
        self.lazy = true;
        self
    }

    /// Whether [`subscribe`](ripcord::store::StateStore::subscribe) listens
    /// for transitions on pub/sub (default true). Without it, instances learn
    /// of transitions at their next sync.
    pub fn pubsub(mut self, on: bool) -> Self {
        self.pubsub = on;
        self
    }

    /// Capacity of the in-process broadcast of notices (default 1024); a
    /// subscriber that falls further behind re-syncs.
    pub fn notice_capacity(mut self, n: usize) -> Self {
        self.notice_capacity = n;
        self
    }

    fn client(&self, url: &str) -> Result<redis::Client, BuildError> {
        if url.starts_with("rediss://") && !cfg!(feature = "tls") {
            return Err(BuildError::TlsDisabled { url: redact(url) });
        }
        let invalid = |source| BuildError::InvalidUrl {
            url: redact(url),
            source,
        };
        #[cfg(feature = "tls")]
        if let (Some(pem), true) = (&self.root_certs, url.starts_with("rediss://")) {
            return redis::Client::build_with_tls(url, self.certificates(pem)).map_err(invalid);
        }
        redis::Client::open(url).map_err(invalid)
    }

    #[cfg(feature = "tls")]
    fn certificates(&self, pem: &[u8]) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(pem.to_vec()),
        }
    }

    /// Connects (unless [`connect_lazily`](Self::connect_lazily)) and loads
    /// the scripts. Must run inside a tokio runtime.
    pub async fn build(self) -> Result<RedisStore, BuildError> {
        if self.prefix.is_empty()
            || self
                .prefix
                .chars()
                .any(|c| c == '{' || c == '}' || c.is_whitespace())
        {
            return Err(BuildError::InvalidPrefix(self.prefix));
        }
        for (option, d) in [
            ("connect_timeout", self.connect_timeout),
            ("response_timeout", self.response_timeout),
            ("max_reconnect_backoff", self.max_backoff),
        ] {
            if d.is_zero() {
                return Err(BuildError::InvalidOption {
                    option,
                    expected: "a duration greater than zero",
                });
            }
        }
        if self.notice_capacity == 0 {
            return Err(BuildError::InvalidOption {
                option: "notice_capacity",
                expected: "at least 1",
            });
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|_| BuildError::InvalidOption {
                option: "runtime",
                expected: "to be built inside a tokio runtime",
            })?;
        let settings = Settings {
            connect_timeout: self.connect_timeout,
            response_timeout: self.response_timeout,
            max_backoff: self.max_backoff,
        };
        let scripts = Scripts::new();
        let (mode, pubsub_clients) = match &self.cluster {
            None => {
                let client = self.client(&self.url)?;
                (Mode::Single(client.clone()), vec![client])
            }
            Some(seeds) => {
                let urls: Vec<&str> = std::iter::once(self.url.as_str())
                    .chain(seeds.iter().map(String::as_str))
                    .collect();
                let mut clients = Vec::with_capacity(urls.len());
                for u in &urls {
                    clients.push(self.client(u)?);
                }
                let cluster = redis::cluster::ClusterClient::builder(urls.iter().copied());
                #[cfg(feature = "tls")]
                let cluster = match &self.root_certs {
                    Some(pem) => cluster.certs(self.certificates(pem)),
                    None => cluster,
                };
                let cluster = cluster
                    .connection_timeout(self.connect_timeout)
                    .response_timeout(self.response_timeout)
                    .retries(2)
                    .min_retry_wait(10)
                    .max_retry_wait(100)
                    .build()
                    .map_err(|source| BuildError::InvalidUrl {
                        url: redact(&self.url),
                        source,
                    })?;
                (Mode::Cluster(cluster), clients)
            }
        };
        let conn = Connection::new(mode.clone(), settings.clone(), scripts.sources());
        // Syncs and reconciliation passes have their own connection, so a
        // transition never waits behind them on the wire.
        let bulk = Connection::new(mode, settings.clone(), scripts.sources());
        if !self.lazy {
            if let Err(e) = conn.ensure().await {
                return Err(if e.is_timeout() {
                    BuildError::ConnectTimeout(self.connect_timeout)
                } else {
                    BuildError::Connect(e)
                });
            }
            conn.load_scripts().await.map_err(BuildError::LoadScripts)?;
        }
        let keys = Keys::new(&self.prefix);
        Ok(RedisStore {
            inner: Arc::new(Inner {
                channel: keys.channel(),
                keys,
                conn,
                bulk,
                live: Mutex::new(Vec::new()),
                last_beat: Mutex::new(None),
                scripts,
                settings,
                url: redact(&self.url),
                pubsub: self.pubsub,
                notices: broadcast::channel(self.notice_capacity).0,
                listener: Mutex::new(None),
                listener_stats: Arc::new(listener::Stats::default()),
                pubsub_clients,
                runtime,
                corruptions: AtomicU64::new(0),
                corrupt_tx: broadcast::channel(64).0,
            }),
        })
    }
}
