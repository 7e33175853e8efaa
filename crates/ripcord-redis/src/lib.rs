//! # ripcord-redis
//!
//! A Redis [`StateStore`](ripcord::store::StateStore) for ripcord: one circuit
//! breaker for a whole fleet of service instances, with **no Redis round trip
//! on the hot path**, and a fleet-wide rate limiter.
//!
//! A breaker linked to a [`Fleet`](ripcord::store::Fleet) on a [`RedisStore`]
//! still decides every call from local atomics. What the fleet costs Redis
//! follows what changed, not instances × breakers:
//!
//! - every `sync_interval` (default 100 ms) each instance sends one pipelined
//!   round trip: its heartbeat, and the windows of the breakers that saw new
//!   outcomes since their last report, up to 256 breakers per `EVALSHA` (per
//!   slot on a Cluster). A breaker with nothing new costs nothing; an idle
//!   instance costs one heartbeat script;
//! - transitions are compare-and-sets on a shared epoch, on a connection of
//!   their own (never behind a sync), published on pub/sub so every instance
//!   applies them within milliseconds; half-open probe permits come from one
//!   shared counter;
//! - a batched reconciliation pass (every 60 s by default: one `HMGET` per
//!   breaker when nothing changed, 512 breakers per sync interval) repairs
//!   missed notices and keeps the keys of idle breakers alive until their
//!   TTL should lapse.
//!
//! What one Redis core carries (measured with the `fleet_scale` example, see
//! the README): idle breakers cost one `HMGET` each per reconciliation pass;
//! each breaker that saw calls costs one report per sync interval, about
//! 30 µs of redis-server CPU with ten instances, so a core carries about
//! 30,000 reports a second — at the default 100 ms interval, 3,000 active
//! breakers summed over the instances (10 instances with 300 active each),
//! however many are idle. A Redis Cluster multiplies that
//! by its masters (breakers spread by hash tag); a longer `sync_interval`
//! raises it in proportion.
//!
//! ```no_run
//! use ripcord::store::Fleet;
//! use ripcord::CircuitBreaker;
//! use ripcord_redis::RedisStore;
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::builder("redis://127.0.0.1:6379")
//!     .key_prefix("checkout")
//!     .build()
//!     .await?;
//! let fleet = Fleet::builder(store).build()?;
//! let breaker = CircuitBreaker::builder("payments")
//!     .failure_rate(0.5)
//!     .minimum_calls(20)
//!     .half_open_calls(3) // for the whole fleet, not per instance
//!     .fleet(&fleet)
//!     .build()?;
//! fleet.sync_now().await; // start in the fleet's current state
//!
//! let paid = breaker.call(|| async { Ok::<_, std::io::Error>("paid") }).await;
//! # let _ = paid; Ok(()) }
//! ```
//!
//! Without a server at hand, the same code runs on ripcord's
//! [`MemoryStore`](ripcord::store::MemoryStore), whose semantics the Lua
//! scripts mirror exactly. What is specific to Redis is plain data:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let store = ripcord_redis::RedisStore::builder("redis://127.0.0.1:1")
//!     .key_prefix("checkout")
//!     .connect_lazily() // no server needed until first use
//!     .build()
//!     .await
//!     .unwrap();
//! assert_eq!(store.state_key("payments"), "checkout:{payments}:state");
//! assert_eq!(store.reports_key("payments"), "checkout:{payments}:reports");
//! assert_eq!(store.channel(), "checkout:events");
//! # }
//! ```
//!
//! ## Keys
//!
//! Every key of a breaker named `name` is `<prefix>:{<name>}:<part>`; the
//! braces are a Redis Cluster hash tag, so all of them live in one slot and
//! one script can update them atomically.
//!
//! | key | type | content |
//! | --- | --- | --- |
//! | `<prefix>:{<name>}:state` | hash | `v` (schema version, `1`), `state` (`closed`, `open`, `half_open`, `forced_open`, `disabled`, `metrics_only`), `epoch`, `open_until` and `override_until` (µs on the server's clock; 0 = none), `granted`, `successes`, `failures` (this half-open period's probes) |
//! | `<prefix>:{<name>}:reports` | hash | one field per instance: `"<epoch> <calls> <failures> <slow> <at µs> <stale after µs>"` |
//! | `<prefix>:instances` | hash | one field per instance: its last heartbeat, `"<at µs> <stale after µs>"` |
//! | `<prefix>:{<name>}:gcra` | hash | a [`RedisRateLimiter`]: `v`, `origin` (Unix seconds), `tat` (ns since origin) |
//! | `<prefix>:{<scope>}:fault` | string, with a TTL | a [fleet-wide fault](#fleet-wide-faults): its [`ChaosConfig`](ripcord::ChaosConfig) as JSON |
//! | `<prefix>:fault-audit` | list | fault changes, newest first, the last 1,000: `{"at": <unix ms>, "scope", "actor", "action": "set" or "clear", "config", "ttl_ms"}` |
//! | `<prefix>:events` | channel | transitions: `1,<state>,<epoch>,<open µs>,<calls>,<failures>,<slow>,<instances>,<override µs or -1>,<manual>;` then name, actor and reason as `<len>:<bytes>` |
//!
//! (The empty breaker name is spelled `\0` in keys, so its hash tag is never
//! empty.) A breaker's keys live for the
//! [`Fleet`](ripcord::store::FleetBuilder::ttl)'s `ttl` (default 10 minutes)
//! after the last instance that has the breaker refreshed them (a sync or a
//! reconciliation pass does, every quarter of the TTL), so breakers no
//! instance has any more leave nothing behind. Time inside the scripts is
//! the server's (`TIME`), so instances' clocks never need to agree.
//!
//! ## Semantics
//!
//! One Lua script per operation — `sync` and `reconcile` (many breakers per
//! run), `heartbeat`, `transition`, `acquire_probe`, `report_probe`, and a
//! read-only `view` for `list` — each a line-by-line mirror of
//! [`MemoryStore`](ripcord::store::MemoryStore): window reports of the
//! current epoch count while fresh (`stale_after`) or while their instance's
//! heartbeat is; a transition
//! applies only from the expected epoch (or unconditionally for a manual
//! override, which may expire back to closed at the next operation); an open
//! breaker may not move to half-open before the store's own `open_until`; at
//! most `limit` probe permits per half-open epoch; probe verdicts close or
//! re-open the breaker. Two additions:
//!
//! - **Lost data.** If Redis lost the keys (restart without persistence,
//!   eviction) while instances still know epoch *e*, the next `sync` or
//!   `transition` from them resumes the breaker at epoch *e* instead of 0, so
//!   the fleet re-converges without a burst of transitions.
//! - **Corrupt values.** A key of the wrong type, a missing or malformed
//!   field, or another schema version is never an error for the whole
//!   pipeline: the script deletes it, starts a closed state in a new epoch,
//!   publishes that as a notice from actor `store` (every instance reports it
//!   as an audit event), and says so in its reply; the store counts it
//!   ([`RedisStore::corruptions`]) and broadcasts a
//!   [`StoreError::Corrupt`](ripcord::store::StoreError::Corrupt)
//!   ([`RedisStore::subscribe_corruptions`]). A malformed report entry is
//!   dropped the same way. Nothing in Rust panics on a bad reply.
//!
//! ## Faults
//!
//! No call ever waits on Redis: the fleet task does, bounded by the
//! [`Fleet`](ripcord::store::FleetBuilder::timeout) timeout and this store's
//! [`response_timeout`](RedisStoreBuilder::response_timeout). A broken
//! connection is dropped at once and re-made on the next use, with a backoff
//! (50 ms doubling to [`max_reconnect_backoff`](RedisStoreBuilder::max_reconnect_backoff))
//! during which store calls fail immediately. The pub/sub listener reconnects
//! the same way and pings an idle subscription every 3 s. Scripts are reloaded
//! when Redis forgot them (`NOSCRIPT` after a restart or failover).
//!
//! To rehearse these faults, put a [`relay::Relay`] between the instances and
//! Redis: a loopback TCP relay that adds latency, blackholes traffic, resets
//! open connections or refuses new ones on command, and heals.
//!
//! ## Fleet-wide faults
//!
//! A fault drill switched on through the store reaches every instance on the
//! prefix, lapses by itself and is audited, like a breaker override:
//! [`RedisStore::set_fault`] stores a validated
//! [`ChaosConfig`](ripcord::ChaosConfig) for a scope (a route, a breaker) with
//! a TTL of at most one day and appends who did it to a capped audit list;
//! [`RedisStore::clear_fault`] removes it early. Instances read
//! [`RedisStore::faults`] — many scopes in one round trip, each with the time
//! left — or [`RedisStore::list_faults`]; [`RedisStore::fault_audit`] lists
//! the changes, newest first. The scope is the key's hash tag, so this works
//! on a Cluster. A value that is not a valid fault is reported as a
//! corruption and read as no fault.
//!
//! ## Redis Cluster
//!
//! [`RedisStoreBuilder::cluster`] uses redis-rs' Cluster client: a sync or a
//! reconciliation pass groups its breakers by slot (one script may only touch
//! one slot's keys), one script run per slot group, all pipelines in flight at
//! once (one round trip in time); the heartbeat is its own script (another
//! slot), sent every third of its staleness while syncs carry reports.
//! Notices use classic pub/sub, which a Cluster delivers to subscribers on
//! every node.
//!
//! ## Features
//!
//! - `tls`: `rediss://` URLs (rustls with the ring provider and the system's
//!   root certificates, or your own with
//!   `RedisStoreBuilder::tls_root_certificates`).
//!
//! URLs carry credentials as usual: `redis://user:password@host:6379/0`, or
//! `redis://:password@host` for `requirepass`. An ACL user needs the keys and
//! channel under its prefix and the commands the scripts run, e.g.
//! `ACL SETUSER fleet on >secret ~ripcord:* &ripcord:* +@all` (tested), or
//! more narrowly `+evalsha +script|load +scan +subscribe +ping +cluster|nodes`
//! plus `+time +type +hgetall +hset +hdel +del +pexpire +publish`.

#![cfg_attr(docsrs, feature(doc_cfg))]
#![doc(test(attr(deny(warnings))))]

mod connection;
mod error;
mod keys;
pub mod rate_limiter;
pub mod relay;
mod store;

pub use error::BuildError;
pub use rate_limiter::{OnUnavailable, RedisRateLimiter, RedisRateLimiterBuilder};
pub use store::{FaultAction, FaultAudit, FaultError, FleetFault, RedisStore, RedisStoreBuilder};
