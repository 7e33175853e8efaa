//! Errors of building a store or a limiter.

use std::time::Duration;

/// [`RedisStoreBuilder::build`](crate::RedisStoreBuilder::build) could not
/// make a store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A URL is not a valid Redis URL.
    #[error("invalid Redis URL `{url}`")]
    InvalidUrl {
        /// The URL, with any password replaced by `***`.
        url: String,
        /// Why redis-rs refused it.
        #[source]
        source: redis::RedisError,
    },
    /// A `rediss://` URL was given but the crate was built without its `tls`
    /// feature.
    #[error("`{url}` needs TLS: enable the `tls` feature of ripcord-redis")]
    TlsDisabled {
        /// The URL, with any password replaced by `***`.
        url: String,
    },
    /// The key prefix is empty or contains `{`, `}` or whitespace (it would
    /// break the Cluster hash tag of every key).
    #[error("invalid key prefix {0:?}: a non-empty prefix without braces or whitespace")]
    InvalidPrefix(String),
    /// A rate limiter configuration is invalid.
    #[error("invalid rate limiter configuration")]
    Config(#[source] ripcord::ConfigError),
    /// An option is out of range.
    #[error("invalid {option}: {expected}")]
    InvalidOption {
        /// The option.
        option: &'static str,
        /// What it accepts.
        expected: &'static str,
    },
    /// The first connection failed (build with
    /// [`connect_lazily`](crate::RedisStoreBuilder::connect_lazily) to start
    /// without Redis).
    #[error("could not connect to Redis")]
    Connect(#[source] redis::RedisError),
    /// The first connection did not complete in time.
    #[error("connecting to Redis timed out after {0:?}")]
    ConnectTimeout(Duration),
    /// Loading the Lua scripts failed.
    #[error("could not load the Lua scripts into Redis")]
    LoadScripts(#[source] redis::RedisError),
}

/// A URL with its password (if any) hidden, for errors and `Debug`.
pub(crate) fn redact(url: &str) -> String {
    // scheme://[user[:password]@]host...
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return url.to_string();
    };
    let userinfo = &rest[..at];
    let user = match userinfo.find(':') {
        Some(colon) => format!("{}:***", &userinfo[..colon]),
        None => userinfo.to_string(),
    };
    format!("{}://{}{}", &url[..scheme_end], user, &rest[at..])
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn passwords_are_hidden() {
        assert_eq!(redact("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(
            redact("rediss://app:s3cret@cache:6380/0"),
            "rediss://app:***@cache:6380/0"
        );
        assert_eq!(redact("redis://:pw@h"), "redis://:***@h");
        assert_eq!(redact("redis://user@h"), "redis://user@h");
    }
}
