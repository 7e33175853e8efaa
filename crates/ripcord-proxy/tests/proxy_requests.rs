//! What a client's request head may not do: route by one host and reach
//! the upstream with another, slip past a route's policies with a path
//! spelled differently, or forge the proxy's forwarding headers. Raw
//! clients and scripted upstreams on loopback.

mod proxy_raw;
mod proxy_support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_raw::{field, fields, once, target, Answer, Scripted};
use proxy_support::start;

/// An upstream that answers `name` with every request.
async fn named(name: &'static str) -> Scripted {
    Scripted::start(move |_| {
        Answer::bytes(format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{name}",
            name.len()
        ))
    })
    .await
}

/// Two upstreams, `internal` and `public`, each behind a route on its host.
fn hosts_config(internal: &Scripted, public: &Scripted) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[limits]
workers = 1

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.internal]
addresses = ["{}"]

[upstreams.public]
addresses = ["{}"]

[[routes]]
name = "internal"
host = "internal.local"
upstream = "internal"

[[routes]]
name = "public"
host = "public.test"
upstream = "public"
"#,
        internal.addr, public.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_or_missing_hosts_are_refused() {
    let (internal, public) = (named("internal").await, named("public").await);
    let proxy = start(&hosts_config(&internal, &public)).await;
    let addr = proxy.listen_addrs()[0];
    for raw in [
        "GET / HTTP/1.1\r\nHost: internal.local\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: public.test\r\nHost: public.test\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: x@internal.local\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: public.test, internal.local\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a, b\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: public.test\r\nConnection: host, close\r\n\r\n",
        "GET http://x@internal.local/ HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    ] {
        let r = once(addr, raw.as_bytes()).await;
        let status = r.as_ref().map(|r| r.status);
        assert_eq!(status, Some(400), "{raw:?}: {r:?}");
    }
    assert!(internal.heads().is_empty(), "{:?}", internal.heads());
    assert!(public.heads().is_empty(), "{:?}", public.heads());
    // HTTP/1.0 needs no Host (no host route matches it: 404).
    let r = once(addr, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(r.status, 404, "{}", r.head);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absolute_target_wins_over_the_host_header() {
    let (internal, public) = (named("internal").await, named("public").await);
    let proxy = start(&hosts_config(&internal, &public)).await;
    let addr = proxy.listen_addrs()[0];
    let r = once(
        addr,
        b"GET http://internal.local/a?b HTTP/1.1\r\nHost: public.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "internal"),
        "{}",
        r.head
    );
    let heads = internal.heads();
    assert_eq!(target(&heads[0]), "/a?b");
    assert_eq!(
        fields(&heads[0], "host"),
        ["internal.local"],
        "{}",
        heads[0]
    );
    assert_eq!(field(&heads[0], "x-forwarded-host"), Some("internal.local"));
    assert!(public.heads().is_empty());
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_authority_wins_over_a_host_header() {
    let (internal, public) = (named("internal").await, named("public").await);
    let proxy = start(&hosts_config(&internal, &public)).await;
    let stream = tokio::net::TcpStream::connect(proxy.listen_addrs()[0])
        .await
        .unwrap();
    let (mut send, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("http://internal.local/h2")
        .header("host", "public.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("in time")
        .expect("a response");
    let status = r.status();
    let body = r.into_body().collect().await.unwrap().to_bytes();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"internal"[..]));
    let heads = internal.heads();
    assert_eq!(
        fields(&heads[0], "host"),
        ["internal.local"],
        "{}",
        heads[0]
    );
    assert!(public.heads().is_empty());
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// `/api/login` limited to one request an hour; everything else to the
/// same upstream without limits.
fn login_config(up: &Scripted) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[limits]
workers = 1

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{}"]

[[routes]]
name = "login"
path_prefix = "/api/login"
upstream = "app"
pipeline = {{ rate_limiter = {{ rate = 1, period = "1h" }} }}

[[routes]]
name = "rest"
path_prefix = "/"
upstream = "app"
"#,
        up.addr
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_are_normalized_before_routing_and_forwarded_so() {
    let up = named("app").await;
    let proxy = start(&login_config(&up)).await;
    let addr = proxy.listen_addrs()[0];
    let get = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let r = once(addr, get("/api/login").as_bytes())
        .await
        .expect("an answer");
    assert_eq!(r.status, 200);
    for path in [
        "/api/x/../login",
        "/api/./login",
        "/api//login",
        "/api/%6cogin",
        "/api/%6Cogin?next=/",
        "/API/../api/login",
        "/api/login/",
        "//api/login",
        "/api/%2e/login",
        "/api/x/%2e%2e/login",
    ] {
        let r = once(addr, get(path).as_bytes()).await.expect("an answer");
        assert!(
            r.status == 429 || r.status == 400,
            "{path} bypassed the login route: {} {}",
            r.status,
            r.text()
        );
    }
    // Spellings that cannot be told apart safely are refused.
    for path in [
        "/api%2flogin",
        "/api%2Flogin",
        "/api%5clogin",
        "/api\\login",
        "/a/../../login",
        "/a%00b",
        "/a%zz",
    ] {
        let r = once(addr, get(path).as_bytes()).await;
        assert_eq!(r.as_ref().map(|r| r.status), Some(400), "{path}: {r:?}");
    }
    // What the upstream sees is what was routed.
    let before = up.heads().len();
    let r = once(addr, get("/a/./b//c/../%64?q=%2e%2e/x").as_bytes())
        .await
        .expect("an answer");
    assert_eq!(r.status, 200);
    let heads = up.heads();
    assert_eq!(heads.len(), before + 1);
    assert_eq!(
        target(&heads[before]),
        "/a/b/d?q=%2e%2e/x",
        "{}",
        heads[before]
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_sent_forwarding_headers_are_replaced() {
    let up = named("app").await;
    let proxy = start(&proxy_raw::config(up.addr, "", proxy_raw::ALL)).await;
    let addr = proxy.listen_addrs()[0];
    let r = once(
        addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nX-Forwarded-Host: admin.internal\r\n\
          X-Forwarded-Proto: https\r\nX-Forwarded-Host: other\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r.status, 200);
    // Without a Host (HTTP/1.0) the client's values go too.
    let r10 = once(
        addr,
        b"GET / HTTP/1.0\r\nX-Forwarded-Host: admin.internal\r\nX-Forwarded-Proto: https\r\n\r\n",
    )
    .await
    .expect("an answer");
    assert_eq!(r10.status, 200);
    let heads = up.heads();
    assert_eq!(
        fields(&heads[0], "x-forwarded-host"),
        ["shop.example"],
        "{}",
        heads[0]
    );
    assert_eq!(
        fields(&heads[0], "x-forwarded-proto"),
        ["http"],
        "{}",
        heads[0]
    );
    assert!(
        fields(&heads[1], "x-forwarded-host").is_empty(),
        "{}",
        heads[1]
    );
    assert_eq!(
        fields(&heads[1], "x-forwarded-proto"),
        ["http"],
        "{}",
        heads[1]
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}
