//! Benchmarks live in `benches/`.

/// The pipeline bench's four policies — `timeout(2 s) → retry(3 attempts,
/// fixed 10 ms) → circuit breaker (failure rate 0.5) → bulkhead(100)` — for
/// the criterion bench and the callgrind cases alike; add a policy or build.
pub fn four_policies() -> ripcord::PipelineBuilder<u64, ()> {
    use ripcord::{Backoff, Bulkhead, CircuitBreaker, Pipeline, Retry};
    use std::time::Duration;
    Pipeline::<u64, ()>::builder()
        .timeout(Duration::from_secs(2))
        .retry(
            Retry::builder("bench")
                .max_attempts(3)
                .backoff(Backoff::fixed(Duration::from_millis(10))),
        )
        .circuit_breaker(CircuitBreaker::builder("bench").failure_rate(0.5))
        .bulkhead(Bulkhead::builder("bench").max_concurrent(100))
}
