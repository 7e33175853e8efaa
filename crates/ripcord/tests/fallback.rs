//! Fallback chains: order, triggers, the cause chain of a failed chain, events.
//! No test waits on real time.

use std::error::Error as StdError;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::fallback::Cause;
use ripcord::{
    BulkheadFull, CircuitBreaker, ConfigError, Error, Event, EventKind, Fallback, FallbackConfig,
    FallbackError, ManualClock, PolicyKind, RateLimited, Timeout,
};

#[derive(Debug, Clone, PartialEq)]
struct Failed(&'static str);

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl StdError for Failed {}

fn rejected() -> ripcord::Rejected {
    let b = CircuitBreaker::builder("prices")
        .open_for(ripcord::Backoff::fixed(Duration::from_secs(30)))
        .consecutive_failures(1)
        .clock(ManualClock::new())
        .build()
        .unwrap();
    b.try_acquire().unwrap().failure();
    b.try_acquire().unwrap_err()
}

type Trace = Arc<Mutex<Vec<&'static str>>>;

/// cache (fails) → secondary (fails) → static default, recording the order.
fn chain(trace: &Trace, events: &Arc<Mutex<Vec<Event>>>) -> Fallback<u32, Failed> {
    let (t1, t2, ev) = (trace.clone(), trace.clone(), events.clone());
    Fallback::builder("prices")
        .then_sync(move |_| {
            t1.lock().unwrap().push("cache");
            Err(Failed("cache miss"))
        })
        .then(move |_| {
            let t2 = t2.clone();
            async move {
                t2.lock().unwrap().push("replica");
                Err(Failed("replica down"))
            }
        })
        .then_value(7)
        .on_event(move |e| ev.lock().unwrap().push(e.clone()))
        .build()
        .unwrap()
}

#[tokio::test]
async fn the_chain_is_tried_in_order_until_one_answers() {
    let trace = Trace::default();
    let events = Arc::default();
    let fb = chain(&trace, &events);
    let r = fb.execute(|| async { Err(Failed("primary down")) }).await;
    assert_eq!(r.unwrap(), 7);
    assert_eq!(*trace.lock().unwrap(), vec!["cache", "replica"]);
    let kinds: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, vec![EventKind::FallbackUsed { index: 2 }]);
    assert_eq!(events.lock().unwrap()[0].name, "prices");
}

#[tokio::test]
async fn a_success_runs_no_fallback() {
    let trace = Trace::default();
    let events: Arc<Mutex<Vec<Event>>> = Arc::default();
    let fb = chain(&trace, &events);
    assert_eq!(fb.execute(|| async { Ok(1) }).await.unwrap(), 1);
    assert!(trace.lock().unwrap().is_empty());
    assert!(events.lock().unwrap().is_empty());
}

#[tokio::test]
async fn the_first_fallback_that_answers_wins() {
    let fb: Fallback<u32, Failed> = Fallback::builder("f")
        .then_sync(|_| Ok(1))
        .then_sync(|_| panic!("never tried"))
        .build()
        .unwrap();
    assert_eq!(fb.recover(Err(Error::Inner(Failed("x")))).await.unwrap(), 1);
}

#[tokio::test]
async fn a_failed_chain_keeps_every_cause_in_order() {
    let events = Arc::new(Mutex::new(Vec::<Event>::new()));
    let ev = events.clone();
    let fb: Fallback<u32, Failed> = Fallback::builder("prices")
        .then_sync(|e| {
            // Every fallback sees the primary error.
            assert!(e.is_rejected());
            Err(Failed("cache miss"))
        })
        .then(|_| async { Err(Failed("no default for this region")) })
        .on_event(move |e| ev.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let err = fb
        .recover(Err(Error::Rejected(rejected())))
        .await
        .unwrap_err();
    assert_eq!(err.policy(), Some(PolicyKind::Fallback));
    // The primary error's retry-after survives the chain.
    assert_eq!(err.retry_after(), Some(Duration::from_secs(30)));

    // The chain of causes, as an error reporter prints it.
    let mut lines = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        lines.push(e.to_string());
        cur = e.source();
    }
    // Like every policy error, `Error::Fallback` says what happened in a few
    // words and has its FallbackError as its source (so it can be downcast);
    // then come the causes, each once.
    assert_eq!(
        lines,
        vec![
            "the call and every fallback failed",
            "fallback `prices` could not answer: the call and its 2 fallbacks failed",
            "the call: circuit breaker `prices` is open and rejected the call; next probe in 30s",
            "fallback 0: cache miss",
            "fallback 1: no default for this region",
        ]
    );

    // Typed access: the FallbackError and each Cause can be downcast.
    let Error::Fallback(f) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(f.name(), "prices");
    assert!(f.primary().is_rejected());
    assert_eq!(
        f.fallback_errors().cloned().collect::<Vec<_>>(),
        vec![Failed("cache miss"), Failed("no default for this region")]
    );
    let source = err.source().unwrap();
    assert!(source.downcast_ref::<FallbackError<Failed>>().is_some());
    let first = source
        .source()
        .unwrap()
        .downcast_ref::<Cause<Failed>>()
        .unwrap();
    assert_eq!(first.index(), None);
    assert!(first.primary().is_some());
    let second = first
        .source()
        .unwrap()
        .downcast_ref::<Cause<Failed>>()
        .unwrap();
    assert_eq!(second.index(), Some(0));
    assert_eq!(second.fallback_error(), Some(&Failed("cache miss")));

    let kinds: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, vec![EventKind::FallbackFailed]);

    // The parts come back out, and map_inner maps every inner error.
    let mapped = err.map_inner(|e| e.0.len());
    let Error::Fallback(f) = mapped else { panic!() };
    let (primary, errors) = f.into_parts();
    assert!(primary.is_rejected());
    assert_eq!(errors, vec![10, 26]);
}

#[tokio::test]
async fn the_primary_inner_error_is_in_the_chain_too() {
    let fb: Fallback<u32, Failed> = Fallback::builder("f")
        .then_sync(|_| Err(Failed("stale")))
        .build()
        .unwrap();
    let err = fb
        .execute(|| async { Err(Failed("upstream 503")) })
        .await
        .unwrap_err();
    let causes: Vec<String> = match &err {
        Error::Fallback(f) => f.causes().map(|c| c.to_string()).collect(),
        _ => panic!(),
    };
    assert_eq!(causes, vec!["the call: upstream 503", "fallback 0: stale"]);
    assert_eq!(err.to_string(), "the call and every fallback failed");
    let Error::Fallback(f) = &err else { panic!() };
    assert_eq!(
        f.to_string(),
        "fallback `f` could not answer: the call and its 1 fallback failed"
    );
}

#[tokio::test]
async fn triggers_select_which_errors_run_the_chain() {
    let rejection = || Error::<Failed>::Rejected(rejected());
    let refusal = || Error::<Failed>::BulkheadFull(BulkheadFull::new("pool", 4, Duration::ZERO));
    let limited = || Error::<Failed>::RateLimited(RateLimited::new("rl", Duration::from_secs(1)));
    let timeout = || Error::<Failed>::Timeout(Timeout::new("t", Duration::from_secs(1)));
    let failure = || Error::Inner(Failed("x"));

    let only = |c: FallbackConfig| -> Fallback<u32, Failed> {
        Fallback::builder("f")
            .config(c)
            .then_value(1)
            .build()
            .unwrap()
    };
    let all = only(FallbackConfig::default());
    for e in [rejection(), refusal(), limited(), timeout(), failure()] {
        assert!(all.handles(&e), "{e:?}");
    }
    let rejections = only(FallbackConfig {
        on_rejected: true,
        on_refused: false,
        on_failure: false,
    });
    assert!(rejections.handles(&rejection()));
    assert!(!rejections.handles(&refusal()) && !rejections.handles(&limited()));
    assert!(!rejections.handles(&timeout()) && !rejections.handles(&failure()));
    let refusals = only(FallbackConfig {
        on_rejected: false,
        on_refused: true,
        on_failure: false,
    });
    assert!(refusals.handles(&refusal()) && refusals.handles(&limited()));
    assert!(!refusals.handles(&rejection()) && !refusals.handles(&failure()));
    let failures = only(FallbackConfig {
        on_rejected: false,
        on_refused: false,
        on_failure: true,
    });
    assert!(failures.handles(&failure()) && failures.handles(&timeout()));
    assert!(!failures.handles(&rejection()) && !failures.handles(&refusal()));

    // An error that does not trigger the chain comes back as it was.
    let r = rejections.recover(Err(failure())).await;
    assert!(matches!(r, Err(Error::Inner(Failed("x")))));

    // A predicate replaces the triggers.
    let picky: Fallback<u32, Failed> = Fallback::builder("f")
        .when(|e| matches!(e, Error::Inner(Failed("retryable"))))
        .then_value(1)
        .build()
        .unwrap();
    assert!(picky.handles(&Error::Inner(Failed("retryable"))));
    assert!(!picky.handles(&Error::Inner(Failed("fatal"))));
    assert!(!picky.handles(&rejection()));
}

#[test]
fn configuration_is_validated() {
    let err: ConfigError = Fallback::<u32, Failed>::builder("f").build().unwrap_err();
    assert_eq!(err.field(), "then");
    assert_eq!(
        err.to_string(),
        "invalid `then` = 0: expected at least one fallback in the chain"
    );
    let err = Fallback::<u32, Failed>::builder("f")
        .on_rejected(false)
        .on_refused(false)
        .on_failure(false)
        .then_value(1)
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "on_failure");
    // With a predicate, the triggers do not matter.
    assert!(Fallback::<u32, Failed>::builder("f")
        .on_rejected(false)
        .on_refused(false)
        .on_failure(false)
        .when(|_| true)
        .then_value(1)
        .build()
        .is_ok());
}

#[test]
fn configuration_deserializes_strictly() {
    let c: FallbackConfig = toml::from_str("on_refused = false").unwrap();
    assert_eq!(
        c,
        FallbackConfig {
            on_rejected: true,
            on_refused: false,
            on_failure: true
        }
    );
    let e = toml::from_str::<FallbackConfig>("on_refuse = false").unwrap_err();
    assert!(e.to_string().contains("on_refuse"), "{e}");
}

const fn send_sync_static<T: Send + Sync + 'static>() {}
const _: () = {
    send_sync_static::<Fallback<String, std::io::Error>>();
    send_sync_static::<FallbackError<std::io::Error>>();
    send_sync_static::<Error<std::io::Error>>();
};
