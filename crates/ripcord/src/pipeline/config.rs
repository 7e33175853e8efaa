//! Building a pipeline, in code or from a configuration file.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::{Inner, Pipeline, Policy};
use crate::event::{Event, Listener};
use crate::{
    Bulkhead, BulkheadBuilder, BulkheadConfig, CircuitBreaker, CircuitBreakerBuilder,
    CircuitBreakerConfig, Classify, Clock, ConfigError, Fallback, FallbackBuilder, FallbackConfig,
    Hedge, HedgeBuilder, HedgeConfig, Name, PolicyKind, RateLimiter, RateLimiterBuilder,
    RateLimiterConfig, Retry, RetryBuilder, RetryConfig, TimeoutBuilder, TimeoutConfig,
    TimeoutPolicy,
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

enum Entry<T, E> {
    Timeout(Part<TimeoutBuilder, TimeoutPolicy>),
    Retry(Part<RetryBuilder, Retry>),
    CircuitBreaker(Part<CircuitBreakerBuilder, CircuitBreaker>),
    Bulkhead(Part<BulkheadBuilder, Bulkhead>),
    RateLimiter(Part<RateLimiterBuilder, RateLimiter>),
    Hedge(Part<HedgeBuilder, Hedge>),
    Fallback(Part<FallbackBuilder<T, E>, Fallback<T, E>>),
    /// A fallback placed by a configuration, waiting for its chain.
    PendingFallback(FallbackConfig),
}

impl<T, E> Clone for Entry<T, E> {
    fn clone(&self) -> Self {
        match self {
            Entry::Timeout(p) => Entry::Timeout(p.clone()),
            Entry::Retry(p) => Entry::Retry(p.clone()),
            Entry::CircuitBreaker(p) => Entry::CircuitBreaker(p.clone()),
            Entry::Bulkhead(p) => Entry::Bulkhead(p.clone()),
            Entry::RateLimiter(p) => Entry::RateLimiter(p.clone()),
            Entry::Hedge(p) => Entry::Hedge(p.clone()),
            Entry::Fallback(p) => Entry::Fallback(p.clone()),
            Entry::PendingFallback(c) => Entry::PendingFallback(*c),
        }
    }
}

impl<T, E> Entry<T, E> {
    fn kind(&self) -> PolicyKind {
        match self {
            Entry::Timeout(_) => PolicyKind::Timeout,
            Entry::Retry(_) => PolicyKind::Retry,
            Entry::CircuitBreaker(_) => PolicyKind::CircuitBreaker,
            Entry::Bulkhead(_) => PolicyKind::Bulkhead,
            Entry::RateLimiter(_) => PolicyKind::RateLimiter,
            Entry::Hedge(_) => PolicyKind::Hedge,
            Entry::Fallback(_) | Entry::PendingFallback(_) => PolicyKind::Fallback,
        }
    }
}

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
    clock: Option<ClockSetter<T, E>>,
    listeners: Vec<Listener>,
}

impl<T, E> Clone for PipelineBuilder<T, E> {
    fn clone(&self) -> Self {
        PipelineBuilder {
            name: self.name.clone(),
            entries: self.entries.clone(),
            classify: self.classify.clone(),
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
        self.clock = Some(Arc::new(move |e| {
            let c = &clock;
            match e {
                Entry::Timeout(p) => Entry::Timeout(p.map(|b| b.clock(c.clone()))),
                Entry::Retry(p) => Entry::Retry(p.map(|b| b.clock(c.clone()))),
                Entry::CircuitBreaker(p) => Entry::CircuitBreaker(p.map(|b| b.clock(c.clone()))),
                Entry::Bulkhead(p) => Entry::Bulkhead(p.map(|b| b.clock(c.clone()))),
                Entry::RateLimiter(p) => Entry::RateLimiter(p.map(|b| b.clock(c.clone()))),
                Entry::Hedge(p) => Entry::Hedge(p.map(|b| b.clock(c.clone()))),
                Entry::Fallback(p) => Entry::Fallback(p.map(|b| b.clock(c.clone()))),
                pending @ Entry::PendingFallback(_) => pending,
            }
        }));
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
            policies.push(self.make(entry, &name, rename.is_some())?);
        }
        let direct = policies.iter().all(super::admit::is_direct);
        Ok(Pipeline {
            inner: Arc::new(Inner {
                name,
                policies: policies.into_boxed_slice(),
                classify: self.classify.clone(),
                direct,
            }),
        })
    }

    fn make(
        &self,
        entry: Entry<T, E>,
        name: &Name,
        rename: bool,
    ) -> Result<Policy<T, E>, ConfigError> {
        macro_rules! build {
            ($part:expr, $variant:ident) => {
                build!($part, $variant, |b| b)
            };
            ($part:expr, $variant:ident, $prepare:expr) => {
                match $part.source {
                    Source::Shared(p) => Policy::$variant(p),
                    Source::Fresh { builder, named } => {
                        let mut b = $prepare(builder);
                        if rename || !named {
                            b = b.name(name.as_str());
                        }
                        for l in &self.listeners {
                            let l = l.clone();
                            b = b.on_event(move |e| l(e));
                        }
                        Policy::$variant(b.build()?)
                    }
                }
            };
        }
        Ok(match entry {
            Entry::Timeout(p) => build!(p, Timeout),
            Entry::Retry(p) => build!(p, Retry, |b: RetryBuilder| match &self.classify {
                // The pipeline's classifier, after the retry's own predicates.
                Some(c) => {
                    let c = c.clone();
                    b.classify(move |r: &Result<T, E>| c.classify(r))
                }
                None => b,
            }),
            Entry::CircuitBreaker(p) => build!(p, CircuitBreaker),
            Entry::Bulkhead(p) => build!(p, Bulkhead),
            Entry::RateLimiter(p) => build!(p, RateLimiter),
            Entry::Hedge(p) => build!(p, Hedge),
            Entry::Fallback(p) => build!(p, Fallback),
            Entry::PendingFallback(c) => {
                return Err(ConfigError::new(
                    "fallback",
                    c,
                    "a fallback chain: the configuration places a fallback, so give its chain \
                     to PipelineBuilder::fallback_chain",
                ))
            }
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
/// or one table per policy, with the order given explicitly (each kind at
/// most once):
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
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(try_from = "de::Repr"))]
pub struct PipelineConfig {
    /// The pipeline's name (and its policies'), if given.
    pub name: Option<String>,
    /// The policies, outermost first.
    pub policies: Vec<PolicyConfig>,
}

/// One policy of a [`PipelineConfig`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(tag = "kind", rename_all = "snake_case"))]
#[non_exhaustive]
pub enum PolicyConfig {
    /// A timeout.
    Timeout(TimeoutConfig),
    /// A retry policy.
    Retry(RetryConfig),
    /// A circuit breaker.
    CircuitBreaker(CircuitBreakerConfig),
    /// A bulkhead.
    Bulkhead(BulkheadConfig),
    /// A rate limiter.
    RateLimiter(RateLimiterConfig),
    /// Hedging.
    Hedge(HedgeConfig),
    /// A fallback's place and triggers (its chain comes from code).
    Fallback(FallbackConfig),
}

impl PolicyConfig {
    /// Which policy this configures.
    pub fn kind(&self) -> PolicyKind {
        match self {
            PolicyConfig::Timeout(_) => PolicyKind::Timeout,
            PolicyConfig::Retry(_) => PolicyKind::Retry,
            PolicyConfig::CircuitBreaker(_) => PolicyKind::CircuitBreaker,
            PolicyConfig::Bulkhead(_) => PolicyKind::Bulkhead,
            PolicyConfig::RateLimiter(_) => PolicyKind::RateLimiter,
            PolicyConfig::Hedge(_) => PolicyKind::Hedge,
            PolicyConfig::Fallback(_) => PolicyKind::Fallback,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            PolicyConfig::Timeout(c) => c.validate(),
            PolicyConfig::Retry(c) => c.validate(),
            PolicyConfig::CircuitBreaker(c) => c.validate(),
            PolicyConfig::Bulkhead(c) => c.validate(),
            PolicyConfig::RateLimiter(c) => c.validate(),
            PolicyConfig::Hedge(c) => c.validate(),
            PolicyConfig::Fallback(c) => c.validate(),
        }
    }
}

impl PipelineConfig {
    /// Checks every policy's configuration; the error names the first bad
    /// field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.policies.iter().try_for_each(PolicyConfig::validate)
    }

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
                PolicyConfig::Timeout(c) => {
                    Entry::Timeout(Part::fresh(TimeoutPolicy::builder(name).config(c)))
                }
                PolicyConfig::Retry(c) => Entry::Retry(Part::fresh(Retry::builder(name).config(c))),
                PolicyConfig::CircuitBreaker(c) => {
                    Entry::CircuitBreaker(Part::fresh(CircuitBreaker::builder(name).config(c)))
                }
                PolicyConfig::Bulkhead(c) => {
                    Entry::Bulkhead(Part::fresh(Bulkhead::builder(name).config(c)))
                }
                PolicyConfig::RateLimiter(c) => {
                    Entry::RateLimiter(Part::fresh(RateLimiter::builder(name).config(c)))
                }
                PolicyConfig::Hedge(c) => Entry::Hedge(Part::fresh(Hedge::builder(name).config(c))),
                PolicyConfig::Fallback(c) => Entry::PendingFallback(c),
            };
            b.entries.push(entry);
        }
        Ok(b)
    }
}

#[cfg(feature = "serde")]
mod de {
    use super::*;
    use serde::Deserialize;

    /// The two file forms, read together and then checked.
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct Repr {
        name: Option<String>,
        #[serde(default)]
        policy: Vec<PolicyConfig>,
        order: Option<Vec<Kind>>,
        timeout: Option<TimeoutConfig>,
        retry: Option<RetryConfig>,
        circuit_breaker: Option<CircuitBreakerConfig>,
        bulkhead: Option<BulkheadConfig>,
        rate_limiter: Option<RateLimiterConfig>,
        hedge: Option<HedgeConfig>,
        fallback: Option<FallbackConfig>,
    }

    #[derive(Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
    #[serde(rename_all = "snake_case")]
    enum Kind {
        Timeout,
        Retry,
        CircuitBreaker,
        Bulkhead,
        RateLimiter,
        Hedge,
        Fallback,
    }

    impl TryFrom<Repr> for PipelineConfig {
        type Error = String;

        fn try_from(mut r: Repr) -> Result<Self, String> {
            let tables = [
                ("timeout", r.timeout.is_some()),
                ("retry", r.retry.is_some()),
                ("circuit_breaker", r.circuit_breaker.is_some()),
                ("bulkhead", r.bulkhead.is_some()),
                ("rate_limiter", r.rate_limiter.is_some()),
                ("hedge", r.hedge.is_some()),
                ("fallback", r.fallback.is_some()),
            ];
            let Some(order) = r.order.take() else {
                if let Some((t, _)) = tables.iter().find(|(_, present)| *present) {
                    return Err(format!(
                        "a `[{t}]` table needs `order = [...]` to place it; or use `[[policy]]` \
                         tables with `kind = \"{t}\"`"
                    ));
                }
                return Ok(PipelineConfig {
                    name: r.name,
                    policies: r.policy,
                });
            };
            if !r.policy.is_empty() {
                return Err(
                    "use either `[[policy]]` tables or `order` with one table per policy, not both"
                        .into(),
                );
            }
            let mut policies = Vec::with_capacity(order.len());
            for (i, kind) in order.iter().enumerate() {
                if order[..i].contains(kind) {
                    return Err(format!(
                        "`order` lists {kind:?} twice; to use a kind twice, use `[[policy]]` tables"
                    ));
                }
                policies.push(match kind {
                    Kind::Timeout => PolicyConfig::Timeout(r.timeout.take().unwrap_or_default()),
                    Kind::Retry => PolicyConfig::Retry(r.retry.take().unwrap_or_default()),
                    Kind::CircuitBreaker => {
                        PolicyConfig::CircuitBreaker(r.circuit_breaker.take().unwrap_or_default())
                    }
                    Kind::Bulkhead => PolicyConfig::Bulkhead(r.bulkhead.take().unwrap_or_default()),
                    Kind::RateLimiter => {
                        PolicyConfig::RateLimiter(r.rate_limiter.take().unwrap_or_default())
                    }
                    Kind::Hedge => PolicyConfig::Hedge(r.hedge.take().unwrap_or_default()),
                    Kind::Fallback => PolicyConfig::Fallback(r.fallback.take().unwrap_or_default()),
                });
            }
            let unplaced = [
                ("timeout", r.timeout.is_some()),
                ("retry", r.retry.is_some()),
                ("circuit_breaker", r.circuit_breaker.is_some()),
                ("bulkhead", r.bulkhead.is_some()),
                ("rate_limiter", r.rate_limiter.is_some()),
                ("hedge", r.hedge.is_some()),
                ("fallback", r.fallback.is_some()),
            ];
            if let Some((t, _)) = unplaced.iter().find(|(_, present)| *present) {
                return Err(format!("the `[{t}]` table is not listed in `order`"));
            }
            Ok(PipelineConfig {
                name: r.name,
                policies,
            })
        }
    }
}
