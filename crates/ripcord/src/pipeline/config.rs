//! Building a pipeline, in code or from a configuration file.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Pipeline, Policy};
use crate::chaos::Injected;
use crate::event::{Event, Listener};
use crate::rate_limiter::ExternalLimiter;
use crate::{
    Bulkhead, BulkheadBuilder, BulkheadConfig, Chaos, ChaosBuilder, ChaosConfig, CircuitBreaker,
    CircuitBreakerBuilder, CircuitBreakerConfig, Classify, Clock, ConfigError, Fallback,
    FallbackBuilder, FallbackConfig, Hedge, HedgeBuilder, HedgeConfig, Name, PolicyKind,
    RateLimiter, RateLimiterBuilder, RateLimiterConfig, Retry, RetryBuilder, RetryConfig,
    TimeoutBuilder, TimeoutConfig, TimeoutPolicy,
};

/// A policy given to a [`PipelineBuilder`]: a builder, so that every pipeline
/// built gets its own instance (its own breaker state, its own bulkhead
/// slots — what a pipeline per endpoint needs), or an instance, shared by
/// every pipeline built (e.g. one rate limiter for all endpoints).
///
/// Made by `From`: pass a builder or a policy to the builder's methods (and a
/// bare [`Duration`] to [`timeout`](PipelineBuilder::timeout)).
#[derive(Debug, Clone)]
pub struct Part<B, P> {
    source: Source<B, P>,
}

#[derive(Debug, Clone)]
enum Source<B, P> {
    /// A fresh instance per pipeline; `named` is false for a policy made from
    /// a bare value, which takes the pipeline's name.
    Fresh {
        builder: B,
        named: bool,
    },
    Shared(P),
}

impl<B, P> Part<B, P> {
    fn fresh(builder: B) -> Self {
        Part {
            source: Source::Fresh {
                builder,
                named: true,
            },
        }
    }

    fn shared(policy: P) -> Self {
        Part {
            source: Source::Shared(policy),
        }
    }

    /// Changes the builder of a fresh policy.
    fn map(self, f: impl FnOnce(B) -> B) -> Self {
        match self.source {
            Source::Fresh { builder, named } => Part {
                source: Source::Fresh {
                    builder: f(builder),
                    named,
                },
            },
            shared => Part { source: shared },
        }
    }
}

macro_rules! parts {
    ($($builder:ty => $policy:ty),* $(,)?) => {$(
        impl From<$builder> for Part<$builder, $policy> {
            fn from(b: $builder) -> Self {
                Part::fresh(b)
            }
        }
        impl From<$policy> for Part<$builder, $policy> {
            fn from(p: $policy) -> Self {
                Part::shared(p)
            }
        }
    )*};
}

parts! {
    TimeoutBuilder => TimeoutPolicy,
    RetryBuilder => Retry,
    CircuitBreakerBuilder => CircuitBreaker,
    BulkheadBuilder => Bulkhead,
    RateLimiterBuilder => RateLimiter,
    HedgeBuilder => Hedge,
    ChaosBuilder => Chaos,
}

impl<T: Send + 'static, E: Send + 'static> From<FallbackBuilder<T, E>>
    for Part<FallbackBuilder<T, E>, Fallback<T, E>>
{
    fn from(b: FallbackBuilder<T, E>) -> Self {
        Part::fresh(b)
    }
}

impl<T, E> From<Fallback<T, E>> for Part<FallbackBuilder<T, E>, Fallback<T, E>> {
    fn from(p: Fallback<T, E>) -> Self {
        Part::shared(p)
    }
}

/// `.timeout(Duration::from_secs(2))`: a timeout named after the pipeline.
impl From<Duration> for Part<TimeoutBuilder, TimeoutPolicy> {
    fn from(d: Duration) -> Self {
        Part {
            source: Source::Fresh {
                builder: TimeoutPolicy::builder("timeout").timeout(d),
                named: false,
            },
        }
    }
}

/// The builder's entries, from the one list of policies ([`crate::kinds`]).
macro_rules! entries {
    ($([$kind:ident, $name:ident, $label:literal, $config:ident, $slot:ident, $policy:ty, $builder:ty])*) => {
        /// A policy given to the builder.
        enum Entry<T, E> {
            $($kind(Part<$builder, $policy>),)*
            /// A fallback placed by a configuration, waiting for its chain.
            PendingFallback(FallbackConfig),
            /// A rate limiter decided outside the process (always shared).
            ExternalRateLimiter(Arc<dyn ExternalLimiter>),
        }

        impl<T, E> Clone for Entry<T, E> {
            fn clone(&self) -> Self {
                match self {
                    $(Entry::$kind(p) => Entry::$kind(p.clone()),)*
                    Entry::PendingFallback(c) => Entry::PendingFallback(*c),
                    Entry::ExternalRateLimiter(l) => Entry::ExternalRateLimiter(Arc::clone(l)),
                }
            }
        }

        impl<T, E> Entry<T, E> {
            fn kind(&self) -> PolicyKind {
                match self {
                    $(Entry::$kind(_) => PolicyKind::$kind,)*
                    Entry::PendingFallback(_) => PolicyKind::Fallback,
                    Entry::ExternalRateLimiter(_) => PolicyKind::RateLimiter,
                }
            }
        }

        impl<T: Send + 'static, E: Send + 'static> Entry<T, E> {
            /// Gives a fresh policy's builder `clock`.
            fn with_clock<C: Clock + Clone>(self, clock: &C) -> Self {
                match self {
                    $(Entry::$kind(p) => Entry::$kind(p.map(|b| b.clock(clock.clone()))),)*
                    other @ (Entry::PendingFallback(_) | Entry::ExternalRateLimiter(_)) => other,
                }
            }

            /// A fresh builder named `name`, given `config`. (A pipeline
            /// configuration places a fallback as `PendingFallback` instead.)
            fn configured(config: PolicyConfig, name: &str) -> Self {
                match config {
                    $(PolicyConfig::$kind(c) => Entry::$kind(Part::fresh(<$policy>::builder(name).config(c))),)*
                }
            }
        }

        impl<T: Send + 'static, E: Send + 'static> PipelineBuilder<T, E> {
            /// Builds the policy of `entry`: a shared one as it is, a fresh one
            /// with its name (`name` if the pipeline is renamed or the builder
            /// was unnamed) and the builder's listeners.
            fn make(
                &self,
                entry: Entry<T, E>,
                name: &Name,
                rename: bool,
            ) -> Result<Policy<T, E>, ConfigError> {
                Ok(match entry {
                    $(Entry::$kind(p) => Policy::$kind(match p.source {
                        Source::Shared(p) => p,
                        Source::Fresh { builder, named } => {
                            let mut b = builder;
                            if rename || !named {
                                b = b.name(name.as_str());
                            }
                            for l in &self.listeners {
                                let l = l.clone();
                                b = b.on_event(move |e| l(e));
                            }
                            b.build()?
                        }
                    }),)*
                    Entry::ExternalRateLimiter(l) => Policy::ExternalRateLimiter(l),
                    Entry::PendingFallback(c) => {
                        return Err(ConfigError::new(
                            "fallback",
                            c,
                            "a fallback chain: the configuration places a fallback, so give its \
                             chain to PipelineBuilder::fallback_chain",
                        ))
                    }
                })
            }
        }
    };
}

crate::kinds::policy_list!(entries);

/// Sets the pipeline-wide clock on a fresh policy builder.
type ClockSetter<T, E> = Arc<dyn Fn(Entry<T, E>) -> Entry<T, E> + Send + Sync>;

/// Builds a [`Pipeline`]: policies run outermost first, in the order they are
/// added.
///
/// Each method takes a policy's builder (every pipeline built gets a fresh
/// instance) or a built policy (shared by every pipeline built); see [`Part`].
/// [`build`](Self::build) and [`build_named`](Self::build_named) take `&self`,
/// so one builder is a template for many pipelines — one per endpoint in a
/// [`Registry`](crate::Registry):
///
/// ```
/// use ripcord::{CircuitBreaker, Pipeline, Registry};
/// use std::time::Duration;
///
/// let template = Pipeline::<String, std::io::Error>::builder()
///     .timeout(Duration::from_secs(2))
///     .circuit_breaker(CircuitBreaker::builder("").consecutive_failures(5));
/// let pipelines: Registry<String, Pipeline<String, std::io::Error>> =
///     Registry::with_factory(move |endpoint: &String| template.build_named(endpoint)).build()?;
///
/// let a = pipelines.get(&"https://a.example/hook".to_string())?;
/// assert_eq!(a.circuit_breaker().unwrap().name(), "https://a.example/hook");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a builder does nothing until build() is called"]
pub struct PipelineBuilder<T, E> {
    name: Name,
    entries: Vec<Entry<T, E>>,
    classify: Option<Arc<dyn Classify<T, E> + Send + Sync>>,
    chaos_error: Option<super::ChaosError<E>>,
    clock: Option<ClockSetter<T, E>>,
    listeners: Vec<Listener>,
}

impl<T, E> Clone for PipelineBuilder<T, E> {
    fn clone(&self) -> Self {
        PipelineBuilder {
            name: self.name.clone(),
            entries: self.entries.clone(),
            classify: self.classify.clone(),
            chaos_error: self.chaos_error.clone(),
            clock: self.clock.clone(),
            listeners: self.listeners.clone(),
        }
    }
}

impl<T, E> fmt::Debug for PipelineBuilder<T, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineBuilder")
            .field("name", &self.name)
            .field(
                "policies",
                &self.entries.iter().map(Entry::kind).collect::<Vec<_>>(),
            )
            .field("classify", &self.classify.is_some())
            .field("clock", &self.clock.is_some())
            .field("listeners", &self.listeners.len())
            .finish()
    }
}

impl<T, E> Default for PipelineBuilder<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    fn default() -> Self {
        PipelineBuilder::new()
    }
}

impl<T, E> PipelineBuilder<T, E>
where
    T: Send + 'static,
    E: Send + 'static,
{
    /// An empty pipeline named `"pipeline"`.
    pub fn new() -> Self {
        PipelineBuilder {
            name: Name::new("pipeline"),
            entries: Vec::new(),
            classify: None,
            chaos_error: None,
            clock: None,
            listeners: Vec::new(),
        }
    }

    /// Names the pipeline, and the policies made from a bare `Duration`.
    pub fn name(mut self, name: &str) -> Self {
        self.name = Name::new(name);
        self
    }

    /// Adds a timeout (a `Duration`, a [`TimeoutBuilder`] or a
    /// [`TimeoutPolicy`]): the policies inside it and the call must finish
    /// within it, or are cancelled.
    pub fn timeout(mut self, timeout: impl Into<Part<TimeoutBuilder, TimeoutPolicy>>) -> Self {
        self.entries.push(Entry::Timeout(timeout.into()));
        self
    }

    /// Adds a retry policy: the policies inside it run again for each attempt.
    pub fn retry(mut self, retry: impl Into<Part<RetryBuilder, Retry>>) -> Self {
        self.entries.push(Entry::Retry(retry.into()));
        self
    }

    /// Adds a circuit breaker: it sees each call (each attempt, inside a retry)
    /// of the policies inside it.
    pub fn circuit_breaker(
        mut self,
        breaker: impl Into<Part<CircuitBreakerBuilder, CircuitBreaker>>,
    ) -> Self {
        self.entries.push(Entry::CircuitBreaker(breaker.into()));
        self
    }

    /// Adds a bulkhead: a slot is held while the policies inside it run.
    pub fn bulkhead(mut self, bulkhead: impl Into<Part<BulkheadBuilder, Bulkhead>>) -> Self {
        self.entries.push(Entry::Bulkhead(bulkhead.into()));
        self
    }

    /// Adds a rate limiter: a permit is taken before the policies inside it run.
    pub fn rate_limiter(
        mut self,
        limiter: impl Into<Part<RateLimiterBuilder, RateLimiter>>,
    ) -> Self {
        self.entries.push(Entry::RateLimiter(limiter.into()));
        self
    }

    /// Adds a rate limiter decided outside the process — by a store the
    /// fleet shares, such as ripcord-redis's `RedisRateLimiter` — run like
    /// [`rate_limiter`](Self::rate_limiter): a permit is taken (waiting for
    /// the store's answer) before the policies inside it run; refusals are
    /// [`Error::RateLimited`](crate::Error::RateLimited). Shared by every
    /// pipeline built. A pipeline with one is not
    /// [direct](Pipeline::admit): see [`Pipeline::admit_waiting`].
    pub fn external_rate_limiter(mut self, limiter: impl ExternalLimiter) -> Self {
        self.entries
            .push(Entry::ExternalRateLimiter(Arc::new(limiter)));
        self
    }

    /// Adds fault injection ([`Chaos`]): the policies outside it see the
    /// faults it injects as the dependency's (a breaker outside trips on its
    /// aborts). A pipeline with one is not [direct](Pipeline::admit) (an
    /// injected latency waits): see [`Pipeline::admit_waiting`].
    ///
    /// ```
    /// use ripcord::{Chaos, CircuitBreaker, Error, Pipeline};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ripcord::ConfigError> {
    /// let chaos = Chaos::builder("drill").abort(1.0).build()?;
    /// let p: Pipeline<(), String> = Pipeline::builder()
    ///     .circuit_breaker(CircuitBreaker::builder("api").consecutive_failures(3))
    ///     .chaos(chaos.clone())
    ///     .build()?;
    /// for _ in 0..3 {
    ///     assert!(matches!(p.execute(|| async { Ok(()) }).await, Err(Error::Injected(_))));
    /// }
    /// // The breaker saw three failures and opened.
    /// assert!(matches!(p.execute(|| async { Ok(()) }).await, Err(Error::Rejected(_))));
    /// chaos.disable();
    /// # Ok(()) }
    /// ```
    pub fn chaos(mut self, chaos: impl Into<Part<ChaosBuilder, Chaos>>) -> Self {
        self.entries.push(Entry::Chaos(chaos.into()));
        self
    }

    /// The error an injected [`error`](crate::ChaosConfig::error_rate) fault
    /// stops a call with — the call's own error type, so that the policies
    /// and the caller see what a real failure looks like. Without it, such a
    /// fault is an [`Error::Injected`](crate::Error::Injected).
    ///
    /// ```
    /// use ripcord::{Chaos, Error, Pipeline};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), ripcord::ConfigError> {
    /// let p: Pipeline<u32, String> = Pipeline::builder()
    ///     .chaos(Chaos::builder("drill").error(1.0))
    ///     .chaos_error(|injected| format!("connection refused ({injected})"))
    ///     .build()?;
    /// let r = p.execute(|| async { Ok(1) }).await;
    /// assert!(matches!(r, Err(Error::Inner(e)) if e.starts_with("connection refused")));
    /// # Ok(()) }
    /// ```
    pub fn chaos_error(mut self, error: impl Fn(&Injected) -> E + Send + Sync + 'static) -> Self {
        self.chaos_error = Some(Arc::new(error));
        self
    }

    /// Adds hedging: each attempt runs the policies inside it.
    pub fn hedge(mut self, hedge: impl Into<Part<HedgeBuilder, Hedge>>) -> Self {
        self.entries.push(Entry::Hedge(hedge.into()));
        self
    }

    /// Adds a fallback chain for the errors of the policies inside it.
    pub fn fallback(
        mut self,
        fallback: impl Into<Part<FallbackBuilder<T, E>, Fallback<T, E>>>,
    ) -> Self {
        self.entries.push(Entry::Fallback(fallback.into()));
        self
    }

    /// Supplies the chain of a fallback that a [`PipelineConfig`] placed (a
    /// file can say where the fallback goes and what triggers it, not what it
    /// does): fills the first such placeholder, keeping the file's triggers.
    /// Without a placeholder, adds the fallback at the end, like
    /// [`fallback`](Self::fallback).
    pub fn fallback_chain(mut self, chain: FallbackBuilder<T, E>) -> Self {
        let slot = self
            .entries
            .iter_mut()
            .find(|e| matches!(e, Entry::PendingFallback(_)));
        match slot {
            Some(e) => {
                let Entry::PendingFallback(config) = *e else {
                    unreachable!("matched above")
                };
                *e = Entry::Fallback(Part::fresh(chain.config(config)));
            }
            None => self.entries.push(Entry::Fallback(Part::fresh(chain))),
        }
        self
    }

    /// How breakers (and, as a last resort, retries) of this pipeline judge a
    /// call's result (default: `Ok` is a success, `Err` a failure). Errors of
    /// the policies themselves are judged by fixed rules; see
    /// [`Pipeline`]'s docs.
    pub fn classify(mut self, classifier: impl Classify<T, E> + Send + Sync + 'static) -> Self {
        self.classify = Some(Arc::new(classifier));
        self
    }

    /// The clock of every policy built fresh by this builder (each keeps its
    /// own otherwise). Use [`TokioClock`](crate::TokioClock) under paused
    /// tokio time.
    pub fn clock<C: Clock + Clone>(mut self, clock: C) -> Self {
        self.clock = Some(Arc::new(move |e: Entry<T, E>| e.with_clock(&clock)));
        self
    }

    /// Calls `listener` with every event of every policy built fresh by this
    /// builder (on top of each policy's own listeners).
    pub fn on_event(mut self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
        self.listeners.push(Arc::new(listener));
        self
    }

    /// Builds a pipeline. Fresh policies keep their builders' names (those made
    /// from a bare `Duration` take the pipeline's).
    pub fn build(&self) -> Result<Pipeline<T, E>, ConfigError>
    where
        T: 'static,
        E: 'static,
    {
        self.build_inner(None)
    }

    /// Builds a pipeline named `name`, and names every fresh policy `name`
    /// too (so their events and errors say which endpoint they protect).
    pub fn build_named(&self, name: impl fmt::Display) -> Result<Pipeline<T, E>, ConfigError> {
        self.build_inner(Some(&name.to_string()))
    }

    fn build_inner(&self, rename: Option<&str>) -> Result<Pipeline<T, E>, ConfigError> {
        let name = rename.map_or_else(|| self.name.clone(), Name::new);
        let mut policies = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let entry = match &self.clock {
                Some(set) => set(entry.clone()),
                None => entry.clone(),
            };
            let entry = match (entry, &self.classify) {
                // The pipeline's classifier, after the retry's own predicates.
                (Entry::Retry(part), Some(c)) => {
                    let c = c.clone();
                    Entry::Retry(part.map(|b| b.classify(move |r: &Result<T, E>| c.classify(r))))
                }
                (entry, _) => entry,
            };
            policies.push(self.make(entry, &name, rename.is_some())?);
        }
        let walk_end = match policies.last() {
            Some(Policy::Chaos(_)) => policies.len() - 1,
            _ => policies.len(),
        };
        let direct = policies.iter().all(super::admit::is_direct);
        let admissible = policies.iter().all(super::admit::is_admissible);
        Ok(Pipeline {
            inner: Arc::new(Inner {
                name,
                policies: policies.into_boxed_slice(),
                classify: self.classify.clone(),
                chaos_error: self.chaos_error.clone(),
                walk_end,
                direct,
                admissible,
            }),
        })
    }
}

/// A pipeline described by data: an ordered list of policy configurations,
/// outermost first. Deserializable (feature `serde`) in either of two forms.
///
/// A list of tables, each with its `kind`:
///
/// ```toml
/// name = "payments"           # optional
///
/// [[policy]]
/// kind = "timeout"
/// timeout = "2s"
///
/// [[policy]]
/// kind = "retry"
/// max_attempts = 3
///
/// [[policy]]
/// kind = "circuit_breaker"
/// failure_rate = 0.5
/// open_for = "30s"
///
/// [[policy]]
/// kind = "bulkhead"
/// max_concurrent = 16
/// ```
///
/// or one table per policy (each kind at most once):
///
/// ```toml
/// [rate_limiter]
/// rate = 100
/// period = "1s"
///
/// [retry]
/// max_attempts = 3
///
/// [circuit_breaker]
/// failure_rate = 0.5
///
/// [timeout]
/// timeout = "2s"
/// ```
///
/// The tables' order in the file does not count: without `order`, the
/// policies take the [default order](Self::DEFAULT_ORDER),
/// `fallback → rate_limiter → retry → hedge → circuit_breaker → bulkhead →
/// timeout → chaos` — admission once per call, retries around the attempts,
/// and each attempt through its breaker, its bulkhead slot and its own
/// timeout (the order a reverse proxy's route needs), with injected faults
/// where the dependency would fail: inside all of them. Above: a rate limiter, then a
/// retry of up to 3 attempts, each seen by the breaker and bounded by 2 s.
/// Any other order is given with `order`, e.g. a timeout around the whole
/// call, retries included:
///
/// ```toml
/// order = ["timeout", "retry", "circuit_breaker", "bulkhead"]
///
/// [timeout]
/// timeout = "2s"
///
/// [circuit_breaker]
/// failure_rate = 0.5
/// ```
///
/// (a kind listed in `order` without its table takes the defaults). Each
/// table is that policy's own configuration type ([`TimeoutConfig`],
/// [`RetryConfig`], [`CircuitBreakerConfig`], [`BulkheadConfig`],
/// [`RateLimiterConfig`], [`HedgeConfig`], [`FallbackConfig`]), with the same
/// fields and defaults, and unknown fields are errors. A `fallback` entry
/// places a fallback and sets its triggers; its chain comes from code
/// ([`PipelineBuilder::fallback_chain`]).
///
/// `F` is what a `fallback` entry holds: by default the core's
/// [`FallbackConfig`] (its triggers). A program whose fallbacks are data too
/// — a proxy's static answers — gives its own type, which says the triggers
/// ([`FallbackEntry`]) and carries the rest; the other tables keep their core
/// types.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(
    feature = "serde",
    serde(
        try_from = "de::Repr<F>",
        bound(deserialize = "F: serde::Deserialize<'de> + Default")
    )
)]
pub struct PipelineConfig<F = FallbackConfig> {
    /// The pipeline's name (and its policies'), if given.
    pub name: Option<String>,
    /// The policies, outermost first.
    pub policies: Vec<PolicyConfig<F>>,
}

impl<F> Default for PipelineConfig<F> {
    fn default() -> Self {
        PipelineConfig {
            name: None,
            policies: Vec::new(),
        }
    }
}

/// What a pipeline configuration's `fallback` entry must say: when the
/// fallback answers. [`FallbackConfig`] is one (the triggers alone); a type
/// of the program's may carry what the fallback answers as well.
pub trait FallbackEntry {
    /// The fallback's triggers.
    fn triggers(&self) -> FallbackConfig;

    /// Checks the entry (by default: its triggers).
    fn validate(&self) -> Result<(), ConfigError> {
        self.triggers().validate()
    }
}

impl FallbackEntry for FallbackConfig {
    fn triggers(&self) -> FallbackConfig {
        *self
    }
}

impl PipelineConfig {
    /// The order of the policies of a file with one table per policy and no
    /// `order`, outermost first: `fallback → rate_limiter → retry → hedge →
    /// circuit_breaker → bulkhead → timeout → chaos` (see the [type's docs](Self)).
    pub const DEFAULT_ORDER: &'static [PolicyKind] = &[
        PolicyKind::Fallback,
        PolicyKind::RateLimiter,
        PolicyKind::Retry,
        PolicyKind::Hedge,
        PolicyKind::CircuitBreaker,
        PolicyKind::Bulkhead,
        PolicyKind::Timeout,
        PolicyKind::Chaos,
    ];
}

/// `PolicyConfig`, from the one list of policies ([`crate::kinds`]).
macro_rules! policy_config {
    ($([$kind:ident, $name:ident, $label:literal, $config:ident, $slot:ident, $policy:ty, $builder:ty])*) => {
        /// One policy of a [`PipelineConfig`]: its kind and its configuration.
        ///
        /// A fallback's configuration places it and sets its triggers; its
        /// chain comes from code ([`PipelineBuilder::fallback_chain`]).
        ///
        /// `F` is what a fallback entry holds (see [`PipelineConfig`]).
        #[derive(Debug, Clone, PartialEq)]
        #[cfg_attr(feature = "serde", derive(serde::Deserialize))]
        #[cfg_attr(
            feature = "serde",
            serde(
                tag = "kind",
                rename_all = "snake_case",
                bound(deserialize = "F: serde::Deserialize<'de>")
            )
        )]
        #[non_exhaustive]
        pub enum PolicyConfig<F = FallbackConfig> {
            $(
                #[doc = concat!("A ", $label, " (see [`", stringify!($config), "`]).")]
                $kind($slot),
            )*
        }

        impl<F: FallbackEntry> PolicyConfig<F> {
            /// Which policy this configures.
            pub fn kind(&self) -> PolicyKind {
                match self {
                    $(PolicyConfig::$kind(_) => PolicyKind::$kind,)*
                }
            }

            /// Checks the configuration; the error names the first bad field.
            pub fn validate(&self) -> Result<(), ConfigError> {
                match self {
                    $(PolicyConfig::$kind(c) => c.validate(),)*
                }
            }
        }
    };
}

crate::kinds::policy_list!(policy_config);

impl<F: FallbackEntry> PipelineConfig<F> {
    /// Checks every policy's configuration; the error names the first bad
    /// field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policies.iter().try_for_each(PolicyConfig::validate)
    }
}

impl PipelineConfig {
    /// A builder with these policies, in this order, each a fresh builder
    /// given its configuration (add clocks, listeners, a classifier and the
    /// fallback chain before building). Validates first.
    pub fn builder<T, E>(&self) -> Result<PipelineBuilder<T, E>, ConfigError>
    where
        T: Send + 'static,
        E: Send + 'static,
    {
        self.validate()?;
        let name = self.name.as_deref().unwrap_or("pipeline");
        let mut b = PipelineBuilder::new().name(name);
        for p in &self.policies {
            let entry = match p.clone() {
                // A file places a fallback and sets its triggers; its chain
                // comes from code.
                PolicyConfig::Fallback(c) => Entry::PendingFallback(c),
                config => Entry::configured(config, name),
            };
            b.entries.push(entry);
        }
        Ok(b)
    }
}

#[cfg(feature = "serde")]
mod de {
    use std::fmt;

    use serde::Deserialize;

    use super::*;

    /// The file's fields, from the one list of policies ([`crate::kinds`]):
    /// both forms are read together and then checked.
    macro_rules! repr {
        ($([$kind:ident, $name:ident, $label:literal, $config:ident, $slot:ident, $policy:ty, $builder:ty])*) => {
            #[derive(Deserialize)]
            #[serde(deny_unknown_fields, bound(deserialize = "F: Deserialize<'de>"))]
            pub(super) struct Repr<F> {
                name: Option<String>,
                #[serde(default = "Vec::new")]
                policy: Vec<PolicyConfig<F>>,
                order: Option<Vec<KindName>>,
                $($name: Option<$slot>,)*
            }

            impl<F: Default> Repr<F> {
                /// The kinds whose table the file has (and that are not taken yet).
                fn tables(&self) -> impl Iterator<Item = PolicyKind> {
                    [$((PolicyKind::$kind, self.$name.is_some())),*]
                        .into_iter()
                        .filter_map(|(kind, present)| present.then_some(kind))
                }

                /// Takes the table of `kind` (its defaults if the file has none).
                fn take(&mut self, kind: PolicyKind) -> PolicyConfig<F> {
                    match kind {
                        $(PolicyKind::$kind => PolicyConfig::$kind(self.$name.take().unwrap_or_default()),)*
                    }
                }
            }
        };
    }

    crate::kinds::policy_list!(repr);

    /// A kind's name in `order`: [`PolicyKind::as_str`].
    struct KindName(PolicyKind);

    impl<'de> Deserialize<'de> for KindName {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct Visitor;
            impl serde::de::Visitor<'_> for Visitor {
                type Value = KindName;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("the name of a kind of policy")
                }
                fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<KindName, E> {
                    match PolicyKind::ALL.iter().find(|k| k.as_str() == s) {
                        Some(k) => Ok(KindName(*k)),
                        None => Err(E::custom(format_args!(
                            "unknown kind of policy `{s}`, expected one of: {}",
                            PolicyKind::ALL
                                .iter()
                                .map(|k| format!("`{k}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ))),
                    }
                }
            }
            d.deserialize_str(Visitor)
        }
    }

    impl<F: Default> TryFrom<Repr<F>> for PipelineConfig<F> {
        type Error = String;

        fn try_from(mut r: Repr<F>) -> Result<Self, String> {
            let order: Vec<PolicyKind> = match r.order.take() {
                Some(order) => {
                    if !r.policy.is_empty() {
                        return Err("use either `[[policy]]` tables or `order` with one table \
                                    per policy, not both"
                            .into());
                    }
                    let order: Vec<PolicyKind> = order.into_iter().map(|k| k.0).collect();
                    for (i, kind) in order.iter().enumerate() {
                        if order[..i].contains(kind) {
                            return Err(format!(
                                "`order` lists `{kind}` twice; to use a kind twice, use \
                                 `[[policy]]` tables"
                            ));
                        }
                    }
                    order
                }
                None => {
                    let tables: Vec<PolicyKind> = r.tables().collect();
                    if tables.is_empty() {
                        return Ok(PipelineConfig {
                            name: r.name,
                            policies: r.policy,
                        });
                    }
                    if !r.policy.is_empty() {
                        return Err(format!(
                            "use either `[[policy]]` tables or one table per policy (here \
                             `[{}]`), not both",
                            tables[0]
                        ));
                    }
                    PipelineConfig::DEFAULT_ORDER
                        .iter()
                        .copied()
                        .filter(|k| tables.contains(k))
                        .collect()
                }
            };
            let mut policies = Vec::with_capacity(order.len());
            for kind in order {
                policies.push(r.take(kind));
            }
            if let Some(t) = r.tables().next() {
                return Err(format!("the `[{t}]` table is not listed in `order`"));
            }
            Ok(PipelineConfig {
                name: r.name,
                policies,
            })
        }
    }
}

#[cfg(all(test, feature = "serde"))]
mod tests {
    use super::*;

    /// Every kind's name ([`PolicyKind::as_str`]) is its tag in a `[[policy]]`
    /// table (serde's snake_case of the variant) and its name in `order`.
    #[test]
    fn every_kind_is_read_by_its_name_in_both_forms() {
        for &kind in PolicyKind::ALL {
            let name = kind.as_str();
            let list: PipelineConfig = toml::from_str(&format!("[[policy]]\nkind = \"{name}\"\n"))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(list.policies.len(), 1);
            assert_eq!(list.policies[0].kind(), kind);
            let keyed: PipelineConfig =
                toml::from_str(&format!("order = [\"{name}\"]\n[{name}]\n"))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(keyed, list, "{name}");
        }
        let e = toml::from_str::<PipelineConfig>("order = [\"teleport\"]\n").unwrap_err();
        assert!(e.to_string().contains("`teleport`"), "{e}");
        assert!(e.to_string().contains("`circuit_breaker`"), "{e}");
    }

    #[test]
    fn the_default_order_places_every_kind_once() {
        let order = PipelineConfig::DEFAULT_ORDER;
        assert_eq!(order.len(), PolicyKind::ALL.len());
        for kind in PolicyKind::ALL {
            assert_eq!(order.iter().filter(|k| *k == kind).count(), 1, "{kind}");
        }
    }
}
