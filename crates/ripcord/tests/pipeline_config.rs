//! `PipelineConfig`: equality (a reload decides "unchanged" by `==`) and the
//! keyed form's default order.

use std::time::Duration;

use ripcord::pipeline::PolicyConfig;
use ripcord::{Backoff, CircuitBreakerConfig, PipelineConfig, PolicyKind, RetryConfig};

const FILE: &str = r#"
name = "payments"

[[policy]]
kind = "timeout"
timeout = "2s"

[[policy]]
kind = "retry"
max_attempts = 3
backoff = { kind = "exponential", base = "100ms", max = "2s", jitter = "full" }
budget = { ratio = 0.2, min_per_second = 10, window = "10s" }

[[policy]]
kind = "circuit_breaker"
failure_rate = 0.5
slow_calls = { duration = "800ms", rate = 0.5 }
window = { time = "10s", buckets = 10 }
open_for = { kind = "exponential", base = "5s", max = "2m", jitter = 0.2 }

[[policy]]
kind = "bulkhead"
max_concurrent = 16

[[policy]]
kind = "rate_limiter"
rate = 100
period = "1s"

[[policy]]
kind = "hedge"
delay = { percentile = 0.9, initial = "40ms" }
max_hedges = 2

[[policy]]
kind = "fallback"
on_refused = false
"#;

fn parse(s: &str) -> PipelineConfig {
    toml::from_str(s).unwrap_or_else(|e| panic!("{e}\n{s}"))
}

#[test]
fn equal_configurations_compare_equal() {
    let a = parse(FILE);
    assert_eq!(a, parse(FILE));
    assert_eq!(a, a.clone());
    assert_eq!(a.policies.len(), 7);
    for (x, y) in a.policies.iter().zip(&parse(FILE).policies) {
        assert_eq!(x, y, "{:?}", x.kind());
    }
    assert_eq!(
        PipelineConfig::<ripcord::FallbackConfig>::default(),
        PipelineConfig::default()
    );
}

#[test]
fn a_changed_field_compares_unequal() {
    let a = parse(FILE);
    // One field changed in each policy's table, nested tables included.
    for (from, to) in [
        ("name = \"payments\"", "name = \"orders\""),
        ("timeout = \"2s\"", "timeout = \"3s\""),
        ("max_attempts = 3", "max_attempts = 4"),
        ("base = \"100ms\"", "base = \"200ms\""),
        ("jitter = \"full\"", "jitter = 0.5"),
        ("ratio = 0.2", "ratio = 0.3"),
        ("failure_rate = 0.5", "failure_rate = 0.6"),
        ("duration = \"800ms\"", "duration = \"900ms\""),
        ("buckets = 10", "buckets = 20"),
        ("max = \"2m\"", "max = \"3m\""),
        ("max_concurrent = 16", "max_concurrent = 17"),
        ("rate = 100", "rate = 101"),
        ("percentile = 0.9", "percentile = 0.95"),
        ("max_hedges = 2", "max_hedges = 3"),
        ("on_refused = false", "on_refused = true"),
    ] {
        assert_eq!(FILE.matches(from).count(), 1, "{from}");
        let b = parse(&FILE.replace(from, to));
        assert_ne!(a, b, "{from} → {to}");
    }
    // The same policies in another order differ too.
    let mut swapped = a.clone();
    swapped.policies.swap(0, 1);
    assert_ne!(a, swapped);
    let mut fewer = a.clone();
    fewer.policies.pop();
    assert_ne!(a, fewer);
}

#[test]
fn configurations_built_in_code_compare_by_value() {
    let retry = |ms| RetryConfig {
        backoff: Backoff::fixed(Duration::from_millis(ms)),
        ..RetryConfig::default()
    };
    assert_eq!(retry(100), retry(100));
    assert_ne!(retry(100), retry(101));
    assert_ne!(
        PolicyConfig::<ripcord::FallbackConfig>::Retry(retry(100)),
        PolicyConfig::CircuitBreaker(CircuitBreakerConfig::default())
    );
    // A backoff given as a function equals only its clones.
    let custom = Backoff::from_fn(|n| Duration::from_secs(u64::from(n)));
    assert_eq!(custom, custom.clone());
    assert_ne!(
        custom,
        Backoff::from_fn(|n| Duration::from_secs(u64::from(n)))
    );
    assert_ne!(Backoff::fixed(Duration::from_secs(1)), custom);
    assert_eq!(
        PolicyConfig::<ripcord::FallbackConfig>::Retry(retry(1)).kind(),
        PolicyKind::Retry
    );
}

#[test]
fn the_keyed_form_without_order_takes_the_default_order() {
    // The tables in the reverse of the default order: the file's order does
    // not count.
    let config = parse(
        r#"
        name = "route"

        [chaos]
        abort_rate = 0.1

        [timeout]
        timeout = "2s"

        [bulkhead]
        max_concurrent = 8

        [circuit_breaker]
        consecutive_failures = 5

        [hedge]
        max_hedges = 1

        [retry]
        max_attempts = 2

        [rate_limiter]
        rate = 100
        period = "1s"

        [fallback]
        on_refused = false
        "#,
    );
    let kinds: Vec<_> = config.policies.iter().map(PolicyConfig::kind).collect();
    assert_eq!(kinds, PipelineConfig::DEFAULT_ORDER);
    assert_eq!(
        kinds,
        [
            PolicyKind::Fallback,
            PolicyKind::RateLimiter,
            PolicyKind::Retry,
            PolicyKind::Hedge,
            PolicyKind::CircuitBreaker,
            PolicyKind::Bulkhead,
            PolicyKind::Timeout,
            PolicyKind::Chaos,
        ]
    );
    assert_eq!(config.name.as_deref(), Some("route"));
    let PolicyConfig::Retry(retry) = &config.policies[2] else {
        panic!("{:?}", config.policies[2])
    };
    assert_eq!(retry.max_attempts, 2);

    // Only the tables given are placed, and they build: each attempt of the
    // retry goes through the breaker and its own timeout.
    let config = parse("[timeout]\ntimeout = \"2s\"\n[retry]\n[circuit_breaker]\n");
    let p: ripcord::Pipeline<u32, String> = config.builder().unwrap().build().unwrap();
    assert_eq!(
        p.kinds().collect::<Vec<_>>(),
        [
            PolicyKind::Retry,
            PolicyKind::CircuitBreaker,
            PolicyKind::Timeout
        ]
    );
    assert_eq!(p.timeout().unwrap().duration(), Duration::from_secs(2));
    assert_eq!(p.retry().unwrap().max_attempts(), 3);

    // One table alone.
    let config = parse("[timeout]\ntimeout = \"1s\"\n");
    assert_eq!(
        config.policies,
        [PolicyConfig::Timeout(ripcord::TimeoutConfig {
            timeout: Duration::from_secs(1),
        })]
    );
}

#[test]
fn an_explicit_order_is_still_honoured() {
    let config = parse(
        r#"
        order = ["timeout", "retry", "circuit_breaker", "bulkhead"]

        [timeout]
        timeout = "2s"

        [circuit_breaker]
        failure_rate = 0.5
        "#,
    );
    let kinds: Vec<_> = config.policies.iter().map(PolicyConfig::kind).collect();
    assert_eq!(
        kinds,
        [
            PolicyKind::Timeout,
            PolicyKind::Retry,
            PolicyKind::CircuitBreaker,
            PolicyKind::Bulkhead
        ]
    );
    // Kinds listed without a table take their defaults.
    assert_eq!(
        config.policies[1],
        PolicyConfig::Retry(RetryConfig::default())
    );
    // An empty `order` is an empty pipeline.
    assert!(parse("order = []\n").policies.is_empty());
}

#[test]
fn mistakes_in_the_keyed_form_are_still_errors() {
    let bad = |s: &str| toml::from_str::<PipelineConfig>(s).unwrap_err().to_string();
    let e = bad("order = [\"retry\"]\n[timeout]\ntimeout = \"1s\"\n");
    assert!(
        e.contains("`[timeout]` table is not listed in `order`"),
        "{e}"
    );
    let e = bad("order = [\"retry\", \"timeout\", \"retry\"]\n");
    assert!(e.contains("`retry` twice"), "{e}");
    let e = bad("order = [\"teleport\"]\n");
    assert!(e.contains("teleport"), "{e}");
    // Both forms at once, with or without `order`.
    let e = bad("order = []\n[[policy]]\nkind = \"timeout\"\n");
    assert!(e.contains("not both"), "{e}");
    let e = bad("[retry]\n[[policy]]\nkind = \"timeout\"\n");
    assert!(e.contains("not both") && e.contains("`[retry]`"), "{e}");
    // An unknown table, an unknown field in a table.
    let e = bad("[teleport]\n");
    assert!(e.contains("teleport"), "{e}");
    let e = bad("[timeout]\ntimout = \"1s\"\n");
    assert!(e.contains("timout"), "{e}");
    // Values are still checked when building.
    let config = parse("[bulkhead]\nmax_concurrent = 0\n");
    assert_eq!(config.validate().unwrap_err().field(), "max_concurrent");
}
