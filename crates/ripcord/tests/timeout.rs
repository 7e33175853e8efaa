//! The timeout policy, on tokio's paused time (no real sleeps).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::timeout::{current_deadline, with_deadline};
use ripcord::{Error, Event, EventKind, TimeoutConfig, TimeoutPolicy, TokioClock};
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    send_sync_static::<TimeoutPolicy>();
    send_sync_static::<ripcord::TimeoutBuilder>();
    send_sync_static::<TimeoutConfig>();
};

fn policy(name: &str, timeout: Duration) -> TimeoutPolicy {
    TimeoutPolicy::builder(name)
        .timeout(timeout)
        .clock(TokioClock::new())
        .build()
        .unwrap()
}

/// Sets its flag when dropped: proves a future was cancelled.
struct DropGuard(Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn cancels_at_the_deadline_and_drops_the_inner_future() {
    let t = policy("slow-dep", 100 * MS);
    let dropped = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let (d, f) = (dropped.clone(), finished.clone());
    let r = t
        .execute(|| async move {
            let _guard = DropGuard(d);
            sleep(SEC).await;
            f.store(true, Ordering::SeqCst);
            Ok::<_, std::io::Error>(())
        })
        .await;
    assert!(
        dropped.load(Ordering::SeqCst),
        "dropped before execute returned"
    );
    assert!(!finished.load(Ordering::SeqCst));
    assert_eq!(start.elapsed(), 100 * MS);
    let Err(Error::Timeout(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.name(), "slow-dep");
    assert_eq!(e.elapsed(), 100 * MS);
    assert_eq!(
        e.to_string(),
        "timeout `slow-dep` cancelled the call after 100ms"
    );

    // Nothing left running: advancing time does not resume the call.
    sleep(2 * SEC).await;
    assert!(!finished.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn calls_within_the_deadline_pass_through() {
    let t = policy("t", 100 * MS);
    let ok = t
        .execute(|| async {
            sleep(99 * MS).await;
            Ok::<_, &str>(5)
        })
        .await;
    assert_eq!(ok.unwrap(), 5);
    let err = t.execute(|| async { Err::<(), _>("boom") }).await;
    assert!(matches!(err, Err(Error::Inner("boom"))));
}

#[tokio::test(start_paused = true)]
async fn an_outer_deadline_caps_an_inner_timeout() {
    let outer = policy("outer", SEC);
    let inner = policy("inner", 5 * SEC);
    let start = Instant::now();
    let r = outer
        .execute_composed(|| {
            inner.execute(|| async {
                sleep(10 * SEC).await;
                Ok::<_, &str>(())
            })
        })
        .await;
    let Err(Error::Timeout(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(start.elapsed(), SEC);
    assert_eq!(e.elapsed(), SEC);
    // Both timers fall at the same instant; the inner one answers first.
    assert_eq!(e.name(), "inner");
}

#[tokio::test(start_paused = true)]
async fn a_shorter_inner_timeout_still_applies() {
    let outer = policy("outer", 5 * SEC);
    let inner = policy("inner", 100 * MS);
    let r = outer
        .execute_composed(|| {
            inner.execute(|| async {
                sleep(SEC).await;
                Ok::<_, &str>(())
            })
        })
        .await;
    let Err(Error::Timeout(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!((e.name(), e.elapsed()), ("inner", 100 * MS));
}

#[tokio::test(start_paused = true)]
async fn the_task_deadline_is_visible_inside() {
    let t = policy("t", 300 * MS);
    let start = Instant::now();
    assert_eq!(current_deadline(), None);
    let seen = t
        .execute(|| async { Ok::<_, ()>(current_deadline()) })
        .await
        .unwrap();
    assert_eq!(seen, Some(start + 300 * MS));

    // with_deadline caps a longer timeout inside it.
    let r = with_deadline(start + 50 * MS, async {
        t.execute(|| async {
            sleep(SEC).await;
            Ok::<_, ()>(())
        })
        .await
    })
    .await;
    let Err(Error::Timeout(e)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(e.elapsed(), 50 * MS);
}

#[tokio::test(start_paused = true)]
async fn an_explicit_deadline_caps_the_timeout() {
    let t = policy("t", 10 * SEC);
    let start = Instant::now();
    let r = t
        .execute_with_deadline(start + 250 * MS, || async {
            sleep(SEC).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(matches!(r, Err(Error::Timeout(ref e)) if e.elapsed() == 250 * MS));
    // A deadline already passed cancels a call that is not ready at once.
    let r = t
        .execute_with_deadline(start, || async {
            sleep(MS).await;
            Ok::<_, ()>(())
        })
        .await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert_eq!(
        t.deadline_from_now(None),
        Instant::now() + 10 * SEC,
        "no enclosing deadline"
    );
}

#[tokio::test(start_paused = true)]
async fn composed_errors_pass_through_unchanged() {
    let t = policy("t", SEC);
    let r: Result<(), Error<&str>> = t
        .execute_composed(|| async { Err(Error::Inner("inner")) })
        .await;
    assert!(matches!(r, Err(Error::Inner("inner"))));
}

#[tokio::test(start_paused = true)]
async fn cancelling_from_outside_drops_the_call() {
    let t = policy("t", 10 * SEC);
    let dropped = Arc::new(AtomicBool::new(false));
    let d = dropped.clone();
    let outer = tokio::time::timeout(
        100 * MS,
        t.execute(|| async move {
            let _g = DropGuard(d);
            sleep(SEC).await;
            Ok::<_, ()>(())
        }),
    )
    .await;
    assert!(outer.is_err());
    assert!(dropped.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn emits_timed_out_to_callbacks_and_subscribers() {
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let l = log.clone();
    let t = TimeoutPolicy::builder("evt")
        .timeout(20 * MS)
        .clock(TokioClock::new())
        .on_event(move |e| l.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let mut rx = t.subscribe();
    let _ = t
        .execute(|| async {
            sleep(SEC).await;
            Ok::<_, ()>(())
        })
        .await;
    let events = log.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, EventKind::TimedOut { elapsed: 20 * MS });
    assert_eq!(events[0].name, "evt");
    assert_eq!(events[0].at, 20 * MS);
    assert_eq!(events[0].kind.policy(), ripcord::PolicyKind::Timeout);
    assert_eq!(rx.recv().await.unwrap(), events[0]);
    // A call in time emits nothing.
    let _ = t.execute(|| async { Ok::<_, ()>(()) }).await;
    assert_eq!(log.lock().unwrap().len(), 1);
}

#[test]
fn validation_names_the_field_and_the_range() {
    let e = TimeoutPolicy::builder("x")
        .timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `timeout` = 0ns: expected a timeout greater than zero and at most one year"
    );
    assert!(TimeoutPolicy::builder("x")
        .timeout(Duration::from_secs(400 * 24 * 3600))
        .build()
        .is_err());
    let e = TimeoutPolicy::builder("x")
        .event_capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "event_capacity");
    let t = TimeoutPolicy::builder("x").build().unwrap();
    assert_eq!(t.duration(), 30 * SEC, "the default");
    assert_eq!(t.name(), "x");
}

#[test]
fn config_deserializes_from_toml() {
    let c: TimeoutConfig = toml::from_str(r#"timeout = "800ms""#).unwrap();
    assert_eq!(c.timeout, 800 * MS);
    let t = TimeoutPolicy::builder("cfg").config(c).build().unwrap();
    assert_eq!(t.duration(), 800 * MS);
    assert_eq!(
        toml::from_str::<TimeoutConfig>("").unwrap(),
        TimeoutConfig::default()
    );
    assert!(toml::from_str::<TimeoutConfig>(r#"timeout = "soon""#).is_err());
    assert!(toml::from_str::<TimeoutConfig>(r#"timout = "1s""#).is_err());
    let bad: TimeoutConfig = toml::from_str(r#"timeout = "0s""#).unwrap();
    assert_eq!(bad.validate().unwrap_err().field(), "timeout");
}

#[test]
fn config_deserializes_from_a_bare_duration_too() {
    #[derive(serde::Deserialize, Debug)]
    struct Holder {
        t: TimeoutConfig,
    }
    let short: Holder = toml::from_str(r#"t = "2s""#).unwrap();
    let long: Holder = toml::from_str(r#"t = { timeout = "2s" }"#).unwrap();
    assert_eq!(short.t, long.t);
    assert_eq!(short.t.timeout, 2000 * MS);
    let e = toml::from_str::<Holder>(r#"t = "soon""#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("invalid duration \"soon\""), "{e}");
    let e = toml::from_str::<Holder>("t = 5").unwrap_err().to_string();
    assert!(e.contains("a duration such as"), "{e}");
    let e = toml::from_str::<Holder>(r#"t = { timout = "1s" }"#)
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown field `timout`"), "{e}");
}
