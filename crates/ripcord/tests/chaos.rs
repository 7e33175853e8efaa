//! Fault injection inside a pipeline: the policies around it see injected
//! faults as the dependency's own, through `execute` and through `admit`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ripcord::chaos::{Fault, Latency};
use ripcord::{
    Chaos, CircuitBreaker, Error, Outcome, Pipeline, PipelineConfig, PolicyKind, Retry, State,
    TimeoutPolicy, TokioClock,
};
use tokio::time::Instant;

type P = Pipeline<u32, String>;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Runs one call through `p` by `execute` or by `admit_waiting`.
async fn call(p: &P, admit: bool, calls: &AtomicU32) -> Result<u32, Error<String>> {
    let f = || async {
        calls.fetch_add(1, Ordering::Relaxed);
        Ok::<u32, String>(7)
    };
    if !admit {
        return p.execute(f).await;
    }
    match p.admit_waiting().await.expect("an admissible pipeline") {
        Ok(admitted) => {
            let r = f().await;
            admitted.finish(r)
        }
        Err(e) => Err(e),
    }
}

#[tokio::test(start_paused = true)]
async fn a_breaker_behind_a_fault_trips_when_it_starts_and_recovers_when_it_stops() {
    for admit in [false, true] {
        let clock = TokioClock::new();
        let breaker = CircuitBreaker::builder("api")
            .failure_rate(0.5)
            .minimum_calls(10)
            .window(ripcord::Window::count(20))
            .open_for(ripcord::Backoff::fixed(Duration::from_secs(5)))
            .clock(clock)
            .build()
            .unwrap();
        let chaos = Chaos::builder("drill")
            .abort(0.6)
            .enabled(false)
            .seed(11)
            .clock(clock)
            .build()
            .unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .chaos(chaos.clone())
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);

        // Healthy: every call gets through.
        for _ in 0..50 {
            assert_eq!(call(&p, admit, &calls).await.unwrap(), 7);
        }
        assert_eq!(breaker.state(), State::Closed);

        // The drill starts: 60 % aborted, and the breaker opens within its
        // window's minimum.
        chaos.enable();
        let mut until_open = 0;
        while breaker.state() == State::Closed {
            until_open += 1;
            assert!(until_open <= 20, "not open after {until_open} calls");
            match call(&p, admit, &calls).await {
                Ok(_) => {}
                Err(Error::Injected(i)) => {
                    assert_eq!(i.fault(), Fault::Abort { status: None });
                    assert_eq!(i.name(), "drill");
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(breaker.state(), State::Open);
        let before = calls.load(Ordering::Relaxed);
        let r = call(&p, admit, &calls).await;
        assert_eq!(r.unwrap_err().policy(), Some(PolicyKind::CircuitBreaker));
        assert_eq!(
            calls.load(Ordering::Relaxed),
            before,
            "a rejected call is not made"
        );

        // The drill stops; after its open time the breaker probes and closes.
        chaos.disable();
        tokio::time::advance(Duration::from_secs(5)).await;
        for _ in 0..20 {
            let _ = call(&p, admit, &calls).await;
        }
        assert_eq!(breaker.state(), State::Closed, "admit: {admit}");
    }
}

#[tokio::test(start_paused = true)]
async fn injected_latency_waits_and_a_timeout_outside_cuts_it_and_a_stall() {
    for admit in [false, true] {
        let p: P = Pipeline::builder()
            .timeout(
                TimeoutPolicy::builder("t")
                    .timeout(ms(300))
                    .clock(TokioClock::new()),
            )
            .chaos(Chaos::builder("slow").latency(1.0, Latency::fixed(ms(200))))
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        let start = Instant::now();
        assert_eq!(call(&p, admit, &calls).await.unwrap(), 7);
        assert_eq!(start.elapsed(), ms(200));

        let slower: P = Pipeline::builder()
            .timeout(ms(100))
            .chaos(Chaos::builder("slower").latency(1.0, Latency::fixed(ms(200))))
            .build()
            .unwrap();
        let start = Instant::now();
        let r = call(&slower, admit, &calls).await;
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert_eq!(start.elapsed(), ms(100));

        let stalled: P = Pipeline::builder()
            .timeout(ms(150))
            .chaos(Chaos::builder("stall").stall(1.0))
            .build()
            .unwrap();
        let start = Instant::now();
        let r = call(&stalled, admit, &calls).await;
        assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
        assert_eq!(start.elapsed(), ms(150));
        // Only the first pipeline's call was made.
        assert_eq!(calls.load(Ordering::Relaxed), 1, "admit: {admit}");
    }
}

#[tokio::test]
async fn an_injected_error_is_the_callers_own_and_judged_like_one() {
    for admit in [false, true] {
        let breaker = CircuitBreaker::builder("b").build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .chaos(Chaos::builder("e").error(1.0))
            .chaos_error(|i| format!("injected: {}", i.fault()))
            .classify(|r: &Result<u32, String>| match r {
                Ok(_) => Outcome::Success,
                Err(e) if e.starts_with("injected") => Outcome::Ignored,
                Err(_) => Outcome::Failure,
            })
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        let r = call(&p, admit, &calls).await;
        assert!(
            matches!(&r, Err(Error::Inner(e)) if e == "injected: an error"),
            "{r:?}"
        );
        assert_eq!(calls.load(Ordering::Relaxed), 0);
        // The classifier ignored it.
        assert_eq!(breaker.stats().calls(), 0, "admit: {admit}");

        // Without a `chaos_error`, an `Error::Injected`, a failure.
        let plain: P = Pipeline::builder()
            .circuit_breaker(breaker.clone())
            .chaos(Chaos::builder("e").error(1.0))
            .build()
            .unwrap();
        let r = call(&plain, admit, &calls).await;
        assert!(matches!(&r, Err(Error::Injected(i)) if i.fault() == Fault::Error));
        assert_eq!(breaker.stats().failures(), 1);
    }
}

#[tokio::test]
async fn a_forced_outcome_reaches_only_the_breakers_outside() {
    for admit in [false, true] {
        let outer = CircuitBreaker::builder("outer").build().unwrap();
        let inner = CircuitBreaker::builder("inner").build().unwrap();
        let p: P = Pipeline::builder()
            .circuit_breaker(outer.clone())
            .chaos(Chaos::builder("o").outcome(1.0, Outcome::Failure))
            .circuit_breaker(inner.clone())
            .build()
            .unwrap();
        let calls = AtomicU32::new(0);
        // The call runs and its value reaches the caller.
        assert_eq!(call(&p, admit, &calls).await.unwrap(), 7);
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        assert_eq!(outer.stats().failures(), 1, "admit: {admit}");
        assert_eq!(inner.stats().failures(), 0);
        assert_eq!(inner.stats().calls(), 1);
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_outside_retries_an_injected_abort() {
    let p: P = Pipeline::builder()
        .retry(
            Retry::builder("r")
                .max_attempts(3)
                .backoff(ripcord::Backoff::fixed(ms(10))),
        )
        .chaos(Chaos::builder("a").abort(0.5).seed(2))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU32::new(0));
    let mut ok = 0;
    for _ in 0..100 {
        let c = calls.clone();
        let r = p
            .execute(move || {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, String>(1)
                }
            })
            .await;
        ok += u32::from(r.is_ok());
    }
    // One in two attempts aborted, three attempts: about 7 in 8 calls pass.
    assert!((80..=95).contains(&ok), "{ok}");
}

#[cfg(feature = "serde")]
#[tokio::test]
async fn a_configuration_file_places_the_fault_innermost() {
    let config: PipelineConfig = toml::from_str(
        r#"
        [circuit_breaker]
        consecutive_failures = 2

        [chaos]
        abort_rate = 1.0
        abort_status = 503
        "#,
    )
    .unwrap();
    let p: P = config.builder().unwrap().build().unwrap();
    assert_eq!(
        p.kinds().collect::<Vec<_>>(),
        [PolicyKind::CircuitBreaker, PolicyKind::Chaos]
    );
    let chaos = p.chaos().unwrap().clone();
    let calls = AtomicU32::new(0);
    for _ in 0..2 {
        let r = call(&p, true, &calls).await;
        assert!(
            matches!(&r, Err(Error::Injected(i)) if i.fault() == Fault::Abort { status: Some(503) })
        );
    }
    assert!(p.circuit_breakers().all(|b| b.state() == State::Open));
    chaos.disable();
    assert!(
        !p.chaos().unwrap().is_enabled(),
        "the pipeline holds the same policy"
    );

    let err = toml::from_str::<PipelineConfig>("[chaos]\nabort_rate = 2.0\n")
        .map_err(|e| e.to_string())
        .and_then(|c| c.validate().map_err(|e| e.to_string()))
        .unwrap_err();
    assert!(err.contains("abort_rate"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn an_injection_beside_a_direct_pipeline_ends_the_admitted_call_as_the_walk_does() {
    let breaker = CircuitBreaker::builder("b").build().unwrap();
    let p: P = Pipeline::builder()
        .timeout(
            TimeoutPolicy::builder("t")
                .timeout(ms(100))
                .clock(TokioClock::new()),
        )
        .circuit_breaker(breaker.clone())
        .build()
        .unwrap();
    let admit = || p.admit().expect("a direct pipeline").expect("admitted");

    let abort = Chaos::builder("a").abort(1.0).build().unwrap();
    let r = admit().inject(&abort, abort.decide().unwrap()).await;
    assert!(matches!(r, Err(Error::Injected(_))), "{r:?}");
    assert_eq!(breaker.stats().failures(), 1);

    // A latency past the deadline, a stall: the timeout's error, a failure.
    let slow = Chaos::builder("l")
        .latency(1.0, Latency::fixed(ms(500)))
        .build()
        .unwrap();
    let r = admit().inject(&slow, slow.decide().unwrap()).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    let stall = Chaos::builder("s").stall(1.0).build().unwrap();
    let r = admit().inject(&stall, stall.decide().unwrap()).await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert_eq!(breaker.stats().failures(), 3);

    // A forced outcome: the call is made, every breaker records the outcome.
    let forced = Chaos::builder("o")
        .outcome(1.0, Outcome::Failure)
        .build()
        .unwrap();
    let admitted = admit()
        .inject(&forced, forced.decide().unwrap())
        .await
        .unwrap();
    assert_eq!(admitted.finish(Ok(7)).unwrap(), 7);
    assert_eq!(breaker.stats().failures(), 4);
}
