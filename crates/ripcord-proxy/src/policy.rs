//! A route's policies: the route's and its upstream's pipeline tables,
//! composed (see the [config docs](super::config#pipelines)) and built into
//! ripcord pipelines that the forwarding runs.
//!
//! The composed list splits in two at its innermost retry, hedge or
//! fallback: the policies up to there run around each attempt as a
//! [`Pipeline::execute`]; those inside — timeouts, breakers, bulkheads, rate
//! limiters — are taken for one attempt by [`Pipeline::admit`] (or
//! [`Pipeline::admit_waiting`] when one of them may wait), and what they hand
//! out stays with the response body until it ends, so that a breaker judges
//! the whole response and a bulkhead slot covers it.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode};
use ripcord::pipeline::PolicyConfig;
use ripcord::{
    Bulkhead, CircuitBreaker, Error, Fallback, Hedge, Outcome, Pipeline, PipelineBuilder,
    PolicyKind, RateLimiter, Retry, RetryConfig, TimeoutPolicy,
};
use ripcord_metrics::Metrics;
use ripcord_redis::RedisRateLimiter;
use ripcord_tower::http::POLICY_HEADER;
use ripcord_tower::http::{classify_status, HttpClassifier};
use tower::BoxError;

use super::config::{PipelineTable, StaticFallback};
use super::forward::{ProxyBody, RequestBodyFailed, Upstream};

/// The result of one request through a route's pipelines.
pub(crate) type Routed = Result<Response<ProxyBody>, Error<BoxError>>;

/// A route's pipelines.
pub(crate) type RoutePipeline = Pipeline<Response<ProxyBody>, BoxError>;

/// A rate limiter in memory or shared through the store.
#[derive(Debug, Clone)]
pub(crate) enum Limiter {
    Local(RateLimiter),
    Shared(RedisRateLimiter),
}

/// One policy of a pipeline table: the stateful ones built (and kept
/// across reloads by the server), the others as configured (built per
/// route, where the composition is known).
#[derive(Debug, Clone)]
pub(crate) enum Made {
    Breaker(CircuitBreaker),
    Bulkhead(Bulkhead),
    Limiter(Limiter),
    Timeout(Duration),
    Retry(RetryConfig),
    Hedge(ripcord::HedgeConfig),
    Fallback(Arc<StaticFallback>),
}

impl Made {
    fn kind(&self) -> PolicyKind {
        match self {
            Made::Breaker(_) => PolicyKind::CircuitBreaker,
            Made::Bulkhead(_) => PolicyKind::Bulkhead,
            Made::Limiter(_) => PolicyKind::RateLimiter,
            Made::Timeout(_) => PolicyKind::Timeout,
            Made::Retry(_) => PolicyKind::Retry,
            Made::Hedge(_) => PolicyKind::Hedge,
            Made::Fallback(_) => PolicyKind::Fallback,
        }
    }

    /// Whether a route's own policy of this kind replaces the upstream's.
    fn single(kind: PolicyKind) -> bool {
        matches!(
            kind,
            PolicyKind::Timeout | PolicyKind::Retry | PolicyKind::Hedge | PolicyKind::Fallback
        )
    }

    /// Whether it calls again or answers in place of the call (the policies
    /// run around each attempt).
    fn around(&self) -> bool {
        matches!(self, Made::Retry(_) | Made::Hedge(_) | Made::Fallback(_))
    }
}

/// One policy of a table, with what names it.
#[derive(Debug, Clone)]
pub(crate) struct Owned {
    /// The route's or upstream's name.
    pub(crate) owner: Arc<str>,
    /// The key path of its table, e.g. `routes[0].pipeline`.
    pub(crate) path: Arc<str>,
    pub(crate) made: Made,
}

/// Every policy of a table, in its order; stateful ones are made by
/// `stateful` (the server's: metrics, the fleet, reuse on reload).
pub(crate) fn table_policies<E>(
    owner: &str,
    path: &str,
    table: Option<&PipelineTable>,
    mut stateful: impl FnMut(&PolicyConfig<StaticFallback>) -> Result<Option<Made>, E>,
) -> Result<Vec<Owned>, E> {
    let Some(table) = table else {
        return Ok(Vec::new());
    };
    let (owner, path): (Arc<str>, Arc<str>) = (owner.into(), path.into());
    let mut out = Vec::with_capacity(table.policies.len());
    for c in &table.policies {
        let made = match c {
            PolicyConfig::Timeout(t) => Made::Timeout(t.timeout),
            PolicyConfig::Retry(r) => Made::Retry(r.clone()),
            PolicyConfig::Hedge(h) => Made::Hedge(h.clone()),
            PolicyConfig::Fallback(f) => Made::Fallback(Arc::new(f.clone())),
            other => match stateful(other)? {
                Some(m) => m,
                None => continue,
            },
        };
        out.push(Owned {
            owner: owner.clone(),
            path: path.clone(),
            made,
        });
    }
    Ok(out)
}

/// Why a route's pipelines could not be built.
#[derive(Debug, thiserror::Error)]
#[error("`{path}`: cannot build the policy")]
pub(crate) struct ComposeError {
    pub(crate) path: String,
    #[source]
    pub(crate) source: ripcord::ConfigError,
}

/// Everything a request through one route needs.
#[derive(Debug)]
pub(crate) struct RoutePolicies {
    pub(crate) name: String,
    pub(crate) upstream: Arc<Upstream>,
    /// The route's (outermost) circuit breaker, if it has one.
    pub(crate) breaker: Option<CircuitBreaker>,
    /// The policies up to the innermost retry, hedge or fallback, for a
    /// request that may be sent again; `None` when there are none.
    around: Option<RoutePipeline>,
    /// The same without retries and hedging, for a request sent once.
    once: Option<RoutePipeline>,
    /// The policies inside, taken for each attempt.
    pub(crate) attempt: RoutePipeline,
    /// Faults injected into each attempt, inside its policies.
    pub(crate) fault: ripcord::Chaos,
}

impl RoutePolicies {
    /// The route's policies around its upstream's (see the config docs):
    /// for a timeout, a retry, a hedge or a fallback, the route's replaces
    /// the upstream's; a route with no timeout gets `default_timeout`,
    /// innermost.
    pub(crate) fn new(
        name: &str,
        upstream: Arc<Upstream>,
        route: Vec<Owned>,
        up: Vec<Owned>,
        default_timeout: Duration,
        fault: ripcord::Chaos,
        metrics: &Metrics,
    ) -> Result<Self, ComposeError> {
        let mut list = route;
        let own: Vec<PolicyKind> = list.iter().map(|p| p.made.kind()).collect();
        list.extend(
            up.into_iter()
                .filter(|p| !(Made::single(p.made.kind()) && own.contains(&p.made.kind()))),
        );
        if !list.iter().any(|p| matches!(p.made, Made::Timeout(_))) {
            list.push(Owned {
                owner: name.into(),
                path: format!("limits.default_timeout (route `{name}`)").into(),
                made: Made::Timeout(default_timeout),
            });
        }
        let breaker = list.iter().find_map(|p| match &p.made {
            Made::Breaker(b) => Some(b.clone()),
            _ => None,
        });
        let split = list
            .iter()
            .rposition(|p| p.made.around())
            .map_or(0, |i| i + 1);
        let inner = list.split_off(split);
        // No retry starts later than the innermost timeout × attempts,
        // unless the retry says otherwise.
        let per_attempt = inner.iter().rev().find_map(|p| match p.made {
            Made::Timeout(d) => Some(d),
            _ => None,
        });
        let attempt = build(name, &inner, per_attempt, true, metrics)?;
        let (around, once) = if list.is_empty() {
            (None, None)
        } else {
            let around = build(name, &list, per_attempt, true, metrics)?;
            let once = build(name, &list, per_attempt, false, metrics)?;
            (Some(around), Some(once))
        };
        Ok(RoutePolicies {
            name: name.to_string(),
            upstream,
            breaker,
            around,
            once,
            attempt,
            fault,
        })
    }

    /// The pipeline around the attempts of a request that may (`replay`)
    /// or may not be sent more than once.
    pub(crate) fn around(&self, replay: bool) -> Option<&RoutePipeline> {
        if replay {
            self.around.as_ref()
        } else {
            self.once.as_ref()
        }
    }
}

/// Builds one pipeline of `list` (with retries and hedging only if
/// `again`); the policies built here are exported by `metrics`, as the
/// server's breakers, bulkheads and limiters are.
fn build(
    name: &str,
    list: &[Owned],
    per_attempt: Option<Duration>,
    again: bool,
    metrics: &Metrics,
) -> Result<RoutePipeline, ComposeError> {
    let err = |p: &Owned, kind: PolicyKind| {
        let path = format!("{}.{}", p.path, kind.as_str());
        move |source| ComposeError { path, source }
    };
    let mut b: PipelineBuilder<Response<ProxyBody>, BoxError> = Pipeline::builder()
        .name(name)
        .classify(HttpClassifier::new());
    for p in list {
        let owner = &*p.owner;
        b = match &p.made {
            Made::Breaker(x) => b.circuit_breaker(x.clone()),
            Made::Bulkhead(x) => b.bulkhead(x.clone()),
            Made::Limiter(Limiter::Local(x)) => b.rate_limiter(x.clone()),
            Made::Limiter(Limiter::Shared(x)) => b.external_rate_limiter(x.clone()),
            Made::Timeout(d) => b.timeout(
                metrics
                    .instrument(TimeoutPolicy::builder(owner).timeout(*d))
                    .build()
                    .map_err(err(p, PolicyKind::Timeout))?,
            ),
            Made::Retry(c) if again => {
                b.retry(retry(owner, c, per_attempt, metrics).map_err(err(p, PolicyKind::Retry))?)
            }
            Made::Hedge(c) if again => b.hedge(
                metrics
                    .instrument(Hedge::builder(owner).config(c.clone()))
                    .build()
                    .map_err(err(p, PolicyKind::Hedge))?,
            ),
            Made::Retry(_) | Made::Hedge(_) => b,
            Made::Fallback(f) => {
                b.fallback(fallback(owner, f, metrics).map_err(err(p, PolicyKind::Fallback))?)
            }
        };
    }
    b.build().map_err(|source| ComposeError {
        path: format!("routes.{name}.pipeline"),
        source,
    })
}

/// A route's retry: ripcord-tower's HTTP rules (5xx, 429 and transport
/// errors are retried; `Retry-After` is honoured), no retry of a refusal
/// by a policy inside (it is answered at once), and no retry later than
/// `per_attempt × max_attempts` unless the configuration bounds it.
fn retry(
    name: &str,
    c: &RetryConfig,
    per_attempt: Option<Duration>,
    metrics: &Metrics,
) -> Result<Retry, ripcord::ConfigError> {
    let mut c = c.clone();
    if c.max_total_time.is_none() {
        c.max_total_time = per_attempt.map(|d| d.saturating_mul(c.max_attempts));
    }
    let rules = ripcord_tower::http::retry_rules::<ProxyBody>(Retry::builder(name).config(c));
    metrics
        .instrument(rules)
        .retry_on(|r: &Routed| match r {
            Ok(response) => classify_status(response.status()) == Outcome::Failure,
            Err(Error::Rejected(_) | Error::BulkheadFull(_) | Error::RateLimited(_)) => false,
            Err(Error::Inner(e)) => !e.is::<RequestBodyFailed>(),
            Err(_) => true,
        })
        .build()
}

/// A fallback answering with the static response, naming the policy whose
/// refusal (or the upstream failure) it answers for.
fn fallback(
    name: &str,
    f: &Arc<StaticFallback>,
    metrics: &Metrics,
) -> Result<Fallback<Response<ProxyBody>, BoxError>, ripcord::ConfigError> {
    use ripcord::pipeline::FallbackEntry as _;
    let answer = Arc::clone(f);
    metrics
        .instrument(Fallback::builder(name))
        .config(f.triggers())
        .then_sync(move |e: &Error<BoxError>| Ok(static_response(&answer, e.policy())))
        .build()
}

/// The static answer of a fallback, for a refusal by `policy` (`None`: the
/// upstream failed).
pub(crate) fn static_response(
    f: &StaticFallback,
    policy: Option<PolicyKind>,
) -> Response<ProxyBody> {
    let mut r = Response::new(ProxyBody::text(f.body.clone()));
    *r.status_mut() = StatusCode::from_u16(f.status).unwrap_or(StatusCode::OK);
    if let Ok(v) = HeaderValue::from_str(&f.content_type) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut()
        .insert(POLICY_HEADER, HeaderValue::from_static("fallback"));
    let policy_name = policy.map_or("upstream", PolicyKind::as_str);
    r.headers_mut().insert(
        HeaderName::from_static("x-ripcord-fallback-for"),
        HeaderValue::from_static(policy_name),
    );
    r
}
