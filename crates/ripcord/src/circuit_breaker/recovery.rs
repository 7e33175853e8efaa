//! The active recovery check and the eager open → half-open timer.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use super::state::word;
use super::{Inner, State};
use crate::event::{Event, EventKind};
use crate::sync::Ordering;

type CheckFn = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

/// A user function that tells whether the dependency looks healthy again.
#[derive(Clone)]
pub(crate) struct RecoveryCheck {
    pub(crate) interval: Duration,
    check: CheckFn,
}

impl RecoveryCheck {
    pub(crate) fn new<F, Fut>(interval: Duration, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        RecoveryCheck {
            interval,
            check: Arc::new(move || Box::pin(check())),
        }
    }
}

impl fmt::Debug for RecoveryCheck {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecoveryCheck")
            .field("interval", &self.interval)
            .finish_non_exhaustive()
    }
}

/// Runs the check once if the breaker is open; a pass is remembered for the
/// current epoch and lets the breaker go half-open when its time has come.
pub(super) async fn run_once(inner: &Inner) -> Option<bool> {
    let check = inner.recovery.as_ref()?;
    let w = inner.state_word();
    if word::state(w) != State::Open {
        return None;
    }
    let epoch = word::epoch(w);
    let passed = (check.check)().await;
    if passed {
        inner
            .timing
            .recovery_passed
            .store(epoch + 1, Ordering::Release);
    }
    if inner.events.active() {
        inner.events.emit(Event {
            name: inner.name.clone(),
            at: Duration::from_nanos(inner.clock.now_nanos()),
            epoch,
            kind: EventKind::RecoveryCheck { passed },
        });
    }
    inner.tick();
    Some(passed)
}

/// Called after every transition to Open, with no lock held.
#[cfg(feature = "tokio")]
pub(super) fn on_open(inner: &Inner) {
    if !inner.eager && inner.recovery.is_none() {
        return;
    }
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let Some(me) = inner.me.upgrade() else {
        return;
    };
    let epoch = word::epoch(inner.state_word());
    let weak = Arc::downgrade(&me);
    drop(me);
    handle.spawn(async move {
        loop {
            let wait = {
                let Some(inner) = weak.upgrade() else { return };
                let w = inner.state_word();
                if word::epoch(w) != epoch || word::state(w) != State::Open {
                    return;
                }
                match &inner.recovery {
                    Some(r) => r.interval,
                    None => Duration::from_nanos(
                        inner.open_until().saturating_sub(inner.clock.now_nanos()),
                    )
                    .max(Duration::from_millis(1)),
                }
            };
            tokio::time::sleep(wait).await;
            let Some(inner) = weak.upgrade() else { return };
            if inner.recovery.is_some() {
                run_once(&inner).await;
            } else {
                inner.tick();
            }
        }
    });
}

#[cfg(not(feature = "tokio"))]
pub(super) fn on_open(_inner: &Inner) {}
