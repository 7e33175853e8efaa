//! What the admin API says about a breaker and a drill, as JSON.

use ripcord::store::Fleet;
use serde::Serialize;

use crate::state::BreakerEntry;

/// One breaker as `/api/breakers` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerView {
    /// The breaker's name (the one to control it by).
    pub name: String,
    /// What it protects: `route:<name>` or `upstream:<name>`.
    pub scope: String,
    /// Its state: `closed`, `open`, `half_open`, `forced_open`, `disabled` or
    /// `metrics_only`.
    pub state: &'static str,
    /// Whether the state refuses (some or all) calls.
    pub rejecting: bool,
    /// Transitions so far.
    pub epoch: u64,
    /// Whether a closed breaker is still ramping traffic up after recovery.
    pub ramping: bool,
    /// The current window's figures.
    pub window: WindowView,
    /// Failures in a row while closed.
    pub consecutive_failures: u32,
    /// Half-open probes admitted and still running.
    pub probes_in_flight: u32,
    /// The fleet link, when the proxy shares state through a store.
    pub fleet: Option<FleetView>,
}

/// The figures of a breaker's current window (empty unless closed or
/// metrics-only).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WindowView {
    /// Calls counted (successes and failures).
    pub calls: u64,
    /// Failed calls.
    pub failures: u64,
    /// Calls slower than the slow-call threshold.
    pub slow: u64,
    /// `failures / calls` (0 without calls).
    pub failure_rate: f64,
    /// `slow / calls` (0 without calls).
    pub slow_rate: f64,
}

/// This instance's link to the fleet's shared state.
#[derive(Debug, Clone, Serialize)]
pub struct FleetView {
    /// This instance's id in the fleet.
    pub instance: String,
    /// Whether the store is unreachable (breakers decide alone meanwhile).
    pub degraded: bool,
    /// Completed sync round trips.
    pub syncs: u64,
    /// Duration of the last sync round trip, in milliseconds.
    pub last_sync_latency_ms: f64,
    /// Whether this breaker is linked to the fleet (shares its state).
    pub shared: bool,
}

impl BreakerView {
    /// Reads the breaker of `entry` now; `fleet` as given by
    /// [`FleetView::of`] (`None` without a store).
    pub fn of(entry: &BreakerEntry, fleet: Option<&FleetView>, linked: &[String]) -> Self {
        let b = &entry.breaker;
        let state = b.state();
        let stats = b.stats();
        BreakerView {
            name: b.name().to_string(),
            scope: entry.scope.clone(),
            state: state.as_str(),
            rejecting: state.is_open(),
            epoch: b.epoch(),
            ramping: b.is_ramping(),
            window: WindowView {
                calls: stats.calls(),
                failures: stats.failures(),
                slow: stats.slow(),
                failure_rate: finite(stats.failure_rate()),
                slow_rate: finite(stats.slow_rate()),
            },
            consecutive_failures: b.consecutive_failures(),
            probes_in_flight: b.probes_in_flight(),
            fleet: fleet.map(|f| FleetView {
                shared: linked.iter().any(|n| n == b.name()),
                ..f.clone()
            }),
        }
    }

    /// Every breaker of `entries`, in order.
    pub fn all(entries: &[BreakerEntry], fleet: Option<&Fleet>) -> Vec<BreakerView> {
        let (fleet_view, linked) = FleetView::of(fleet);
        entries
            .iter()
            .map(|e| BreakerView::of(e, fleet_view.as_ref(), &linked))
            .collect()
    }
}

impl FleetView {
    /// The fleet's figures (with `shared` false) and the names of the
    /// breakers linked to it; `(None, [])` without a fleet.
    pub fn of(fleet: Option<&Fleet>) -> (Option<FleetView>, Vec<String>) {
        match fleet {
            None => (None, Vec::new()),
            Some(f) => (
                Some(FleetView {
                    instance: f.instance().to_string(),
                    degraded: f.is_degraded(),
                    syncs: f.syncs(),
                    last_sync_latency_ms: f.last_sync_latency().as_secs_f64() * 1e3,
                    shared: false,
                }),
                f.breaker_names(),
            ),
        }
    }
}

/// JSON has no NaN or infinity.
pub(super) fn finite(x: f64) -> f64 {
    if x.is_finite() {
        x
    } else {
        0.0
    }
}

/// One route's fault injection as `/api/faults` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct FaultView {
    /// The route's name.
    pub route: String,
    /// Whether a drill runs now (faults are being injected).
    pub active: bool,
    /// Milliseconds until the drill stops by itself, if it has an expiry.
    pub expires_in_ms: Option<u64>,
    /// Share of requests delayed, and by how much (e.g. `1.5s`, `100ms..=2s`).
    pub latency_rate: f64,
    /// The injected latency, in words.
    pub latency: Option<String>,
    /// Share of requests aborted.
    pub abort_rate: f64,
    /// The status an abort is answered with (503 when unset).
    pub abort_status: Option<u16>,
    /// Share answered `500`.
    pub error_rate: f64,
    /// Share answered as a reset connection (`502`).
    pub reset_rate: f64,
    /// Share stalled until the route's timeout (`504`).
    pub stall_rate: f64,
    /// Requests drawn while a drill ran, and how many of them were hit.
    pub drawn: u64,
    /// Requests hit.
    pub injected: u64,
}

impl FaultView {
    /// The view of `route`'s policy `chaos`.
    pub fn of(route: &str, chaos: &ripcord::Chaos) -> Self {
        let c = chaos.config();
        let (drawn, injected) = chaos.counts();
        FaultView {
            route: route.to_string(),
            active: chaos.is_enabled() && c.injects(),
            expires_in_ms: chaos
                .expires_in()
                .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            latency_rate: c.latency_rate,
            latency: c.latency.map(|l| l.to_string()),
            abort_rate: c.abort_rate,
            abort_status: c.abort_status,
            error_rate: c.error_rate,
            reset_rate: c.reset_rate,
            stall_rate: c.stall_rate,
            drawn,
            injected,
        }
    }

    /// Every route's.
    pub fn all(entries: &[crate::state::FaultEntry]) -> Vec<FaultView> {
        entries
            .iter()
            .map(|e| FaultView::of(&e.route, &e.chaos))
            .collect()
    }
}
