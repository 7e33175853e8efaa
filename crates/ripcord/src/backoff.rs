//! How long to wait: the open duration of a breaker, growing with consecutive
//! openings.

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
#[derive(Clone)]
pub struct Backoff {
    kind: Kind,
    jitter: f64,
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
}

impl Backoff {
    /// Always the same delay.
    pub fn fixed(delay: Duration) -> Self {
        Backoff {
            kind: Kind::Fixed(delay),
            jitter: 0.0,
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
            jitter: 0.0,
        }
    }

    /// A user function of the repetition count (1 for the first).
    pub fn from_fn(f: impl Fn(u32) -> Duration + Send + Sync + 'static) -> Self {
        Backoff {
            kind: Kind::Custom(Arc::new(f)),
            jitter: 0.0,
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
        self.jitter = ratio;
        self
    }

    /// Checks the parameters; `field` names the configuration field in errors.
    pub(crate) fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                field,
                self.jitter,
                "a jitter ratio in [0, 1]",
            ));
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
            _ => Ok(()),
        }
    }

    /// The delay for the `n`-th repetition (1-based; 0 is treated as 1), before
    /// jitter.
    pub fn delay_without_jitter(&self, n: u32) -> Duration {
        let n = n.max(1);
        match &self.kind {
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
        let d = self.delay_without_jitter(n);
        if self.jitter == 0.0 {
            return d;
        }
        let spread = self.jitter * (2.0 * rng.next_f64() - 1.0);
        let jittered = d.mul_f64((1.0 + spread).max(0.0));
        match &self.kind {
            Kind::Exponential { max, .. } => jittered.min(*max),
            _ => jittered,
        }
    }
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
        };
        d.field("jitter", &self.jitter).finish()
    }
}

#[cfg(feature = "serde")]
mod de {
    use super::Backoff;
    use crate::config::duration;
    use serde::Deserialize;
    use std::time::Duration;

    /// `"5s"` is a fixed backoff; a table selects the kind.
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Fixed(#[serde(with = "duration")] Duration),
        Table(Table),
    }

    #[derive(Deserialize)]
    #[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
    enum Table {
        Fixed {
            #[serde(with = "duration")]
            delay: Duration,
            #[serde(default)]
            jitter: f64,
        },
        Exponential {
            #[serde(with = "duration")]
            base: Duration,
            #[serde(with = "duration")]
            max: Duration,
            #[serde(default = "two")]
            factor: f64,
            #[serde(default)]
            jitter: f64,
        },
    }

    fn two() -> f64 {
        2.0
    }

    impl<'de> Deserialize<'de> for Backoff {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            Ok(match Repr::deserialize(d)? {
                Repr::Fixed(delay) => Backoff::fixed(delay),
                Repr::Table(Table::Fixed { delay, jitter }) => Backoff::fixed(delay).jitter(jitter),
                Repr::Table(Table::Exponential {
                    base,
                    max,
                    factor,
                    jitter,
                }) => Backoff::exponential(base, max)
                    .factor(factor)
                    .jitter(jitter),
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
}
