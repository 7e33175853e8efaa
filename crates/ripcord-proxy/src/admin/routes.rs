//! Request routing of the admin listener, authentication and the JSON error
//! answers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use serde::Serialize;

use super::body::AdminBody;
use super::dashboard;
use super::events::{Hub, StreamRefused, MAX_STREAMS};
use super::view::{BreakerView, FaultView, FleetView};
use super::{BODY_READ_TIMEOUT, MAX_BODY_BYTES};
use crate::state::{Control, ControlError, ProxyState};

/// The admin listener's application: state and event hub.
pub(super) struct App {
    state: Arc<ProxyState>,
    hub: Hub,
}

/// The action names the control endpoint accepts.
const ACTIONS: &str = "open, disable, reset";

/// Where the token comes from, for the 403 answer.
const TOKEN_HELP: &str = "mutating admin calls are disabled because no admin token is configured: \
     set `token` in the `[admin]` section of the config, or the RIPCORD_ADMIN_TOKEN environment \
     variable (or the one `[admin] token_env` names), then send it as \
     `Authorization: Bearer <token>`";

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

#[derive(Serialize)]
struct ControlAnswer<'a> {
    name: &'a str,
    action: &'a str,
    state: &'static str,
    breaker: BreakerView,
}

impl App {
    pub(super) fn new(state: Arc<ProxyState>, hub: Hub) -> Self {
        App { state, hub }
    }

    /// Answers one request; never fails.
    pub(super) async fn handle(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<AdminBody> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(&path).split('/').collect();
        let method = req.method().clone();
        if matches!(segments.as_slice(), ["metrics"] | ["api", ..]) {
            if let Some(refused) = self.check_host(&req) {
                return refused;
            }
        }
        match segments.as_slice() {
            [""] | ["index.html"] => get_only(&method, || {
                asset(dashboard::INDEX_HTML, "text/html; charset=utf-8")
            }),
            ["dashboard.js"] => get_only(&method, || {
                asset(dashboard::SCRIPT, "text/javascript; charset=utf-8")
            }),
            ["dashboard.css"] => get_only(&method, || {
                asset(dashboard::STYLE, "text/css; charset=utf-8")
            }),
            ["favicon.svg"] => get_only(&method, || asset(dashboard::ICON, "image/svg+xml")),
            ["metrics"] => get_only(&method, || {
                let (parts, text) = self.state.metrics().http_response().into_parts();
                no_store(Response::from_parts(parts, AdminBody::full(text)))
            }),
            ["api", "breakers"] => get_only(&method, || {
                let entries = self.state.breakers();
                json(
                    StatusCode::OK,
                    &BreakerView::all(&entries, self.state.fleet()),
                )
            }),
            ["api", "breakers", name] => get_only(&method, || self.one(name)),
            ["api", "breakers", name, action] => {
                if method != Method::POST {
                    return method_not_allowed("POST");
                }
                self.control(req, name, action, peer).await
            }
            ["api", "faults"] => get_only(&method, || {
                json(StatusCode::OK, &FaultView::all(&self.state.faults()))
            }),
            ["api", "faults", route] => self.fault(req, route, peer).await,
            ["api", "history"] => get_only(&method, || {
                let mut r = Response::new(AdminBody::full(self.hub.history_json()));
                set(&mut r, header::CONTENT_TYPE, "application/json");
                no_store(r)
            }),
            ["api", "events"] => get_only(&method, || self.events(peer.ip())),
            _ => error(
                StatusCode::NOT_FOUND,
                &format!("no such page: {}", clip(&path)),
            ),
        }
    }

    /// The answer to a request whose host the API does not answer to (see
    /// [`AdminAccess::allows_host`](crate::state::AdminAccess::allows_host)).
    fn check_host(&self, req: &Request<Incoming>) -> Option<Response<AdminBody>> {
        let mut fields = req.headers().get_all(header::HOST).iter();
        let host = match (req.uri().authority(), fields.next(), fields.next()) {
            (_, Some(_), Some(_)) => None,
            (Some(a), _, _) => Some(a.as_str().as_bytes()),
            (None, Some(h), None) => Some(h.as_bytes()),
            // HTTP/1.0 without a host: no browser sends that.
            (None, None, _) => return None,
        };
        if host.is_some_and(|h| self.state.access().allows_host(h)) {
            return None;
        }
        let shown = host.map_or("(several)".into(), |h| clip(&String::from_utf8_lossy(h)));
        Some(error(
            StatusCode::FORBIDDEN,
            &format!(
                "the admin API does not answer to host `{shown}`: use an IP address or \
                 `localhost`, or list the name in `[admin] allowed_hosts` (a guard against \
                 DNS rebinding)"
            ),
        ))
    }

    fn one(&self, raw_name: &str) -> Response<AdminBody> {
        let Some(name) = percent_decode(raw_name) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the breaker name is not valid percent-encoded UTF-8",
            );
        };
        let entries = self.state.breakers();
        match entries.iter().find(|e| e.breaker.name() == name) {
            Some(entry) => {
                let (fleet, linked) = FleetView::of(self.state.fleet());
                json(
                    StatusCode::OK,
                    &BreakerView::of(entry, fleet.as_ref(), &linked),
                )
            }
            None => error(
                StatusCode::NOT_FOUND,
                &ControlError::UnknownBreaker(clip(&name)).to_string(),
            ),
        }
    }

    /// Reads the body of a mutating call (bounded in size and time) and
    /// checks its bearer token: the body, or the answer refusing the call.
    async fn authorized(&self, req: Request<Incoming>) -> Result<Bytes, Response<AdminBody>> {
        // A large body is refused before anything else.
        let declared = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            return Err(too_large());
        }
        let (parts, body) = req.into_parts();
        let collected = tokio::time::timeout(
            BODY_READ_TIMEOUT,
            Limited::new(body, MAX_BODY_BYTES).collect(),
        )
        .await;
        let body = match collected {
            Err(_) => {
                let mut r = error(
                    StatusCode::REQUEST_TIMEOUT,
                    &format!(
                        "the request body did not arrive within {}s",
                        BODY_READ_TIMEOUT.as_secs()
                    ),
                );
                set(&mut r, header::CONNECTION, "close");
                return Err(r);
            }
            // Over the limit, or the client broke off mid-body.
            Ok(Err(_)) => return Err(too_large()),
            Ok(Ok(body)) => body.to_bytes(),
        };

        if !self.state.has_admin_token() {
            return Err(error(StatusCode::FORBIDDEN, TOKEN_HELP));
        }
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer_token);
        match presented {
            None => Err(unauthorized(
                "this call needs an `Authorization: Bearer <token>` header with the admin token",
            )),
            Some(token) if !self.state.check_token(token) => {
                Err(unauthorized("the bearer token is not the admin token"))
            }
            Some(_) => Ok(body),
        }
    }

    async fn control(
        &self,
        req: Request<Incoming>,
        raw_name: &str,
        raw_action: &str,
        peer: SocketAddr,
    ) -> Response<AdminBody> {
        // The body carries nothing.
        if let Err(refused) = self.authorized(req).await {
            return refused;
        }

        let Some(action) = Control::parse(raw_action) else {
            return error(
                StatusCode::BAD_REQUEST,
                &format!(
                    "unknown action `{}`: valid actions are {ACTIONS}",
                    clip(raw_action)
                ),
            );
        };
        let Some(name) = percent_decode(raw_name) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the breaker name is not valid percent-encoded UTF-8",
            );
        };
        let actor = format!("admin-api@{peer}");
        match self.state.control(&name, action, &actor).await {
            Ok(_) => {
                let entries = self.state.breakers();
                let Some(entry) = entries.iter().find(|e| e.breaker.name() == name) else {
                    // Removed by a reload in between.
                    return error(
                        StatusCode::NOT_FOUND,
                        &ControlError::UnknownBreaker(clip(&name)).to_string(),
                    );
                };
                let (fleet, linked) = FleetView::of(self.state.fleet());
                let view = BreakerView::of(entry, fleet.as_ref(), &linked);
                json(
                    StatusCode::OK,
                    &ControlAnswer {
                        name: &name,
                        action: raw_action,
                        state: view.state,
                        breaker: view,
                    },
                )
            }
            Err(ControlError::UnknownBreaker(_)) => error(
                StatusCode::NOT_FOUND,
                &ControlError::UnknownBreaker(clip(&name)).to_string(),
            ),
            Err(e @ ControlError::Store(_)) => error(StatusCode::BAD_GATEWAY, &e.to_string()),
        }
    }

    /// `GET` a route's fault injection, `PUT` a drill on it (a JSON
    /// `fault` table with `expires_after`), `DELETE` to stop it.
    async fn fault(
        &self,
        req: Request<Incoming>,
        raw_route: &str,
        peer: SocketAddr,
    ) -> Response<AdminBody> {
        let Some(route) = percent_decode(raw_route) else {
            return error(
                StatusCode::BAD_REQUEST,
                "the route name is not valid percent-encoded UTF-8",
            );
        };
        let method = req.method().clone();
        let mutating = method == Method::PUT || method == Method::DELETE;
        if !mutating && method != Method::GET && method != Method::HEAD {
            return method_not_allowed("GET, HEAD, PUT, DELETE");
        }
        let body = if mutating {
            match self.authorized(req).await {
                Ok(body) => body,
                Err(refused) => return refused,
            }
        } else {
            Bytes::new()
        };
        let Some(chaos) = self.state.fault(&route) else {
            return error(
                StatusCode::NOT_FOUND,
                &format!("no route named `{}`", clip(&route)),
            );
        };
        let actor = format!("admin-api@{peer}");
        if method == Method::PUT {
            let config: ripcord::ChaosConfig = match serde_json::from_slice(&body) {
                Ok(c) => c,
                Err(e) => {
                    return error(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "the body is not a fault table ({e}); expected JSON such as \
                             {{\"abort_rate\": 0.5, \"abort_status\": 503, \"expires_after\": \"60s\"}}"
                        ),
                    )
                }
            };
            if config.expires_after.is_none() {
                return error(
                    StatusCode::BAD_REQUEST,
                    "a drill started through the admin API needs `expires_after` (e.g. \"60s\", at \
                     most one day), so that it stops by itself",
                );
            }
            if let Err((field, message)) = crate::config::check_fault(&config) {
                return error(StatusCode::BAD_REQUEST, &format!("`{field}`: {message}"));
            }
            if let Err(e) = chaos.reconfigure(ripcord::ChaosConfig {
                enabled: true,
                ..config
            }) {
                return error(StatusCode::BAD_REQUEST, &e.to_string());
            }
            tracing::info!(target: crate::LOG_TARGET, route = %route, actor = %actor, expires_in = ?chaos.expires_in(), "a drill started on the route");
        } else if method == Method::DELETE {
            chaos.disable();
            tracing::info!(target: crate::LOG_TARGET, route = %route, actor = %actor, "the drill on the route stopped");
        }
        json(StatusCode::OK, &FaultView::of(&route, &chaos))
    }

    fn events(&self, peer: std::net::IpAddr) -> Response<AdminBody> {
        let body = match self.hub.stream(peer) {
            Ok(body) => body,
            Err(StreamRefused::ShuttingDown) => {
                return error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the admin listener is shutting down",
                )
            }
            Err(StreamRefused::TooManyFromPeer) => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "too many event streams from {peer}: at most {} per address may be open \
                         at once; close one (or a dashboard tab) and retry",
                        self.state.access().max_streams_per_peer
                    ),
                );
                set(&mut r, header::RETRY_AFTER, "5");
                return r;
            }
            Err(StreamRefused::TooMany) => {
                let mut r = error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!(
                        "too many event streams: at most {MAX_STREAMS} may be open at once; \
                         close one (or a dashboard tab) and retry"
                    ),
                );
                set(&mut r, header::RETRY_AFTER, "5");
                return r;
            }
        };
        let mut r = Response::new(body);
        set(&mut r, header::CONTENT_TYPE, "text/event-stream");
        set(&mut r, header::CACHE_CONTROL, "no-store");
        r.headers_mut()
            .insert("x-accel-buffering", HeaderValue::from_static("no"));
        r
    }
}

/// The token of an `Authorization: Bearer <token>` value (scheme matched
/// without regard to case).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn get_only(method: &Method, f: impl FnOnce() -> Response<AdminBody>) -> Response<AdminBody> {
    if method == Method::GET || method == Method::HEAD {
        f()
    } else {
        method_not_allowed("GET, HEAD")
    }
}

fn method_not_allowed(allow: &'static str) -> Response<AdminBody> {
    let mut r = error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("method not allowed here: use {allow}"),
    );
    set(&mut r, header::ALLOW, allow);
    r
}

fn unauthorized(message: &str) -> Response<AdminBody> {
    let mut r = error(StatusCode::UNAUTHORIZED, message);
    set(
        &mut r,
        header::WWW_AUTHENTICATE,
        "Bearer realm=\"ripcord admin\"",
    );
    r
}

fn too_large() -> Response<AdminBody> {
    let mut r = error(
        StatusCode::PAYLOAD_TOO_LARGE,
        &format!("request body too large: the admin API accepts at most {MAX_BODY_BYTES} bytes"),
    );
    // The rest of the body is not read: do not reuse the connection.
    set(&mut r, header::CONNECTION, "close");
    r
}

fn asset(text: &'static str, content_type: &'static str) -> Response<AdminBody> {
    let mut r = Response::new(AdminBody::full(text));
    set(&mut r, header::CONTENT_TYPE, content_type);
    set(&mut r, header::CACHE_CONTROL, "no-cache");
    set(
        &mut r,
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    );
    set(&mut r, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(&mut r, header::REFERRER_POLICY, "no-referrer");
    r
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<AdminBody> {
    let body = serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"encoding failed: {e}\"}}").into_bytes());
    let mut r = Response::new(AdminBody::full(body));
    *r.status_mut() = status;
    set(&mut r, header::CONTENT_TYPE, "application/json");
    no_store(r)
}

/// A JSON error answer `{"error": message}`.
pub(super) fn error(status: StatusCode, message: &str) -> Response<AdminBody> {
    json(status, &ErrorBody { error: message })
}

fn no_store(mut r: Response<AdminBody>) -> Response<AdminBody> {
    set(&mut r, header::CACHE_CONTROL, "no-store");
    set(&mut r, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    r
}

fn set(r: &mut Response<AdminBody>, name: header::HeaderName, value: &'static str) {
    r.headers_mut()
        .insert(name, HeaderValue::from_static(value));
}

/// At most 100 characters of client input, for error messages.
fn clip(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Decodes `%XX` escapes; `None` for a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("Bearer"), None);
        assert_eq!(bearer_token(""), None);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b").as_deref(), Some("a b"));
        assert_eq!(percent_decode("route%3Aapi").as_deref(), Some("route:api"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2"), None);
        assert_eq!(percent_decode("bad%zz"), None);
        assert_eq!(percent_decode("%ff%fe"), None);
        assert_eq!(percent_decode("%+1"), None);
    }

    #[test]
    fn clipping_respects_characters() {
        let long = "é".repeat(300);
        let c = clip(&long);
        assert_eq!(c.chars().count(), 101);
        assert_eq!(clip("short"), "short");
    }
}
