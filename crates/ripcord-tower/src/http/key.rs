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
                let scheme = uri.scheme_str().unwrap_or("http");
                format!("{scheme}://{authority}")
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
