//! Which results to retry, and how soon at the earliest: user predicates,
//! stored without type parameters so that one `Retry` serves calls of any type.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::{Error, State};

type Predicate = Arc<dyn Fn(&dyn Any) -> Option<bool> + Send + Sync>;
type Delay = Arc<dyn Fn(&dyn Any) -> Option<Option<Duration>> + Send + Sync>;

/// Whether to retry, and the earliest delay the result asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Stop,
    Retry { not_before: Option<Duration> },
}

/// The predicates and retry-after extractors given to a builder, each typed
/// at registration and applied to the results whose type matches.
#[derive(Clone, Default)]
pub(super) struct Rules {
    predicates: Vec<Predicate>,
    delays: Vec<Delay>,
}

impl Rules {
    pub(super) fn add_predicate<T: 'static, E: 'static>(
        &mut self,
        f: impl Fn(&Result<T, E>) -> bool + Send + Sync + 'static,
    ) {
        self.predicates.push(Arc::new(move |any: &dyn Any| {
            any.downcast_ref::<Result<T, E>>().map(&f)
        }));
    }

    pub(super) fn add_delay<X: 'static>(
        &mut self,
        f: impl Fn(&X) -> Option<Duration> + Send + Sync + 'static,
    ) {
        self.delays.push(Arc::new(move |any: &dyn Any| {
            any.downcast_ref::<X>().map(&f)
        }));
    }

    fn predicate(&self, value: &dyn Any) -> Option<bool> {
        self.predicates.iter().find_map(|p| p(value))
    }

    fn delay(&self, value: &dyn Any) -> Option<Duration> {
        if self.delays.is_empty() {
            return None;
        }
        self.delays.iter().find_map(|d| d(value)).flatten()
    }

    /// A plain call's result: a matching predicate decides, else `Err` is
    /// retried and `Ok` is not.
    pub(super) fn plain<T: 'static, E: 'static>(&self, result: &Result<T, E>) -> Verdict {
        let retry = if self.predicates.is_empty() {
            result.is_err()
        } else {
            self.predicate(result).unwrap_or(result.is_err())
        };
        if !retry {
            return Verdict::Stop;
        }
        let not_before = match result {
            Ok(t) => self.delay(t),
            Err(e) => self.delay(e),
        };
        Verdict::Retry { not_before }
    }

    /// A composed call's result; the result is moved in and given back.
    pub(super) fn composed<T: 'static, E: 'static>(
        &self,
        result: Result<T, Error<E>>,
    ) -> (Verdict, Result<T, Error<E>>) {
        if !self.predicates.is_empty() {
            // A predicate over the whole composed type comes first.
            if let Some(retry) = self.predicate(&result) {
                let verdict = if retry {
                    Verdict::Retry {
                        not_before: self.composed_delay(&result),
                    }
                } else {
                    Verdict::Stop
                };
                return (verdict, result);
            }
        }
        match result {
            Ok(t) => {
                if self.predicates.is_empty() {
                    return (Verdict::Stop, Ok(t));
                }
                let r: Result<T, E> = Ok(t);
                let verdict = self.plain(&r);
                (verdict, r.map_err(Error::Inner))
            }
            Err(Error::Inner(e)) => {
                let r: Result<T, E> = Err(e);
                let verdict = self.plain(&r);
                (verdict, r.map_err(Error::Inner))
            }
            Err(policy) => {
                let verdict = if retries_policy_error(&policy) {
                    Verdict::Retry {
                        not_before: policy.retry_after().filter(|d| !d.is_zero()),
                    }
                } else {
                    Verdict::Stop
                };
                (verdict, Err(policy))
            }
        }
    }

    fn composed_delay<T: 'static, E: 'static>(
        &self,
        result: &Result<T, Error<E>>,
    ) -> Option<Duration> {
        match result {
            Ok(t) => self.delay(t),
            Err(Error::Inner(e)) => self.delay(e),
            Err(policy) => policy.retry_after().filter(|d| !d.is_zero()),
        }
    }
}

/// The default for errors of inner policies: retry what may pass next time.
fn retries_policy_error<E>(error: &Error<E>) -> bool {
    match error {
        // A forced-open breaker stays open until someone resets it.
        Error::Rejected(r) => r.state() != State::ForcedOpen,
        Error::Timeout(_) | Error::BulkheadFull(_) | Error::RateLimited(_) => true,
        // An injected fault stands for a failed call.
        Error::Inner(_) | Error::Injected(_) => true,
        // A failed fallback chain (and anything newer) is final.
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

impl fmt::Debug for Rules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rules")
            .field("predicates", &self.predicates.len())
            .field("retry_after", &self.delays.len())
            .finish()
    }
}
