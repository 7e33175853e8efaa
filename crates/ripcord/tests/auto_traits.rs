//! Compile-time checks that the public types can cross threads and be stored
//! in `'static` contexts, and that the error types chain their causes (so
//! reporters print each cause once and callers can downcast, as tonic does
//! with `BoxError`).

use std::error::Error as StdError;
use std::io;

use ripcord::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig, ConfigError, Error,
    Event, EventKind, ManualClock, Name, Outcome, OwnedPermit, Permit, Rejected, State,
    TransitionReason, Window, WindowStats,
};

const fn send_sync<T: Send + Sync>() {}
const fn send_sync_static<T: Send + Sync + 'static>() {}
const fn error_static<T: StdError + Send + Sync + 'static>() {}

// Owned values: Send + Sync + 'static.
const _: () = {
    send_sync_static::<CircuitBreaker>();
    send_sync_static::<OwnedPermit>();
    send_sync_static::<Rejected>();
    send_sync_static::<Error<io::Error>>();
    send_sync_static::<Event>();
    send_sync_static::<EventKind>();
    send_sync_static::<ConfigError>();
    send_sync_static::<WindowStats>();
    send_sync_static::<CircuitBreakerBuilder>();
    send_sync_static::<CircuitBreakerConfig>();
    send_sync_static::<Backoff>();
    send_sync_static::<ManualClock>();
    send_sync_static::<Name>();
    send_sync_static::<Outcome>();
    send_sync_static::<State>();
    send_sync_static::<TransitionReason>();
    send_sync_static::<Window>();

    error_static::<Rejected>();
    error_static::<ConfigError>();
    error_static::<Error<io::Error>>();
};

// A borrowed permit can be sent to (and shared with) a scoped thread. Auto
// traits do not depend on lifetimes, so `'static` stands for any borrow.
const _: () = send_sync::<Permit<'static>>();

/// A future that holds an owned permit across an await is `Send + 'static`, so
/// it can be spawned on a multi-threaded runtime.
#[allow(dead_code)]
fn owned_permit_in_a_spawned_future(breaker: &CircuitBreaker) {
    fn spawnable<F: std::future::Future + Send + 'static>(_: F) {}
    let permit = breaker.try_acquire_owned();
    spawnable(async move {
        if let Ok(p) = permit {
            std::future::ready(()).await;
            p.record(Outcome::Success);
        }
    });
    let b = breaker.clone();
    spawnable(async move { b.call(|| async { Ok::<_, io::Error>(()) }).await });
}

fn rejected() -> Rejected {
    let breaker = CircuitBreaker::builder("traits").build().unwrap();
    breaker.force_open();
    breaker.try_acquire().unwrap_err()
}

#[test]
fn inner_error_is_the_source_and_not_repeated_in_display() {
    let err: Error<io::Error> = Error::Inner(io::Error::other("disk on fire"));
    let source = err.source().expect("the inner error is the source");
    let inner = source
        .downcast_ref::<io::Error>()
        .expect("the source is the inner io::Error");
    assert_eq!(inner.to_string(), "disk on fire");
    assert!(!err.to_string().contains("disk on fire"), "{err}");
}

#[test]
fn rejection_is_the_source_of_a_rejected_error() {
    let err: Error<io::Error> = rejected().into();
    let source = err.source().expect("the rejection is the source");
    let r = source
        .downcast_ref::<Rejected>()
        .expect("the source is the Rejected");
    assert_eq!(r.name(), "traits");
    assert_eq!(r.state(), State::ForcedOpen);
    // A rejection is a leaf: nothing caused it but the breaker's state.
    assert!(r.source().is_none());
}

#[test]
fn errors_survive_boxing_and_downcasting() {
    type BoxError = Box<dyn StdError + Send + Sync>;
    let boxed: BoxError = Box::new(Error::<io::Error>::Rejected(rejected()));
    let err = boxed
        .downcast_ref::<Error<io::Error>>()
        .expect("downcast to ripcord::Error");
    assert!(err.is_rejected());

    let boxed: BoxError = Box::new(rejected());
    assert!(boxed.downcast_ref::<Rejected>().is_some());

    let boxed: BoxError = CircuitBreaker::builder("bad")
        .failure_rate(2.0)
        .build()
        .unwrap_err()
        .into();
    let e = boxed.downcast_ref::<ConfigError>().expect("a ConfigError");
    assert_eq!(e.field(), "failure_rate");
}

/// The messages an error reporter prints (`{:#}` in anyhow): the error, then
/// each source.
fn chain(err: &(dyn StdError + 'static)) -> Vec<String> {
    let mut lines = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        lines.push(e.to_string());
        cur = e.source();
    }
    lines
}

/// No message of the chain repeats what a later one says.
fn each_cause_once(err: &(dyn StdError + 'static)) {
    let lines = chain(err);
    for (i, line) in lines.iter().enumerate() {
        for later in &lines[i + 1..] {
            assert!(
                !line.contains(later.as_str()),
                "`{line}` repeats its cause `{later}`: {lines:#?}"
            );
        }
    }
}

#[test]
fn policy_errors_print_each_cause_once() {
    use ripcord::{BulkheadFull, RateLimited, Timeout};
    use std::time::Duration;
    let errors: Vec<Error<io::Error>> = vec![
        rejected().into(),
        Error::Timeout(Timeout::new("slow", Duration::from_millis(100))),
        Error::BulkheadFull(BulkheadFull::new("db", 2, Duration::ZERO)),
        Error::RateLimited(RateLimited::new("api", Duration::from_secs(1))),
        Error::Inner(io::Error::other("disk on fire")),
    ];
    for err in &errors {
        each_cause_once(err);
        // The policy's own error is in the chain, for reporters and downcasts.
        assert_eq!(chain(err).len(), 2, "{:?}", chain(err));
    }
    let lines = chain(&errors[0]);
    assert_eq!(
        lines,
        [
            "the circuit breaker refused the call",
            "circuit breaker `traits` is forced_open and rejected the call"
        ]
    );
}
