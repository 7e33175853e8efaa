//! Raw-socket tools for the proxy's security tests: a client that sends
//! bytes exactly as given, and a scripted upstream that answers each request
//! head with the bytes a test chooses.

#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How long one raw exchange may take before the test fails.
pub const LIMIT: Duration = Duration::from_secs(10);

/// What a scripted upstream writes for one request: each piece is written
/// on its own, `gap` apart.
pub struct Answer {
    pub pieces: Vec<Vec<u8>>,
    pub gap: Duration,
    /// Close the connection after writing.
    pub close: bool,
}

impl Answer {
    /// One write.
    pub fn bytes(b: impl Into<Vec<u8>>) -> Answer {
        Answer {
            pieces: vec![b.into()],
            gap: Duration::ZERO,
            close: false,
        }
    }

    /// Several writes, `gap` apart.
    pub fn pieces(pieces: Vec<Vec<u8>>, gap: Duration) -> Answer {
        Answer {
            pieces,
            gap,
            close: false,
        }
    }
}

type Script = dyn Fn(&str) -> Answer + Send + Sync;

/// A loopback upstream answering every request head it reads with what its
/// script gives; it keeps the connection open for the next request.
pub struct Scripted {
    pub addr: SocketAddr,
    /// Every request head read (the request line and fields, as text).
    pub heads: Arc<Mutex<Vec<String>>>,
    /// Connections accepted.
    pub connections: Arc<Mutex<usize>>,
}

impl Scripted {
    pub async fn start(script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Scripted {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(Mutex::new(0));
        let script: Arc<Script> = Arc::new(script);
        let (h, c) = (Arc::clone(&heads), Arc::clone(&connections));
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                *c.lock().unwrap() += 1;
                tokio::spawn(serve(s, Arc::clone(&script), Arc::clone(&h)));
            }
        });
        Scripted {
            addr,
            heads,
            connections,
        }
    }

    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }

    pub fn connections(&self) -> usize {
        *self.connections.lock().unwrap()
    }
}

async fn serve(mut s: TcpStream, script: Arc<Script>, heads: Arc<Mutex<Vec<String>>>) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        // A request body announced by a length is read and dropped.
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        while buf.len() < length {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        heads.lock().unwrap().push(head.clone());
        let answer = script(&head);
        for (i, piece) in answer.pieces.iter().enumerate() {
            if i > 0 && !answer.gap.is_zero() {
                tokio::time::sleep(answer.gap).await;
            }
            if s.write_all(piece).await.is_err() {
                return;
            }
        }
        if answer.close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

/// The request target of a request head (`GET /x HTTP/1.1` → `/x`).
pub fn target(head: &str) -> &str {
    head.split(' ').nth(1).unwrap_or("")
}

/// The value of the first field `name` of a head (case-insensitive).
pub fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
}

/// Every value of field `name` of a head.
pub fn fields<'a>(head: &'a str, name: &str) -> Vec<&'a str> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

/// A response read off a raw connection.
#[derive(Debug, Clone)]
pub struct Raw {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn field(&self, name: &str) -> Option<&str> {
        field(&self.head, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client connection that writes raw bytes and reads whole responses
/// (framed by `Content-Length`, chunked, or until close).
pub struct RawClient {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = tokio::time::timeout(LIMIT, TcpStream::connect(addr))
            .await
            .expect("connected in time")
            .expect("connected");
        RawClient::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> RawClient {
        RawClient {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn send(&mut self, raw: &[u8]) {
        self.stream.write_all(raw).await.expect("sent");
    }

    async fn more(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout(LIMIT, self.stream.read(&mut chunk))
            .await
            .expect("the proxy answered or closed within the limit")
        {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// The next response; `None` when the connection closed first. `head`
    /// says the request was a HEAD (no body follows).
    pub async fn response(&mut self, head_request: bool) -> Option<Raw> {
        let end = loop {
            if let Some(i) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if !self.more().await {
                return None;
            }
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let status: u16 = head.split(' ').nth(1)?.parse().ok()?;
        let bodiless = head_request || status == 204 || status == 304 || status < 200;
        let chunked = field(&head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = field(&head, "content-length").and_then(|v| v.parse::<usize>().ok());
        let body = if bodiless {
            Vec::new()
        } else if chunked {
            let mut out = Vec::new();
            loop {
                let eol = loop {
                    if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                        break i;
                    }
                    if !self.more().await {
                        return None;
                    }
                };
                let line = String::from_utf8_lossy(&self.buf[..eol]).into_owned();
                let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
                self.buf.drain(..eol + 2);
                if size == 0 {
                    // Trailers up to the blank line.
                    loop {
                        if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                            let blank = i == 0;
                            self.buf.drain(..i + 2);
                            if blank {
                                break;
                            }
                        } else if !self.more().await {
                            return None;
                        }
                    }
                    break out;
                }
                while self.buf.len() < size + 2 {
                    if !self.more().await {
                        return None;
                    }
                }
                out.extend_from_slice(&self.buf[..size]);
                self.buf.drain(..size + 2);
            }
        } else if let Some(n) = length {
            while self.buf.len() < n {
                if !self.more().await {
                    return None;
                }
            }
            self.buf.drain(..n).collect()
        } else {
            while self.more().await {}
            std::mem::take(&mut self.buf)
        };
        Some(Raw { status, head, body })
    }

    /// Whether the peer closes the connection within `within` (reading and
    /// dropping whatever it sends first).
    pub async fn closed_within(&mut self, within: Duration) -> bool {
        let mut chunk = [0u8; 4096];
        let end = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(end, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Sends one request on a new connection and reads its response.
pub async fn once(addr: SocketAddr, raw: &[u8]) -> Option<Raw> {
    let mut c = RawClient::connect(addr).await;
    c.send(raw).await;
    c.response(raw.starts_with(b"HEAD ")).await
}

/// A proxy configuration: one listener and the admin on port 0, `limits`
/// lines in `[limits]`, one upstream `app` at `upstream`, and `routes` (TOML
/// `[[routes]]` tables) after it.
pub fn config(upstream: SocketAddr, limits: &str, routes: &str) -> String {
    format!(
        r#"[admin]
listen = "127.0.0.1:0"

[limits]
workers = 1
{limits}

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.app]
addresses = ["{upstream}"]

{routes}
"#
    )
}

/// One route `app` on `/`.
pub const ALL: &str = "[[routes]]\nname = \"app\"\npath_prefix = \"/\"\nupstream = \"app\"\n";
