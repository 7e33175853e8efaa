use std::fmt;

use ripcord::Pipeline;
use tower::{BoxError, Layer};

use super::{CloneRequest, PipelineService};

/// Applies a [`ripcord::Pipeline`] to a service: makes
/// [`PipelineService`]s, which share the pipeline.
pub struct PipelineLayer<T, R = CloneRequest> {
    pipeline: Pipeline<T, BoxError>,
    once: Option<Pipeline<T, BoxError>>,
    replay: R,
}

impl<T, R: Clone> Clone for PipelineLayer<T, R> {
    fn clone(&self) -> Self {
        PipelineLayer {
            pipeline: self.pipeline.clone(),
            once: self.once.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<T, R> fmt::Debug for PipelineLayer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PipelineLayer")
            .field("pipeline", &self.pipeline.name())
            .finish_non_exhaustive()
    }
}

impl<T> PipelineLayer<T> {
    /// A layer running each request through `pipeline`, replaying requests
    /// by cloning them ([`CloneRequest`]).
    pub fn new(pipeline: Pipeline<T, BoxError>) -> Self {
        PipelineLayer {
            pipeline,
            once: None,
            replay: CloneRequest,
        }
    }
}

impl<T, R> PipelineLayer<T, R> {
    /// How to get another copy of a request for a retry or a hedge (see
    /// [`Replay`](super::Replay)).
    pub fn replay<R2>(self, replay: R2) -> PipelineLayer<T, R2> {
        PipelineLayer {
            pipeline: self.pipeline,
            once: self.once,
            replay,
        }
    }

    /// The pipeline for requests that cannot be replayed: build it like the
    /// main one but without a retry or hedge, passing the same breaker (and
    /// bulkhead, rate limiter) instances so both count together.
    pub fn non_replayable(mut self, pipeline: Pipeline<T, BoxError>) -> Self {
        self.once = Some(pipeline);
        self
    }
}

impl<S, T, R: Clone> Layer<S> for PipelineLayer<T, R> {
    type Service = PipelineService<S, T, R>;

    fn layer(&self, inner: S) -> Self::Service {
        PipelineService::new(
            inner,
            self.pipeline.clone(),
            self.once.clone(),
            self.replay.clone(),
        )
    }
}
