//! What an upstream's answer may not do to the next client: stray bytes
//! after a bodiless response, forbidden trailer fields, a repeated
//! `Content-Length`. Scripted upstreams on loopback, raw clients.

mod proxy_raw;
mod proxy_support;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proxy_raw::{config, once, target, Answer, RawClient, Scripted, ALL};
use proxy_support::start;

const POISON: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nPOISONED";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/// An upstream whose bodiless answers (`/nocontent`: 204, `/notmodified`:
/// 304, any HEAD: 200 with a length) are followed by a whole stray
/// response, in the same write (`/…/same`) or 2 ms later; `ok` otherwise.
async fn stray_upstream() -> Scripted {
    Scripted::start(|head| {
        let head_request = head.starts_with("HEAD ");
        let path = target(head).to_string();
        let first: &[u8] = if head_request {
            b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n"
        } else if path.starts_with("/nocontent") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if path.starts_with("/notmodified") {
            b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n"
        } else {
            return Answer::bytes(OK);
        };
        if path.ends_with("/same") {
            Answer::bytes([first, POISON].concat())
        } else {
            Answer::pieces(
                vec![first.to_vec(), POISON.to_vec()],
                Duration::from_millis(2),
            )
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_bytes_after_a_bodiless_response_never_reach_another_client() {
    let up = stray_upstream().await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    let mut poisoned = Vec::new();
    for first in [
        "GET /nocontent HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /nocontent/same HTTP/1.1\r\nHost: t\r\n\r\n",
        "GET /notmodified HTTP/1.1\r\nHost: t\r\n\r\n",
        "HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n",
        "HEAD /x/same HTTP/1.1\r\nHost: t\r\n\r\n",
        // Through hyper's client (a request with a body).
        "POST /nocontent HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx",
    ] {
        for _ in 0..10 {
            // The bodiless answer, then at once another client's request
            // (which may take the pooled connection), then one more a little
            // later on the first client's connection.
            let mut a = RawClient::connect(addr).await;
            a.send(first.as_bytes()).await;
            let r = a
                .response(first.starts_with("HEAD"))
                .await
                .expect("an answer");
            assert!(r.status < 400, "{first}: {}", r.head);
            let b = once(
                addr,
                b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .await
            .expect("an answer");
            tokio::time::sleep(Duration::from_millis(10)).await;
            a.send(b"GET /plain HTTP/1.1\r\nHost: t\r\n\r\n").await;
            let c = a.response(false).await.expect("an answer");
            for got in [b, c] {
                if got.text() != "ok" {
                    poisoned.push(format!("{first:?} -> {} {:?}", got.status, got.text()));
                }
            }
        }
    }
    assert!(poisoned.is_empty(), "{poisoned:#?}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_content_length_reaches_the_client_as_one_value() {
    let up = Scripted::start(|_| {
        Answer::bytes(
            &b"HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\nContent-Length: 5\r\n\r\nhello"[..],
        )
    })
    .await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    for req in [
        &b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
    ] {
        let r = once(addr, req).await.expect("an answer");
        assert_eq!(r.status, 200, "{}", r.head);
        assert_eq!(r.text(), "hello");
        let values = proxy_raw::fields(&r.head, "content-length");
        assert_eq!(values, ["5"], "{}", r.head);
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// A chunked answer `hello` with these trailer fields.
async fn trailer_upstream(trailers: &'static str) -> Scripted {
    Scripted::start(move |_| {
        Answer::bytes(format!(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: x-checksum\r\n\r\n\
             5\r\nhello\r\n0\r\n{trailers}\r\n"
        ))
    })
    .await
}

/// An HTTP/2 (h2c) request through the proxy: the body and the trailers
/// the client received.
async fn h2_get(url: &str, te_trailers: bool) -> (String, Option<http::HeaderMap>) {
    let c: proxy_support::TestClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let mut req = Request::get(url);
    if te_trailers {
        req = req.header("te", "trailers");
    }
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(req.body(Full::<Bytes>::default()).unwrap()),
    )
    .await
    .expect("in time")
    .expect("a response");
    assert_eq!(r.status(), 200);
    let collected = tokio::time::timeout(Duration::from_secs(10), r.into_body().collect())
        .await
        .expect("in time")
        .expect("the whole body, not a reset stream");
    let trailers = collected.trailers().cloned();
    (
        String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    )
}

const FORBIDDEN: [&str; 6] = [
    "content-length",
    "host",
    "authorization",
    "set-cookie",
    "content-type",
    "cache-control",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_clients_get_only_allowed_trailers_and_only_when_asked() {
    let up = trailer_upstream(
        "x-checksum: 42\r\ncontent-length: 99\r\nhost: evil.test\r\nauthorization: Bearer x\r\n\
         set-cookie: a=b\r\ncontent-type: text/evil\r\ncache-control: public\r\n",
    )
    .await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let url = format!("http://{}/t", proxy.listen_addrs()[0]);
    let (body, trailers) = h2_get(&url, true).await;
    assert_eq!(body, "hello");
    let trailers = trailers.expect("trailers, asked for with `te: trailers`");
    assert_eq!(
        trailers.get("x-checksum").map(|v| v.as_bytes()),
        Some(&b"42"[..])
    );
    for name in FORBIDDEN {
        assert!(trailers.get(name).is_none(), "{name} in {trailers:?}");
    }
    let (body, trailers) = h2_get(&url, false).await;
    assert_eq!(body, "hello");
    assert!(
        trailers.as_ref().is_none_or(http::HeaderMap::is_empty),
        "trailers without `te: trailers`: {trailers:?}"
    );
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_specific_trailer_does_not_reset_the_h2_stream() {
    let up = trailer_upstream(
        "transfer-encoding: chunked\r\nconnection: close\r\nkeep-alive: 5\r\nx-checksum: 42\r\n",
    )
    .await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let url = format!("http://{}/t", proxy.listen_addrs()[0]);
    for te in [true, false] {
        let (body, trailers) = h2_get(&url, te).await;
        assert_eq!(body, "hello", "te: trailers {te}");
        if let Some(t) = trailers {
            for name in ["transfer-encoding", "connection", "keep-alive"] {
                assert!(t.get(name).is_none(), "{name} in {t:?}");
            }
        }
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}
