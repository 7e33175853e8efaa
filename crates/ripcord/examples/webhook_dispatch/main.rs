//! Webhook dispatch: one delivery queue, 100 endpoints, a pipeline (timeout →
//! circuit breaker) per endpoint from a `Registry`.
//!
//! ```sh
//! cargo run -p ripcord --example webhook_dispatch
//! ```
//!
//! Five endpoints are down; one of them comes back after two minutes. Each
//! endpoint gets 10 deliveries. Deliveries to a down endpoint are parked until
//! its breaker's next probe time (from the rejection's `retry_after`) and sent
//! one at a time as probes, never retried in a loop; the healthy endpoints'
//! deliveries go through at once, undelayed. The run simulates ten minutes
//! on tokio's paused clock, so it finishes instantly.
//!
//! The dispatcher is in `dispatcher.rs`; `tests/webhook_dispatch.rs` checks
//! both properties on the same code.

mod dispatcher;
mod simulated;

use std::sync::Arc;
use std::time::Duration;

use dispatcher::{endpoint_pipelines, Dispatcher, Ended, Settings};
use simulated::Endpoints;
use tokio::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?
        .block_on(run())
}

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let endpoints: Vec<String> = (0..100)
        .map(|i| format!("https://hooks.example/{i:03}"))
        .collect();
    let down = &endpoints[..5];
    let mut sim = Endpoints::new(Duration::from_millis(50), Duration::from_millis(20));
    for (i, e) in down.iter().enumerate() {
        // The first comes back after two minutes; the others stay down.
        let recovers = (i == 0).then(|| t0 + Duration::from_secs(120));
        sim = sim.down(e, recovers);
    }
    let sim = Arc::new(sim);

    let mut dispatcher = Dispatcher::new(endpoint_pipelines()?, sim.clone(), Settings::default());
    for round in 0..10 {
        for e in &endpoints {
            dispatcher.enqueue(e, &format!("{{\"event\":\"order.paid\",\"seq\":{round}}}"));
        }
    }
    let report = dispatcher.run_until(t0 + Duration::from_secs(600)).await;

    let healthy: Vec<_> = report
        .delivered
        .iter()
        .filter(|d| !down.contains(&d.endpoint))
        .collect();
    let slowest = healthy
        .iter()
        .map(|d| d.delivered_at - d.enqueued_at)
        .max()
        .unwrap_or_default();
    println!(
        "healthy endpoints: {} deliveries, each delivered {:?} after it was queued at the latest",
        healthy.len(),
        slowest
    );
    println!("down endpoints (requests they received, at seconds since start):");
    for e in down {
        let requests: Vec<String> = sim
            .requests_to(e)
            .iter()
            .map(|t| format!("{:.2}", (*t - t0).as_secs_f64()))
            .collect();
        let executions = report.executions.get(e).map_or(0, Vec::len);
        let rejected = report.executions.get(e).map_or(0, |x| {
            x.iter()
                .filter(|(_, k)| matches!(k, Ended::Rejected(_)))
                .count()
        });
        let delivered = report.delivered.iter().filter(|d| &d.endpoint == e).count();
        println!(
            "  {e}: {} requests [{}]; {executions} pipeline calls, {rejected} of them rejected \
             without a request; {delivered}/10 delivered",
            requests.len(),
            requests.join(", ")
        );
        if let Some(last) = report
            .delivered
            .iter()
            .filter(|d| &d.endpoint == e)
            .max_by_key(|d| d.delivered_at)
        {
            println!(
                "    back up: its backlog went out at the next probe; the last one (#{}) at {:.2} s, after {} attempt(s)",
                last.id,
                (last.delivered_at - t0).as_secs_f64(),
                last.attempts
            );
        }
    }
    println!(
        "pending at the end: {} (parked on down endpoints), dead-lettered: {}",
        report.pending,
        report.dead.len()
    );
    Ok(())
}
