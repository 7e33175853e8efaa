//! Listens to the breaker's event stream and keeps its transitions, with the
//! reason for each one when it can be told.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ripcord::{CircuitBreaker, Event, EventKind, State};
use tokio::sync::{broadcast, oneshot};
use tokio::task::JoinHandle;

/// One change of the breaker's state.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    /// When it happened, since the demo's start.
    pub(crate) at: Duration,
    /// The state before.
    pub(crate) from: State,
    /// The state after.
    pub(crate) to: State,
    /// Why, in a few words, if known.
    pub(crate) why: Option<String>,
}

/// The transitions collected so far, and whether the stream lost any events.
#[derive(Debug, Default)]
pub(crate) struct Transitions {
    /// Every transition seen, in order.
    pub(crate) list: Vec<Transition>,
    /// Transitions known to be missing: the breaker's epoch moved by more than
    /// one between two transitions we saw (the listener fell behind).
    pub(crate) missed: u64,
}

/// A background task that records the breaker's transitions.
#[derive(Debug)]
pub(crate) struct Timeline {
    /// Tells the task to drain what is queued and return.
    stop: oneshot::Sender<()>,
    /// The task, returning what it collected.
    task: JoinHandle<Transitions>,
}

impl Timeline {
    /// Subscribes to `breaker` and starts recording; times are measured from
    /// `started`.
    pub(crate) fn start(breaker: &Arc<CircuitBreaker>, started: Instant) -> Self {
        let events = breaker.subscribe();
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(collect(events, Arc::clone(breaker), started, stopped));
        Timeline { stop, task }
    }

    /// Stops recording and returns the transitions.
    pub(crate) async fn stop(self) -> Transitions {
        // The task may have ended already (the stream closed); that is fine.
        let _ = self.stop.send(());
        self.task.await.unwrap_or_default()
    }
}

/// The collecting loop.
async fn collect(
    mut events: broadcast::Receiver<Event>,
    breaker: Arc<CircuitBreaker>,
    started: Instant,
    mut stopped: oneshot::Receiver<()>,
) -> Transitions {
    let mut recorder = Recorder::new(breaker, started);
    loop {
        tokio::select! {
            biased;
            received = events.recv() => match received {
                Ok(event) => recorder.on_event(&event),
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => break,
            },
            _ = &mut stopped => {
                // Take what is already queued, then stop.
                loop {
                    match events.try_recv() {
                        Ok(event) => recorder.on_event(&event),
                        Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                        Err(_) => break,
                    }
                }
                break;
            }
        }
    }
    recorder.transitions
}

/// Turns events into [`Transition`]s.
#[derive(Debug)]
struct Recorder {
    /// The breaker, to read its window when it trips.
    breaker: Arc<CircuitBreaker>,
    /// The demo's start.
    started: Instant,
    /// What was recorded so far.
    transitions: Transitions,
    /// The epoch of the last transition seen.
    epoch: Option<u64>,
}

impl Recorder {
    /// An empty recorder.
    fn new(breaker: Arc<CircuitBreaker>, started: Instant) -> Self {
        Recorder {
            breaker,
            started,
            transitions: Transitions::default(),
            epoch: None,
        }
    }

    /// Records `event` if it is a transition.
    fn on_event(&mut self, event: &Event) {
        let EventKind::Transition { from, to } = event.kind else {
            return;
        };
        if let Some(last) = self.epoch {
            self.transitions.missed += event.epoch.saturating_sub(last + 1);
        }
        self.epoch = Some(event.epoch);
        let at = self.started.elapsed();
        let why = self.why(at, from, to);
        self.transitions.list.push(Transition { at, from, to, why });
    }

    /// A short reason for a transition.
    fn why(&self, at: Duration, from: State, to: State) -> Option<String> {
        let _ = (at, &self.breaker);
        match (from, to) {
            (State::Open, State::HalfOpen) => {
                let opened = self
                    .transitions
                    .list
                    .last()
                    .map(|t| at.saturating_sub(t.at))?;
                Some(format!("open for {}", super::view::secs(opened)))
            }
            _ => None,
        }
    }
}
