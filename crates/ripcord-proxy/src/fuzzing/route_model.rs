//! An obviously-correct model of the routing rules, to check the proxy's
//! choices against: the routes of the `proxy_request` target, how a host
//! and a path choose among them, and path normalization as an upstream
//! that normalizes would read the path (RFC 3986 §6.2.2).

/// A route of the fuzzed proxy.
#[derive(Debug)]
pub(super) struct Route {
    pub(super) name: &'static str,
    pub(super) host: Option<&'static str>,
    pub(super) prefix: &'static str,
}

/// The fuzzed proxy's routes, in configuration order: nested prefixes, a
/// host route, and no catch-all (so some requests match nothing).
pub(super) const ROUTES: &[Route] = &[
    Route {
        name: "api",
        host: None,
        prefix: "/api",
    },
    Route {
        name: "login",
        host: None,
        prefix: "/api/login",
    },
    Route {
        name: "assets",
        host: None,
        prefix: "/static/",
    },
    Route {
        name: "internal",
        host: Some("internal.local"),
        prefix: "/",
    },
];

/// The route for `host` (lower-case, no port) and `path`: routes naming a
/// host first, then the longest prefix, then configuration order.
pub(super) fn choose(host: &str, path: &str) -> Option<&'static Route> {
    let matches = |r: &&Route| {
        r.host.is_none_or(|h| h == host) && under(r.prefix.trim_end_matches('/'), path)
    };
    let key = |r: &&Route| {
        (
            r.host.is_none(),
            usize::MAX - r.prefix.trim_end_matches('/').len(),
        )
    };
    ROUTES.iter().filter(matches).min_by_key(key)
}

/// Whether `path` is `prefix` or below it, segment-wise.
fn under(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.is_empty() || rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// The host of a `Host` value that is a plain `host[:port]` (a name of
/// letters, digits, `-`, `.`, `_` and `~`, an IPv4 address, or a bracketed
/// IPv6 address), lower-case and without its port; `None` for anything
/// else (user info, lists, spaces, an empty name).
pub(super) fn plain_host(value: &str) -> Option<String> {
    let (host, port) = match value.strip_prefix('[') {
        Some(rest) => {
            let (ip, after) = rest.split_once(']')?;
            let ip_ok = !ip.is_empty()
                && ip
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
            let port = match after {
                "" => None,
                a => Some(a.strip_prefix(':')?),
            };
            (ip_ok.then_some(&value[..ip.len() + 2])?, port)
        }
        None => {
            let (host, port) = match value.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (value, None),
            };
            let name_ok = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'));
            (name_ok.then_some(host)?, port)
        }
    };
    let port_ok =
        port.is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
    port_ok.then(|| host.to_ascii_lowercase())
}

/// `path` as an upstream that normalizes it reads it: percent-encoded
/// unreserved characters decoded, `.` and `..` segments removed, empty
/// segments merged. `None` when it is not an absolute path.
pub(super) fn normalize_path(path: &str) -> Option<String> {
    if !path.starts_with('/') {
        return None;
    }
    let decoded = decode_unreserved(path);
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = decoded.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let mut trailing = false;
    for (i, seg) in segments.iter().enumerate() {
        match *seg {
            "" | "." => trailing = i == last,
            ".." => {
                out.pop();
                trailing = i == last;
            }
            s => {
                out.push(s);
                trailing = false;
            }
        }
    }
    let mut normalized = String::with_capacity(decoded.len());
    for seg in &out {
        normalized.push('/');
        normalized.push_str(seg);
    }
    if trailing || out.is_empty() {
        normalized.push('/');
    }
    Some(normalized)
}

/// Decodes `%XX` where it stands for an unreserved character (letters,
/// digits, `-`, `.`, `_`, `~`); every other byte is kept as it is.
fn decode_unreserved(path: &str) -> String {
    let bytes = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(b as char);
                    i += 3;
                    continue;
                }
            }
        }
        // A path is ASCII (the `http` crate checks it): one char per byte.
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalize_as_rfc_3986_says() {
        for (raw, normalized) in [
            ("/", "/"),
            ("/api/login", "/api/login"),
            ("/api/x/../login", "/api/login"),
            ("/api/./login", "/api/login"),
            ("/api//login", "/api/login"),
            ("/api/%6cogin", "/api/login"),
            ("/api/%6Cogin/", "/api/login/"),
            ("/api/%2e%2e/static/a", "/static/a"),
            ("/../..", "/"),
            ("/a/%2F/b", "/a/%2F/b"),
            ("/a%", "/a%"),
            ("/a%4", "/a%4"),
        ] {
            assert_eq!(normalize_path(raw).as_deref(), Some(normalized), "{raw}");
        }
    }

    #[test]
    fn routes_are_chosen_by_host_then_longest_prefix() {
        let name = |h, p| choose(h, p).map(|r| r.name);
        assert_eq!(name("a.test", "/api/login/x"), Some("login"));
        assert_eq!(name("a.test", "/api/loginx"), Some("api"));
        assert_eq!(name("a.test", "/static"), Some("assets"));
        assert_eq!(name("a.test", "/other"), None);
        assert_eq!(name("internal.local", "/api/login"), Some("internal"));
    }

    #[test]
    fn only_plain_hosts_pass() {
        assert_eq!(
            plain_host("Internal.Local:8080").as_deref(),
            Some("internal.local")
        );
        assert_eq!(plain_host("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(plain_host("127.0.0.1").as_deref(), Some("127.0.0.1"));
        for bad in ["x@internal.local", "a, b", "", ":80", "a:", "a b", "[::1]x"] {
            assert_eq!(plain_host(bad), None, "{bad}");
        }
    }
}
