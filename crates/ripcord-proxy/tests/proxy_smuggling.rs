//! Request framing the proxy must refuse or re-frame so that it and its
//! upstream never disagree on where a request ends (request smuggling):
//! conflicting or malformed `Content-Length` and `Transfer-Encoding`,
//! obsolete line folding, bare CR and NUL in fields, bad chunk sizes. Raw
//! clients on loopback; the upstream records every byte it receives.

mod proxy_raw;
mod proxy_support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proxy_raw::{config, RawClient, ALL};
use proxy_support::start;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An upstream that reads a request (its head, then whatever follows until
/// the proxy closes or pauses for 2 s), answers `200 ok` and closes; `seen`
/// holds the bytes of each connection. The long pause keeps it from
/// answering an upload the proxy is about to cut.
struct Recorder {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    let mut chunk = [0u8; 8192];
                    loop {
                        let more = if got.windows(4).any(|w| w == b"\r\n\r\n") {
                            match tokio::time::timeout(
                                Duration::from_secs(2),
                                stream.read(&mut chunk),
                            )
                            .await
                            {
                                Ok(r) => r,
                                Err(_) => break,
                            }
                        } else {
                            stream.read(&mut chunk).await
                        };
                        match more {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let done = !got.is_empty();
                    s.lock().unwrap().push(got);
                    if done {
                        let _ = stream
                            .write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                            )
                            .await;
                    }
                    let _ = stream.shutdown().await;
                });
            }
        });
        Recorder { addr, seen }
    }

    /// What reached the upstream, as text, all connections together.
    fn text(&self) -> String {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect::<Vec<_>>()
            .join("\n--- next connection ---\n")
    }
}

/// Sends `raw` on a new connection; the statuses of the responses read
/// until the proxy closes it (or nothing more comes for a second).
async fn statuses(proxy: SocketAddr, raw: &[u8]) -> Vec<u16> {
    let mut c = RawClient::connect(proxy).await;
    c.send(raw).await;
    let _ = c.stream.shutdown().await;
    let mut out = Vec::new();
    while let Some(r) = c.response(false).await {
        out.push(r.status);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_heads_are_refused_before_reaching_the_upstream() {
    let up = Recorder::start().await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    let cases: [(&str, &[u8]); 9] = [
        (
            "obs-fold",
            b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: one\r\n two\r\n\r\n",
        ),
        (
            "bare CR in a value",
            b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: a\rb\r\n\r\n",
        ),
        (
            "NUL in a value",
            b"GET /a HTTP/1.1\r\nHost: app\r\nX-A: a\0b\r\n\r\n",
        ),
        (
            "space before the colon",
            b"GET /a HTTP/1.1\r\nHost: app\r\nContent-Length : 3\r\n\r\nabc",
        ),
        (
            "two different lengths",
            b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        ),
        (
            "a signed length",
            b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: +3\r\n\r\nabc",
        ),
        (
            "a length that is not a number",
            b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 3x\r\n\r\nabc",
        ),
        (
            "chunked not the last coding",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
        ),
        (
            "a request line with a bare LF and spaces",
            b"GET  /a  HTTP/1.1\nHost: app\n\n",
        ),
    ];
    for (what, raw) in cases {
        let got = statuses(addr, raw).await;
        assert!(
            got.iter().all(|s| (400..500).contains(s) || *s == 501),
            "{what}: answered {got:?}"
        );
    }
    assert_eq!(up.text(), "", "nothing reached the upstream");
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// One request a compliant server parsed: `METHOD /path`, whether its head
/// had both framing fields, and its body.
type Request = (String, bool, Vec<u8>);

/// A hyper upstream (a compliant HTTP/1.1 server) that records each
/// request it parsed.
struct Parsed {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Request>>>,
}

impl Parsed {
    async fn start() -> Parsed {
        use http_body_util::BodyExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = Arc::clone(&s);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let s = Arc::clone(&s);
                            async move {
                                let both = req.headers().contains_key(http::header::CONTENT_LENGTH)
                                    && req.headers().contains_key(http::header::TRANSFER_ENCODING);
                                let line = format!("{} {}", req.method(), req.uri().path());
                                let body = match req.into_body().collect().await {
                                    Ok(b) => b.to_bytes().to_vec(),
                                    Err(_) => b"<broken>".to_vec(),
                                };
                                s.lock().unwrap().push((line, both, body));
                                Ok::<_, std::convert::Infallible>(http::Response::new(
                                    http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                                ))
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Parsed { addr, seen }
    }

    fn take(&self) -> Vec<Request> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_and_transfer_encoding_together_never_desynchronise() {
    let up = Parsed::start().await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    // CL.TE and TE.CL: a second request hidden in what one side reads as
    // the body of the first.
    let cases: [(&str, &[u8]); 3] = [
        (
            "CL.TE",
            b"POST /a HTTP/1.1\r\nHost: app\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\n\r\n",
        ),
        (
            "TE.CL",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n2c\r\nGET /smuggled HTTP/1.1\r\nHost: app\r\nX: yz\r\n\r\n\r\n0\r\n\r\n",
        ),
        (
            "an unknown coding",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\nabcd",
        ),
    ];
    for (what, raw) in cases {
        let got = statuses(addr, raw).await;
        let reached = up.take();
        // Refused, or one request answered, the connection closed after it
        // (RFC 9112 §6.1): the hidden one never parsed as a request.
        assert!(
            got.len() <= 1,
            "{what}: answered {got:?}, upstream saw {reached:?}"
        );
        assert!(
            reached
                .iter()
                .all(|(line, both, _)| line == "POST /a" && !both),
            "{what}: upstream saw {reached:?}"
        );
        // One request sent, at most one forwarded (its body may be cut
        // when the client's half-close ends the connection first).
        assert!(reached.len() <= 1, "{what}: {reached:?} for {got:?}");
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_chunk_size_is_never_answered_as_a_success() {
    let up = Recorder::start().await;
    let proxy = start(&config(up.addr, "", ALL)).await;
    let addr = proxy.listen_addrs()[0];
    let cases: [(&str, &[u8]); 3] = [
        (
            "not hexadecimal",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "an overflowing size",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        (
            "data longer than its size",
            b"POST /a HTTP/1.1\r\nHost: app\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabcdef\r\n0\r\n\r\n",
        ),
    ];
    for (what, raw) in cases {
        let got = statuses(addr, raw).await;
        assert!(
            got.iter().all(|s| *s >= 400),
            "{what}: a broken upload was answered {got:?}"
        );
    }
    proxy.shutdown(Duration::from_secs(1)).await;
}
