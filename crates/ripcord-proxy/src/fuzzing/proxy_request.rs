//! The proxy's handling of a request head, end to end: bytes from a client
//! over loopback into a running proxy with four routes, each to its own
//! upstream, which records what reached it.
//!
//! Input: the bytes a client sends before it closes its side.
//!
//! Invariants:
//!
//! - The proxy answers or closes within a bound (no hang), and never
//!   panics (a panic in a proxy task aborts under the fuzzer).
//! - Its first response is either the upstream's (`200`, marked with the
//!   route's name) or one the proxy makes: a 4xx, or a 5xx naming the
//!   policy behind it (`x-ripcord-policy`).
//! - Each request that reaches an upstream carries exactly one `Host`, a
//!   plain `host[:port]`; the route that the proxy chose is the one that
//!   host and the normalized path (percent-decoded unreserved characters,
//!   dot segments removed, empty segments merged) choose by the routing
//!   rules, so an upstream that normalizes paths gets only the requests
//!   whose route's policies ran; no hop-by-hop field reaches it; the
//!   `X-Forwarded-*` fields are the proxy's own (`For` ends with the
//!   client's address, `Proto` is `http`, `Host` is absent or the `Host`).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::route_model::{normalize_path, plain_host, Route, ROUTES};
use super::runtime::block_on;
use crate::config::ProxyConfig;
use crate::server::Proxy;

/// Longer than any exchange of a small input takes; reaching it is a hang.
const HANG: Duration = Duration::from_secs(10);

/// The running proxy and what its upstreams saw.
struct Fixture {
    proxy: SocketAddr,
    violations: Arc<Mutex<Vec<String>>>,
}

/// The proxy, started on first use on a thread of its own, kept for the
/// process's life.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let violations = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&violations);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("fuzz-proxy".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime for the proxy");
                rt.block_on(async move {
                    let mut addrs = Vec::new();
                    for route in ROUTES {
                        addrs.push(start_upstream(route, Arc::clone(&seen)).await);
                    }
                    let toml = config(&addrs);
                    let config = ProxyConfig::parse(&toml, "fuzz.toml")
                        .unwrap_or_else(|e| panic!("the fuzz configuration: {e}"));
                    let proxy = Proxy::start(config).await.expect("the proxy starts");
                    tx.send(proxy.listen_addrs()[0]).expect("the caller waits");
                    std::future::pending::<()>().await;
                    drop(proxy);
                });
            })
            .expect("a thread for the proxy");
        let proxy = rx.recv().expect("the proxy's address");
        Fixture { proxy, violations }
    })
}

fn config(upstreams: &[SocketAddr]) -> String {
    let mut toml = String::from(
        "[admin]\nlisten = \"127.0.0.1:0\"\n\n[limits]\nworkers = 1\n\
         header_read_timeout = \"5s\"\n\n[[listeners]]\nlisten = \"127.0.0.1:0\"\n",
    );
    for (route, addr) in ROUTES.iter().zip(upstreams) {
        toml.push_str(&format!(
            "\n[upstreams.{name}]\naddresses = [\"{addr}\"]\n\n[[routes]]\nname = \"{name}\"\n\
             path_prefix = \"{prefix}\"\nupstream = \"{name}\"\n",
            name = route.name,
            prefix = route.prefix,
        ));
        if let Some(host) = route.host {
            toml.push_str(&format!("host = \"{host}\"\n"));
        }
    }
    toml
}

async fn start_upstream(route: &'static Route, seen: Arc<Mutex<Vec<String>>>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let addr = listener.local_addr().expect("its address");
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let seen = Arc::clone(&seen);
                    async move {
                        if let Err(v) = check_upstream_request(route, &req) {
                            seen.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                        }
                        // Read the body, whatever becomes of it.
                        let _ = req.into_body().collect().await;
                        Response::builder()
                            .header("x-fuzz-route", route.name)
                            .body(Full::new(Bytes::from_static(b"ok")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    addr
}

/// What an upstream checks of each request that reaches it.
fn check_upstream_request<B: std::fmt::Debug>(
    route: &Route,
    req: &Request<B>,
) -> Result<(), String> {
    let fail = |what: String| Err(format!("route `{}` got {:?}: {what}", route.name, req));
    let hosts: Vec<_> = req.headers().get_all(http::header::HOST).iter().collect();
    let [host] = hosts[..] else {
        return fail(format!("{} Host fields", hosts.len()));
    };
    let Some(host) = host.to_str().ok().and_then(plain_host) else {
        return fail("a Host that is not a plain host[:port]".into());
    };
    let path = req.uri().path();
    let Some(normalized) = normalize_path(path) else {
        return fail(format!("a path that does not normalize: {path}"));
    };
    let chosen = super::route_model::choose(&host, &normalized);
    if chosen.map(|r| r.name) != Some(route.name) {
        return fail(format!(
            "host `{host}` and path `{normalized}` choose {:?}",
            chosen.map(|r| r.name)
        ));
    }
    for name in ["connection", "keep-alive", "upgrade", "proxy-connection"] {
        if req.headers().contains_key(name) {
            return fail(format!("a hop-by-hop `{name}` field"));
        }
    }
    let xff: Vec<_> = req.headers().get_all("x-forwarded-for").iter().collect();
    let last_is_peer = xff.len() == 1
        && xff[0]
            .to_str()
            .is_ok_and(|v| v.rsplit(',').next().map(str::trim) == Some("127.0.0.1"));
    if !last_is_peer {
        return fail("an X-Forwarded-For that does not end with the client".into());
    }
    let proto: Vec<_> = req.headers().get_all("x-forwarded-proto").iter().collect();
    if proto[..] != ["http"] {
        return fail("an X-Forwarded-Proto that is not the proxy's `http`".into());
    }
    let forwarded_host: Vec<_> = req.headers().get_all("x-forwarded-host").iter().collect();
    // Absent when the client sent no Host (HTTP/1.0): the proxy then
    // names the upstream's address.
    if !forwarded_host.is_empty() && forwarded_host[..] != hosts[..] {
        return fail("an X-Forwarded-Host that is not the request's Host".into());
    }
    Ok(())
}

/// Runs one input; panics on a broken invariant.
pub fn proxy_request(data: &[u8]) {
    let fixture = fixture();
    fixture
        .violations
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    let reply = block_on(async {
        tokio::time::timeout(HANG, exchange(fixture.proxy, data))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "the proxy neither answered nor closed within {HANG:?}: {:?}",
                    String::from_utf8_lossy(data)
                )
            })
    });
    let violations =
        std::mem::take(&mut *fixture.violations.lock().unwrap_or_else(|e| e.into_inner()));
    assert!(
        violations.is_empty(),
        "for {:?}: {violations:#?}",
        String::from_utf8_lossy(data)
    );
    check_first_response(&reply, data);
}

/// Sends `data` and reads the proxy's first final response head, or to
/// the end if it closes first. A client that sent a whole first request
/// keeps its side open (the proxy would drop an in-flight request on a
/// half-close); one whose first request is incomplete, or framed in a way
/// `first_request_is_whole` does not follow, closes its side, so the
/// proxy sees the end instead of waiting for the rest.
async fn exchange(proxy: SocketAddr, data: &[u8]) -> Vec<u8> {
    let mut socket = TcpStream::connect(proxy)
        .await
        .expect("connecting to the proxy");
    // The proxy may answer and close before reading everything.
    let _ = socket.write_all(data).await;
    if !first_request_is_whole(data) {
        let _ = socket.shutdown().await;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 8 * 1024];
    loop {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return reply,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
        if first_final_head(&reply).is_some() {
            return reply;
        }
    }
}

/// Whether `data` starts with a whole request: its head, and a body framed
/// by a plain `Content-Length` or a lone `chunked` coding, all there.
fn first_request_is_whole(data: &[u8]) -> bool {
    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut request = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(head)) = request.parse(data) else {
        return false;
    };
    let values = |name: &str| {
        request
            .headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
            .collect::<Vec<_>>()
    };
    let body = &data[head..];
    match (
        &values("transfer-encoding")[..],
        &values("content-length")[..],
    ) {
        ([], []) => true,
        ([], [length]) => std::str::from_utf8(length)
            .ok()
            .filter(|l| !l.is_empty() && l.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|l| l.parse::<usize>().ok())
            .is_some_and(|l| body.len() >= l),
        ([coding], []) if coding.eq_ignore_ascii_case(b"chunked") => chunked_body_is_whole(body),
        _ => false,
    }
}

/// Whether `body` holds a whole chunked body (trailers included), every
/// line of its framing ended by CRLF: httparse takes a bare LF as a line's
/// end where hyper's server may wait for more, and a client that took such
/// a body for whole would wait for an answer the proxy cannot give yet.
fn chunked_body_is_whole(mut body: &[u8]) -> bool {
    loop {
        let Ok(httparse::Status::Complete((line, size))) = httparse::parse_chunk_size(body) else {
            return false;
        };
        if !crlf_only(&body[..line]) {
            return false;
        }
        body = &body[line..];
        if size == 0 {
            let mut fields = [httparse::EMPTY_HEADER; 128];
            return matches!(
                httparse::parse_headers(body, &mut fields),
                Ok(httparse::Status::Complete((len, _))) if crlf_only(&body[..len])
            );
        }
        let Some(rest) = usize::try_from(size)
            .ok()
            .and_then(|size| body.get(size..))
            .and_then(|rest| rest.strip_prefix(b"\r\n"))
        else {
            return false;
        };
        body = rest;
    }
}

/// Whether every LF in `bytes` follows a CR.
fn crlf_only(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && bytes[i - 1] == b'\r'))
}

/// The end of the first response head that is not an interim (1xx) one.
fn first_final_head(reply: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let mut fields = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut fields);
        let Ok(httparse::Status::Complete(len)) = response.parse(&reply[at..]) else {
            return None;
        };
        if !(100..200).contains(&response.code.unwrap_or_default()) {
            return Some(at + len);
        }
        at += len;
    }
}

fn check_first_response(reply: &[u8], data: &[u8]) {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    let start = first_final_head(reply).map_or(0, |end| {
        let mut at = 0;
        while let Some(len) = interim_len(&reply[at..end]) {
            at += len;
        }
        at
    });
    let Ok(httparse::Status::Complete(_)) = response.parse(&reply[start..]) else {
        // Nothing, or a connection cut: allowed (a client that sent
        // half a head, say).
        return;
    };
    let status = response.code.unwrap_or_default();
    let field = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let ok = match status {
        200 => field("x-fuzz-route").is_some(),
        400..=499 => field("x-fuzz-route").is_none(),
        500..=599 => field("x-ripcord-policy").is_some(),
        _ => false,
    };
    assert!(
        ok,
        "for {:?} the proxy answered {:?}",
        String::from_utf8_lossy(data),
        String::from_utf8_lossy(reply)
    );
}

/// The length of an interim (1xx) response head at the start of `reply`.
fn interim_len(reply: &[u8]) -> Option<usize> {
    let mut fields = [httparse::EMPTY_HEADER; 64];
    let mut response = httparse::Response::new(&mut fields);
    match response.parse(reply) {
        Ok(httparse::Status::Complete(len)) if (100..200).contains(&response.code.unwrap_or(0)) => {
            Some(len)
        }
        _ => None,
    }
}
