use std::sync::Arc;

use http::header::HeaderName;
use http::Request;

use crate::keyed::ExtractKey;

/// Keys a request by its URI's scheme and authority, e.g.
/// `http://api.example.com:8080` — one breaker per upstream host. A request
/// whose URI has no authority (a server-side, origin-form URI) falls back to
/// its `Host` header.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostKey;

impl<B> ExtractKey<Request<B>> for HostKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> String {
        let uri = req.uri();
        match uri.authority() {
            Some(authority) => {
                // One allocation of the exact size: cheaper than `format!`.
                let scheme = uri.scheme_str().unwrap_or("http");
                let authority = authority.as_str();
                let mut key = String::with_capacity(scheme.len() + 3 + authority.len());
                key.push_str(scheme);
                key.push_str("://");
                key.push_str(authority);
                key
            }
            None => req
                .headers()
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("")
                .to_owned(),
        }
    }
}

/// Keys a request by the value of one header (e.g. a tenant id); requests
/// without it share the empty key.
#[derive(Debug, Clone)]
pub struct HeaderKey {
    name: HeaderName,
}

impl HeaderKey {
    /// Keys by the header `name`.
    pub fn new(name: HeaderName) -> Self {
        HeaderKey { name }
    }
}

impl<B> ExtractKey<Request<B>> for HeaderKey {
    type Key = String;

    fn extract(&self, req: &Request<B>) -> String {
        req.headers()
            .get(&self.name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    }
}

/// Keys a request by the route template its path matches, e.g.
/// `/users/42` → `/users/{id}` — one breaker per route, whatever the ids in
/// the path, so the number of keys (and breakers) stays bounded. A path
/// that matches no template gets one fixed key, `other` by default.
///
/// Templates are matched segment by segment, in the order given, and the
/// first match wins:
///
/// - a literal segment (`users`) matches itself;
/// - `{name}` matches any one non-empty segment;
/// - `{*name}` matches the rest of the path, zero or more segments (so
///   segments written after it are never reached).
///
/// A trailing `/` on the path is ignored; the query string is not part of
/// the path. The key is an `Arc<str>` (cloning it is one atomic increment):
/// use a `Registry<Arc<str>>`.
///
/// ```
/// use std::sync::Arc;
/// use ripcord_tower::http::RouteKey;
/// use ripcord_tower::keyed::ExtractKey;
///
/// let routes = RouteKey::new(["/users/{id}", "/orders/{id}/items", "/static/{*path}"]);
/// let key = |path: &str| routes.extract(&http::Request::get(path).body(()).unwrap());
/// assert_eq!(key("/users/42"), Arc::from("/users/{id}"));
/// assert_eq!(key("/orders/7/items?page=2"), Arc::from("/orders/{id}/items"));
/// assert_eq!(key("/static/css/site.css"), Arc::from("/static/{*path}"));
/// assert_eq!(key("/users/42/avatar"), Arc::from("other"));
/// ```
#[derive(Debug, Clone)]
pub struct RouteKey {
    routes: Arc<[Route]>,
    other: Arc<str>,
}

#[derive(Debug)]
struct Route {
    template: Arc<str>,
    segments: Box<[Segment]>,
}

#[derive(Debug)]
enum Segment {
    Literal(Box<str>),
    Param,
    Rest,
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    let path = path.strip_prefix('/').unwrap_or(path);
    let path = path.strip_suffix('/').unwrap_or(path);
    path.split('/').filter(|_| !path.is_empty())
}

impl Route {
    fn parse(template: &str) -> Route {
        let segments = segments(template)
            .map(
                |s| match s.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                    Some(name) if name.starts_with('*') => Segment::Rest,
                    Some(_) => Segment::Param,
                    None => Segment::Literal(s.into()),
                },
            )
            .collect();
        Route {
            template: template.into(),
            segments,
        }
    }

    fn matches(&self, path: &str) -> bool {
        let mut parts = segments(path);
        for segment in self.segments.iter() {
            match segment {
                Segment::Rest => return true,
                Segment::Param => match parts.next() {
                    Some(p) if !p.is_empty() => {}
                    _ => return false,
                },
                Segment::Literal(lit) => match parts.next() {
                    Some(p) if p == &**lit => {}
                    _ => return false,
                },
            }
        }
        parts.next().is_none()
    }
}

impl RouteKey {
    /// Keys by these route templates; see the [type docs](Self).
    pub fn new<I>(templates: I) -> Self
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        RouteKey {
            routes: templates
                .into_iter()
                .map(|t| Route::parse(t.as_ref()))
                .collect(),
            other: Arc::from("other"),
        }
    }

    /// The key of paths that match no template (default `other`).
    pub fn other(mut self, key: &str) -> Self {
        self.other = Arc::from(key);
        self
    }

    /// The template `path` matches, or the `other` key.
    pub fn route(&self, path: &str) -> Arc<str> {
        self.routes
            .iter()
            .find(|r| r.matches(path))
            .map_or_else(|| self.other.clone(), |r| r.template.clone())
    }
}

impl<B> ExtractKey<Request<B>> for RouteKey {
    type Key = Arc<str>;

    fn extract(&self, req: &Request<B>) -> Arc<str> {
        self.route(req.uri().path())
    }
}
