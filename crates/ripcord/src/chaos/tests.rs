use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::*;
use crate::{EventKind, ManualClock};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Counts, over `n` calls: delayed, then each fault kind by
/// [`Fault::as_str`] order (abort, error, reset, stall, outcome).
fn tally(chaos: &Chaos, n: u64) -> (u64, [u64; 5], Vec<Duration>) {
    let mut delayed = 0;
    let mut faults = [0; 5];
    let mut delays = Vec::new();
    for _ in 0..n {
        let Some(i) = chaos.decide() else { continue };
        assert!(i.delay.is_some() || i.fault.is_some(), "an empty injection");
        if let Some(d) = i.delay {
            delayed += 1;
            delays.push(d);
        }
        if let Some(f) = i.fault {
            let k = ["abort", "error", "reset", "stall", "outcome"]
                .iter()
                .position(|s| *s == f.as_str())
                .unwrap();
            faults[k] += 1;
        }
    }
    (delayed, faults, delays)
}

#[test]
fn rates_are_exact_over_a_long_seeded_run() {
    let clock = ManualClock::new();
    // Whole blocks of the stratified draw.
    let n = 200 * 1024;
    for seed in [0, 1, 42, u64::MAX] {
        let chaos = Chaos::builder("c")
            .latency(0.3, Latency::fixed(ms(5)))
            .abort(0.05)
            .error(0.1)
            .reset(0.02)
            .stall(0.01)
            .outcome(0.2, Outcome::Failure)
            .seed(seed)
            .clock(clock.clone())
            .build()
            .unwrap();
        let (delayed, faults, _) = tally(&chaos, n);
        let expected = [0.05, 0.1, 0.02, 0.01, 0.2];
        // Stratified draws: within a handful of calls of the rate, where
        // independent draws would stray by hundreds (one standard deviation
        // of 0.3 × 204,800 is 207).
        let near = |got: u64, p: f64| (got as f64 - p * n as f64).abs() <= 8.0;
        assert!(near(delayed, 0.3), "seed {seed}: delayed {delayed}");
        for (k, p) in expected.iter().enumerate() {
            assert!(near(faults[k], *p), "seed {seed}: fault {k}: {}", faults[k]);
        }
        // Latency is drawn on its own: the delayed calls carry faults at the
        // same rates as the rest.
        assert_eq!(chaos.counts().0, n);
    }
}

#[test]
fn the_shuffle_of_a_block_is_a_permutation() {
    for key in [0, 1, 0xDEAD_BEEF, u64::MAX, mix(7)] {
        let mut seen = vec![false; 1024];
        for j in 0..1024 {
            let i = shuffle(j, key) as usize;
            assert!(!seen[i], "key {key}: {i} twice");
            seen[i] = true;
        }
    }
}

#[test]
fn consecutive_calls_are_hit_as_if_independently() {
    // Pairs and triples of consecutive hits at the rates independent draws
    // give: a retry after an injected fault is not spared by a pattern.
    let chaos = Chaos::builder("c").abort(0.5).seed(21).build().unwrap();
    let hits: Vec<bool> = (0..100_000).map(|_| chaos.decide().is_some()).collect();
    let pairs = hits.windows(2).filter(|w| w[0] && w[1]).count();
    let triples = hits.windows(3).filter(|w| w.iter().all(|h| *h)).count();
    assert!((24_000..=26_000).contains(&pairs), "{pairs}");
    assert!((11_700..=13_300).contains(&triples), "{triples}");
}

#[test]
fn latency_and_faults_are_drawn_independently() {
    let chaos = Chaos::builder("c")
        .latency(0.5, Latency::fixed(ms(1)))
        .abort(0.5)
        .seed(9)
        .build()
        .unwrap();
    let mut both = 0;
    for _ in 0..100_000 {
        if let Some(i) = chaos.decide() {
            if i.delay.is_some() && i.fault.is_some() {
                both += 1;
            }
        }
    }
    // A quarter of the calls, as for two independent draws.
    assert!((24_000..=26_000).contains(&both), "{both}");
}

#[test]
fn the_same_seed_hits_the_same_calls() {
    let make = |seed| {
        Chaos::builder("c")
            .latency(0.2, Latency::uniform(ms(10), ms(100)))
            .abort(0.1)
            .outcome(0.1, Outcome::Ignored)
            .seed(seed)
            .build()
            .unwrap()
    };
    let (a, b, c) = (make(5), make(5), make(6));
    let run = |x: &Chaos| (0..5_000).map(|_| x.decide()).collect::<Vec<_>>();
    let (ra, rb, rc) = (run(&a), run(&b), run(&c));
    assert_eq!(ra, rb);
    assert_ne!(ra, rc);
}

#[test]
fn latency_distributions_stay_within_their_bounds() {
    let n = 50_000;
    let mean = |d: &[Duration]| d.iter().map(|d| d.as_secs_f64()).sum::<f64>() / d.len() as f64;

    let fixed = Chaos::builder("f")
        .latency(1.0, Latency::fixed(ms(250)))
        .seed(1)
        .build()
        .unwrap();
    let (delayed, _, delays) = tally(&fixed, 1_000);
    assert_eq!(delayed, 1_000);
    assert!(delays.iter().all(|d| *d == ms(250)));

    let uniform = Chaos::builder("u")
        .latency(1.0, Latency::uniform(ms(100), ms(300)))
        .seed(2)
        .build()
        .unwrap();
    let (_, _, delays) = tally(&uniform, n);
    assert!(delays.iter().all(|d| (ms(100)..=ms(300)).contains(d)));
    assert!((mean(&delays) - 0.2).abs() < 0.002, "{}", mean(&delays));
    let low = delays.iter().filter(|d| **d < ms(150)).count() as f64 / n as f64;
    assert!((low - 0.25).abs() < 0.01, "{low}");

    let exp = Chaos::builder("e")
        .latency(1.0, Latency::exponential(ms(50), Duration::from_secs(10)))
        .seed(3)
        .build()
        .unwrap();
    let (_, _, delays) = tally(&exp, n);
    assert!(delays.iter().all(|d| *d <= Duration::from_secs(10)));
    assert!((mean(&delays) - 0.05).abs() < 0.0025, "{}", mean(&delays));
    // P(X > mean) = 1/e for an exponential distribution.
    let above = delays.iter().filter(|d| **d > ms(50)).count() as f64 / n as f64;
    assert!((above - (-1f64).exp()).abs() < 0.01, "{above}");

    let capped = Chaos::builder("cap")
        .latency(1.0, Latency::exponential(ms(50), ms(60)))
        .seed(4)
        .build()
        .unwrap();
    let (_, _, delays) = tally(&capped, 10_000);
    assert!(delays.iter().all(|d| *d <= ms(60)));
    assert!(delays.iter().any(|d| *d == ms(60)));
}

#[test]
fn a_disabled_or_expired_policy_injects_nothing() {
    let clock = ManualClock::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let chaos = Chaos::builder("c")
        .abort(1.0)
        .enabled(false)
        .clock(clock.clone())
        .on_event(move |e| seen.lock().unwrap().push(e.kind.clone()))
        .build()
        .unwrap();
    assert!(!chaos.is_enabled());
    assert!((0..1000).all(|_| chaos.decide().is_none()));
    assert_eq!(chaos.counts(), (0, 0));

    chaos.enable_for(Duration::from_secs(30)).unwrap();
    assert_eq!(chaos.expires_in(), Some(Duration::from_secs(30)));
    assert!(chaos.decide().is_some());
    clock.advance(Duration::from_secs(29));
    assert!(chaos.decide().is_some());
    clock.advance(Duration::from_secs(1));
    assert!(!chaos.is_enabled());
    assert!((0..1000).all(|_| chaos.decide().is_none()));
    assert_eq!(chaos.counts(), (2, 2));
    assert_eq!(chaos.expires_in(), None);

    chaos.enable();
    assert!(chaos.decide().is_some());
    chaos.disable();
    assert!(chaos.decide().is_none());

    let switched: Vec<_> = events
        .lock()
        .unwrap()
        .iter()
        .filter_map(|k| match k {
            EventKind::FaultSwitched {
                enabled,
                expires_in,
            } => Some((*enabled, *expires_in)),
            _ => None,
        })
        .collect();
    assert_eq!(
        switched,
        [
            (true, Some(Duration::from_secs(30))),
            (false, None), // lapsed, reported once
            (true, None),
            (false, None),
        ]
    );
}

#[test]
fn a_configured_expiry_counts_from_the_build() {
    let clock = ManualClock::new();
    let chaos = Chaos::builder("c")
        .abort(1.0)
        .expires_after(ms(500))
        .clock(clock.clone())
        .build()
        .unwrap();
    assert!(chaos.decide().is_some());
    clock.advance(ms(500));
    assert!(chaos.decide().is_none());
    // Enabled again: the configured expiry again.
    chaos.enable();
    assert_eq!(chaos.expires_in(), Some(ms(500)));
}

#[test]
fn events_say_what_was_injected_and_what_was_skipped() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let seen = events.clone();
    let chaos = Chaos::builder("c")
        .abort(0.5)
        .abort_status(503)
        .seed(3)
        .on_event(move |e| seen.lock().unwrap().push(e.kind.clone()))
        .build()
        .unwrap();
    let hits = (0..100).filter(|_| chaos.decide().is_some()).count();
    let events = events.lock().unwrap();
    let injected = events
        .iter()
        .filter(|k| {
            matches!(
                k,
                EventKind::FaultInjected {
                    fault: Some(Fault::Abort { status: Some(503) }),
                    delay: None
                }
            )
        })
        .count();
    let skipped = events
        .iter()
        .filter(|k| matches!(k, EventKind::FaultSkipped))
        .count();
    assert_eq!((injected, skipped), (hits, 100 - hits));
    assert!(events
        .iter()
        .all(|k| k.policy() == crate::PolicyKind::Chaos));
}

#[test]
fn scale_multiplies_every_rate_and_keeps_them_within_one() {
    let chaos = Chaos::builder("c")
        .latency(0.1, Latency::fixed(ms(1)))
        .abort(0.2)
        .error(0.2)
        .seed(1)
        .build()
        .unwrap();
    chaos.set_scale(0.5).unwrap();
    // Whole blocks of the stratified draw: 100 × 1,024 calls.
    let n = 102_400;
    let near = |got: u64, p: f64| (got as f64 - p * n as f64).abs() <= 10.0;
    let (delayed, faults, _) = tally(&chaos, n);
    assert!(near(delayed, 0.05), "{delayed}");
    assert!(near(faults[0], 0.1) && near(faults[1], 0.1), "{faults:?}");

    // × 4: abort 0.8, error 0.8 → what is left of the unit, 0.2.
    chaos.set_scale(4.0).unwrap();
    let (delayed, faults, _) = tally(&chaos, n);
    assert!(near(delayed, 0.4), "{delayed}");
    assert!(near(faults[0], 0.8) && near(faults[1], 0.2), "{faults:?}");

    chaos.set_scale(0.0).unwrap();
    assert!((0..1000).all(|_| chaos.decide().is_none()));
    for bad in [-1.0, f64::NAN, 1e9] {
        assert_eq!(chaos.set_scale(bad).unwrap_err().field(), "scale");
    }
    assert_eq!(chaos.scale(), 0.0);
}

#[test]
fn reconfigure_replaces_the_faults_and_switches_as_told() {
    let clock = ManualClock::new();
    let chaos = Chaos::builder("c").clock(clock.clone()).build().unwrap();
    assert!(chaos.is_enabled());
    assert!(chaos.decide().is_none());
    let config = ChaosConfig {
        stall_rate: 1.0,
        expires_after: Some(Duration::from_secs(5)),
        ..ChaosConfig::default()
    };
    chaos.reconfigure(config.clone()).unwrap();
    assert_eq!(chaos.config(), config);
    assert_eq!(chaos.counts(), (0, 0), "the draws start afresh");
    assert_eq!(chaos.decide().unwrap().fault, Some(Fault::Stall));
    assert_eq!(chaos.expires_in(), Some(Duration::from_secs(5)));

    let bad = ChaosConfig {
        abort_rate: 1.5,
        ..ChaosConfig::default()
    };
    assert_eq!(chaos.reconfigure(bad).unwrap_err().field(), "abort_rate");
    // A refused configuration changes nothing.
    assert_eq!(chaos.config(), config);

    chaos
        .reconfigure(ChaosConfig {
            enabled: false,
            ..config
        })
        .unwrap();
    assert!(chaos.decide().is_none());

    // The same seed, reconfigured: the same calls hit again.
    let half = ChaosConfig {
        abort_rate: 0.5,
        seed: Some(77),
        ..ChaosConfig::default()
    };
    let run = || {
        chaos.reconfigure(half.clone()).unwrap();
        (0..300)
            .map(|_| chaos.decide().is_some())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

#[test]
fn every_bad_value_is_refused_with_its_field() {
    let bad = |b: ChaosBuilder| b.build().unwrap_err().field();
    let b = || Chaos::builder("c");
    assert_eq!(bad(b().abort(-0.1)), "abort_rate");
    assert_eq!(bad(b().error(f64::NAN)), "error_rate");
    assert_eq!(bad(b().reset(2.0)), "reset_rate");
    assert_eq!(bad(b().stall(1.1)), "stall_rate");
    assert_eq!(bad(b().outcome(-1.0, Outcome::Success)), "outcome_rate");
    assert_eq!(
        bad(b().abort(0.6).outcome(0.6, Outcome::Failure)),
        "abort_rate"
    );
    assert_eq!(bad(b().latency(1.5, Latency::fixed(ms(1)))), "latency_rate");
    assert_eq!(
        bad(b().latency(0.5, Latency::uniform(ms(10), ms(1)))),
        "latency"
    );
    assert_eq!(
        bad(b().latency(0.5, Latency::exponential(Duration::ZERO, ms(1)))),
        "latency"
    );
    assert_eq!(
        bad(b().latency(0.5, Latency::fixed(Duration::from_secs(86_401)))),
        "latency"
    );
    assert_eq!(bad(b().abort_status(0)), "abort_status");
    assert_eq!(bad(b().abort_status(600)), "abort_status");
    assert_eq!(bad(b().expires_after(Duration::ZERO)), "expires_after");
    assert_eq!(bad(b().event_capacity(0)), "event_capacity");
    let no_latency = ChaosConfig {
        latency_rate: 0.5,
        ..ChaosConfig::default()
    };
    assert_eq!(bad(b().config(no_latency)), "latency");
    let chaos = b().build().unwrap();
    assert_eq!(
        chaos
            .enable_for(Duration::from_secs(86_401))
            .unwrap_err()
            .field(),
        "expires_after"
    );
    // Rates that add up to one exactly are fine.
    b().abort(0.7).error(0.2).reset(0.1).build().unwrap();
}

#[cfg(feature = "serde")]
#[test]
fn a_configuration_reads_from_toml() {
    let c: ChaosConfig = toml::from_str(
        r#"
        latency_rate = 0.2
        latency = { mean = "200ms", max = "2s" }
        abort_rate = 0.1
        abort_status = 503
        outcome_rate = 0.05
        outcome = "ignored"
        seed = 7
        expires_after = "10m"
        "#,
    )
    .unwrap();
    assert_eq!(
        c.latency,
        Some(Latency::exponential(ms(200), Duration::from_secs(2)))
    );
    assert_eq!(
        (c.abort_rate, c.abort_status, c.seed),
        (0.1, Some(503), Some(7))
    );
    assert_eq!(c.outcome, Outcome::Ignored);
    assert_eq!(c.expires_after, Some(Duration::from_secs(600)));
    c.validate().unwrap();

    let l: ChaosConfig = toml::from_str("latency = \"1500ms\"").unwrap();
    assert_eq!(l.latency, Some(Latency::fixed(ms(1500))));
    let u: ChaosConfig = toml::from_str("latency = { min = \"1ms\", max = \"9ms\" }").unwrap();
    assert_eq!(u.latency, Some(Latency::uniform(ms(1), ms(9))));

    // Written back in the same forms, and read back the same.
    for c in [c.clone(), l, u] {
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<ChaosConfig>(&text).unwrap(), c, "{text}");
    }

    let err = toml::from_str::<ChaosConfig>("latency = { min = \"1ms\" }")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`min` and `max`"), "{err}");
    let err = toml::from_str::<ChaosConfig>("abort = 0.5")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `abort`"), "{err}");
}
