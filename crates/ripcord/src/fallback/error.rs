//! The error of a fallback chain whose every fallback failed.

use std::error::Error as StdError;
use std::fmt;

use crate::{Error, Name};

/// The call failed, and so did every fallback of the chain.
///
/// It keeps every cause, in order: the primary error (what made the fallback
/// chain run: a rejection, a timeout, the call's own error) and then each
/// fallback's error. [`source`](std::error::Error::source) walks them as a
/// chain of [`Cause`]s, so an error reporter prints each once:
///
/// ```text
/// fallback `prices` could not answer: the call and its 2 fallbacks failed
/// caused by: the call: circuit breaker `prices` is open and rejected the call; next probe in 30s
/// caused by: fallback 0: cache miss
/// caused by: fallback 1: no default for this region
/// ```
pub struct FallbackError<E> {
    pub(crate) name: Name,
    pub(crate) head: Cause<E>,
    pub(crate) fallbacks: usize,
}

/// One link of a [`FallbackError`]'s cause chain: the primary error, or the
/// error of one fallback. Its `source()` is the next link (the next fallback's
/// error), not the error's own source.
pub struct Cause<E> {
    error: CauseError<E>,
    next: Option<Box<Cause<E>>>,
}

enum CauseError<E> {
    Primary(Error<E>),
    Fallback(usize, E),
}

impl<E> FallbackError<E> {
    pub(crate) fn new(name: Name, primary: Error<E>, errors: Vec<E>) -> Self {
        let fallbacks = errors.len();
        let mut next = None;
        for (i, e) in errors.into_iter().enumerate().rev() {
            next = Some(Box::new(Cause {
                error: CauseError::Fallback(i, e),
                next,
            }));
        }
        FallbackError {
            name,
            head: Cause {
                error: CauseError::Primary(primary),
                next,
            },
            fallbacks,
        }
    }

    /// The name of the fallback policy.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// The error that made the fallback chain run.
    pub fn primary(&self) -> &Error<E> {
        match &self.head.error {
            CauseError::Primary(e) => e,
            CauseError::Fallback(..) => unreachable!("the head is the primary error"),
        }
    }

    /// The error of each fallback, in the order they were tried.
    pub fn fallback_errors(&self) -> impl Iterator<Item = &E> {
        self.causes().filter_map(Cause::fallback_error)
    }

    /// Every cause: the primary error, then each fallback's error.
    pub fn causes(&self) -> impl Iterator<Item = &Cause<E>> {
        std::iter::successors(Some(&self.head), |c| c.next.as_deref())
    }

    /// Takes the primary error and the fallbacks' errors apart.
    pub fn into_parts(self) -> (Error<E>, Vec<E>) {
        let mut primary = None;
        let mut errors = Vec::with_capacity(self.fallbacks);
        let mut cur = Some(Box::new(self.head));
        while let Some(c) = cur {
            let Cause { error, next } = *c;
            match error {
                CauseError::Primary(e) => primary = Some(e),
                CauseError::Fallback(_, e) => errors.push(e),
            }
            cur = next;
        }
        (
            primary.unwrap_or_else(|| unreachable!("the head is the primary error")),
            errors,
        )
    }

    /// Maps every inner error (the primary's, if the call itself failed, and
    /// each fallback's).
    pub(crate) fn map_inner<E2>(self, f: &mut dyn FnMut(E) -> E2) -> FallbackError<E2> {
        let name = self.name.clone();
        let (primary, errors) = self.into_parts();
        let primary = primary.map_inner(&mut *f);
        FallbackError::new(name, primary, errors.into_iter().map(f).collect())
    }
}

impl<E> Cause<E> {
    /// The primary error, if this is the first link.
    pub fn primary(&self) -> Option<&Error<E>> {
        match &self.error {
            CauseError::Primary(e) => Some(e),
            CauseError::Fallback(..) => None,
        }
    }

    /// The fallback's error, if this link is a fallback's.
    pub fn fallback_error(&self) -> Option<&E> {
        match &self.error {
            CauseError::Fallback(_, e) => Some(e),
            CauseError::Primary(_) => None,
        }
    }

    /// Which fallback of the chain failed (0-based), or `None` for the primary
    /// error.
    pub fn index(&self) -> Option<usize> {
        match &self.error {
            CauseError::Fallback(i, _) => Some(*i),
            CauseError::Primary(_) => None,
        }
    }
}

impl<E> fmt::Display for FallbackError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "fallback `{}` could not answer: the call and its {} fallback{} failed",
            self.name,
            self.fallbacks,
            if self.fallbacks == 1 { "" } else { "s" }
        )
    }
}

impl<E: fmt::Debug> fmt::Debug for FallbackError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Errors<'a, E>(&'a FallbackError<E>);
        impl<E: fmt::Debug> fmt::Debug for Errors<'_, E> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_list().entries(self.0.fallback_errors()).finish()
            }
        }
        f.debug_struct("FallbackError")
            .field("name", &self.name)
            .field("primary", self.primary())
            .field("fallback_errors", &Errors(self))
            .finish()
    }
}

impl<E: fmt::Display> fmt::Display for Cause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            CauseError::Primary(e) => {
                f.write_str("the call: ")?;
                e.fmt_cause(f)
            }
            CauseError::Fallback(i, e) => write!(f, "fallback {i}: {e}"),
        }
    }
}

impl<E: fmt::Debug> fmt::Debug for Cause<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.error {
            CauseError::Primary(e) => f.debug_tuple("Primary").field(e).finish(),
            CauseError::Fallback(i, e) => f.debug_tuple("Fallback").field(i).field(e).finish(),
        }
    }
}

impl<E: StdError + 'static> StdError for FallbackError<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        Some(&self.head)
    }
}

impl<E: StdError + 'static> StdError for Cause<E> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.next.as_deref().map(|c| c as &(dyn StdError + 'static))
    }
}
