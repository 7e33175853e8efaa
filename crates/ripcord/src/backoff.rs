//! How long to wait: the open duration of a breaker, growing with consecutive
//! openings, and the delay between retries.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::random::SplitMix64;
use crate::ConfigError;

/// A delay that depends on how many times in a row something happened (for a
/// breaker: the number of consecutive openings, 1 for the first).
///
/// ```
/// use ripcord::Backoff;
/// use std::time::Duration;
///
/// let b = Backoff::exponential(Duration::from_secs(5), Duration::from_secs(120));
/// assert_eq!(b.delay_without_jitter(1), Duration::from_secs(5));
/// assert_eq!(b.delay_without_jitter(2), Duration::from_secs(10));
/// assert_eq!(b.delay_without_jitter(10), Duration::from_secs(120)); // capped
///
/// let custom = Backoff::from_fn(|n| Duration::from_secs(u64::from(n) * 3));
/// assert_eq!(custom.delay_without_jitter(4), Duration::from_secs(12));
/// ```
///
/// # Jitter
///
/// So that a fleet does not retry (or probe) in lockstep, spread the delays:
///
/// | | the `n`-th delay |
/// |---|---|
/// | [`jitter(r)`](Backoff::jitter) | uniform in `[d·(1−r), d·(1+r)]`, at most the cap |
/// | [`full_jitter()`](Backoff::full_jitter) | uniform in `[0, d]` ("full jitter") |
/// | [`decorrelated_jitter(base, max)`](Backoff::decorrelated_jitter) | `min(max, uniform[base, 3·previous])`, the first from `[base, 3·base]` |
///
/// where `d` is [`delay_without_jitter(n)`](Backoff::delay_without_jitter). The
/// last two are the schemes of the AWS Architecture Blog's "Exponential Backoff
/// and Jitter".
///
/// Two backoffs are equal (`==`) when they are of the same kind with the same
/// parameters and jitter; two made by [`from_fn`](Backoff::from_fn) are equal
/// only if they are clones of one another (the same function).
#[derive(Clone, PartialEq)]
pub struct Backoff {
    kind: Kind,
    jitter: Jitter,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Jitter {
    /// Within ±ratio of the delay (0: none).
    Ratio(f64),
    /// Anywhere in `[0, delay]`.
    Full,
}

#[derive(Clone)]
enum Kind {
    Fixed(Duration),
    Exponential {
        base: Duration,
        max: Duration,
        factor: f64,
    },
    Custom(Arc<dyn Fn(u32) -> Duration + Send + Sync>),
    Decorrelated {
        base: Duration,
        max: Duration,
    },
}

impl PartialEq for Kind {
    fn eq(&self, other: &Kind) -> bool {
        match (self, other) {
            (Kind::Fixed(a), Kind::Fixed(b)) => a == b,
            (
                Kind::Exponential { base, max, factor },
                Kind::Exponential {
                    base: b,
                    max: m,
                    factor: f,
                },
            ) => base == b && max == m && factor == f,
            // A function is only known by its address.
            (Kind::Custom(a), Kind::Custom(b)) => Arc::ptr_eq(a, b),
            (Kind::Decorrelated { base, max }, Kind::Decorrelated { base: b, max: m }) => {
                base == b && max == m
            }
            _ => false,
        }
    }
}

impl Backoff {
    /// Always the same delay.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            kind: Kind::Fixed(delay),
            jitter: Jitter::Ratio(0.0),
        }
    }

    /// `base`, then doubling with each repetition, never above `max`.
    pub fn exponential(base: Duration, max: Duration) -> Self {
        Backoff {
            kind: Kind::Exponential {
                base,
                max,
                factor: 2.0,
            },
            jitter: Jitter::Ratio(0.0),
        }
    }

    /// A user function of the repetition count (1 for the first).
    pub fn from_fn(f: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Backoff {
            kind: Kind::Custom(Arc::new(f)),
            jitter: Jitter::Ratio(0.0),
        }
    }

    /// "Decorrelated jitter": each delay is drawn uniformly between `base`
    /// and three times the previous delay (the first between `base` and
    /// `3·base`), never above `max`. Delays grow roughly like an exponential
    /// backoff's but stay spread out. Other jitter settings do not combine
    /// with it.
    ///
    /// Where there is no previous delay to remember (a breaker's open
    /// duration), the `n`-th delay is drawn by running the recurrence `n` times.
    ///
    /// ```
    /// use ripcord::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff::decorrelated_jitter(Duration::from_millis(100), Duration::from_secs(5));
    /// // Its upper bounds: 300 ms, 900 ms, 2.7 s, then the cap.
    /// assert_eq!(b.delay_without_jitter(2), Duration::from_millis(900));
    /// assert_eq!(b.delay_without_jitter(4), Duration::from_secs(5));
    /// ```
    pub fn decorrelated_jitter(base: Duration, max: Duration) -> Self {
        Backoff {
            kind: Kind::Decorrelated { base, max },
            jitter: Jitter::Ratio(0.0),
        }
    }

    /// Sets the growth factor of an exponential backoff (default 2; must be ≥ 1).
    /// Has no effect on other kinds.
    pub fn factor(mut self, factor: f64) -> Self {
        if let Kind::Exponential { factor: f, .. } = &mut self.kind {
            *f = factor;
        }
        self
    }

    /// Spreads each delay uniformly within ±`ratio` of itself (0 ≤ ratio ≤ 1), so
    /// that a fleet does not retry in lockstep. An exponential delay stays at or
    /// below its cap.
    pub fn jitter(mut self, ratio: f64) -> Self {
        self.jitter = Jitter::Ratio(ratio);
        self
    }

    /// Draws each delay uniformly from `[0, d]`, where `d` is the delay without
    /// jitter ("full jitter"). Spreads a fleet's retries the most; some
    /// delays are close to zero.
    ///
    /// ```
    /// use ripcord::Backoff;
    /// use std::time::Duration;
    ///
    /// let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(10)).full_jitter();
    /// assert_eq!(b.delay_without_jitter(3), Duration::from_millis(400)); // the upper bound
    /// ```
    pub fn full_jitter(mut self) -> Self {
        self.jitter = Jitter::Full;
        self
    }

    /// Checks the parameters; `field` names the configuration field in errors.
    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        if let Jitter::Ratio(r) = self.jitter {
            if !(0.0..=1.0).contains(&r) {
                return Err(ConfigError::new(field, r, "a jitter ratio in [0, 1]"));
            }
        }
        match &self.kind {
            Kind::Fixed(d) if d.is_zero() => {
                Err(ConfigError::new(field, d, "a delay greater than zero"))
            }
            Kind::Exponential { base, .. } if base.is_zero() => Err(ConfigError::new(
                field,
                base,
                "a base delay greater than zero",
            )),
            Kind::Exponential { base, max, .. } if max < base => Err(ConfigError::new(
                field,
                max,
                "a maximum delay at least as long as the base delay",
            )),
            Kind::Exponential { factor, .. } if !(factor.is_finite() && *factor >= 1.0) => {
                Err(ConfigError::new(field, factor, "a growth factor ≥ 1"))
            }
            Kind::Decorrelated { base, .. } if base.is_zero() => Err(ConfigError::new(
                field,
                base,
                "a base delay greater than zero",
            )),
            Kind::Decorrelated { base, max } if max < base => Err(ConfigError::new(
                field,
                max,
                "a maximum delay at least as long as the base delay",
            )),
            Kind::Decorrelated { .. } if self.jitter != Jitter::Ratio(0.0) => {
                Err(ConfigError::new(
                    field,
                    "decorrelated_jitter + jitter",
                    "no further jitter on a decorrelated-jitter backoff (it is jittered already)",
                ))
            }
            _ => Ok(()),
        }
    }

    /// The delay for the `n`-th repetition (1-based; 0 is treated as 1), before
    /// jitter. For [`full_jitter`](Self::full_jitter) it is the upper bound of
    /// the delay; for [`decorrelated_jitter`](Self::decorrelated_jitter), the
    /// upper bound `min(max, base·3ⁿ)`.
    pub fn delay_without_jitter(&self, n: u32) -> Duration {
        let n = n.max(1);
        match &self.kind {
            Kind::Decorrelated { base, max } => {
                let secs = base.as_secs_f64() * 3f64.powi(i32::try_from(n).unwrap_or(i32::MAX));
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    *max
                } else {
                    Duration::from_secs_f64(secs)
                }
            }
            Kind::Fixed(d) => *d,
            Kind::Exponential { base, max, factor } => {
                let mult = factor.powi(i32::try_from(n - 1).unwrap_or(i32::MAX));
                let secs = base.as_secs_f64() * mult;
                if !secs.is_finite() || secs >= max.as_secs_f64() {
                    *max
                } else {
                    Duration::from_secs_f64(secs)
                }
            }
            Kind::Custom(f) => f(n),
        }
    }

    /// The delay for the `n`-th repetition with jitter drawn from `rng`.
    pub(crate) fn delay(&self, n: u32, rng: &mut SplitMix64) -> Duration {
        self.next_delay(n, None, rng)
    }

    /// The delay for the `n`-th repetition, given the previous delay when the
    /// caller remembers it (decorrelated jitter depends on it).
    pub(crate) fn next_delay(
        &self,
        n: u32,
        previous: Option<Duration>,
        rng: &mut SplitMix64,
    ) -> Duration {
        let n = n.max(1);
        if let Kind::Decorrelated { base, max } = &self.kind {
            return match previous {
                Some(p) if n > 1 => decorrelated(*base, *max, p, rng),
                _ => {
                    // Run the recurrence; past ~40 steps it sits at the cap's
                    // stationary distribution anyway.
                    let mut p = *base;
                    for _ in 0..n.min(64) {
                        p = decorrelated(*base, *max, p, rng);
                    }
                    p
                }
            };
        }
        let d = self.delay_without_jitter(n);
        match self.jitter {
            Jitter::Ratio(0.0) => d,
            Jitter::Ratio(r) => {
                let spread = r * (2.0 * rng.next_f64() - 1.0);
                let jittered = d.mul_f64((1.0 + spread).max(0.0));
                match &self.kind {
                    Kind::Exponential { max, .. } => jittered.min(*max),
                    _ => jittered,
                }
            }
            Jitter::Full => uniform(Duration::ZERO, d, rng),
        }
    }
}

/// One step of decorrelated jitter: `min(max, uniform[base, 3·previous])`.
fn decorrelated(
    base: Duration,
    max: Duration,
    previous: Duration,
    rng: &mut SplitMix64,
) -> Duration {
    let hi = previous.saturating_mul(3).max(base);
    uniform(base, hi, rng).min(max)
}

/// Uniform in `[lo, hi]` (nanosecond resolution).
fn uniform(lo: Duration, hi: Duration, rng: &mut SplitMix64) -> Duration {
    let lo_n = lo.as_nanos() as f64;
    let span = hi.saturating_sub(lo).as_nanos() as f64;
    let n = (lo_n + span * rng.next_f64()).min(hi.as_nanos() as f64);
    Duration::from_nanos(n as u64).clamp(lo, hi)
}

impl fmt::Debug for Backoff {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Backoff");
        match &self.kind {
            Kind::Fixed(x) => d.field("fixed", x),
            Kind::Exponential { base, max, factor } => d
                .field("base", base)
                .field("max", max)
                .field("factor", factor),
            Kind::Custom(_) => d.field("custom", &"fn(u32) -> Duration"),
            Kind::Decorrelated { base, max } => {
                d.field("decorrelated_jitter_base", base).field("max", max)
            }
        };
        match self.jitter {
            Jitter::Ratio(r) => d.field("jitter", &r),
            Jitter::Full => d.field("jitter", &"full"),
        };
        d.finish()
    }
}

#[cfg(feature = "serde")]
mod de {
    use super::Backoff;
    use crate::config::duration;
    use serde::Deserialize;
    use std::time::Duration;

    /// `"5s"` is a fixed backoff; a table selects the kind:
    ///
    /// ```toml
    /// backoff = "500ms"
    /// backoff = { kind = "constant", delay = "500ms", jitter = 0.1 }
    /// backoff = { kind = "exponential", base = "100ms", max = "10s", factor = 2, jitter = "full" }
    /// backoff = { kind = "decorrelated_jitter", base = "100ms", max = "10s" }
    /// ```
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Fixed(#[serde(with = "duration")] Duration),
        Table(Table),
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    enum Table {
        #[serde(alias = "constant")]
        Fixed {
            #[serde(with = "duration")]
            delay: Duration,
            #[serde(default)]
            jitter: Jitter,
        },
        Exponential {
            #[serde(with = "duration")]
            base: Duration,
            #[serde(with = "duration")]
            max: Duration,
            #[serde(default = "two")]
            factor: f64,
            #[serde(default)]
            jitter: Jitter,
        },
        DecorrelatedJitter {
            #[serde(with = "duration")]
            base: Duration,
            #[serde(with = "duration")]
            max: Duration,
        },
    }

    /// A ratio (`0.2`) or `"full"`.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Jitter {
        Ratio(f64),
        Named(Full),
    }

    #[derive(Deserialize)]
    #[serde(rename_all = "snake_case")]
    enum Full {
        Full,
    }

    impl Default for Jitter {
        fn default() -> Self {
            Jitter::Ratio(0.0)
        }
    }

    impl Jitter {
        fn apply(self, b: Backoff) -> Backoff {
            match self {
                Jitter::Ratio(r) => b.jitter(r),
                Jitter::Named(Full::Full) => b.full_jitter(),
            }
        }
    }

    fn two() -> f64 {
        2.0
    }

    impl<'de> Deserialize<'de> for Backoff {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(match Repr::deserialize(d)? {
                Repr::Fixed(delay) => Backoff::fixed(delay),
                Repr::Table(Table::Fixed { delay, jitter }) => jitter.apply(Backoff::fixed(delay)),
                Repr::Table(Table::Exponential {
                    base,
                    max,
                    factor,
                    jitter,
                }) => jitter.apply(Backoff::exponential(base, max).factor(factor)),
                Repr::Table(Table::DecorrelatedJitter { base, max }) => {
                    Backoff::decorrelated_jitter(base, max)
                }
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_doubles_and_caps() {
        let b = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
        let got: Vec<_> = (1..=6)
            .map(|n| b.delay_without_jitter(n).as_millis())
            .collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.delay_without_jitter(u32::MAX), Duration::from_secs(1));
        assert_eq!(b.delay_without_jitter(0), Duration::from_millis(100));
    }

    #[test]
    fn factor_changes_growth() {
        let b = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(100)).factor(3.0);
        assert_eq!(b.delay_without_jitter(3), Duration::from_secs(9));
    }

    #[test]
    fn jitter_stays_within_bounds_and_cap() {
        let b = Backoff::exponential(Duration::from_secs(10), Duration::from_secs(12)).jitter(0.5);
        let mut rng = SplitMix64::new(7);
        let mut seen_low = false;
        for _ in 0..1000 {
            let d = b.delay(1, &mut rng);
            assert!(
                d >= Duration::from_secs(5) && d <= Duration::from_secs(12),
                "{d:?}"
            );
            seen_low |= d < Duration::from_secs(9);
        }
        assert!(seen_low, "jitter must actually spread delays");
        let f = Backoff::fixed(Duration::from_secs(10)).jitter(0.1);
        for _ in 0..1000 {
            let d = f.delay(3, &mut rng);
            assert!(
                d >= Duration::from_secs(9) && d <= Duration::from_secs(11),
                "{d:?}"
            );
        }
    }

    #[test]
    fn validation_names_field_and_range() {
        let e = Backoff::fixed(Duration::ZERO)
            .validate("open_for")
            .unwrap_err();
        assert_eq!(e.field(), "open_for");
        assert_eq!(
            e.to_string(),
            "invalid `open_for` = 0ns: expected a delay greater than zero"
        );
        assert!(Backoff::fixed(Duration::from_secs(1))
            .jitter(1.5)
            .validate("x")
            .is_err());
        assert!(Backoff::fixed(Duration::from_secs(1))
            .jitter(f64::NAN)
            .validate("x")
            .is_err());
        assert!(
            Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1))
                .validate("x")
                .is_err()
        );
        assert!(
            Backoff::exponential(Duration::from_secs(1), Duration::from_secs(2))
                .factor(0.5)
                .validate("x")
                .is_err()
        );
        assert!(Backoff::exponential(Duration::ZERO, Duration::from_secs(2))
            .validate("x")
            .is_err());
    }

    #[test]
    fn full_jitter_stays_within_zero_and_the_delay() {
        let b =
            Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).full_jitter();
        let mut rng = SplitMix64::new(3);
        let mut low = false;
        for n in 1..=8 {
            let cap = b.delay_without_jitter(n);
            for _ in 0..200 {
                let d = b.delay(n, &mut rng);
                assert!(d <= cap, "{d:?} > {cap:?}");
                low |= d < cap / 4;
            }
        }
        assert!(low, "full jitter must reach low delays");
    }

    #[test]
    fn decorrelated_jitter_follows_its_recurrence() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(2);
        let b = Backoff::decorrelated_jitter(base, max);
        let mut rng = SplitMix64::new(11);
        let mut prev = base;
        for n in 1..50 {
            let d = b.next_delay(n, Some(prev), &mut rng);
            assert!(
                d >= base && d <= max && d <= prev * 3,
                "{n}: {d:?} after {prev:?}"
            );
            prev = d;
        }
        // Without memory, the n-th delay stays within its upper bound.
        for n in 1..10 {
            let d = b.delay(n, &mut rng);
            assert!(d >= base && d <= b.delay_without_jitter(n), "{n}: {d:?}");
        }
        assert!(b.clone().jitter(0.1).validate("x").is_err());
        assert!(Backoff::decorrelated_jitter(base, base / 2)
            .validate("x")
            .is_err());
        assert!(Backoff::decorrelated_jitter(Duration::ZERO, max)
            .validate("x")
            .is_err());
    }

    proptest::proptest! {
        #[test]
        fn jittered_delays_stay_in_bounds(
            seed: u64,
            base_ms in 1u64..10_000,
            cap_factor in 1u64..100,
            ratio in 0.0f64..=1.0,
            n in 1u32..40,
        ) {
            let base = Duration::from_millis(base_ms);
            let max = base * cap_factor as u32;
            let mut rng = SplitMix64::new(seed);

            let exp = Backoff::exponential(base, max).jitter(ratio);
            let d0 = exp.delay_without_jitter(n);
            let d = exp.delay(n, &mut rng);
            proptest::prop_assert!(d <= max);
            proptest::prop_assert!(d >= d0.mul_f64(1.0 - ratio).saturating_sub(Duration::from_nanos(1)));

            let full = Backoff::exponential(base, max).full_jitter();
            proptest::prop_assert!(full.delay(n, &mut rng) <= full.delay_without_jitter(n));

            let dec = Backoff::decorrelated_jitter(base, max);
            let prev = dec.delay(n, &mut rng);
            proptest::prop_assert!(prev >= base && prev <= max);
            let next = dec.next_delay(n + 1, Some(prev), &mut rng);
            proptest::prop_assert!(next >= base && next <= max.min(prev * 3));
        }
    }

    #[cfg(feature = "serde")]
    #[test]
    fn deserializes_every_kind() {
        #[derive(serde::Deserialize)]
        struct W {
            b: Backoff,
        }
        let parse = |s: &str| toml::from_str::<W>(s).map(|w| w.b);
        let c = parse(r#"b = { kind = "constant", delay = "500ms" }"#).unwrap();
        assert_eq!(c.delay_without_jitter(9), Duration::from_millis(500));
        let e =
            parse(r#"b = { kind = "exponential", base = "100ms", max = "10s", jitter = "full" }"#)
                .unwrap();
        assert_eq!(e.jitter, Jitter::Full);
        let d =
            parse(r#"b = { kind = "decorrelated_jitter", base = "100ms", max = "10s" }"#).unwrap();
        assert_eq!(d.delay_without_jitter(1), Duration::from_millis(300));
        assert!(
            parse(r#"b = { kind = "exponential", base = "1s", max = "2s", jitter = "half" }"#)
                .is_err()
        );
    }
}
