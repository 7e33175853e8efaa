//! Per-key registries: isolation, bounds, eviction, and the open-share cap.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::registry::RegistryError;
use ripcord::{
    Backoff, CircuitBreaker, CircuitBreakerBuilder, EventKind, ManualClock, Outcome, Registry,
    State,
};

fn template(clock: &ManualClock) -> CircuitBreakerBuilder {
    CircuitBreaker::builder("template")
        .consecutive_failures(3)
        .open_for(Backoff::fixed(Duration::from_secs(30)))
        .clock(clock.clone())
}

fn fail(b: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        if let Ok(p) = b.try_acquire() {
            p.record(Outcome::Failure);
        }
    }
}

#[test]
fn members_are_created_lazily_named_after_their_key_and_shared() {
    let clock = ManualClock::new();
    let reg: Registry<String> = Registry::builder(template(&clock)).build().unwrap();
    assert!(reg.is_empty());
    let a = reg.get(&"a".into()).unwrap();
    assert_eq!(a.name(), "a");
    assert!(a.same_as(&reg.get(&"a".into()).unwrap()));
    assert!(!a.same_as(&reg.get(&"b".into()).unwrap()));
    assert_eq!(reg.len(), 2);
    assert!(reg.peek(&"c".into()).is_none());
    assert_eq!(reg.len(), 2, "peek does not create");
}

#[test]
fn one_failing_key_never_affects_another() {
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock)).build().unwrap();
    fail(&reg.get(&1).unwrap(), 3);
    assert_eq!(reg.get(&1).unwrap().state(), State::Open);
    for k in 2..50 {
        let b = reg.get(&k).unwrap();
        assert_eq!(b.state(), State::Closed);
        assert!(b.try_acquire().is_ok());
    }
}

#[test]
fn one_failing_key_never_affects_another_under_concurrency() {
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock)).build().unwrap();
    let rejected_healthy = std::sync::atomic::AtomicU64::new(0);
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let reg = &reg;
            let rejected_healthy = &rejected_healthy;
            s.spawn(move || {
                for i in 0..5_000u32 {
                    let key = (i + t) % 20;
                    let b = reg.get(&key).unwrap();
                    match b.try_acquire() {
                        // Keys 0..5 always fail; the rest always succeed.
                        Ok(p) => p.record(if key < 5 {
                            Outcome::Failure
                        } else {
                            Outcome::Success
                        }),
                        Err(_) if key >= 5 => {
                            rejected_healthy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(_) => {}
                    };
                }
            });
        }
    });
    assert_eq!(rejected_healthy.into_inner(), 0);
    for k in 0..20 {
        let want = if k < 5 { State::Open } else { State::Closed };
        assert_eq!(reg.get(&k).unwrap().state(), want, "key {k}");
    }
}

#[test]
fn bounded_size_evicts_idle_then_least_recently_used_but_never_open() {
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock))
        .max_keys(3)
        .idle_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let open = reg.get(&0).unwrap();
    fail(&open, 3);
    clock.advance(Duration::from_secs(1));
    reg.get(&1).unwrap();
    clock.advance(Duration::from_secs(1));
    reg.get(&2).unwrap();
    clock.advance(Duration::from_secs(1));
    // Full: nothing idle yet, so the LRU unpinned member (1) goes; 0 is open.
    reg.get(&3).unwrap();
    assert_eq!(reg.len(), 3);
    assert!(reg.peek(&0).is_some(), "open breaker kept");
    assert!(reg.peek(&1).is_none(), "least recently used evicted");
    // Idle members go first, all at once.
    clock.advance(Duration::from_secs(120));
    reg.get(&4).unwrap();
    assert!(
        reg.peek(&0).is_some(),
        "open breaker is never evicted, even idle"
    );
    assert_eq!(reg.len(), 2);
}

#[test]
fn a_registry_full_of_open_breakers_says_so() {
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock))
        .max_keys(2)
        .build()
        .unwrap();
    fail(&reg.get(&0).unwrap(), 3);
    fail(&reg.get(&1).unwrap(), 3);
    let e = reg.get(&2).unwrap_err();
    assert_eq!(e, RegistryError::Full { max_keys: 2 });
    assert_eq!(
        e.to_string(),
        "registry is full: all 2 members are open and cannot be evicted"
    );
    reg.get(&0).unwrap().reset();
    assert!(reg.get(&2).is_ok(), "a closed member can make room");
}

#[test]
fn evict_idle_reclaims_unused_members() {
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock))
        .idle_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for k in 0..100 {
        reg.get(&k).unwrap();
    }
    clock.advance(Duration::from_secs(5));
    reg.get(&7).unwrap(); // within TOUCH_EVERY resolution: 5 s ≫ 100 ms
    clock.advance(Duration::from_secs(6));
    assert_eq!(reg.evict_idle(), 99);
    assert!(reg.peek(&7).is_some());
}

#[test]
fn open_share_cap_fails_open_and_reports_it() {
    let clock = ManualClock::new();
    let suppressed = Arc::new(Mutex::new(Vec::new()));
    let s = suppressed.clone();
    let reg: Registry<u32> = Registry::builder(template(&clock).on_event(move |e| {
        if let EventKind::TripSuppressed { .. } = e.kind {
            s.lock().unwrap().push(e.name.to_string());
        }
    }))
    .max_open_share(0.3)
    .build()
    .unwrap();
    let members: Vec<_> = (0..10).map(|k| reg.get(&k).unwrap()).collect();
    for b in &members {
        fail(b, 3);
    }
    let open = members.iter().filter(|b| b.state() == State::Open).count();
    assert_eq!(open, 3, "30 % of 10");
    assert_eq!(reg.open_count(), Some(3));
    assert_eq!(suppressed.lock().unwrap().len(), 7);
    // Closing one frees a slot for the next trip.
    members[0].reset();
    assert_eq!(reg.open_count(), Some(2));
    fail(&members[9], 1);
    assert_eq!(members[9].state(), State::Open);
    assert_eq!(reg.open_count(), Some(3));
}

#[test]
fn registry_validation() {
    let clock = ManualClock::new();
    let e = Registry::<u32>::builder(template(&clock))
        .max_keys(0)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `max_keys` = 0: expected at least 1 key"
    );
    let e = Registry::<u32>::builder(template(&clock))
        .max_open_share(0.0)
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid `max_open_share` = 0.0: expected a share in (0, 1]"
    );
    let e = Registry::<u32>::builder(template(&clock).failure_rate(2.0))
        .build()
        .unwrap_err();
    assert_eq!(
        e.field(),
        "failure_rate",
        "the template is validated at build"
    );
    let e = Registry::<u32>::builder(template(&clock))
        .idle_timeout(Duration::ZERO)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "idle_timeout");
}

#[test]
fn registries_hold_any_member_through_a_factory() {
    #[derive(Clone)]
    struct Pinned(bool);
    impl ripcord::registry::Member for Pinned {
        fn is_pinned(&self) -> bool {
            self.0
        }
    }
    let reg: Registry<u32, Pinned> = Registry::with_factory(|k: &u32| Ok(Pinned(*k == 0)))
        .max_keys(1)
        .build()
        .unwrap();
    reg.get(&0).unwrap();
    assert!(matches!(reg.get(&1), Err(RegistryError::Full { .. })));
    let e = Registry::<u32, Pinned>::with_factory(|_| Ok(Pinned(false)))
        .max_open_share(0.5)
        .build()
        .unwrap_err();
    assert_eq!(e.field(), "max_open_share");
}

#[test]
fn a_cap_always_allows_one_open_breaker() {
    // 0.5 × 1 key floors to 0, 0.3 × 3 keys too: the cap rounds down but
    // never below one.
    for (share, keys, open) in [(0.5, 1, 1), (0.3, 3, 1), (0.1, 5, 1), (0.5, 5, 2)] {
        let clock = ManualClock::new();
        let reg: Registry<u32> = Registry::builder(template(&clock))
            .max_open_share(share)
            .build()
            .unwrap();
        let members: Vec<_> = (0..keys).map(|k| reg.get(&k).unwrap()).collect();
        for b in &members {
            fail(b, 3);
        }
        let n = members.iter().filter(|b| b.state() == State::Open).count();
        assert_eq!(n, open, "share {share} of {keys} keys");
        assert_eq!(reg.open_count(), Some(open));
    }
}

#[test]
fn new_keys_arriving_together_never_exceed_max_keys() {
    const MAX: usize = 4;
    const THREADS: u32 = 8;
    let clock = ManualClock::new();
    let reg: Registry<u32> = Registry::builder(template(&clock))
        .max_keys(MAX)
        .build()
        .unwrap();
    let most = std::sync::atomic::AtomicUsize::new(0);
    for round in 0..300u32 {
        let barrier = std::sync::Barrier::new(THREADS as usize);
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (reg, barrier, most) = (&reg, &barrier, &most);
                s.spawn(move || {
                    barrier.wait();
                    // Every thread brings a key nobody has seen.
                    reg.get(&(round * THREADS + t)).unwrap();
                    most.fetch_max(reg.len(), std::sync::atomic::Ordering::Relaxed);
                });
            }
        });
        assert!(
            reg.len() <= MAX && reg.entries().len() <= MAX,
            "round {round}: {} members ({} entries) with max_keys {MAX}",
            reg.len(),
            reg.entries().len()
        );
    }
    let most = most.into_inner();
    assert!(most <= MAX, "{most} members at once with max_keys {MAX}");
}
