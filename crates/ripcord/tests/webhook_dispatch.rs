//! The webhook dispatcher of `examples/webhook_dispatch`, on tokio's paused
//! time: 100 endpoints, 5 of them down.
//!
//! - a down endpoint receives requests only at its breaker's probe times,
//!   whatever its backlog (its deliveries are parked, not retried in a loop);
//! - the healthy endpoints' deliveries complete with no added delay.

#[allow(dead_code)]
#[path = "../examples/webhook_dispatch/dispatcher.rs"]
mod dispatcher;
#[allow(dead_code)]
#[path = "../examples/webhook_dispatch/simulated.rs"]
mod simulated;

use std::sync::Arc;
use std::time::Duration;

use dispatcher::{endpoint_pipelines, Dispatcher, Ended, Settings};
use simulated::Endpoints;
use tokio::time::Instant;

const LATENCY: Duration = Duration::from_millis(50);
const DOWN_LATENCY: Duration = Duration::from_millis(20);
const PER_ENDPOINT: usize = 10;

fn endpoint(i: usize) -> String {
    format!("https://hooks.example/{i:03}")
}

/// The breaker's open durations (see `endpoint_pipelines`): 10 s, doubling,
/// at most 2 minutes.
fn open_for(opening: u32) -> Duration {
    (Duration::from_secs(10) * 2u32.pow(opening.min(10) - 1)).min(Duration::from_secs(120))
}

#[tokio::test(start_paused = true)]
async fn down_endpoints_are_probed_on_schedule_and_healthy_ones_are_not_delayed() {
    let t0 = Instant::now();
    let horizon = Duration::from_secs(300);
    let mut sim = Endpoints::new(LATENCY, DOWN_LATENCY);
    for i in 0..5 {
        sim = sim.down(&endpoint(i), None);
    }
    let sim = Arc::new(sim);
    let mut dispatcher = Dispatcher::new(
        endpoint_pipelines().unwrap(),
        sim.clone(),
        Settings::default(),
    );
    for round in 0..PER_ENDPOINT {
        for i in 0..100 {
            dispatcher.enqueue(&endpoint(i), &format!("event {round}"));
        }
    }
    let report = dispatcher.run_until(t0 + horizon).await;

    // Healthy endpoints: every delivery done, each exactly one round trip
    // after it was queued — nothing waited behind the down endpoints.
    let healthy: Vec<_> = report
        .delivered
        .iter()
        .filter(|d| !(0..5).any(|i| d.endpoint == endpoint(i)))
        .collect();
    assert_eq!(healthy.len(), 95 * PER_ENDPOINT);
    for d in &healthy {
        assert_eq!(d.delivered_at - d.enqueued_at, LATENCY, "{d:?}");
        assert_eq!(d.attempts, 1);
    }
    for i in 5..100 {
        assert_eq!(sim.requests_to(&endpoint(i)).len(), PER_ENDPOINT);
    }

    // Down endpoints: the initial burst (all 10 deliveries were in flight
    // before the breaker could trip), then exactly one request — the
    // half-open probe — at each probe time: the trip at 20 ms opens the
    // breaker for 10 s, each failed probe re-opens it for twice as long.
    let mut expected = Vec::new();
    let mut at = t0 + DOWN_LATENCY; // the breaker trips when the burst fails
    for opening in 1.. {
        at += open_for(opening);
        if at >= t0 + horizon {
            break;
        }
        expected.push(at);
        at += DOWN_LATENCY; // the probe fails and re-opens the breaker
    }
    assert_eq!(
        expected
            .iter()
            .map(|t| (*t - t0).as_millis())
            .collect::<Vec<_>>(),
        vec![10_020, 30_040, 70_060, 150_080, 270_100]
    );
    for i in 0..5 {
        let e = endpoint(i);
        let requests = sim.requests_to(&e);
        assert_eq!(requests[..PER_ENDPOINT], vec![t0; PER_ENDPOINT][..], "{e}");
        assert_eq!(requests[PER_ENDPOINT..], expected[..], "{e}: probes only");

        // Not retried in a loop: besides the requests, the dispatcher ran the
        // pipeline only to learn when to come back — once when the burst's
        // retries came due (1 s), and once after each failed probe.
        let executions = &report.executions[&e];
        let rejected = executions
            .iter()
            .filter(|(_, k)| matches!(k, Ended::Rejected(_)))
            .count();
        assert_eq!(executions.len(), requests.len() + rejected);
        assert!(
            rejected <= PER_ENDPOINT + expected.len(),
            "{e}: {rejected} rejections"
        );
        // Every rejection named the probe time and parked the endpoint until then.
        for (_, k) in executions {
            if let Ended::Rejected(wait) = k {
                assert!(*wait >= Duration::from_secs(1), "{e}: parked for {wait:?}");
            }
        }
    }
    assert_eq!(report.pending, 5 * PER_ENDPOINT, "parked, not dropped");
    assert!(report.dead.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_gets_its_backlog_at_the_next_probe() {
    let t0 = Instant::now();
    let e = endpoint(0);
    let sim = Arc::new(
        Endpoints::new(LATENCY, DOWN_LATENCY).down(&e, Some(t0 + Duration::from_secs(15))),
    );
    let mut dispatcher = Dispatcher::new(
        endpoint_pipelines().unwrap(),
        sim.clone(),
        Settings::default(),
    );
    for round in 0..PER_ENDPOINT {
        dispatcher.enqueue(&e, &format!("event {round}"));
    }
    let report = dispatcher.run_until(t0 + Duration::from_secs(600)).await;
    // Probes at 10.02 s (still down) and 30.04 s (back up): the probe goes
    // through, closes the breaker, and releases the backlog at once.
    let probe = t0 + Duration::from_millis(30_040);
    assert_eq!(report.delivered.len(), PER_ENDPOINT);
    assert_eq!(report.pending, 0);
    for d in &report.delivered {
        assert!(d.delivered_at >= probe + LATENCY, "{d:?}");
        assert!(d.delivered_at <= probe + 2 * LATENCY, "{d:?}");
    }
    assert_eq!(
        sim.requests_to(&e).len(),
        PER_ENDPOINT + 2 + (PER_ENDPOINT - 1)
    );
}
