use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::BodyExt;
use ripcord::{Bulkhead, CircuitBreaker};

use super::*;

/// A body that gives its frames in order; with `end_after_last`, it
/// reports `is_end_stream` as soon as its last frame is out (as hyper's
/// bodies of a known length do), else only `None` ends it.
#[derive(Default)]
pub(crate) struct Frames {
    frames: VecDeque<Result<Frame<Bytes>, String>>,
    end_after_last: bool,
    polls_after_end: u32,
}

impl Frames {
    pub(crate) fn new(frames: Vec<Result<Frame<Bytes>, String>>, end_after_last: bool) -> Self {
        Frames {
            frames: frames.into(),
            end_after_last,
            polls_after_end: 0,
        }
    }
}

pub(crate) fn data(s: &'static str) -> Result<Frame<Bytes>, String> {
    Ok(Frame::data(Bytes::from_static(s.as_bytes())))
}

pub(crate) fn trailers(name: &'static str, value: &'static str) -> Result<Frame<Bytes>, String> {
    let mut map = HeaderMap::new();
    map.insert(name, http::HeaderValue::from_static(value));
    Ok(Frame::trailers(map))
}

impl Body for Frames {
    type Data = Bytes;
    type Error = String;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
        let this = self.get_mut();
        let frame = this.frames.pop_front();
        if frame.is_none() {
            this.polls_after_end += 1;
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.end_after_last && self.frames.is_empty()
    }
}

/// Logs every ending it hears.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

impl BodyEnd<Frames> for Log {
    fn end(self, body: Pin<&mut Frames>, trailers: Option<&HeaderMap>) {
        let polls = body.polls_after_end;
        let entry = match trailers.and_then(|t| t.get("grpc-status")) {
            Some(v) => format!("end(trailers {})", v.to_str().unwrap()),
            None => format!("end(after {polls} empty polls)"),
        };
        self.0.lock().unwrap().push(entry);
    }

    fn error(self) {
        self.0.lock().unwrap().push("error".into());
    }

    fn dropped(self) {
        self.0.lock().unwrap().push("dropped".into());
    }
}

fn recorded(
    frames: Vec<Result<Frame<Bytes>, String>>,
    end_after_last: bool,
) -> (RecordedBody<Frames, Log>, Log) {
    let log = Log::default();
    (
        RecordedBody::new(Frames::new(frames, end_after_last), log.clone()),
        log,
    )
}

#[tokio::test]
async fn an_end_by_none_is_recorded_once_even_if_polled_again() {
    let (mut body, log) = recorded(vec![data("a"), data("b")], false);
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    assert!(log.take().is_empty(), "not at its end yet");
    assert!(body.frame().await.is_none());
    assert_eq!(log.take(), ["end(after 1 empty polls)"]);
    assert!(body.frame().await.is_none());
    drop(body);
    assert!(
        log.take().is_empty(),
        "polled again and dropped: nothing more"
    );
}

#[tokio::test]
async fn an_end_by_is_end_stream_after_the_last_data_frame_needs_no_further_poll() {
    let (mut body, log) = recorded(vec![data("a"), data("b")], true);
    body.frame().await.unwrap().unwrap();
    assert!(log.take().is_empty());
    body.frame().await.unwrap().unwrap();
    assert_eq!(log.take(), ["end(after 0 empty polls)"]);
    assert!(!body.is_pending());
    assert!(body.frame().await.is_none());
    drop(body);
    assert!(
        log.take().is_empty(),
        "polled after its end and dropped: once"
    );
}

#[tokio::test]
async fn an_end_by_a_trailers_frame_hands_the_trailers_over() {
    let (mut body, log) = recorded(vec![data("a"), trailers("grpc-status", "14")], false);
    body.frame().await.unwrap().unwrap();
    let frame = body.frame().await.unwrap().unwrap();
    assert_eq!(
        frame.trailers_ref().unwrap()["grpc-status"],
        "14",
        "passed through"
    );
    assert_eq!(log.take(), ["end(trailers 14)"]);
    assert!(body.frame().await.is_none());
    drop(body);
    assert!(log.take().is_empty());
}

#[tokio::test]
async fn an_error_mid_body_is_recorded_once() {
    let (mut body, log) = recorded(vec![data("a"), Err("reset".into()), data("b")], false);
    body.frame().await.unwrap().unwrap();
    assert_eq!(body.frame().await.unwrap().unwrap_err(), "reset");
    assert_eq!(log.take(), ["error"]);
    body.frame().await.unwrap().unwrap();
    assert!(body.frame().await.is_none());
    drop(body);
    assert!(
        log.take().is_empty(),
        "an error, then the end and a drop: once"
    );
}

#[tokio::test]
async fn a_drop_before_the_end_is_recorded_once() {
    let (mut body, log) = recorded(vec![data("a"), data("b")], true);
    body.frame().await.unwrap().unwrap();
    assert!(body.is_pending());
    drop(body);
    assert_eq!(log.take(), ["dropped"]);

    let (body, log) = recorded(vec![data("a")], false);
    let inner = body.into_inner();
    assert_eq!(log.take(), ["dropped"], "unwrapped before its end");
    drop(inner);
    assert!(log.take().is_empty());
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder("body").build().unwrap()
}

/// Reads a body to its end or its first error.
pub(crate) async fn drain<B: Body + Unpin>(mut body: B) {
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return;
        }
    }
}

#[tokio::test]
async fn a_permit_counts_the_end_and_an_early_drop_as_successes_and_an_error_as_a_failure() {
    let cb = breaker();
    // Read to the end by `None`, by `is_end_stream` and by trailers.
    for (frames, end_after_last) in [
        (vec![data("a")], false),
        (vec![data("a")], true),
        (vec![data("a"), trailers("x-checksum", "1")], false),
    ] {
        let permit = cb.try_acquire_owned().unwrap();
        drain(RecordedBody::new(
            Frames::new(frames, end_after_last),
            permit,
        ))
        .await;
    }
    assert_eq!((cb.stats().successes(), cb.stats().failures()), (3, 0));

    // Dropped after its first frame: the reader went away, a success.
    let permit = cb.try_acquire_owned().unwrap();
    let mut body = RecordedBody::new(Frames::new(vec![data("a"), data("b")], true), permit);
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!((cb.stats().successes(), cb.stats().failures()), (4, 0));

    // A body error: a failure, once (the body is dropped afterwards).
    let permit = cb.try_acquire_owned().unwrap();
    drain(RecordedBody::new(
        Frames::new(vec![data("a"), Err("reset".into())], false),
        permit,
    ))
    .await;
    assert_eq!((cb.stats().successes(), cb.stats().failures()), (4, 1));
    assert_eq!(cb.stats().calls(), 5);
}

#[tokio::test]
async fn combined_recorders_each_hear_the_one_ending_and_release_their_slots() {
    let cb = breaker();
    let bulkhead = Bulkhead::builder("body").max_concurrent(2).build().unwrap();
    let log = Log::default();
    let recorder = Box::new((
        [Some(cb.try_acquire_owned().unwrap()), None],
        bulkhead.try_acquire_owned().unwrap(),
        log.clone(),
    ));
    let mut body = RecordedBody::new(Frames::new(vec![data("a"), data("b")], true), recorder);
    assert_eq!(bulkhead.in_use(), 1);
    body.frame().await.unwrap().unwrap();
    body.frame().await.unwrap().unwrap();
    assert_eq!(log.take(), ["end(after 0 empty polls)"]);
    assert_eq!(bulkhead.in_use(), 0, "released at the end, not at the drop");
    assert_eq!(cb.stats().successes(), 1);
    drop(body);
    assert_eq!(cb.stats().calls(), 1);
    assert!(log.take().is_empty());
}

#[test]
fn a_boxed_recorder_keeps_the_body_one_pointer_larger() {
    type Boxed = RecordedBody<Frames, Box<(OwnedPermit, OwnedBulkheadPermit, Log)>>;
    assert_eq!(
        std::mem::size_of::<Boxed>(),
        std::mem::size_of::<Frames>() + std::mem::size_of::<usize>()
    );
}

#[test]
fn an_optional_permit_costs_no_more_than_before() {
    // The recorder waits in an `Option` of its own: for an optional
    // permit, the niches of the permit hold both.
    assert_eq!(
        std::mem::size_of::<Pending<Frames, Option<OwnedPermit>>>(),
        std::mem::size_of::<Option<OwnedPermit>>()
    );
}
