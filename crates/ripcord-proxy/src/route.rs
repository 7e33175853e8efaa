//! Choosing a route: by host, then the longest path prefix.

use std::sync::Arc;

use super::policy::RoutePolicies;

/// The routes, in matching order: routes naming a host before those that
/// match any host, longer path prefixes first, then configuration order.
#[derive(Debug, Default)]
pub(crate) struct RouteTable {
    entries: Vec<Entry>,
}

#[derive(Debug)]
struct Entry {
    host: Option<String>,
    /// The prefix without its trailing `/` (`""` for `/`).
    prefix: String,
    policies: Arc<RoutePolicies>,
}

impl RouteTable {
    /// A table of `(host, path prefix, policies)` in configuration order.
    pub(crate) fn new(routes: Vec<(Option<String>, String, Arc<RoutePolicies>)>) -> Self {
        let mut entries: Vec<(usize, Entry)> = routes
            .into_iter()
            .enumerate()
            .map(|(i, (host, prefix, policies))| {
                (
                    i,
                    Entry {
                        host: host.map(|h| h.to_ascii_lowercase()),
                        prefix: prefix.trim_end_matches('/').to_string(),
                        policies,
                    },
                )
            })
            .collect();
        entries.sort_by(|(i, a), (j, b)| {
            b.host
                .is_some()
                .cmp(&a.host.is_some())
                .then(b.prefix.len().cmp(&a.prefix.len()))
                .then(i.cmp(j))
        });
        RouteTable {
            entries: entries.into_iter().map(|(_, e)| e).collect(),
        }
    }

    /// The route for a request to `host` (lower-case, no port) and `path`.
    pub(crate) fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<RoutePolicies>> {
        self.entries
            .iter()
            .find(|e| {
                e.host.as_deref().is_none_or(|h| Some(h) == host) && prefix_matches(&e.prefix, path)
            })
            .map(|e| &e.policies)
    }

    /// The routes' names, in matching order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.policies.name.as_str())
    }
}

/// Whether `path` is under `prefix` (given without a trailing `/`): equal,
/// or followed by `/`.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    path.starts_with(prefix)
        && (path.len() == prefix.len()
            || path.as_bytes()[prefix.len()] == b'/'
            || prefix.is_empty())
}

#[cfg(test)]
mod tests {
    use super::prefix_matches;

    #[test]
    fn prefixes_match_whole_segments() {
        assert!(prefix_matches("", "/"));
        assert!(prefix_matches("", "/anything"));
        assert!(prefix_matches("/api", "/api"));
        assert!(prefix_matches("/api", "/api/users"));
        assert!(!prefix_matches("/api", "/apix"));
        assert!(!prefix_matches("/api", "/ap"));
    }
}
