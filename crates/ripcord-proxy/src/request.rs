//! A client's request head, checked and normalized before it is routed:
//! which host it is for, and its path spelled one way.
//!
//! # Host (RFC 9112 §3.2, RFC 9113 §8.3.1)
//!
//! - More than one `Host` field, or a `Host` that is not `host[:port]`
//!   (a user part such as `x@internal.local`, a list such as `a, b`,
//!   spaces, an empty value) is refused with 400; so is an HTTP/1.1 or
//!   HTTP/2 request with no host at all (HTTP/1.0 needs none).
//! - An absolute-form target (`GET http://a/ HTTP/1.1`) or an HTTP/2
//!   `:authority` wins over a `Host` field: the request is routed by it and
//!   the upstream's `Host` is set to it.
//! - A `Connection` field naming `Host` is refused (400): the host would
//!   otherwise be dropped after routing.
//!
//! A host is `reg-name` letters, digits, `-`, `.`, `_`, `~`, or an IPv6
//! literal in brackets, with an optional port of one to five digits.
//!
//! # Path
//!
//! Routing and the upstream see the same path, normalized as RFC 3986
//! §6.2.2 says, with the safe choice where it leaves one:
//!
//! - `%XX` escapes of unreserved characters (letters, digits, `-`, `.`,
//!   `_`, `~`) are decoded, the others written with upper-case hex digits;
//!   an escape that is not two hex digits is refused.
//! - An escaped `/` (`%2F`) or `\` (`%5C`), a raw `\`, or an escaped NUL
//!   (`%00`) is refused (400): upstreams disagree on what they mean.
//! - Dot segments (`.`, `..`, also when escaped) are resolved; a `..` above
//!   the root is refused.
//! - Empty segments are collapsed (`/a//b` is `/a/b`).
//! - The query is left as it is.
//!
//! Routes match the normalized path by exact, case-sensitive prefix
//! segments; `;` path parameters are not interpreted.

use std::fmt;

use http::header::{self, HeaderValue};
use http::{uri, Uri, Version};

/// Why a request head was refused (the proxy answers 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadError {
    /// More than one `Host` field.
    DuplicateHost,
    /// A `Host` field or target authority that is not `host[:port]`.
    InvalidHost,
    /// An HTTP/1.1 or HTTP/2 request without a host.
    MissingHost,
    /// `Connection` names `Host`.
    ConnectionNamesHost,
    /// A `%` not followed by two hex digits.
    InvalidEscape,
    /// An escaped `/` or `\`, a raw `\`, or an escaped NUL in the path.
    AmbiguousPath,
    /// A `..` segment above the root.
    AboveRoot,
}

impl fmt::Display for HeadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HeadError::DuplicateHost => "the request has more than one Host field",
            HeadError::InvalidHost => {
                "the request's host is not a valid `host[:port]` (no user part, list or spaces)"
            }
            HeadError::MissingHost => "the request has no Host field",
            HeadError::ConnectionNamesHost => "the Connection field may not name Host",
            HeadError::InvalidEscape => "the path has a `%` not followed by two hex digits",
            HeadError::AmbiguousPath => {
                "the path has an escaped `/` or `\\`, a `\\`, or an escaped NUL"
            }
            HeadError::AboveRoot => "the path has a `..` segment above the root",
        })
    }
}

impl std::error::Error for HeadError {}

/// Checks a request head and normalizes it in place: the `Host` field is
/// the winning host (see the module docs) and the URI's path is normalized.
/// Returns the host to route by (lower-case, without port), `None` for an
/// HTTP/1.0 request without one.
pub(crate) fn prepare(parts: &mut http::request::Parts) -> Result<Option<String>, HeadError> {
    if connection_names_host(&parts.headers) {
        return Err(HeadError::ConnectionNamesHost);
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let field = hosts.next();
    if hosts.next().is_some() {
        return Err(HeadError::DuplicateHost);
    }
    let host = match (parts.uri.authority(), field) {
        (Some(authority), _) => {
            let host = host_of(authority.as_str().as_bytes()).ok_or(HeadError::InvalidHost)?;
            if field.is_none_or(|f| f.as_bytes() != authority.as_str().as_bytes()) {
                let value = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| HeadError::InvalidHost)?;
                parts.headers.insert(header::HOST, value);
            }
            Some(host)
        }
        (None, Some(field)) => Some(host_of(field.as_bytes()).ok_or(HeadError::InvalidHost)?),
        (None, None) if parts.version <= Version::HTTP_10 => None,
        (None, None) => return Err(HeadError::MissingHost),
    };
    if let Some(path) = normalize_path(parts.uri.path())? {
        parts.uri = with_path(&parts.uri, &path)?;
    }
    Ok(host)
}

/// Whether a `Connection` field names `Host`.
fn connection_names_host(headers: &http::HeaderMap) -> bool {
    headers.get_all(header::CONNECTION).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"host"))
    })
}

/// The host of `host[:port]`, lower-case, without the port; `None` when
/// it is not one.
pub(crate) fn host_of(authority: &[u8]) -> Option<String> {
    let (host, port) = if authority.first() == Some(&b'[') {
        let end = authority.iter().position(|b| *b == b']')?;
        let literal = &authority[1..end];
        let ipv6 = |b: &u8| b.is_ascii_hexdigit() || matches!(b, b':' | b'.');
        if literal.is_empty() || !literal.iter().all(ipv6) {
            return None;
        }
        let rest = &authority[end + 1..];
        let port = match rest.split_first() {
            None => None,
            Some((b':', port)) => Some(port),
            Some(_) => return None,
        };
        (&authority[..=end], port)
    } else {
        let (host, port) = match authority.iter().rposition(|b| *b == b':') {
            Some(i) => (&authority[..i], Some(&authority[i + 1..])),
            None => (authority, None),
        };
        let reg = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~');
        if host.is_empty() || !host.iter().all(reg) {
            return None;
        }
        (host, port)
    };
    if let Some(port) = port {
        if port.is_empty() || port.len() > 5 || !port.iter().all(u8::is_ascii_digit) {
            return None;
        }
    }
    let host = std::str::from_utf8(host).ok()?;
    Some(host.to_ascii_lowercase())
}

/// Whether a byte is an RFC 3986 unreserved character.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The value of a hex digit.
fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// The normalized form of `path` (see the module docs), `None` when it is
/// already normalized (the usual case: no allocation).
pub(crate) fn normalize_path(path: &str) -> Result<Option<String>, HeadError> {
    let b = path.as_bytes();
    if !b.starts_with(b"/") {
        // The asterisk form (`OPTIONS *`), or an empty path.
        return Ok(None);
    }
    let plain = !b.iter().any(|c| matches!(c, b'%' | b'\\'))
        && !b.windows(2).any(|w| w == b"//" || w == b"/.");
    if plain {
        return Ok(None);
    }
    let mut decoded = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let (Some(hi), Some(lo)) = (
                    b.get(i + 1).copied().and_then(hex),
                    b.get(i + 2).copied().and_then(hex),
                ) else {
                    return Err(HeadError::InvalidEscape);
                };
                let v = hi * 16 + lo;
                if matches!(v, b'/' | b'\\' | 0) {
                    return Err(HeadError::AmbiguousPath);
                }
                if unreserved(v) {
                    decoded.push(v as char);
                } else {
                    decoded.push('%');
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(hi)]));
                    decoded.push(char::from(b"0123456789ABCDEF"[usize::from(lo)]));
                }
                i += 3;
            }
            b'\\' => return Err(HeadError::AmbiguousPath),
            _ => {
                // `path` is a `str` and `%`/`\` are ASCII: copy up to the
                // next one whole.
                let end = b[i..]
                    .iter()
                    .position(|c| matches!(c, b'%' | b'\\'))
                    .map_or(b.len(), |n| i + n);
                decoded.push_str(&path[i..end]);
                i = end;
            }
        }
    }
    let mut out: Vec<&str> = Vec::new();
    let mut trailing = false;
    for segment in decoded[1..].split('/') {
        match segment {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                if out.pop().is_none() {
                    return Err(HeadError::AboveRoot);
                }
                trailing = true;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normal = String::with_capacity(decoded.len());
    for s in &out {
        normal.push('/');
        normal.push_str(s);
    }
    if trailing || out.is_empty() {
        normal.push('/');
    }
    Ok((normal != path).then_some(normal))
}

/// `uri` with `path` in place of its path (query kept).
fn with_path(uri: &Uri, path: &str) -> Result<Uri, HeadError> {
    let pq = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query =
        Some(uri::PathAndQuery::try_from(pq).map_err(|_| HeadError::InvalidEscape)?);
    Uri::from_parts(parts).map_err(|_| HeadError::InvalidEscape)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(p: &str) -> Result<String, HeadError> {
        normalize_path(p).map(|n| n.unwrap_or_else(|| p.to_string()))
    }

    #[test]
    fn paths_are_normalized() {
        for (raw, normal) in [
            ("/", "/"),
            ("/api/login", "/api/login"),
            ("/api/x/../login", "/api/login"),
            ("/api/./login", "/api/login"),
            ("/api//login", "/api/login"),
            ("//api/login", "/api/login"),
            ("/api/%6cogin", "/api/login"),
            ("/api/%2e/login", "/api/login"),
            ("/api/x/%2E%2E/login", "/api/login"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/", "/a/"),
            ("/a/..", "/"),
            ("/.", "/"),
            ("/a%20b", "/a%20b"),
            ("/a%2ab", "/a%2Ab"),
            ("/a%25b", "/a%25b"),
            ("/..a/.b", "/..a/.b"),
            ("/é/x", "/é/x"),
        ] {
            assert_eq!(norm(raw).as_deref(), Ok(normal), "{raw}");
        }
        assert_eq!(normalize_path("/plain/path"), Ok(None));
        assert_eq!(normalize_path("*"), Ok(None));
    }

    #[test]
    fn ambiguous_paths_are_refused() {
        for raw in ["/a%2fb", "/a%2Fb", "/a%5cb", "/a\\b", "/a%00"] {
            assert_eq!(norm(raw), Err(HeadError::AmbiguousPath), "{raw}");
        }
        for raw in ["/a%zz", "/a%2", "/a%"] {
            assert_eq!(norm(raw), Err(HeadError::InvalidEscape), "{raw}");
        }
        for raw in ["/..", "/a/../..", "/%2e%2e/x"] {
            assert_eq!(norm(raw), Err(HeadError::AboveRoot), "{raw}");
        }
    }

    #[test]
    fn hosts() {
        for (raw, host) in [
            ("example.com", "example.com"),
            ("Example.COM:8080", "example.com"),
            ("[::1]:80", "[::1]"),
            ("[::1]", "[::1]"),
            ("127.0.0.1", "127.0.0.1"),
        ] {
            assert_eq!(host_of(raw.as_bytes()).as_deref(), Some(host), "{raw}");
        }
        for raw in [
            "",
            "x@internal",
            "a, b",
            "a,b",
            "a b",
            "host:",
            "host:123456",
            "host:8a",
            "[::1",
            "[zz]",
            "[::1]x",
            "a/b",
            ":80",
        ] {
            assert_eq!(host_of(raw.as_bytes()), None, "{raw}");
        }
    }

    fn parts(raw_target: &str, version: Version, hosts: &[&str]) -> http::request::Parts {
        let mut req = http::Request::builder().uri(raw_target).version(version);
        for h in hosts {
            req = req.header(header::HOST, *h);
        }
        req.body(()).expect("a request").into_parts().0
    }

    #[test]
    fn the_winning_host() {
        let mut p = parts("/x", Version::HTTP_11, &["A.test:80"]);
        assert_eq!(prepare(&mut p), Ok(Some("a.test".into())));
        let mut p = parts("http://b.test/x", Version::HTTP_11, &["a.test"]);
        assert_eq!(prepare(&mut p), Ok(Some("b.test".into())));
        assert_eq!(p.headers[header::HOST], "b.test");
        let mut p = parts("http://b.test:81/x", Version::HTTP_2, &[]);
        assert_eq!(prepare(&mut p), Ok(Some("b.test".into())));
        assert_eq!(p.headers[header::HOST], "b.test:81");
        let mut p = parts("/x", Version::HTTP_10, &[]);
        assert_eq!(prepare(&mut p), Ok(None));
        for (mut p, err) in [
            (parts("/", Version::HTTP_11, &[]), HeadError::MissingHost),
            (parts("/", Version::HTTP_2, &[]), HeadError::MissingHost),
            (
                parts("/", Version::HTTP_11, &["a", "b"]),
                HeadError::DuplicateHost,
            ),
            (
                parts("/", Version::HTTP_11, &["x@a"]),
                HeadError::InvalidHost,
            ),
            (
                parts("http://x@a/", Version::HTTP_11, &["a"]),
                HeadError::InvalidHost,
            ),
        ] {
            assert_eq!(prepare(&mut p), Err(err));
        }
        let mut p = parts("/", Version::HTTP_11, &["a"]);
        p.headers
            .insert(header::CONNECTION, HeaderValue::from_static("close, Host"));
        assert_eq!(prepare(&mut p), Err(HeadError::ConnectionNamesHost));
    }

    #[test]
    fn the_normalized_path_keeps_the_query() {
        let mut p = parts("/a/./b?x=/../y", Version::HTTP_11, &["h"]);
        prepare(&mut p).expect("valid");
        assert_eq!(
            p.uri.path_and_query().map(|pq| pq.as_str()),
            Some("/a/b?x=/../y")
        );
    }
}
