//! The bulkhead, on tokio's paused time (no real sleeps).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::{
    Bulkhead, BulkheadBuilder, BulkheadConfig, BulkheadPermit, Error, Event, EventKind,
    OwnedBulkheadPermit, TokioClock,
};
use tokio::task::yield_now;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);
const SEC: Duration = Duration::from_secs(1);

const _: () = {
    const fn send_sync_static<T: Send + Sync + 'static>() {}
    const fn send_sync<T: Send + Sync>() {}
    send_sync_static::<Bulkhead>();
    send_sync_static::<BulkheadBuilder>();
    send_sync_static::<BulkheadConfig>();
    send_sync_static::<OwnedBulkheadPermit>();
    send_sync::<BulkheadPermit<'static>>();
};

fn bulkhead(max_concurrent: u32, max_queued: u32) -> BulkheadBuilder {
    Bulkhead::builder("db")
        .max_concurrent(max_concurrent)
        .max_queued(max_queued)
        .clock(TokioClock::new())
}

/// Lets spawned tasks run until they block.
async fn settle() {
    for _ in 0..10 {
        yield_now().await;
    }
}

#[test]
fn try_acquire_takes_free_slots_and_refuses_at_once() {
    let b = Bulkhead::builder("db").max_concurrent(2).build().unwrap();
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire_owned().unwrap();
    assert_eq!((b.in_use(), b.queued()), (2, 0));
    let full = b.try_acquire().unwrap_err();
    assert_eq!(full.name(), "db");
    assert_eq!(full.max_concurrent(), 2);
    assert_eq!(full.waited(), Duration::ZERO);
    assert_eq!(
        full.to_string(),
        "bulkhead `db` is full (2 concurrent calls)"
    );
    drop(p1);
    assert_eq!(b.in_use(), 1);
    drop(p2);
    assert_eq!(b.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once() {
    let b = bulkhead(1, 2).build().unwrap();
    let holder = b.try_acquire_owned().unwrap();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let b = b.clone();
            tokio::spawn(async move { b.acquire_owned().await.map(drop) })
        })
        .collect();
    settle().await;
    assert_eq!((b.in_use(), b.queued()), (1, 2));

    let start = Instant::now();
    let r = b.execute(|| async { Ok::<_, ()>(()) }).await;
    let Err(Error::BulkheadFull(full)) = r else {
        panic!("{r:?}")
    };
    assert_eq!(full.waited(), Duration::ZERO);
    assert_eq!(start.elapsed(), Duration::ZERO, "refused without waiting");

    drop(holder);
    for w in waiters {
        w.await.unwrap().unwrap();
    }
    assert_eq!((b.in_use(), b.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn without_a_queue_a_busy_bulkhead_refuses() {
    let b = bulkhead(1, 0).build().unwrap();
    let _p = b.acquire().await.unwrap();
    let calls = AtomicU32::new(0);
    let r = b
        .execute(|| async {
            calls.fetch_add(1, Ordering::Relaxed);
            Ok::<_, ()>(())
        })
        .await;
    assert!(matches!(r, Err(Error::BulkheadFull(_))));
    assert_eq!(calls.load(Ordering::Relaxed), 0, "the call never ran");
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_gives_up_after_max_wait() {
    let b = bulkhead(1, 5).max_wait(250 * MS).build().unwrap();
    let _holder = b.try_acquire().unwrap();
    let start = Instant::now();
    let r = b.acquire().await;
    let full = r.unwrap_err();
    assert_eq!(full.waited(), 250 * MS);
    assert_eq!(start.elapsed(), 250 * MS);
    assert_eq!(
        full.to_string(),
        "bulkhead `db` is full (1 concurrent calls) after waiting 250ms"
    );
    assert_eq!(b.queued(), 0, "the expired waiter left the queue");
}

#[tokio::test(start_paused = true)]
async fn a_queued_call_runs_when_a_slot_frees_within_max_wait() {
    let b = bulkhead(1, 5).max_wait(SEC).build().unwrap();
    let holder = b.try_acquire_owned().unwrap();
    tokio::spawn(async move {
        sleep(300 * MS).await;
        drop(holder);
    });
    let start = Instant::now();
    let r = b.execute(|| async { Ok::<_, ()>(start.elapsed()) }).await;
    assert_eq!(r.unwrap(), 300 * MS);
    assert_eq!(b.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiter_frees_its_queue_position() {
    let b = bulkhead(1, 1).build().unwrap();
    let holder = b.try_acquire_owned().unwrap();
    // A waiter cancelled by an outer timeout.
    let r = tokio::time::timeout(100 * MS, b.acquire()).await;
    assert!(r.is_err());
    assert_eq!(b.queued(), 0);
    // Its place is free for the next one, which gets the slot.
    let next = {
        let b = b.clone();
        tokio::spawn(async move { b.acquire_owned().await })
    };
    settle().await;
    assert_eq!(b.queued(), 1);
    drop(holder);
    let p = next.await.unwrap().unwrap();
    assert_eq!((b.in_use(), b.queued()), (1, 0));
    drop(p);
    assert_eq!(b.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_running_call_frees_its_slot() {
    let b = bulkhead(1, 0).build().unwrap();
    let r = tokio::time::timeout(
        100 * MS,
        b.execute(|| async {
            sleep(SEC).await;
            Ok::<_, ()>(())
        }),
    )
    .await;
    assert!(r.is_err());
    assert_eq!(b.in_use(), 0);
    assert!(b.try_acquire().is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_slot_handed_to_a_cancelled_waiter_passes_on() {
    let b = bulkhead(1, 2).build().unwrap();
    let holder = b.try_acquire_owned().unwrap();
    let spawn = |b: &Bulkhead| {
        let b = b.clone();
        tokio::spawn(async move {
            let p = b.acquire_owned().await.unwrap();
            sleep(SEC).await;
            drop(p);
        })
    };
    let first = spawn(&b);
    settle().await;
    let second = spawn(&b);
    settle().await;
    assert_eq!(b.queued(), 2);

    // The slot goes to `first`, which is cancelled before it runs again.
    drop(holder);
    first.abort();
    assert!(first.await.unwrap_err().is_cancelled());
    settle().await;
    // `second` has it now; nothing leaked.
    assert_eq!((b.in_use(), b.queued()), (1, 0));
    second.await.unwrap();
    assert_eq!(b.in_use(), 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_get_slots_in_arrival_order() {
    let b = bulkhead(2, 10).build().unwrap();
    let order: Arc<Mutex<Vec<u32>>> = Arc::default();
    let a = b.try_acquire_owned().unwrap();
    let c = b.try_acquire_owned().unwrap();
    let mut tasks = Vec::new();
    for i in 0..6 {
        let (b, order) = (b.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let _p = b.acquire().await.unwrap();
            order.lock().unwrap().push(i);
            sleep(10 * MS).await;
        }));
        settle().await;
    }
    assert_eq!(b.queued(), 6);
    drop(a);
    // A newcomer cannot overtake the queue, even right after a release.
    assert!(b.try_acquire().is_err());
    drop(c);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn never_more_than_max_concurrent_under_contention() {
    let b = Bulkhead::builder("stress")
        .max_concurrent(3)
        .max_queued(1000)
        .build()
        .unwrap();
    let running = Arc::new(AtomicU32::new(0));
    let peak = Arc::new(AtomicU32::new(0));
    let mut tasks = Vec::new();
    for i in 0..200u32 {
        let (b, running, peak) = (b.clone(), running.clone(), peak.clone());
        tasks.push(tokio::spawn(async move {
            b.execute(|| async {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                for _ in 0..(i % 3) {
                    yield_now().await;
                }
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, ()>(())
            })
            .await
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert!(peak.load(Ordering::SeqCst) <= 3);
    assert_eq!((b.in_use(), b.queued()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn emits_acquired_released_and_full() {
    let log: Arc<Mutex<Vec<Event>>> = Arc::default();
    let l = log.clone();
    let b = bulkhead(1, 1)
        .max_wait(50 * MS)
        .on_event(move |e| l.lock().unwrap().push(e.clone()))
        .build()
        .unwrap();
    let mut rx = b.subscribe();
    let p = b.acquire().await.unwrap();
    assert!(b.acquire().await.is_err()); // waits 50 ms, then refused
    drop(p);
    let kinds: Vec<_> = log.lock().unwrap().iter().map(|e| e.kind.clone()).collect();
    assert_eq!(
        kinds,
        vec![
            EventKind::BulkheadAcquired {
                in_use: 1,
                queued: 0,
                waited: Duration::ZERO
            },
            EventKind::BulkheadFull { waited: 50 * MS },
            EventKind::BulkheadReleased { in_use: 0 },
        ]
    );
    assert_eq!(
        rx.recv().await.unwrap().kind.policy(),
        ripcord::PolicyKind::Bulkhead
    );
}

#[tokio::test(start_paused = true)]
async fn composed_errors_pass_through() {
    let b = bulkhead(1, 0).build().unwrap();
    let r: Result<(), Error<&str>> = b
        .execute_composed(|| async { Err(Error::Inner("inner")) })
        .await;
    assert!(matches!(r, Err(Error::Inner("inner"))));
    assert_eq!(b.in_use(), 0);
}

#[test]
fn validation_names_the_field_and_the_range() {
    let e = Bulkhead::builder("x")
        .max_concurrent(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `max_concurrent` = 0: expected 1 to 1000000 concurrent calls"
    );
    let e = Bulkhead::builder("x")
        .max_queued(2_000_000)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_queued");
    let e = Bulkhead::builder("x")
        .max_wait(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_wait");
    let e = Bulkhead::builder("x")
        .event_capacity(0)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "event_capacity");
    let d = Bulkhead::builder("defaults").build().unwrap();
    assert_eq!(
        (d.name(), d.max_concurrent(), d.max_queued()),
        ("defaults", 25, 0)
    );
}

#[test]
fn config_deserializes_from_toml() {
    let c: BulkheadConfig = toml::from_str(
        r#"
        max_concurrent = 10
        max_queued = 100
        max_wait = "250ms"
        "#,
    )
    .unwrap();
    assert_eq!(
        c,
        BulkheadConfig {
            max_concurrent: 10,
            max_queued: 100,
            max_wait: Some(250 * MS),
        }
    );
    let b = Bulkhead::builder("cfg").config(c).build().unwrap();
    assert_eq!(b.max_queued(), 100);
    assert_eq!(
        toml::from_str::<BulkheadConfig>("").unwrap(),
        BulkheadConfig::default()
    );
    assert!(toml::from_str::<BulkheadConfig>("max_concurrency = 3").is_err());
    let bad: BulkheadConfig = toml::from_str("max_concurrent = 0").unwrap();
    assert_eq!(bad.validate().unwrap_err().field(), "max_concurrent");
}

#[test]
fn a_queue_of_a_million_is_the_largest() {
    let ok = |n| {
        Bulkhead::builder("q")
            .max_queued(n)
            .build()
            .map(|_| ())
            .map_err(|e| e.field())
    };
    assert_eq!(ok(1_000_000), Ok(()));
    assert_eq!(ok(1_000_001), Err("max_queued"));
}

#[test]
fn bulkheads_builders_and_permits_say_what_they_are() {
    let builder = Bulkhead::builder("db-pool").max_concurrent(3).max_queued(2);
    let shown = format!("{builder:?}");
    assert!(
        shown.starts_with("BulkheadBuilder") && shown.contains("db-pool"),
        "{shown}"
    );
    assert!(shown.contains("max_concurrent: 3"), "{shown}");
    let b = builder.build().unwrap();
    let permit = b.try_acquire().unwrap();
    let owned = b.try_acquire_owned().unwrap();
    let shown = format!("{b:?}");
    assert!(shown.starts_with("Bulkhead {"), "{shown}");
    assert!(
        shown.contains("db-pool")
            && shown.contains("max_concurrent: 3")
            && shown.contains("max_queued: 2")
            && shown.contains("in_use: 2"),
        "{shown}"
    );
    let shown = format!("{permit:?}");
    assert!(
        shown.starts_with("BulkheadPermit") && shown.contains("db-pool"),
        "{shown}"
    );
    let shown = format!("{owned:?}");
    assert!(
        shown.starts_with("OwnedBulkheadPermit") && shown.contains("db-pool"),
        "{shown}"
    );
}
