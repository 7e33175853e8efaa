//! What the proxy's admin side sees of the running proxy: its breakers (one
//! per route or upstream pipeline), the fleet link, the metrics registry and
//! the admin token. The forwarding side builds it; a config reload swaps the
//! breaker list in place.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use ripcord::store::Fleet;
use ripcord::{CircuitBreaker, State};
use ripcord_metrics::Metrics;
use subtle::ConstantTimeEq;

/// A manual action on a breaker, from the admin API or `ripcord fleet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Reject every call until reset.
    ForceOpen,
    /// Let every call through, recording nothing.
    Disable,
    /// Back to closed with an empty window.
    Reset,
}

impl Control {
    /// The state the action puts the breaker in.
    pub fn target(self) -> State {
        match self {
            Control::ForceOpen => State::ForcedOpen,
            Control::Disable => State::Disabled,
            Control::Reset => State::Closed,
        }
    }

    /// Parses the action's name as used in URLs and on the command line
    /// (`open`, `disable`, `reset`).
    pub fn parse(s: &str) -> Option<Control> {
        match s {
            "open" | "force-open" | "force_open" => Some(Control::ForceOpen),
            "disable" => Some(Control::Disable),
            "reset" | "close" => Some(Control::Reset),
            _ => None,
        }
    }
}

/// Why a manual action failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No breaker has that name.
    #[error("no breaker named `{0}` (see the list at /api/breakers)")]
    UnknownBreaker(String),
    /// The action applied locally but the fleet store refused it. The
    /// store's error is part of the message (the admin API answers with it),
    /// so it is not also the source.
    #[error("applied to this instance, but the fleet store failed: {0}")]
    Store(ripcord::store::StoreError),
}

impl From<ripcord::store::StoreError> for ControlError {
    fn from(e: ripcord::store::StoreError) -> Self {
        ControlError::Store(e)
    }
}

/// One breaker of the proxy and where it sits.
#[derive(Debug, Clone)]
pub struct BreakerEntry {
    /// What the breaker protects: `route:<name>` or `upstream:<name>`.
    pub scope: String,
    /// The breaker (its name is the one shown and controlled).
    pub breaker: CircuitBreaker,
}

/// The fault injection of one route (see the route's `fault` table and the
/// admin API's `/api/faults`).
#[derive(Debug, Clone)]
pub struct FaultEntry {
    /// The route's name.
    pub route: String,
    /// Its fault-injection policy (disabled unless a drill runs).
    pub chaos: ripcord::Chaos,
}

/// Who may use the admin listener besides the token: the host names its
/// API answers to, and how many event streams one address may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccess {
    /// Host names (lower-case, no port) the API and `/metrics` answer to
    /// besides IP addresses, `localhost` and names without a dot.
    pub allowed_hosts: Vec<String>,
    /// Event streams one peer address may hold at once.
    pub max_streams_per_peer: usize,
}

impl Default for AdminAccess {
    /// No extra host names; no per-peer cap below the listener's own
    /// (`admin::MAX_STREAMS`; none without the admin listener).
    fn default() -> Self {
        #[cfg(feature = "admin")]
        let max_streams_per_peer = super::admin::MAX_STREAMS;
        #[cfg(not(feature = "admin"))]
        let max_streams_per_peer = 0;
        AdminAccess {
            allowed_hosts: Vec::new(),
            max_streams_per_peer,
        }
    }
}

impl AdminAccess {
    /// Whether the admin API answers a request whose `Host` (or
    /// `:authority`) is `host`: an IP address, `localhost` (or a name under
    /// it), a name without a dot (a local name, which no outside DNS
    /// answers for), or one of [`allowed_hosts`](Self::allowed_hosts). A
    /// browser led to the listener by a rebound DNS name sends that name,
    /// and is refused.
    pub fn allows_host(&self, host: &[u8]) -> bool {
        let Some(name) = super::request::host_of(host) else {
            return false;
        };
        name.starts_with('[')
            || name.parse::<std::net::Ipv4Addr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || !name.contains('.')
            || self
                .allowed_hosts
                .iter()
                .any(|h| h.eq_ignore_ascii_case(&name))
    }
}

/// The running proxy's shared state, as the admin API sees it.
#[derive(Debug)]
pub struct ProxyState {
    breakers: RwLock<Arc<Vec<BreakerEntry>>>,
    faults: RwLock<Arc<Vec<FaultEntry>>>,
    fleet: Option<Fleet>,
    metrics: Metrics,
    admin_token: Option<String>,
    access: AdminAccess,
    started: Instant,
}

impl ProxyState {
    /// A state over `breakers`, with an optional fleet link and admin token.
    pub fn new(
        breakers: Vec<BreakerEntry>,
        fleet: Option<Fleet>,
        metrics: Metrics,
        admin_token: Option<String>,
    ) -> Self {
        ProxyState {
            breakers: RwLock::new(Arc::new(breakers)),
            faults: RwLock::new(Arc::new(Vec::new())),
            fleet,
            metrics,
            admin_token: admin_token.filter(|t| !t.is_empty()),
            access: AdminAccess::default(),
            started: Instant::now(),
        }
    }

    /// The same state with these admin access rules (the default:
    /// [`AdminAccess::default`]).
    pub fn with_access(mut self, access: AdminAccess) -> Self {
        self.access = access;
        self
    }

    /// The admin access rules.
    pub fn access(&self) -> &AdminAccess {
        &self.access
    }

    /// Every breaker, in configuration order.
    pub fn breakers(&self) -> Arc<Vec<BreakerEntry>> {
        Arc::clone(&self.breakers.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The breaker named `name`.
    pub fn breaker(&self, name: &str) -> Option<CircuitBreaker> {
        self.breakers()
            .iter()
            .find(|e| e.breaker.name() == name)
            .map(|e| e.breaker.clone())
    }

    /// Replaces the breaker list (after a config reload).
    pub fn replace_breakers(&self, breakers: Vec<BreakerEntry>) {
        *self.breakers.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(breakers);
    }

    /// Every route's fault injection, in configuration order.
    pub fn faults(&self) -> Arc<Vec<FaultEntry>> {
        Arc::clone(&self.faults.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The fault injection of the route `route`.
    pub fn fault(&self, route: &str) -> Option<ripcord::Chaos> {
        self.faults()
            .iter()
            .find(|e| e.route == route)
            .map(|e| e.chaos.clone())
    }

    /// Replaces the routes' fault injections (at start and after a reload).
    pub fn replace_faults(&self, faults: Vec<FaultEntry>) {
        *self.faults.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(faults);
    }

    /// The fleet link, when the config names a store.
    pub fn fleet(&self) -> Option<&Fleet> {
        self.fleet.as_ref()
    }

    /// The metrics registry every policy of the proxy reports to.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// When the proxy started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether mutating admin calls are possible at all (a token is set).
    pub fn has_admin_token(&self) -> bool {
        self.admin_token.is_some()
    }

    /// Checks a presented bearer token against the configured one, in
    /// constant time. Always false when no token is configured.
    pub fn check_token(&self, presented: &str) -> bool {
        match &self.admin_token {
            Some(expected) => bool::from(expected.as_bytes().ct_eq(presented.as_bytes())),
            None => false,
        }
    }

    /// Applies a manual action to the breaker `name` on this instance and,
    /// with a fleet store, to the whole fleet. Returns the state after.
    pub async fn control(
        &self,
        name: &str,
        action: Control,
        actor: &str,
    ) -> Result<State, ControlError> {
        let breaker = self
            .breaker(name)
            .ok_or_else(|| ControlError::UnknownBreaker(name.to_string()))?;
        match action {
            Control::ForceOpen => breaker.force_open(),
            Control::Disable => breaker.disable(),
            Control::Reset => breaker.reset(),
        }
        if let Some(fleet) = &self.fleet {
            fleet
                .override_state(name, action.target(), None, actor)
                .await?;
        }
        Ok(breaker.state())
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::ControlError;

    #[test]
    fn a_store_failure_is_printed_once() {
        let e = ControlError::from(ripcord::store::StoreError::Unavailable("refused".into()));
        assert_eq!(
            e.to_string(),
            "applied to this instance, but the fleet store failed: state store unavailable: refused"
        );
        // Shown in the message (the admin API answers with it), so not
        // repeated as the source.
        assert!(e.source().is_none());
    }
}
