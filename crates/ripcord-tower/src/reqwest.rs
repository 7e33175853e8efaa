//! A [`reqwest_middleware`] adapter: a [`Pipeline`] per host for a
//! `reqwest` client (feature `reqwest`).
//!
//! ```no_run
//! use ripcord::{CircuitBreaker, Pipeline, Retry};
//! use ripcord_tower::reqwest::{HostPipelines, PipelineMiddleware};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let client = reqwest_middleware::ClientBuilder::new(reqwest::Client::new())
//!     .with(PipelineMiddleware::per_host(|host| {
//!         Ok(HostPipelines::new(
//!             Pipeline::builder()
//!                 .timeout(Duration::from_secs(5))
//!                 .retry(Retry::builder(host).max_attempts(3))
//!                 .circuit_breaker(CircuitBreaker::builder(host))
//!                 .build_named(host)?,
//!         ))
//!     })?)
//!     .build();
//! let res = client.get("http://127.0.0.1:8080/").send().await?;
//! # let _ = res;
//! # Ok(()) }
//! ```
//!
//! Each host (`scheme://host:port`) gets its own pipeline, built lazily by
//! the factory and kept in a [`Registry`]: one failing host never refuses
//! calls to another.
//!
//! Outcomes: results are judged by
//! [`classify_status`] (5xx and 429 fail,
//! other 4xx are ignored) and every error fails; give the pipeline your own
//! [`classify`](ripcord::PipelineBuilder::classify) to change that.
//!
//! Retries: a request is sent again only if its method is idempotent or it
//! carries [`Retryable`] in the middleware
//! extensions, and its body can be cloned (`reqwest::Request::try_clone`; a
//! streaming body cannot). Other requests go through the pipeline given to
//! [`HostPipelines::non_replayable`] (build it without a retry, with the
//! same breaker), or, without one, a retry fails with
//! [`NotReplayable`]. Each attempt
//! gets its own copy of the extensions; what inner middleware put in them
//! does not come back out.
//!
//! Errors: the pipeline's refusals come back as
//! `reqwest_middleware::Error::Middleware` holding the policy's error
//! ([`ripcord::Rejected`], [`ripcord::Timeout`], …): find it with
//! `anyhow::Error::downcast_ref`.

use std::sync::Mutex;

use reqwest::{Request, Response};
use reqwest_middleware::{Error, Middleware, Next};
use ripcord::registry::Member;
use ripcord::{ConfigError, Outcome, Pipeline, Registry};

use crate::http::{classify_status, is_idempotent, Retryable};
use crate::pipeline::error::NotReplayable;

/// The pipeline type the adapter runs.
pub type ReqwestPipeline = Pipeline<Response, Error>;

/// The default classification of a reqwest result: by status, errors fail.
pub fn classify(result: &Result<Response, Error>) -> Outcome {
    match result {
        Ok(response) => classify_status(response.status()),
        Err(_) => Outcome::Failure,
    }
}

/// The pipelines of one host: the main one, and optionally one for requests
/// that cannot be replayed.
#[derive(Clone)]
pub struct HostPipelines {
    main: ReqwestPipeline,
    once: Option<ReqwestPipeline>,
}

impl std::fmt::Debug for HostPipelines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostPipelines")
            .field("main", &self.main.name())
            .finish_non_exhaustive()
    }
}

impl HostPipelines {
    /// One pipeline for every request of the host.
    pub fn new(main: ReqwestPipeline) -> Self {
        HostPipelines { main, once: None }
    }

    /// The pipeline for requests that must not be sent twice.
    pub fn non_replayable(mut self, once: ReqwestPipeline) -> Self {
        self.once = Some(once);
        self
    }

    /// The main pipeline.
    pub fn main(&self) -> &ReqwestPipeline {
        &self.main
    }
}

impl Member for HostPipelines {
    fn is_pinned(&self) -> bool {
        self.main.is_pinned() || self.once.as_ref().is_some_and(Member::is_pinned)
    }
}

/// A [`reqwest_middleware::Middleware`] running each request through its
/// host's pipeline. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct PipelineMiddleware {
    registry: Registry<String, HostPipelines>,
}

impl PipelineMiddleware {
    /// Pipelines from `registry` (keys are `scheme://host:port`).
    pub fn new(registry: Registry<String, HostPipelines>) -> Self {
        PipelineMiddleware { registry }
    }

    /// Pipelines built lazily per host by `factory` (which gets the key,
    /// `scheme://host:port`, to name the policies after), in a registry
    /// with the default bounds.
    pub fn per_host(
        factory: impl Fn(&str) -> Result<HostPipelines, ConfigError> + Send + Sync + 'static,
    ) -> Result<Self, ConfigError> {
        let registry = Registry::with_factory(move |host: &String| factory(host)).build()?;
        Ok(Self::new(registry))
    }

    /// The registry of pipelines.
    pub fn registry(&self) -> &Registry<String, HostPipelines> {
        &self.registry
    }
}

fn into_error(error: ripcord::Error<Error>) -> Error {
    match error {
        ripcord::Error::Inner(e) => e,
        ripcord::Error::Rejected(r) => Error::middleware(r),
        ripcord::Error::Timeout(t) => Error::middleware(t),
        ripcord::Error::BulkheadFull(b) => Error::middleware(b),
        ripcord::Error::RateLimited(r) => Error::middleware(r),
        ripcord::Error::Fallback(f) => into_error(f.into_parts().0),
        other => Error::Middleware(std::io::Error::other(other.to_string()).into()),
    }
}

#[async_trait::async_trait]
impl Middleware for PipelineMiddleware {
    async fn handle(
        &self,
        req: Request,
        extensions: &mut http::Extensions,
        next: Next<'_>,
    ) -> reqwest_middleware::Result<Response> {
        let key = req.url().origin().ascii_serialization();
        let pipelines = self.registry.get(&key).map_err(Error::middleware)?;
        let replayable = is_idempotent(req.method()) || extensions.get::<Retryable>().is_some();
        let template = if replayable { req.try_clone() } else { None };
        let pipeline = match (&template, &pipelines.once) {
            (None, Some(once)) => once,
            _ => &pipelines.main,
        };
        let first = Mutex::new(Some(req));
        let ext: &http::Extensions = extensions;
        let attempt = || {
            let req = first
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .or_else(|| template.as_ref().and_then(Request::try_clone));
            let next = next.clone();
            let mut ext = ext.clone();
            async move {
                let req = req.ok_or_else(|| Error::middleware(NotReplayable(())))?;
                next.run(req, &mut ext).await
            }
        };
        pipeline.execute(attempt).await.map_err(into_error)
    }
}
