//! A tiny HTTP/1.1 client over raw TCP for the admin tests: it can send
//! anything, including requests no well-behaved client would.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// How long any one exchange may take.
pub(crate) const EXCHANGE_LIMIT: Duration = Duration::from_secs(10);

/// A parsed response.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.body))
    }

    /// The `error` field of a JSON error body.
    pub(crate) fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error field in {}", self.body))
            .to_string()
    }
}

/// What came back for a raw exchange.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// A response.
    Answered(Reply),
    /// The server closed (or reset) the connection without a response.
    Closed,
}

/// Sends `raw` (a whole request, ideally with `Connection: close`) and reads
/// until the server closes the connection.
pub(crate) async fn exchange(addr: SocketAddr, raw: &[u8]) -> Exchange {
    timeout(EXCHANGE_LIMIT, async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // The server may answer and close before taking everything.
        let _ = stream.write_all(raw).await;
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => break, // reset
            }
        }
        match parse(&buf) {
            Some(reply) => Exchange::Answered(reply),
            None => Exchange::Closed,
        }
    })
    .await
    .expect("the admin listener neither answered nor closed in time")
}

/// Sends a request and expects a response.
pub(crate) async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    match exchange(addr, &raw).await {
        Exchange::Answered(r) => r,
        Exchange::Closed => panic!("{method} {path}: connection closed without a response"),
    }
}

/// `GET path`.
pub(crate) async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[], b"").await
}

/// `POST path` with an optional bearer token and no body.
pub(crate) async fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    match token {
        Some(t) => {
            let auth = format!("Bearer {t}");
            request(addr, "POST", path, &[("Authorization", &auth)], b"").await
        }
        None => request(addr, "POST", path, &[], b"").await,
    }
}

/// Parses a whole response (content-length, chunked or until close).
pub(crate) fn parse(buf: &[u8]) -> Option<Reply> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next()?;
    let status: u16 = status_line.split(' ').nth(1)?.parse().ok()?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let rest = &buf[end + 4..];
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Some(Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..eol])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok());
        let Some(size) = size else { break };
        rest = &rest[eol + 2..];
        if size == 0 || rest.len() < size {
            out.extend_from_slice(&rest[..size.min(rest.len())]);
            break;
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or(&[]);
    }
    out
}

/// An open event stream: reads until the text seen so far satisfies a test.
pub(crate) struct EventStream {
    stream: TcpStream,
    /// Everything received so far (chunk framing included).
    pub(crate) seen: String,
}

impl EventStream {
    /// Opens `GET /api/events` and checks the response head.
    pub(crate) async fn open(addr: SocketAddr) -> EventStream {
        let mut stream = timeout(EXCHANGE_LIMIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        let req = format!(
            "GET /api/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.expect("send");
        let mut es = EventStream {
            stream,
            seen: String::new(),
        };
        es.wait_for(Duration::from_secs(5), |s| s.contains("\r\n\r\n"))
            .await
            .expect("a response head");
        assert!(es.seen.starts_with("HTTP/1.1 200"), "{}", es.seen);
        assert!(
            es.seen
                .to_ascii_lowercase()
                .contains("content-type: text/event-stream"),
            "{}",
            es.seen
        );
        es
    }

    /// Reads until `done(seen)` holds, for at most `limit`. Returns whether it
    /// did (false on timeout or end of stream).
    pub(crate) async fn wait_for(
        &mut self,
        limit: Duration,
        done: impl Fn(&str) -> bool,
    ) -> Option<()> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 16 * 1024];
        while !done(&self.seen) {
            let n = tokio::time::timeout_at(deadline, self.stream.read(&mut chunk))
                .await
                .ok()?
                .ok()?;
            if n == 0 {
                return None;
            }
            self.seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
        }
        Some(())
    }

    /// Reads until the stream ends, for at most `limit`; whether it ended.
    pub(crate) async fn wait_end(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(n)) => self.seen.push_str(&String::from_utf8_lossy(&chunk[..n])),
            }
        }
    }
}

/// The data of every SSE event named `event` in `text`, parsed as JSON.
pub(crate) fn events_named(text: &str, event: &str) -> Vec<serde_json::Value> {
    let marker = format!("event: {event}\ndata: ");
    text.match_indices(&marker)
        .filter_map(|(i, _)| {
            let data = &text[i + marker.len()..];
            let line = data.split('\n').next()?;
            serde_json::from_str(line).ok()
        })
        .collect()
}
