//! The proxy's HTTP/1.1 client reading a response, beside hyper's client
//! reading the same bytes.
//!
//! Input: one flags byte (bit 0: the request was `HEAD`), then the bytes
//! the upstream sends before it closes the connection. The proxy's client
//! ([`H1Conn`]) reads them from a loopback socket, hyper's from an in-memory
//! pipe. Both must give the same verdict (refused, or read whole) and, where both read it whole, the
//! same status, version, fields, body bytes and trailers.
//!
//! Intended differences, which are not findings:
//!
//! - `101 Switching Protocols`: the proxy never asks for an upgrade and
//!   refuses one; hyper hands the connection over.
//! - A `Content-Length` beside `Transfer-Encoding` is dropped by the proxy
//!   when the response has a body (RFC 9112 §6.3: the length would mislead
//!   the client) and kept on a `HEAD` answer; hyper keeps or drops it by
//!   rules of its own. It is left out of both sides' fields before they
//!   are compared.
//! - A chunk size of more than 16 hex digits (leading zeros) is refused by
//!   the proxy (httparse's limit) and read by hyper.
//! - A bare LF in a chunked body's framing (a size line, the last chunk, the
//!   trailer section) is refused by the proxy, which takes only CRLF there
//!   (RFC 9112 §2.2 lets a recipient do either); hyper reads some of them.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Version};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::runtime::block_on;
use crate::h1::{H1Conn, MAX_HEAD};

/// Longer than any read of a small input takes; reaching it is a hang.
const HANG: Duration = Duration::from_secs(10);

/// What a client made of the bytes. Where a response is refused (its
/// head, or its body after the head) is not compared: hyper's connection
/// task decodes the body as it arrives and may fail the response before
/// handing its head over.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// The response was refused.
    Refused,
    /// The whole response was read.
    Read(Message),
}

/// Header fields in order: name (lower-case) and value.
type Fields = Vec<(String, Vec<u8>)>;

/// A body read whole: its data and its trailers.
type WholeBody = (Vec<u8>, Fields);

/// A response read whole.
#[derive(Debug, PartialEq, Eq)]
struct Message {
    status: u16,
    version: Version,
    fields: Fields,
    body: Vec<u8>,
    trailers: Fields,
}

/// Runs one input; panics on a difference the module docs do not allow.
pub fn h1_response(data: &[u8]) {
    let Some((&flags, response)) = data.split_first() else {
        return;
    };
    // Heads this large are refused by both, for different reasons (the
    // proxy's limit is 256 KiB, hyper's buffer 400 KiB).
    if response.len() >= MAX_HEAD {
        return;
    }
    let method = if flags & 1 == 1 {
        Method::HEAD
    } else {
        Method::GET
    };
    block_on(async {
        let ours = tokio::time::timeout(HANG, proxy_reads(response, &method))
            .await
            .unwrap_or_else(|_| panic!("the proxy's client hung on {:?}", lossy(response)));
        let theirs = tokio::time::timeout(HANG, hyper_reads(response, &method))
            .await
            .unwrap_or_else(|_| panic!("hyper's client hung on {:?}", lossy(response)));
        compare(ours, theirs, response);
    });
}

/// Whether a LF without a CR before it follows the response head (whose
/// end is the first blank line, CRLF or bare LF).
fn has_bare_lf_after_head(response: &[u8]) -> bool {
    let head_end = (0..response.len()).find_map(|i| {
        if response[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if response[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    });
    let Some(start) = head_end else {
        return false;
    };
    (start..response.len()).any(|i| response[i] == b'\n' && response[i - 1] != b'\r')
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn compare(mut ours: Verdict, mut theirs: Verdict, response: &[u8]) {
    if let Verdict::Read(m) = &theirs {
        if m.status == 101
            || (ours == Verdict::Refused
                && (has_long_chunk_size(response) || has_bare_lf_after_head(response)))
        {
            return;
        }
    }
    for verdict in [&mut ours, &mut theirs] {
        if let Verdict::Read(m) = verdict {
            if m.fields.iter().any(|(n, _)| n == "transfer-encoding") {
                m.fields.retain(|(n, _)| n != "content-length");
            }
        }
    }
    assert_eq!(
        ours,
        theirs,
        "the proxy's client (left) and hyper's (right) read {:?} differently",
        lossy(response)
    );
}

/// Whether a line of `bytes` starts with more than 16 hex digits (a chunk
/// size with leading zeros, say), which httparse refuses and hyper reads.
fn has_long_chunk_size(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n')
        .any(|line| line.iter().take_while(|b| b.is_ascii_hexdigit()).count() > 16)
}

fn fields(headers: &HeaderMap) -> Fields {
    headers
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect()
}

/// Reads a body to its end: `None` if it fails.
async fn read_body<B: Body<Data = Bytes> + Unpin>(mut body: B) -> Option<WholeBody> {
    let (mut data, mut trailers) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        let frame = frame.ok()?;
        match frame.into_data() {
            Ok(d) => data.extend_from_slice(&d),
            Err(f) => {
                if let Ok(t) = f.into_trailers() {
                    trailers.extend(fields(&t));
                }
            }
        }
    }
    Some((data, trailers))
}

fn verdict(parts: http::response::Parts, body: Option<WholeBody>) -> Verdict {
    match body {
        None => Verdict::Refused,
        Some((body, trailers)) => Verdict::Read(Message {
            status: parts.status.as_u16(),
            version: parts.version,
            fields: fields(&parts.headers),
            body,
            trailers,
        }),
    }
}

fn request_head(method: &Method) -> http::request::Parts {
    let (parts, ()) = Request::builder()
        .method(method.clone())
        .uri("/")
        .header(http::header::HOST, "upstream.test")
        .body(())
        .expect("a valid request")
        .into_parts();
    parts
}

/// The upstream side of one exchange: reads the request head, sends
/// `response`, closes its side and waits for the client to close.
async fn upstream<S: AsyncRead + AsyncWrite + Unpin>(mut socket: S, response: Vec<u8>) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => seen.extend_from_slice(&buf[..n]),
        }
    }
    if socket.write_all(&response).await.is_err() || socket.shutdown().await.is_err() {
        return;
    }
    while let Ok(n) = socket.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
}

async fn proxy_reads(response: &[u8], method: &Method) -> Verdict {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback listener");
    let addr = listener.local_addr().expect("its address");
    let response = response.to_vec();
    let server = tokio::spawn(async move {
        if let Ok((socket, _)) = listener.accept().await {
            upstream(socket, response).await;
        }
    });
    let io = TcpStream::connect(addr)
        .await
        .expect("connecting on loopback");
    io.set_nodelay(true).expect("TCP_NODELAY");
    let io = crate::stream::UpstreamStream::Plain(io);
    let verdict = match H1Conn::new(io).send(&request_head(method)).await {
        Err(_) => Verdict::Refused,
        Ok(response) => {
            let (parts, body) = response.into_parts();
            verdict(parts, read_body(body).await)
        }
    };
    server.abort();
    verdict
}

async fn hyper_reads(response: &[u8], method: &Method) -> Verdict {
    let (client, server) = tokio::io::duplex(response.len() + 64 * 1024);
    // Sent only once the request is in (hyper refuses a response that
    // comes before its request).
    let server = tokio::spawn(upstream(server, response.to_vec()));
    let Ok((mut sender, conn)) = hyper::client::conn::http1::Builder::new()
        .max_headers(crate::h1::MAX_HEADERS)
        .handshake::<_, Empty<Bytes>>(TokioIo::new(client))
        .await
    else {
        return Verdict::Refused;
    };
    let conn = tokio::spawn(conn);
    let request = Request::from_parts(request_head(method), Empty::new());
    let verdict = match sender.send_request(request).await {
        Err(_) => Verdict::Refused,
        Ok(response) => {
            let (parts, body) = response.into_parts();
            verdict(parts, read_body(body).await)
        }
    };
    conn.abort();
    server.abort();
    verdict
}
