use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use ripcord::{Pipeline, Registry};
use tower::{BoxError, Layer, Service};

use super::ExtractKey;
use crate::pipeline::{start, CloneRequest, Replay, ResponseFuture};

/// Makes [`KeyedPipelineService`]s; all of them share the registry.
pub struct KeyedPipelineLayer<K, T, X, R = CloneRequest> {
    registry: Registry<K, Pipeline<T, BoxError>>,
    extract: X,
    replay: R,
}

impl<K, T, X: Clone, R: Clone> Clone for KeyedPipelineLayer<K, T, X, R> {
    fn clone(&self) -> Self {
        KeyedPipelineLayer {
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<K, T, X, R> fmt::Debug for KeyedPipelineLayer<K, T, X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedPipelineLayer").finish_non_exhaustive()
    }
}

impl<K, T, X> KeyedPipelineLayer<K, T, X> {
    /// A layer running each request through `registry`'s pipeline for the
    /// key `extract` gives it, replaying requests by cloning them.
    pub fn new(registry: Registry<K, Pipeline<T, BoxError>>, extract: X) -> Self {
        KeyedPipelineLayer {
            registry,
            extract,
            replay: CloneRequest,
        }
    }
}

impl<K, T, X, R> KeyedPipelineLayer<K, T, X, R> {
    /// How to get another copy of a request for a retry or a hedge (e.g.
    /// [`HttpReplay`](crate::http::HttpReplay)). A request that cannot be
    /// replayed fails a second attempt with
    /// [`NotReplayable`](crate::pipeline::error::NotReplayable).
    pub fn replay<R2>(self, replay: R2) -> KeyedPipelineLayer<K, T, X, R2> {
        KeyedPipelineLayer {
            registry: self.registry,
            extract: self.extract,
            replay,
        }
    }
}

impl<S, K, T, X: Clone, R: Clone> Layer<S> for KeyedPipelineLayer<K, T, X, R> {
    type Service = KeyedPipelineService<S, K, T, X, R>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedPipelineService {
            inner,
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            replay: self.replay.clone(),
        }
    }
}

/// A [`Service`] whose calls go through the pipeline of their key; see the
/// [module docs](super). Readiness and cloning are as in
/// [`PipelineService`](crate::PipelineService).
pub struct KeyedPipelineService<S, K, T, X, R = CloneRequest> {
    inner: S,
    registry: Registry<K, Pipeline<T, BoxError>>,
    extract: X,
    replay: R,
}

impl<S: Clone, K, T, X: Clone, R: Clone> Clone for KeyedPipelineService<S, K, T, X, R> {
    fn clone(&self) -> Self {
        KeyedPipelineService {
            inner: self.inner.clone(),
            registry: self.registry.clone(),
            extract: self.extract.clone(),
            replay: self.replay.clone(),
        }
    }
}

impl<S: fmt::Debug, K, T, X, R> fmt::Debug for KeyedPipelineService<S, K, T, X, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedPipelineService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, K, T, X, R> KeyedPipelineService<S, K, T, X, R> {
    /// The registry of pipelines.
    pub fn registry(&self) -> &Registry<K, Pipeline<T, BoxError>> {
        &self.registry
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, K, T, X, R, Req> Service<Req> for KeyedPipelineService<S, K, T, X, R>
where
    S: Service<Req, Response = T> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    T: Send + 'static,
    K: Eq + Hash + Clone + Send + Sync + 'static,
    X: ExtractKey<Req, Key = K>,
    Req: Send + 'static,
    R: Replay<Req> + Clone + Send + Sync + 'static,
{
    type Response = T;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, T>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let key = self.extract.extract(&req);
        match self.registry.get(&key) {
            Ok(pipeline) => start(&pipeline, None, &mut self.inner, &self.replay, req),
            Err(e) => ResponseFuture::refused(Box::new(e)),
        }
    }
}
