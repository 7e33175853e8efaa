//! The dispatcher: one delivery queue, one pipeline per endpoint.
//!
//! Every delivery goes through its endpoint's pipeline (a timeout around a
//! circuit breaker), taken from a [`Registry`]. What happens next depends on
//! how the call ended:
//!
//! - **delivered**: done.
//! - **rejected** by the endpoint's open breaker: nothing was sent. The
//!   endpoint is *parked* until the breaker's next probe time
//!   ([`Rejected::retry_after`](ripcord::Rejected::retry_after)), and every
//!   delivery for it waits in the park — none is retried in a loop.
//! - **failed** (an error or a timeout): the delivery is rescheduled with
//!   exponential backoff, up to `max_attempts`, then dead-lettered.
//!
//! At a park's probe time exactly one waiting delivery — a *scout* — is sent:
//! it is the breaker's half-open probe. If it gets through, the endpoint is
//! unparked and all its waiting deliveries go at once. If it fails, the
//! breaker re-opens, and the next scout (sent at once) is rejected with the
//! new probe time, so the endpoint stays parked until then. A down endpoint
//! therefore sees one request per probe, whatever its backlog; and since
//! parked deliveries never enter the ready queue, healthy endpoints' deliveries
//! never wait behind them.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ripcord::{Backoff, CircuitBreaker, ConfigError, Pipeline, PolicyKind, Registry, TokioClock};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};

/// A webhook delivery.
#[derive(Debug, Clone)]
pub(crate) struct Delivery {
    pub(crate) id: u64,
    pub(crate) endpoint: String,
    pub(crate) payload: String,
    pub(crate) enqueued_at: Instant,
    /// Failed attempts so far (rejections do not count: nothing was sent).
    pub(crate) failures: u32,
}

/// Why an endpoint did not take a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeliveryError(pub(crate) String);

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DeliveryError {}

pub(crate) type SendFuture = Pin<Box<dyn Future<Output = Result<(), DeliveryError>> + Send>>;

/// Sends one webhook (an HTTP POST in real life).
pub(crate) trait Transport: Send + Sync + 'static {
    fn send(&self, endpoint: &str, payload: &str) -> SendFuture;
}

/// The pipelines, one per endpoint, created on first use from one template:
/// a 5 s timeout around a breaker that opens after 3 failures in a row, for
/// 10 s, then 20 s, 40 s, … up to 2 minutes, with one probe per half-open.
pub(crate) fn endpoint_pipelines(
) -> Result<Registry<String, Pipeline<(), DeliveryError>>, ConfigError> {
    let template = Pipeline::<(), DeliveryError>::builder()
        .timeout(Duration::from_secs(5))
        .circuit_breaker(
            CircuitBreaker::builder("endpoint")
                .consecutive_failures(3)
                .open_for(Backoff::exponential(
                    Duration::from_secs(10),
                    Duration::from_secs(120),
                ))
                .half_open_calls(1),
        )
        .clock(TokioClock::new());
    Registry::with_factory(move |endpoint: &String| template.build_named(endpoint))
        .max_keys(100_000)
        .build()
}

/// Dispatcher settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Backoff of a failed delivery: `retry_base × 2^(failures − 1)`, at most
    /// `retry_max`.
    pub(crate) retry_base: Duration,
    pub(crate) retry_max: Duration,
    /// Failed attempts before a delivery is dead-lettered.
    pub(crate) max_attempts: u32,
    /// How long to park an endpoint whose breaker rejected without a probe
    /// time (a probe in flight elsewhere, or forced open).
    pub(crate) probe_grace: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            retry_base: Duration::from_secs(1),
            retry_max: Duration::from_secs(3600),
            max_attempts: 10,
            probe_grace: Duration::from_secs(5),
        }
    }
}

/// One delivery that reached its endpoint.
#[derive(Debug, Clone)]
pub(crate) struct Delivered {
    pub(crate) id: u64,
    pub(crate) endpoint: String,
    pub(crate) enqueued_at: Instant,
    pub(crate) delivered_at: Instant,
    pub(crate) attempts: u32,
}

/// What happened during a run.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) delivered: Vec<Delivered>,
    pub(crate) dead: Vec<Delivery>,
    /// Deliveries not finished when the run ended (parked, queued, in flight).
    pub(crate) pending: usize,
    /// Every pipeline execution per endpoint (rejections included): when, and
    /// how it ended.
    pub(crate) executions: HashMap<String, Vec<(Instant, Ended)>>,
}

/// How one execution ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Delivered,
    /// Rejected by the open breaker; park this long.
    Rejected(Duration),
    Failed,
}

enum Job {
    Deliver(Delivery),
    /// Send one waiting delivery of this park (by generation).
    Scout(String, u64),
}

struct Scheduled {
    at: Instant,
    seq: u64,
    job: Job,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// An endpoint whose breaker is open: its deliveries wait here.
struct Park {
    generation: u64,
    waiting: VecDeque<Delivery>,
}

struct Finished {
    delivery: Delivery,
    ended: Ended,
    scout: bool,
    at: Instant,
}

/// The dispatcher. Deliveries go in with [`enqueue`](Self::enqueue); [`run_until`](Self::run_until)
/// delivers them.
pub(crate) struct Dispatcher<T> {
    pipelines: Registry<String, Pipeline<(), DeliveryError>>,
    transport: Arc<T>,
    settings: Settings,
    queue: BinaryHeap<Reverse<Scheduled>>,
    parked: HashMap<String, Park>,
    seq: u64,
    next_id: u64,
    generations: u64,
    in_flight: usize,
    tx: mpsc::UnboundedSender<Finished>,
    rx: mpsc::UnboundedReceiver<Finished>,
    report: Report,
}

impl<T: Transport> Dispatcher<T> {
    pub(crate) fn new(
        pipelines: Registry<String, Pipeline<(), DeliveryError>>,
        transport: T,
        settings: Settings,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Dispatcher {
            pipelines,
            transport: Arc::new(transport),
            settings,
            queue: BinaryHeap::new(),
            parked: HashMap::new(),
            seq: 0,
            next_id: 0,
            generations: 0,
            in_flight: 0,
            tx,
            rx,
            report: Report::default(),
        }
    }

    /// Queues a delivery, due now. Returns its id.
    pub(crate) fn enqueue(&mut self, endpoint: &str, payload: &str) -> u64 {
        self.next_id += 1;
        let d = Delivery {
            id: self.next_id,
            endpoint: endpoint.to_string(),
            payload: payload.to_string(),
            enqueued_at: Instant::now(),
            failures: 0,
        };
        self.schedule(Instant::now(), Job::Deliver(d));
        self.next_id
    }

    /// Runs until every delivery is delivered or dead, or until `horizon`.
    pub(crate) async fn run_until(mut self, horizon: Instant) -> Report {
        loop {
            let now = Instant::now();
            while self.queue.peek().is_some_and(|s| s.0.at <= now) {
                let Some(Reverse(s)) = self.queue.pop() else {
                    break;
                };
                self.run_job(s.job);
            }
            if self.queue.is_empty() && self.in_flight == 0 && self.parked.is_empty() {
                break;
            }
            let wake = self.queue.peek().map_or(horizon, |s| s.0.at.min(horizon));
            tokio::select! {
                biased;
                Some(f) = self.rx.recv() => self.finished(f),
                () = sleep_until(wake) => {
                    if wake >= horizon {
                        break;
                    }
                }
            }
        }
        let queued = self
            .queue
            .iter()
            .filter(|s| matches!(s.0.job, Job::Deliver(_)))
            .count();
        self.report.pending =
            queued + self.in_flight + self.parked.values().map(|p| p.waiting.len()).sum::<usize>();
        self.report
    }

    fn schedule(&mut self, at: Instant, job: Job) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            job,
        }));
    }

    fn run_job(&mut self, job: Job) {
        match job {
            Job::Deliver(d) => match self.parked.get_mut(&d.endpoint) {
                // Its endpoint is down: wait for the probe, don't even try.
                Some(park) => park.waiting.push_back(d),
                None => self.send(d, false),
            },
            Job::Scout(endpoint, generation) => {
                let Some(park) = self.parked.get_mut(&endpoint) else {
                    return;
                };
                if park.generation != generation {
                    return; // a stale wake-up for an earlier park
                }
                match park.waiting.pop_front() {
                    Some(d) => self.send(d, true),
                    None => {
                        self.parked.remove(&endpoint);
                    }
                }
            }
        }
    }

    /// Sends one delivery through its endpoint's pipeline, in a task.
    fn send(&mut self, delivery: Delivery, scout: bool) {
        let pipeline = match self.pipelines.get(&delivery.endpoint) {
            Ok(p) => p,
            Err(e) => {
                eprintln!("no pipeline for {}: {e}", delivery.endpoint);
                self.report.dead.push(delivery);
                return;
            }
        };
        self.in_flight += 1;
        let transport = self.transport.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let r = pipeline
                .execute(|| transport.send(&delivery.endpoint, &delivery.payload))
                .await;
            let ended = match r {
                Ok(()) => Ended::Delivered,
                Err(e) if e.policy() == Some(PolicyKind::CircuitBreaker) => {
                    Ended::Rejected(e.retry_after().unwrap_or_default())
                }
                // The endpoint's error, or the timeout.
                Err(_) => Ended::Failed,
            };
            let _ = tx.send(Finished {
                delivery,
                ended,
                scout,
                at: Instant::now(),
            });
        });
    }

    fn finished(&mut self, f: Finished) {
        self.in_flight -= 1;
        let Finished {
            mut delivery,
            ended,
            scout,
            at,
        } = f;
        let endpoint = delivery.endpoint.clone();
        self.report
            .executions
            .entry(endpoint.clone())
            .or_default()
            .push((at, ended));
        match ended {
            Ended::Delivered => {
                self.report.delivered.push(Delivered {
                    id: delivery.id,
                    endpoint: endpoint.clone(),
                    enqueued_at: delivery.enqueued_at,
                    delivered_at: at,
                    attempts: delivery.failures + 1,
                });
                if scout {
                    // The endpoint is back: release its backlog at once.
                    if let Some(park) = self.parked.remove(&endpoint) {
                        for d in park.waiting {
                            self.schedule(at, Job::Deliver(d));
                        }
                    }
                }
            }
            Ended::Rejected(retry_after) => {
                let wait = if retry_after.is_zero() {
                    self.settings.probe_grace
                } else {
                    retry_after
                };
                self.park(delivery, scout, at + wait);
            }
            Ended::Failed => {
                delivery.failures += 1;
                if delivery.failures >= self.settings.max_attempts {
                    self.report.dead.push(delivery);
                } else {
                    let backoff = self
                        .settings
                        .retry_base
                        .saturating_mul(1 << (delivery.failures - 1).min(20))
                        .min(self.settings.retry_max);
                    self.schedule(at + backoff, Job::Deliver(delivery));
                }
                if scout {
                    // The probe failed and the breaker re-opened: the next
                    // scout, sent now, is rejected with the new probe time.
                    let generation = self.parked.get(&endpoint).map(|p| p.generation);
                    if let Some(g) = generation {
                        self.run_job(Job::Scout(endpoint, g));
                    }
                }
            }
        }
    }

    /// Parks `delivery`'s endpoint until `until` (the breaker's probe time).
    fn park(&mut self, delivery: Delivery, scout: bool, until: Instant) {
        let endpoint = delivery.endpoint.clone();
        match self.parked.get_mut(&endpoint) {
            // Already parked, and this was not its scout (a delivery that was
            // in flight when the park began): it waits like the others.
            Some(park) if !scout => park.waiting.push_back(delivery),
            Some(park) => {
                park.waiting.push_front(delivery);
                self.generations += 1;
                park.generation = self.generations;
                let g = park.generation;
                self.schedule(until, Job::Scout(endpoint, g));
            }
            None => {
                self.generations += 1;
                let g = self.generations;
                self.parked.insert(
                    endpoint.clone(),
                    Park {
                        generation: g,
                        waiting: VecDeque::from([delivery]),
                    },
                );
                self.schedule(until, Job::Scout(endpoint, g));
            }
        }
    }
}
