//! `tracing`: call spans carry the policies' decisions as fields, transitions
//! and rejections are events inside them — seen by a capturing subscriber, and
//! through `tracing-opentelemetry` as OpenTelemetry spans.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ripcord::{Backoff, CircuitBreaker, Error, ManualClock, Pipeline, Retry, TokioClock};
use ripcord_metrics::tracing::{call_span, traced, CALL_SPAN};
use ripcord_metrics::Metrics;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

type Fields = BTreeMap<String, String>;

#[derive(Debug, Clone)]
struct SpanRecord {
    name: String,
    fields: Fields,
}

#[derive(Debug, Clone)]
struct EventRecord {
    level: Level,
    target: String,
    fields: Fields,
    /// The `ripcord.name` of the span the event happened in.
    span: Option<String>,
}

/// Keeps every span (with its recorded fields) and every event.
#[derive(Clone, Default)]
struct Capture {
    spans: Arc<Mutex<BTreeMap<u64, SpanRecord>>>,
    events: Arc<Mutex<Vec<EventRecord>>>,
}

struct FieldVisitor<'a>(&'a mut Fields);

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().into(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, _: Context<'_, S>) {
        let mut fields = Fields::new();
        attrs.record(&mut FieldVisitor(&mut fields));
        self.spans.lock().unwrap().insert(
            id.into_u64(),
            SpanRecord {
                name: attrs.metadata().name().into(),
                fields,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _: Context<'_, S>) {
        if let Some(s) = self.spans.lock().unwrap().get_mut(&id.into_u64()) {
            values.record(&mut FieldVisitor(&mut s.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        let mut fields = Fields::new();
        event.record(&mut FieldVisitor(&mut fields));
        let span = ctx.event_span(event).and_then(|s| {
            self.spans
                .lock()
                .unwrap()
                .get(&s.id().into_u64())
                .and_then(|r| r.fields.get("ripcord.name").cloned())
        });
        self.events.lock().unwrap().push(EventRecord {
            level: *event.metadata().level(),
            target: event.metadata().target().into(),
            fields,
            span,
        });
    }
}

impl Capture {
    /// The fields of the call span named `name`, without `ripcord.name`.
    fn span(&self, name: &str) -> Fields {
        let spans = self.spans.lock().unwrap();
        let s = spans
            .values()
            .find(|s| {
                s.name == CALL_SPAN
                    && s.fields.get("ripcord.name").map(String::as_str) == Some(name)
            })
            .unwrap_or_else(|| panic!("no span {name}: {spans:?}"));
        let mut f = s.fields.clone();
        f.remove("ripcord.name");
        f
    }

    fn events(&self) -> Vec<EventRecord> {
        self.events.lock().unwrap().clone()
    }
}

fn fields(pairs: &[(&str, &str)]) -> Fields {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[tokio::test]
async fn call_spans_and_transition_events() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));

    let metrics = Metrics::new();
    let clock = ManualClock::new();
    let breaker = metrics
        .breaker(
            CircuitBreaker::builder("payments")
                .consecutive_failures(1)
                .open_for(Backoff::fixed(Duration::from_secs(10)))
                .half_open_calls(1)
                .clock(clock.clone()),
        )
        .unwrap();

    // 1. A failure trips the breaker.
    let r = traced("charge-1", breaker.call(|| async { Err::<(), _>("down") })).await;
    assert!(matches!(r, Err(Error::Inner("down"))));
    assert_eq!(
        capture.span("charge-1"),
        fields(&[
            ("ripcord.breaker", "payments"),
            ("ripcord.breaker.outcome", "failure"),
            ("ripcord.breaker.probe", "false"),
            ("ripcord.breaker.epoch", "0"),
        ])
    );

    // 2. Rejected while open.
    let r = traced("charge-2", breaker.call(|| async { Ok::<_, &str>(()) })).await;
    assert!(matches!(r, Err(Error::Rejected(_))));
    assert_eq!(
        capture.span("charge-2"),
        fields(&[
            ("ripcord.rejected", "true"),
            ("ripcord.rejected_by", "circuit_breaker"),
            ("ripcord.breaker", "payments"),
            ("ripcord.breaker.outcome", "rejected"),
            ("ripcord.breaker.state", "open"),
            ("ripcord.breaker.epoch", "1"),
            ("otel.status_code", "ERROR"),
        ])
    );

    // 3. The probe closes it.
    clock.advance(Duration::from_secs(10));
    traced("charge-3", breaker.call(|| async { Ok::<_, &str>(()) }))
        .await
        .unwrap();
    assert_eq!(
        capture.span("charge-3"),
        fields(&[
            ("ripcord.breaker", "payments"),
            ("ripcord.breaker.outcome", "success"),
            ("ripcord.breaker.probe", "true"),
            ("ripcord.breaker.epoch", "2"),
        ])
    );

    // 4. A call while the fleet's store is unreachable says so.
    metrics.set_store_degraded(true);
    traced("charge-4", breaker.call(|| async { Ok::<_, &str>(()) }))
        .await
        .unwrap();
    assert_eq!(capture.span("charge-4")["ripcord.store.degraded"], "true");

    let events: Vec<_> = capture
        .events()
        .into_iter()
        .map(|e| {
            assert_eq!(e.target, "ripcord");
            let mut f = e.fields.clone();
            let message = f.remove("message").unwrap_or_default();
            (e.level, message, f, e.span)
        })
        .collect();
    let transition = |from: &str, to: &str, reason: &str, epoch: &str| {
        fields(&[
            ("breaker", "payments"),
            ("from", from),
            ("to", to),
            ("reason", reason),
            ("epoch", epoch),
        ])
    };
    let span = |s: &str| Some(s.to_string());
    assert_eq!(
        events,
        vec![
            (
                Level::WARN,
                "circuit breaker opened".into(),
                transition("closed", "open", "consecutive_failures", "1"),
                span("charge-1"),
            ),
            (
                Level::DEBUG,
                "call rejected by circuit breaker".into(),
                fields(&[
                    ("breaker", "payments"),
                    ("state", "open"),
                    ("retry_after_ms", "10000.0"),
                    ("epoch", "1"),
                ]),
                span("charge-2"),
            ),
            (
                Level::INFO,
                "circuit breaker half-open".into(),
                transition("open", "half_open", "open_elapsed", "2"),
                span("charge-3"),
            ),
            (
                Level::INFO,
                "circuit breaker closed".into(),
                transition("half_open", "closed", "probes_succeeded", "3"),
                span("charge-3"),
            ),
            (
                Level::WARN,
                "fleet state store unreachable: deciding on local data".into(),
                Fields::new(),
                None,
            ),
        ]
    );
}

/// Two threads: A trips the breaker inside call span `a` and, while its
/// listener still runs, B forces the breaker open inside span `b`. B finds A
/// delivering and leaves its transition to A; the event must still land in
/// `b`, the span of the call that caused it.
#[test]
fn a_transition_is_recorded_in_the_span_of_the_call_that_caused_it() {
    use std::sync::mpsc;
    let capture = Capture::default();
    let dispatch = tracing::Dispatch::new(tracing_subscriber::registry().with(capture.clone()));
    let (a_delivering, b_may_go) = mpsc::channel::<()>();
    let (b_done, a_may_go) = mpsc::channel::<()>();
    let a_may_go = Mutex::new(a_may_go);
    let first = std::sync::atomic::AtomicBool::new(true);
    let breaker = CircuitBreaker::builder("payments")
        .consecutive_failures(1)
        .clock(ManualClock::new())
        .on_event(move |e| {
            let transition = matches!(e.kind, ripcord::EventKind::Transition { .. });
            if transition && first.swap(false, std::sync::atomic::Ordering::SeqCst) {
                a_delivering.send(()).unwrap();
                a_may_go.lock().unwrap().recv().unwrap();
            }
        })
        .on_event(ripcord_metrics::tracing::record)
        .build()
        .unwrap();
    std::thread::scope(|s| {
        let (b, d) = (breaker.clone(), dispatch.clone());
        s.spawn(move || {
            let _sub = tracing::dispatcher::set_default(&d);
            let _span = call_span("a").entered();
            b.try_acquire().unwrap().record(ripcord::Outcome::Failure);
        });
        let (b, d) = (breaker.clone(), dispatch.clone());
        s.spawn(move || {
            let _sub = tracing::dispatcher::set_default(&d);
            b_may_go.recv().unwrap();
            {
                let _span = call_span("b").entered();
                b.force_open();
            }
            b_done.send(()).unwrap();
        });
    });
    let transitions: Vec<_> = capture
        .events()
        .into_iter()
        .filter(|e| e.fields.contains_key("from"))
        .map(|e| (e.fields["to"].clone(), e.span))
        .collect();
    assert_eq!(
        transitions,
        [
            ("open".to_string(), Some("a".to_string())),
            ("forced_open".to_string(), Some("b".to_string())),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn retry_decisions_are_span_fields() {
    let capture = Capture::default();
    let _guard =
        tracing::subscriber::set_default(tracing_subscriber::registry().with(capture.clone()));
    let metrics = Metrics::new();
    let pipeline = Pipeline::<(), String>::builder()
        .clock(TokioClock::new())
        .on_event(metrics.listener())
        .retry(
            Retry::builder("orders")
                .max_attempts(3)
                .backoff(Backoff::fixed(Duration::from_millis(5))),
        )
        .timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let r = traced(
        "list-orders",
        pipeline.execute(|| async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            Ok(())
        }),
    )
    .await;
    assert!(matches!(r, Err(Error::Timeout(_))), "{r:?}");
    assert_eq!(
        capture.span("list-orders"),
        fields(&[
            ("ripcord.retry.attempts", "3"),
            ("ripcord.retry.exhausted", "true"),
            ("ripcord.timeout.timed_out", "true"),
            ("otel.status_code", "ERROR"),
        ])
    );
    let messages: Vec<_> = capture
        .events()
        .iter()
        .map(|e| e.fields["message"].clone())
        .collect();
    assert_eq!(
        messages,
        [
            "call timed out",
            "retry scheduled",
            "call timed out",
            "retry scheduled",
            "call timed out",
            "retries exhausted"
        ]
    );
}

#[test]
fn a_rejected_call_shows_in_an_opentelemetry_trace() {
    use opentelemetry::trace::{Status, TracerProvider as _};
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider};

    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));

    let breaker = CircuitBreaker::builder("payments")
        .on_event(ripcord_metrics::tracing::record)
        .build()
        .unwrap();
    breaker.force_open();
    tracing::subscriber::with_default(subscriber, || {
        let r = call_span("charge").in_scope(|| breaker.call_sync(|| Ok::<_, ()>(())));
        assert!(matches!(r, Err(Error::Rejected(_))));
    });
    provider.force_flush().unwrap();

    let spans = exporter.get_finished_spans().unwrap();
    let span = spans
        .iter()
        .find(|s| s.name == CALL_SPAN)
        .expect("the call span was exported");
    let attr = |k: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key.as_str() == k)
            .map(|kv| kv.value.to_string())
    };
    assert_eq!(attr("ripcord.name").as_deref(), Some("charge"));
    assert_eq!(attr("ripcord.rejected").as_deref(), Some("true"));
    assert_eq!(
        attr("ripcord.breaker.state").as_deref(),
        Some("forced_open")
    );
    assert!(
        matches!(span.status, Status::Error { .. }),
        "{:?}",
        span.status
    );
    assert!(
        span.events
            .iter()
            .any(|e| e.name == "call rejected by circuit breaker"),
        "{:?}",
        span.events
    );
}
