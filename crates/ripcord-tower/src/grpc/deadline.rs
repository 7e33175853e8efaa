use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{BoxError, Layer, Service};

/// Parses a `grpc-timeout` value: at most 8 digits and a unit (`H`, `M`,
/// `S`, `m`, `u`, `n`).
///
/// ```
/// use std::time::Duration;
/// use ripcord_tower::grpc::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(&"250m".parse().unwrap()), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(&"1H".parse().unwrap()), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(&"123456789S".parse().unwrap()), None);
/// ```
pub fn parse_grpc_timeout(value: &HeaderValue) -> Option<Duration> {
    let s = value.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Writes a `grpc-timeout` value for `budget`: the finest unit whose
/// count fits the 8 digits the header allows, rounded down (a budget to pass
/// on never grows), at least `1n`.
///
/// ```
/// use std::time::Duration;
/// use ripcord_tower::grpc::{format_grpc_timeout, parse_grpc_timeout};
///
/// assert_eq!(format_grpc_timeout(Duration::from_millis(250)), "250000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(2)), "2000000u");
/// assert_eq!(format_grpc_timeout(Duration::from_secs(86_400)), "86400000m");
/// let v = format_grpc_timeout(Duration::from_micros(1_234_567));
/// assert_eq!(parse_grpc_timeout(&v), Some(Duration::from_micros(1_234_567)));
/// ```
pub fn format_grpc_timeout(budget: Duration) -> HeaderValue {
    const MAX: u128 = 99_999_999;
    let nanos = budget.as_nanos().max(1);
    let (n, unit) = [
        (1, 'n'),
        (1_000, 'u'),
        (1_000_000, 'm'),
        (1_000_000_000, 'S'),
        (60_000_000_000, 'M'),
        (3_600_000_000_000, 'H'),
    ]
    .into_iter()
    .map(|(per, unit)| (nanos / per, unit))
    .find(|(n, _)| *n <= MAX)
    .unwrap_or((MAX, 'H'));
    let text = format!("{}{unit}", n.max(1));
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("99999999H"))
}

/// Makes [`DeadlineService`]s.
#[derive(Debug, Clone, Copy, Default)]
pub struct DeadlineLayer {
    max: Option<Duration>,
}

impl DeadlineLayer {
    /// Honours each request's `grpc-timeout`; requests without one are not
    /// bounded.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also bounds every call (with or without `grpc-timeout`) by `max`.
    pub fn max(mut self, max: Duration) -> Self {
        self.max = Some(max);
        self
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        DeadlineService {
            inner,
            max: self.max,
        }
    }
}

/// Cuts a call at the deadline its `grpc-timeout` header sets (a tonic
/// client sets it with `Request::set_timeout`), failing it with
/// [`ripcord::Timeout`] (boxed). Put it inside a breaker so the breaker
/// counts the timeout as a failure.
///
/// The deadline covers the response head (for a unary call, the whole
/// call; for a streaming call, until the stream starts).
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    max: Option<Duration>,
}

impl<S> DeadlineService<S> {
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

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = DeadlineFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let asked = req
            .headers()
            .get("grpc-timeout")
            .and_then(parse_grpc_timeout);
        let after = match (asked, self.max) {
            (Some(a), Some(m)) => Some(a.min(m)),
            (a, m) => a.or(m),
        };
        DeadlineFuture {
            inner: self.inner.call(req),
            sleep: after.map(tokio::time::sleep),
            after: after.unwrap_or_default(),
        }
    }
}

pin_project! {
    /// The response future of [`DeadlineService`].
    #[derive(Debug)]
    pub struct DeadlineFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        sleep: Option<Sleep>,
        after: Duration,
    }
}

impl<F, T, E> Future for DeadlineFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(result.map_err(Into::into));
        }
        if let Some(sleep) = this.sleep.as_pin_mut() {
            if sleep.poll(cx).is_ready() {
                return Poll::Ready(Err(Box::new(ripcord::Timeout::new(
                    "grpc-timeout",
                    *this.after,
                ))));
            }
        }
        Poll::Pending
    }
}
