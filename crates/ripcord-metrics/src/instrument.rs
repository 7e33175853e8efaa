//! What can be instrumented ([`Instrument`]: policy builders) and watched
//! ([`Watch`]: breakers, pipelines, registries).

use std::hash::Hash;

use ripcord::registry::Member;
use ripcord::{
    Bulkhead, BulkheadBuilder, CircuitBreaker, CircuitBreakerBuilder, Event, FallbackBuilder,
    HedgeBuilder, Pipeline, PipelineBuilder, RateLimiterBuilder, Registry, RetryBuilder,
    TimeoutBuilder,
};

/// A policy builder that takes event listeners: what
/// [`Metrics::instrument`](crate::Metrics::instrument) accepts.
///
/// Implemented for every ripcord policy builder, and for
/// [`PipelineBuilder`], whose listener receives the events of every policy
/// the pipeline builds.
pub trait Instrument: Sized {
    /// Adds `listener` to the builder's event listeners.
    fn with_listener(self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self;
}

macro_rules! instrument {
    ($($ty:ty $(, <$($g:ident),+>)?;)+) => {$(
        impl$(<$($g: Send + 'static),+>)? Instrument for $ty {
            fn with_listener(self, listener: impl Fn(&Event) + Send + Sync + 'static) -> Self {
                self.on_event(listener)
            }
        }
    )+};
}

instrument! {
    CircuitBreakerBuilder;
    RetryBuilder;
    TimeoutBuilder;
    BulkheadBuilder;
    RateLimiterBuilder;
    HedgeBuilder;
    FallbackBuilder<T, E>, <T, E>;
    PipelineBuilder<T, E>, <T, E>;
}

/// Something whose circuit breakers and bulkheads
/// [`Metrics::watch`](crate::Metrics::watch) reads at each scrape.
pub trait Watch: Send + Sync + 'static {
    /// Calls `f` with each circuit breaker, now.
    fn for_each_breaker(&self, f: &mut dyn FnMut(&CircuitBreaker));

    /// Calls `f` with each bulkhead, now (default: none).
    fn for_each_bulkhead(&self, f: &mut dyn FnMut(&Bulkhead)) {
        let _ = f;
    }
}

impl Watch for CircuitBreaker {
    fn for_each_breaker(&self, f: &mut dyn FnMut(&CircuitBreaker)) {
        f(self);
    }
}

impl Watch for Bulkhead {
    fn for_each_breaker(&self, _: &mut dyn FnMut(&CircuitBreaker)) {}

    fn for_each_bulkhead(&self, f: &mut dyn FnMut(&Bulkhead)) {
        f(self);
    }
}

impl<T, E> Watch for Pipeline<T, E>
where
    T: 'static,
    E: 'static,
    Pipeline<T, E>: Send + Sync,
{
    fn for_each_breaker(&self, f: &mut dyn FnMut(&CircuitBreaker)) {
        for b in self.circuit_breakers() {
            f(b);
        }
    }

    fn for_each_bulkhead(&self, f: &mut dyn FnMut(&Bulkhead)) {
        if let Some(b) = self.bulkhead() {
            f(b);
        }
    }
}

impl<K, V> Watch for Registry<K, V>
where
    K: Eq + Hash + Clone + Send + Sync + 'static,
    V: Member + Watch,
{
    fn for_each_breaker(&self, f: &mut dyn FnMut(&CircuitBreaker)) {
        for (_, member) in self.entries() {
            member.for_each_breaker(f);
        }
    }

    fn for_each_bulkhead(&self, f: &mut dyn FnMut(&Bulkhead)) {
        for (_, member) in self.entries() {
            member.for_each_bulkhead(f);
        }
    }
}
