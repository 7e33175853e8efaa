//! Sharing breaker state across a fleet of instances.
//!
//! A breaker linked to a [`Fleet`] still decides every call locally, from
//! atomics; background tasks per process talk to the [`StateStore`], and what
//! they cost the store follows what changed, not instances × breakers:
//!
//! - every `sync_interval` (default 100 ms) one [`sync`](StateStore::sync)
//!   carries this instance's heartbeat and the windows of the breakers that
//!   saw new outcomes (or whose window moved) since their last report, and
//!   brings back their fleet-wide windows and states; trip rules then judge
//!   the fleet-wide window. A breaker with nothing new costs nothing; an idle
//!   instance costs one heartbeat per interval;
//! - a transition is a compare-and-set on the shared fleet epoch, published to
//!   every instance at once. Transitions, probe requests and overrides run on
//!   their own lane, never behind a sync;
//! - a slower [`reconcile`](StateStore::reconcile) pass (default every 60 s,
//!   in batches; every sync interval without pub/sub; at once after the push
//!   channel reconnected) repairs lost notices and keeps the keys of idle
//!   breakers alive until their TTL should lapse;
//! - half-open probes come from one shared counter, so the whole fleet sends
//!   `half_open_calls` probes, and their verdict closes or re-opens the
//!   breaker everywhere;
//! - manual overrides (force open, disable, metrics only, reset) apply to the
//!   fleet, optionally with an expiry, and every instance receives them;
//! - a new instance starts in the fleet's current state;
//! - optionally ([`FleetBuilder::quorum`]), a trip opens the fleet only when
//!   enough instances see failures; otherwise only the instance that sees them
//!   opens, so one instance with a broken network path cannot cut off the
//!   fleet. Every transition request also names the state it expects to leave,
//!   so such a locally open instance never moves the fleet.
//!
//! An instance's window counts fleet-wide while its report is fresh
//! ([`SyncEntry::stale_after`]) or while the instance itself is alive (its
//! heartbeat is fresh): an idle breaker's last report keeps counting without
//! being repeated.
//!
//! If the store is slow or down, no call waits on it: the breaker keeps
//! deciding from local data, reports [`StoreDegraded`](crate::EventKind::StoreDegraded),
//! and re-joins the fleet (every window reported, every state read) when the
//! store answers again.
//!
//! [`MemoryStore`] keeps the shared state in process (and lets a test run a
//! simulated fleet); `ripcord-redis` provides a Redis store.

pub(crate) mod fleet;
mod memory;

pub use fleet::{Fleet, FleetBuilder};
pub(crate) use fleet::{Link, Member};
pub use memory::MemoryStore;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use crate::State;

/// A boxed future, as returned by [`StateStore`] methods.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Counts of one window, as reported to and returned by a store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowTotals {
    /// Calls counted.
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Slow calls.
    pub slow: u64,
}

impl WindowTotals {
    /// `self − other`, saturating at zero per field.
    pub fn saturating_sub(self, other: WindowTotals) -> WindowTotals {
        WindowTotals {
            calls: self.calls.saturating_sub(other.calls),
            failures: self.failures.saturating_sub(other.failures),
            slow: self.slow.saturating_sub(other.slow),
        }
    }
}

/// What one instance reports about one breaker at each sync.
#[derive(Debug, Clone, PartialEq)]
pub struct SyncEntry {
    /// The breaker's name (the fleet-wide key).
    pub name: String,
    /// The fleet epoch this instance's window belongs to.
    pub fleet_epoch: u64,
    /// This instance's current window (absolute, not a delta: a lost or
    /// repeated sync never double-counts).
    pub window: WindowTotals,
    /// How long after this report the window counts by itself; after that it
    /// counts only while the instance's [`Heartbeat`] is fresh (an idle
    /// breaker is not re-reported; an instance that left stops counting).
    pub stale_after: Duration,
    /// Whether to refresh the TTL of the breaker's keys with this report.
    pub touch: bool,
    /// How long the breaker's keys live without any report.
    pub ttl: Duration,
}

/// The instance that syncs: every [`sync`](StateStore::sync) is also its
/// heartbeat.
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// The instance id.
    pub instance: String,
    /// How long after this heartbeat the instance counts as gone (its
    /// reports then stop counting unless they are fresh themselves).
    pub stale_after: Duration,
    /// How long the heartbeat record lives without a new heartbeat.
    pub ttl: Duration,
    /// False when this sync reports every breaker the instance has: their
    /// fresh reports speak for it, and a store may skip the heartbeat.
    pub required: bool,
}

/// One breaker in a [`reconcile`](StateStore::reconcile) pass.
#[derive(Debug, Clone, PartialEq)]
pub struct ReconcileEntry {
    /// The breaker's name.
    pub name: String,
    /// The fleet epoch this instance knows. A store that lost the breaker
    /// resumes it from this epoch (as [`sync`](StateStore::sync) does).
    pub known_epoch: u64,
    /// Whether to refresh the TTL of the breaker's keys (an idle breaker's
    /// keys stay alive while an instance still has the breaker).
    pub touch: bool,
    /// The TTL to refresh to.
    pub ttl: Duration,
}

/// The fleet's view of one breaker.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetView {
    /// The breaker's name.
    pub name: String,
    /// The fleet-wide state.
    pub state: State,
    /// The fleet epoch (bumped by every fleet-wide transition).
    pub epoch: u64,
    /// While open: how long until probes are allowed.
    pub open_remaining: Duration,
    /// The fleet-wide window of this epoch: the sum of every live instance's
    /// window, including the caller's.
    pub window: WindowTotals,
    /// Live instances that reported a window in this epoch.
    pub instances: u32,
    /// A manual override in force, and when it lapses (`None`: until reset).
    pub override_expires_in: Option<Duration>,
}

impl FleetView {
    /// The view of a breaker the store has never seen: closed, epoch 0.
    pub fn new_closed(name: &str) -> FleetView {
        FleetView {
            name: name.to_string(),
            state: State::Closed,
            epoch: 0,
            open_remaining: Duration::ZERO,
            window: WindowTotals::default(),
            instances: 0,
            override_expires_in: None,
        }
    }
}

/// A request to change a breaker's fleet-wide state.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRequest {
    /// The breaker's name.
    pub name: String,
    /// Apply only if the fleet epoch is still this one (compare-and-set);
    /// `None` applies unconditionally (a manual override).
    pub from_epoch: Option<u64>,
    /// With `from_epoch`: apply only if the fleet is also still in this state.
    pub from_state: Option<State>,
    /// For a trip (closed → open): open fleet-wide only if at least this many
    /// live instances (the requester included) report failures or slow calls
    /// in the current epoch; 0 for no quorum.
    pub quorum: u32,
    /// The state to enter.
    pub to: State,
    /// For `Open`: how long to stay open.
    pub open_for: Duration,
    /// For a manual override: when it lapses by itself (back to Closed).
    pub expires_in: Option<Duration>,
    /// Who asked (instance id, operator), for the audit trail.
    pub actor: String,
    /// Why, for the audit trail.
    pub reason: String,
    /// How long the breaker's keys live without any report.
    pub ttl: Duration,
}

/// The answer to a [`TransitionRequest`].
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionResult {
    /// Whether this request changed the state (false: the epoch or state had
    /// moved on, or the quorum was not met).
    pub applied: bool,
    /// Refused only because too few instances see failures (see
    /// [`TransitionRequest::quorum`]).
    pub quorum_refused: bool,
    /// The fleet's view after the request.
    pub view: FleetView,
}

/// A half-open probe's verdict, reported to the store.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeReport {
    /// The breaker's name.
    pub name: String,
    /// The half-open fleet epoch the probe was admitted in.
    pub epoch: u64,
    /// Whether it succeeded.
    pub success: bool,
    /// Successes that close the breaker.
    pub successes_needed: u32,
    /// Probes in a half-open period.
    pub probes: u32,
    /// How long to stay open if the verdict re-opens the breaker.
    pub open_for: Duration,
    /// The reporting instance.
    pub actor: String,
    /// How long the breaker's keys live without any report.
    pub ttl: Duration,
}

/// A fleet-wide state change, as published to every instance.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetNotice {
    /// The new view.
    pub view: FleetView,
    /// Who caused it.
    pub actor: String,
    /// Why.
    pub reason: String,
    /// Whether it was a manual override (an audit event on every instance).
    pub manual: bool,
}

/// The store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The store is unreachable or the connection failed.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// The store did not answer within the sync timeout.
    #[error("state store did not answer within {0:?}")]
    Timeout(Duration),
    /// A value in the store was not what ripcord writes (foreign or corrupt);
    /// it is reported and overwritten or ignored.
    #[error("corrupt value in the state store at `{key}`: {detail}")]
    Corrupt {
        /// The key.
        key: String,
        /// What was wrong.
        detail: String,
    },
}

/// Where a fleet of breakers keeps its shared state.
///
/// Implementations must be atomic per breaker: each method is one
/// compare-and-set or merge on that breaker's keys (a Lua script for Redis, a
/// lock for [`MemoryStore`]). Time inside the store is the store's own clock;
/// durations cross the boundary, never instants.
pub trait StateStore: Send + Sync + fmt::Debug + 'static {
    /// The instance's heartbeat, and its reports of the windows in
    /// `entries` (often none: only breakers with news are reported); returns
    /// the fleet's views of those breakers, in the same order, for many
    /// breakers in few round trips (one script run per store node for
    /// Redis). Also lapses expired overrides of those breakers.
    fn sync<'a>(
        &'a self,
        heartbeat: &'a Heartbeat,
        entries: &'a [SyncEntry],
    ) -> BoxFuture<'a, Result<Vec<FleetView>, StoreError>>;

    /// Checks many breakers at once against the epochs this instance knows:
    /// returns, in the same order, the view of each breaker whose fleet epoch
    /// is not `known_epoch` (a notice was missed, or an override lapsed here)
    /// and `None` for the others, which cost the store one read each.
    /// Refreshes the keys' TTL where asked. Writes no report.
    fn reconcile<'a>(
        &'a self,
        entries: &'a [ReconcileEntry],
    ) -> BoxFuture<'a, Result<Vec<Option<FleetView>>, StoreError>>;

    /// Compare-and-set of a breaker's fleet state; publishes the change.
    fn transition<'a>(
        &'a self,
        request: &'a TransitionRequest,
    ) -> BoxFuture<'a, Result<TransitionResult, StoreError>>;

    /// Takes one half-open probe permit of `epoch` from the shared counter
    /// (at most `limit` per epoch, fleet-wide). Returns whether one was given.
    fn acquire_probe<'a>(
        &'a self,
        name: &'a str,
        epoch: u64,
        limit: u32,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Records a probe's verdict; closes or re-opens the breaker fleet-wide
    /// when the verdict is reached (and publishes it). Returns the view after.
    fn report_probe<'a>(
        &'a self,
        report: &'a ProbeReport,
    ) -> BoxFuture<'a, Result<FleetView, StoreError>>;

    /// Notices of fleet-wide transitions, as they happen (pub/sub). `None` if
    /// the store cannot push; instances then learn at the next sync.
    fn subscribe(&self) -> Option<tokio::sync::broadcast::Receiver<FleetNotice>>;

    /// How many times the push channel behind [`subscribe`](Self::subscribe)
    /// has been (re)established. A change means notices may have been lost
    /// while it was down: fleets then reconcile every breaker at once.
    fn resubscriptions(&self) -> u64 {
        0
    }

    /// The views of every breaker the store knows (for dashboards and
    /// `ripcord fleet status`).
    fn list(&self) -> BoxFuture<'_, Result<Vec<FleetView>, StoreError>>;
}
