//! A loopback upstream whose answers the tests choose, a small HTTP client,
//! and proxy start-up helpers, shared by the `proxy_*` tests.

#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use ripcord_proxy::config::ProxyConfig;
use ripcord_proxy::server::{Proxy, RunningProxy};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// A body sent piece by piece from a channel; an `Err` item ends it with an
/// error (the connection is aborted mid-body).
pub struct ChannelBody(pub mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }
}

type UpBody = http_body_util::combinators::BoxBody<Bytes, std::io::Error>;

fn full(status: u16, text: impl Into<Bytes>) -> Response<UpBody> {
    let mut r = Response::new(
        Full::new(text.into())
            .map_err(|never: Infallible| match never {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r
}

/// What the upstream saw and when.
#[derive(Debug, Default)]
pub struct Seen {
    /// Requests answered.
    pub hits: AtomicUsize,
    /// When the last streaming response finished sending.
    pub stream_done: Mutex<Option<Instant>>,
}

/// A loopback HTTP upstream. Paths:
/// - `/…` (anything else): the status set by [`Upstream::set_status`] (200 by
///   default) and body `upstream <port>`;
/// - `/slow/{ms}`: waits, then 200;
/// - `/status/{code}`: that status (429 with `Retry-After: 3600`);
/// - `/headers`: 200 with the request headers, one `name: value` per line;
/// - `/stream/{n}/{ms}`: `n` chunks `ms` apart (chunked);
/// - `/abort`: a chunk, then the connection is cut mid-body;
/// - `/upload`: reads the request body and answers its length.
pub struct Upstream {
    pub addr: SocketAddr,
    status: Arc<AtomicU16>,
    pub seen: Arc<Seen>,
}

impl Upstream {
    pub async fn start() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(200));
        let seen = Arc::new(Seen::default());
        let (st, sn) = (status.clone(), seen.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (st, sn) = (st.clone(), sn.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let (st, sn) = (st.clone(), sn.clone());
                        async move { Ok::<_, Infallible>(answer(req, &st, &sn, addr).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Upstream { addr, status, seen }
    }

    pub fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.seen.hits.load(Ordering::SeqCst)
    }
}

async fn answer(
    req: Request<Incoming>,
    status: &AtomicU16,
    seen: &Arc<Seen>,
    addr: SocketAddr,
) -> Response<UpBody> {
    seen.hits.fetch_add(1, Ordering::SeqCst);
    let path = req.uri().path().to_string();
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts.as_slice() {
        ["slow", ms] => {
            tokio::time::sleep(Duration::from_millis(ms.parse().unwrap())).await;
            full(200, "slow done")
        }
        ["status", code] => {
            let mut r = full(code.parse().unwrap(), format!("status {code}"));
            if *code == "429" {
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("3600"));
            }
            r
        }
        ["headers"] => {
            let mut text = String::new();
            for (k, v) in req.headers() {
                text.push_str(&format!("{}: {}\n", k, v.to_str().unwrap_or("?")));
            }
            full(200, text)
        }
        ["stream", n, ms] => {
            let n: usize = n.parse().unwrap();
            let gap = Duration::from_millis(ms.parse().unwrap());
            let (tx, rx) = mpsc::channel(4);
            let seen = seen.clone();
            tokio::spawn(async move {
                for i in 0..n {
                    if tx
                        .send(Ok(Bytes::from(format!("chunk {i}\n"))))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(gap).await;
                }
                *seen.stream_done.lock().unwrap() = Some(Instant::now());
            });
            Response::new(ChannelBody(rx).boxed())
        }
        ["abort"] => {
            let (tx, rx) = mpsc::channel(2);
            tokio::spawn(async move {
                let _ = tx.send(Ok(Bytes::from_static(b"partial "))).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
                let _ = tx
                    .send(Err(std::io::Error::other("upstream gives up mid-body")))
                    .await;
            });
            Response::new(ChannelBody(rx).boxed())
        }
        ["upload"] => {
            let mut body = req.into_body();
            let mut n = 0usize;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                    Err(_) => return full(400, "upload broken"),
                }
            }
            full(200, format!("{n}"))
        }
        _ => full(
            status.load(Ordering::SeqCst),
            format!("upstream {}", addr.port()),
        ),
    }
}

/// A plain HTTP/1.1 client (no pool surprises: a fresh client per test).
pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub async fn get(client: &TestClient, url: &str) -> Got {
    send(client, Request::get(url).body(Full::default()).unwrap()).await
}

pub async fn send(client: &TestClient, req: Request<Full<Bytes>>) -> Got {
    let r = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("the proxy answered within 10 s")
        .expect("a response");
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let body = tokio::time::timeout(Duration::from_secs(10), r.into_body().collect())
        .await
        .expect("the body within 10 s")
        .expect("a complete body")
        .to_bytes();
    Got {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// A configuration with one upstream `app` at `upstream` and one route
/// `name` on `/` to it: `head` goes first (top-level keys such as `store`),
/// the listener and admin take port 0, and `route` lines end the route's
/// table (its pipeline).
pub fn one_route(upstream: &Upstream, head: &str, name: &str, route: &str) -> String {
    format!(
        r#"{head}
[admin]
listen = "127.0.0.1:0"

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{addr}"]

[[routes]]
name = "{name}"
path_prefix = "/"
upstream = "app"
{route}
"#,
        addr = upstream.addr
    )
}

/// Starts a proxy on `toml` (listener and admin on port 0 unless the text
/// says otherwise).
pub async fn start(toml: &str) -> RunningProxy {
    let config = ProxyConfig::parse(toml, "test.toml").unwrap_or_else(|e| panic!("{e}"));
    Proxy::start(config).await.unwrap()
}

/// The proxy's first listener as a base URL.
pub fn base(proxy: &RunningProxy) -> String {
    format!("http://{}", proxy.listen_addrs()[0])
}

/// A random-enough suffix for Redis key prefixes and names.
pub fn unique() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{}-{nanos}", std::process::id())
}

/// Polls `f` every 20 ms until it holds or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}
