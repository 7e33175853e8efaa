//! A fleet's sync round trips reach `ripcord_store_sync_duration_seconds`,
//! and a store outage reaches `ripcord_store_degraded`.

use std::time::Duration;

use ripcord::store::{Fleet, MemoryStore};
use ripcord::{CircuitBreaker, TokioClock};
use ripcord_metrics::Metrics;

fn series(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(start_paused = true)]
async fn fleet_syncs_and_outages_are_exported() {
    let metrics = Metrics::new();
    let store = MemoryStore::with_clock(TokioClock::new());
    let fleet = metrics
        .fleet(Fleet::builder(store.clone()).instance("a"))
        .build()
        .unwrap();
    let _breaker = metrics
        .breaker(
            CircuitBreaker::builder("payments")
                .clock(TokioClock::new())
                .fleet(&fleet),
        )
        .unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics.render();
    let ok = series(
        &text,
        "ripcord_store_sync_duration_seconds_count{result=\"ok\"}",
    )
    .unwrap_or_else(|| panic!("no ok sync series:\n{text}"));
    assert!(ok >= 4.0, "{ok} syncs:\n{text}");
    assert_eq!(series(&text, "ripcord_store_degraded"), Some(0.0), "{text}");

    store.set_down(true);
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let text = metrics.render();
    let errors = series(
        &text,
        "ripcord_store_sync_duration_seconds_count{result=\"error\"}",
    )
    .unwrap_or(0.0);
    assert!(errors >= 2.0, "{errors} failed syncs:\n{text}");
    assert_eq!(series(&text, "ripcord_store_degraded"), Some(1.0), "{text}");
}
