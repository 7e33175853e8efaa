use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Response};

/// The delay a `Retry-After` header asks for, measured from the wall clock
/// now for an HTTP-date. `None` if absent or malformed.
///
/// ```
/// use std::time::Duration;
///
/// let mut headers = http::HeaderMap::new();
/// headers.insert(http::header::RETRY_AFTER, "120".parse().unwrap());
/// assert_eq!(ripcord_tower::http::retry_after(&headers), Some(Duration::from_secs(120)));
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_at(headers, SystemTime::now())
}

/// Like [`retry_after`], with an HTTP-date measured from `now` (a date in the
/// past means no wait: zero).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
///
/// let now = UNIX_EPOCH + Duration::from_secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
/// let mut headers = http::HeaderMap::new();
/// headers.insert(http::header::RETRY_AFTER, "Sun, 06 Nov 1994 08:50:07 GMT".parse().unwrap());
/// assert_eq!(ripcord_tower::http::retry_after_at(&headers, now), Some(Duration::from_secs(30)));
/// ```
pub fn retry_after_at(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// The `Retry-After` delay of a response, for
/// [`RetryBuilder::retry_after`](ripcord::RetryBuilder::retry_after):
///
/// ```
/// use ripcord::Retry;
/// use ripcord_tower::http::response_retry_after;
///
/// let retry = Retry::builder("api")
///     .retry_after(response_retry_after::<String>)
///     .build()?;
/// # let _ = retry;
/// # Ok::<(), ripcord::ConfigError>(())
/// ```
pub fn response_retry_after<B>(response: &Response<B>) -> Option<Duration> {
    retry_after(response.headers())
}
