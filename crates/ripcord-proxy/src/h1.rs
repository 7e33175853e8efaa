//! The proxy's own HTTP/1.1 client connection, for requests without a body
//! (most requests a proxy forwards).
//!
//! The request's task writes the head and parses the response head itself,
//! and the response body reads straight from the socket: no connection task,
//! no channel between the two. Requests with a body go through hyper's
//! client, which reads an early response while the upload is still going.
//!
//! Response framing follows RFC 9112 §6.3: no body for `HEAD`, 1xx, 204 and
//! 304; `Transfer-Encoding` ending in `chunked` (trailers are passed on);
//! otherwise `Content-Length`; otherwise the body runs until the upstream
//! closes. A connection is kept for the next request only when its response
//! was read to its exact end and the upstream did not ask to close.
//!
//! A response without a body by rule (to `HEAD`, or 204, 304) is where a
//! faulty upstream most often sends bytes anyway (the body it thinks it
//! owes), and they may arrive a little after the head. Such a connection is
//! therefore not reused while bytes follow its head in the buffer, nor for
//! [`SETTLE`] after its head (see [`H1Conn::settled`]), and then only when
//! a read of the socket finds nothing waiting.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::AsyncWriteExt;

use super::stream::UpstreamStream;

/// The largest response head accepted.
pub(crate) const MAX_HEAD: usize = 256 * 1024;
/// The most header fields a response head (or a trailer section) may have.
pub(crate) const MAX_HEADERS: usize = 128;
/// The header fields whose positions [`parse_head`] keeps on the stack.
const SPANS: usize = 24;
/// How much room each read of the socket asks for.
const READ_SIZE: usize = 8 * 1024;
/// The longest chunk-size line accepted (size and extensions).
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// How long a connection whose last response had no body by rule (`HEAD`,
/// 204, 304) waits before it may carry another request: stray bytes the
/// upstream sends after such a head would otherwise be read as the next
/// request's response.
pub(crate) const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// What went wrong on an upstream connection.
#[derive(Debug, thiserror::Error)]
pub(crate) enum H1Error {
    /// Reading or writing the socket failed.
    #[error("upstream connection failed")]
    Io(#[from] io::Error),
    /// The upstream closed the connection before a response head.
    #[error("the upstream closed the connection before responding")]
    ClosedBeforeHead,
    /// The response head is not valid HTTP/1.x.
    #[error("malformed response head from the upstream: {0}")]
    Head(httparse::Error),
    /// The response head is larger than [`MAX_HEAD`].
    #[error("the upstream's response head exceeds {MAX_HEAD} bytes")]
    HeadTooLarge,
    /// The response's framing headers contradict each other or are invalid.
    #[error("the upstream's response has an invalid `{0}` header")]
    Framing(&'static str),
    /// The upstream switched protocols to a request that did not ask for
    /// it (`Connection: upgrade`).
    #[error("the upstream answered 101 Switching Protocols to a request that did not ask for it")]
    Upgrade,
    /// The connection closed before the end of the response body.
    #[error("the upstream closed the connection before the end of the response body")]
    BodyCut,
    /// The chunked response body is malformed.
    #[error("malformed chunked response body from the upstream")]
    Chunk,
}

/// A failed exchange: whether the request went out whole and whether
/// nothing of a response had arrived (a request on a reused connection may
/// then be sent again on a new one).
#[derive(Debug)]
pub(crate) struct SendError {
    pub(crate) error: H1Error,
    pub(crate) written: bool,
    pub(crate) nothing_received: bool,
}

/// An HTTP/1.1 connection to an upstream, idle between exchanges.
#[derive(Debug)]
pub(crate) struct H1Conn {
    io: UpstreamStream,
    /// Bytes read and not yet used; empty while the connection is idle.
    buf: BytesMut,
    /// The request head being written (its allocation is reused).
    out: Vec<u8>,
    /// Set when the last response had no body by rule (`HEAD`, 204, 304):
    /// the connection may not be reused before then, and is read once
    /// before it is.
    settle: Option<std::time::Instant>,
}

impl H1Conn {
    /// A connection over `io` (connected, `TCP_NODELAY` set by the caller).
    pub(crate) fn new(io: UpstreamStream) -> Self {
        H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            settle: None,
        }
    }

    /// Whether the connection may carry a request now: always, unless its
    /// last response had no body by rule; then only [`SETTLE`] after that
    /// response's head, and when a read of the socket (not the runtime's
    /// last word on its readiness) finds nothing waiting. A connection that
    /// is not settled yet gives `Some(false)`; one that had stray bytes or
    /// was closed, `None` (drop it).
    pub(crate) fn settled(&mut self) -> Option<bool> {
        let Some(at) = self.settle else {
            return Some(true);
        };
        if std::time::Instant::now() < at {
            return Some(false);
        }
        if self.io.read_would_block() {
            self.settle = None;
            Some(true)
        } else {
            None
        }
    }

    /// Whether the upstream closed this idle connection, or sent on it
    /// unasked. A system call only when the runtime has seen it readable.
    pub(crate) fn is_stale(&mut self) -> bool {
        self.io.is_stale()
    }

    /// Sends a bodiless request with this head (origin-form URI, `Host`
    /// set) and reads the response head; the body reads from the connection.
    pub(crate) async fn send(
        mut self,
        head: &http::request::Parts,
    ) -> Result<http::Response<H1Body>, SendError> {
        encode_head(head, &mut self.out);
        if let Err(e) = self.io.write_all(&self.out).await {
            return Err(SendError {
                error: e.into(),
                written: false,
                nothing_received: true,
            });
        }
        let head_only = head.method == Method::HEAD;
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                let parsed = parse_head(&mut self.buf, head_only).map_err(|error| SendError {
                    error,
                    written: true,
                    nothing_received: false,
                })?;
                match parsed {
                    Some(Parsed::Interim) => continue,
                    Some(Parsed::Switched(parts)) => {
                        if !asks_upgrade(&head.headers) {
                            return Err(SendError {
                                error: H1Error::Upgrade,
                                written: true,
                                nothing_received: false,
                            });
                        }
                        // The connection leaves the pool's world: it is the
                        // upstream half of a tunnel now.
                        let mut response = http::Response::from_parts(
                            parts,
                            H1Body {
                                conn: None,
                                state: State::Done,
                                keep_alive: false,
                            },
                        );
                        response
                            .extensions_mut()
                            .insert(Switched::new(self.io, self.buf));
                        return Ok(response);
                    }
                    Some(Parsed::Final(parts, state, keep_alive)) => {
                        let by_rule = head_only
                            || parts.status == StatusCode::NO_CONTENT
                            || parts.status == StatusCode::NOT_MODIFIED;
                        self.settle = by_rule.then(|| std::time::Instant::now() + SETTLE);
                        let body = H1Body {
                            conn: Some(self),
                            state,
                            keep_alive,
                        };
                        return Ok(http::Response::from_parts(parts, body));
                    }
                    None if self.buf.len() >= MAX_HEAD => {
                        return Err(SendError {
                            error: H1Error::HeadTooLarge,
                            written: true,
                            nothing_received: false,
                        })
                    }
                    None => {}
                }
            }
            let n = poll_fn(|cx| fill(&mut self.io, &mut self.buf, cx))
                .await
                .map_err(|e| SendError {
                    error: e.into(),
                    written: true,
                    nothing_received: !received,
                })?;
            if n == 0 {
                return Err(SendError {
                    error: if received {
                        H1Error::Io(io::ErrorKind::UnexpectedEof.into())
                    } else {
                        H1Error::ClosedBeforeHead
                    },
                    written: true,
                    nothing_received: !received,
                });
            }
        }
    }
}

/// The upstream connection of a response that switched protocols (101),
/// with the bytes that followed its head: carried in the response's
/// extensions to the code that tunnels it (taken once; extensions must be
/// `Clone`).
#[derive(Debug, Clone)]
pub(crate) struct Switched(Arc<Mutex<Option<(UpstreamStream, BytesMut)>>>);

impl Switched {
    fn new(io: UpstreamStream, buf: BytesMut) -> Self {
        Switched(Arc::new(Mutex::new(Some((io, buf)))))
    }

    /// The connection and the bytes read after the head, the first time.
    pub(crate) fn take(&self) -> Option<(UpstreamStream, BytesMut)> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Whether a request head asks to switch protocols (`Connection: upgrade`
/// and an `Upgrade` field).
pub(crate) fn asks_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
        })
}

/// Reads what the socket has into `buf`: the number of bytes, 0 at its end.
fn fill(
    io: &mut UpstreamStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    buf.reserve(READ_SIZE);
    tokio_util::io::poll_read_buf(Pin::new(io), cx, buf)
}

/// Writes the request head: request line, fields, blank line.
fn encode_head(head: &http::request::Parts, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    let target = head.uri.path_and_query().map_or("/", |pq| pq.as_str());
    out.extend_from_slice(target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// A parsed response head.
enum Parsed {
    /// A 1xx head, consumed: the final head follows.
    Interim,
    /// A 101 head, consumed: the connection now speaks another protocol.
    Switched(http::response::Parts),
    /// The final head, how its body is framed, and whether the connection
    /// may carry another request after it.
    Final(http::response::Parts, State, bool),
}

/// Parses a response head at the start of `buf` and consumes it; `None`
/// while it is incomplete.
fn parse_head(buf: &mut BytesMut, head_only: bool) -> Result<Option<Parsed>, H1Error> {
    // Field positions in `buf`, to take them out of one shared `Bytes`
    // (offsets fit in `u32`: a head is at most `MAX_HEAD` long). Most heads
    // have a few fields: those beyond `SPANS` go to the heap.
    let mut spans = [(0u32, 0u32, 0u32, 0u32); SPANS];
    let mut more = Vec::new();
    let (len, code, minor, count) = {
        let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
            &mut response,
            buf,
            &mut fields,
        ) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(e) => return Err(H1Error::Head(e)),
        };
        let base = buf.as_ptr() as usize;
        let count = response.headers.len();
        for (i, field) in response.headers.iter().enumerate() {
            let offset = |part: &[u8]| (part.as_ptr() as usize - base) as u32;
            let (name, value) = (offset(field.name.as_bytes()), offset(field.value));
            let span = (
                name,
                name + field.name.len() as u32,
                value,
                value + field.value.len() as u32,
            );
            match spans.get_mut(i) {
                Some(slot) => *slot = span,
                None => more.push(span),
            }
        }
        (
            len,
            response.code.unwrap_or_default(),
            response.version.unwrap_or_default(),
            count,
        )
    };
    let head = buf.split_to(len).freeze();
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head(httparse::Error::Status))?;
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(Some(Parsed::Interim));
    }
    let mut headers = HeaderMap::with_capacity(count);
    for &(n0, n1, v0, v1) in spans[..count.min(SPANS)].iter().chain(&more) {
        let (n0, n1, v0, v1) = (n0 as usize, n1 as usize, v0 as usize, v1 as usize);
        let name = HeaderName::from_bytes(&head[n0..n1])
            .map_err(|_| H1Error::Head(httparse::Error::HeaderName))?;
        let value = HeaderValue::from_maybe_shared(head.slice(v0..v1))
            .map_err(|_| H1Error::Head(httparse::Error::HeaderValue))?;
        headers.append(name, value);
    }
    let version = if minor == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let mut parts = http::Response::new(()).into_parts().0;
        parts.status = status;
        parts.version = version;
        parts.headers = headers;
        return Ok(Some(Parsed::Switched(parts)));
    }
    let (state, framed) = framing(&mut headers, status, version, head_only)?;
    let keep_alive = framed && keeps_alive(&headers, version);
    let mut parts = http::Response::new(()).into_parts().0;
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(Parsed::Final(parts, state, keep_alive)))
}

/// How the body of a response is framed, and whether its end is known
/// without the connection closing. A `Content-Length` beside a
/// `Transfer-Encoding` is removed (RFC 9112 §6.3): passed on, it would
/// frame the body anew for the client.
fn framing(
    headers: &mut HeaderMap,
    status: StatusCode,
    version: Version,
    head_only: bool,
) -> Result<(State, bool), H1Error> {
    if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
        // A 204 may carry no framing field (RFC 9110 §8.6, RFC 9112 §6.1):
        // one that does probably sends a body after all, so its connection
        // is not reused.
        let announces_body = status == StatusCode::NO_CONTENT
            && (headers.contains_key(header::TRANSFER_ENCODING)
                || headers
                    .get_all(header::CONTENT_LENGTH)
                    .iter()
                    .any(|v| v.as_bytes() != b"0"));
        return Ok((State::Length(0), !announces_body));
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    if codings.peek().is_some() {
        // RFC 9112 §6.1: HTTP/1.0 has no transfer codings; such a message's
        // framing is faulty (it may have passed a hop that did not decode it).
        if version == Version::HTTP_10 {
            return Err(H1Error::Framing("transfer-encoding"));
        }
        let chunked = codings
            .last()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        headers.remove(header::CONTENT_LENGTH);
        return Ok(if chunked {
            (State::Chunked(Chunk::Size), true)
        } else {
            // Another final coding: the body runs to the connection's end.
            (State::UntilClose, false)
        });
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        let text = value
            .to_str()
            .map_err(|_| H1Error::Framing("content-length"))?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(H1Error::Framing("content-length"));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| H1Error::Framing("content-length"))?;
            if length.is_some_and(|l| l != n) {
                return Err(H1Error::Framing("content-length"));
            }
            length = Some(n);
        }
    }
    Ok(match length {
        Some(n) => (State::Length(n), true),
        None => (State::UntilClose, false),
    })
}

/// Whether the upstream lets the connection carry another request.
fn keeps_alive(headers: &HeaderMap, version: Version) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if version == Version::HTTP_11 {
        !has("close")
    } else {
        has("keep-alive")
    }
}

/// Where a response body is.
#[derive(Debug)]
pub(crate) enum State {
    /// This many bytes to go.
    Length(u64),
    /// A chunked body.
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
    /// At its end.
    Done,
}

/// Where a chunked body is.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk: this many bytes to go.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: the trailer section.
    Trailers,
}

/// A response body read from its connection, which it holds until its end.
#[derive(Debug)]
pub(crate) struct H1Body {
    conn: Option<H1Conn>,
    state: State,
    keep_alive: bool,
}

impl H1Body {
    /// The connection, once the body has been read to its exact end and the
    /// connection may carry another request.
    pub(crate) fn take_idle(&mut self) -> Option<H1Conn> {
        let done = matches!(self.state, State::Done | State::Length(0));
        match &self.conn {
            Some(c) if done && self.keep_alive && c.buf.is_empty() => self.conn.take(),
            _ => None,
        }
    }

    fn fail(&mut self, e: H1Error) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        self.state = State::Done;
        self.conn = None;
        Poll::Ready(Some(Err(e)))
    }
}

impl Body for H1Body {
    type Data = Bytes;
    type Error = H1Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H1Error>>> {
        let this = self.get_mut();
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            // Decode from what is buffered; `None` asks for more bytes.
            let step: Option<Option<Frame<Bytes>>> = match &mut this.state {
                State::Done | State::Length(0) => {
                    this.state = State::Done;
                    return Poll::Ready(None);
                }
                State::Length(left) => (!conn.buf.is_empty()).then(|| {
                    let n = (*left).min(conn.buf.len() as u64);
                    *left -= n;
                    Some(Frame::data(conn.buf.split_to(n as usize).freeze()))
                }),
                State::UntilClose => {
                    (!conn.buf.is_empty()).then(|| Some(Frame::data(conn.buf.split().freeze())))
                }
                State::Chunked(chunk) => match decode_chunk(chunk, &mut conn.buf) {
                    Ok(Decoded::Frame(f)) => Some(Some(f)),
                    Ok(Decoded::Last(f)) => {
                        this.state = State::Done;
                        Some(Some(f))
                    }
                    Ok(Decoded::Progress) => continue,
                    Ok(Decoded::End) => {
                        this.state = State::Done;
                        Some(None)
                    }
                    Ok(Decoded::NeedMore) => None,
                    Err(e) => return this.fail(e),
                },
            };
            if let Some(frame) = step {
                return Poll::Ready(frame.map(Ok));
            }
            let n = match ready!(fill(&mut conn.io, &mut conn.buf, cx)) {
                Ok(n) => n,
                Err(e) => return this.fail(e.into()),
            };
            if n == 0 {
                if let State::UntilClose = this.state {
                    this.state = State::Done;
                    this.conn = None;
                    return Poll::Ready(None);
                }
                return this.fail(H1Error::BodyCut);
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done | State::Length(0))
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Length(n) => SizeHint::with_exact(n),
            State::Done => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// What one step of chunked decoding gave.
enum Decoded {
    /// Data.
    Frame(Frame<Bytes>),
    /// The trailers, which end the body.
    Last(Frame<Bytes>),
    /// A line consumed: go on.
    Progress,
    /// The body's end (no trailers, or after them).
    End,
    /// More bytes are needed.
    NeedMore,
}

/// One step of decoding a chunked body from `buf`.
fn decode_chunk(chunk: &mut Chunk, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
    match chunk {
        // httparse reads a size line without digits (`\r\n`, `;x\r\n`) as 0,
        // which would end the body early: RFC 9112 §7.1 asks for 1*HEXDIG.
        Chunk::Size if buf.first().is_some_and(|b| !b.is_ascii_hexdigit()) => Err(H1Error::Chunk),
        Chunk::Size => match httparse::parse_chunk_size(buf) {
            // httparse also takes a bare LF, even inside an extension: hyper
            // and the proxy ask for CRLF (RFC 9112 §2.2 leaves the choice).
            Ok(httparse::Status::Complete((len, _))) if !crlf_lines(&buf[..len]) => {
                Err(H1Error::Chunk)
            }
            Ok(httparse::Status::Complete((len, size))) => {
                buf.advance(len);
                *chunk = if size == 0 {
                    Chunk::Trailers
                } else {
                    Chunk::Data(size)
                };
                Ok(Decoded::Progress)
            }
            Ok(httparse::Status::Partial) if buf.len() > MAX_CHUNK_LINE => Err(H1Error::Chunk),
            Ok(httparse::Status::Partial) => Ok(Decoded::NeedMore),
            Err(_) => Err(H1Error::Chunk),
        },
        Chunk::Data(left) => {
            if buf.is_empty() {
                return Ok(Decoded::NeedMore);
            }
            let n = (*left).min(buf.len() as u64);
            *left -= n;
            if *left == 0 {
                *chunk = Chunk::DataEnd;
            }
            Ok(Decoded::Frame(Frame::data(
                buf.split_to(n as usize).freeze(),
            )))
        }
        Chunk::DataEnd => {
            if buf.len() < 2 {
                return Ok(Decoded::NeedMore);
            }
            if &buf[..2] != b"\r\n" {
                return Err(H1Error::Chunk);
            }
            buf.advance(2);
            *chunk = Chunk::Size;
            Ok(Decoded::Progress)
        }
        Chunk::Trailers => {
            let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
            let (len, trailers) = match httparse::parse_headers(buf, &mut fields) {
                Ok(httparse::Status::Complete((len, _))) if !crlf_lines(&buf[..len]) => {
                    return Err(H1Error::Chunk)
                }
                Ok(httparse::Status::Complete((len, fields))) => {
                    let mut map = HeaderMap::new();
                    for f in fields {
                        let name = HeaderName::from_bytes(f.name.as_bytes());
                        let value = HeaderValue::from_bytes(f.value);
                        match (name, value) {
                            (Ok(n), Ok(v)) => {
                                map.append(n, v);
                            }
                            _ => return Err(H1Error::Chunk),
                        }
                    }
                    (len, map)
                }
                Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                    return Err(H1Error::Chunk)
                }
                Ok(httparse::Status::Partial) => return Ok(Decoded::NeedMore),
                Err(_) => return Err(H1Error::Chunk),
            };
            buf.advance(len);
            if trailers.is_empty() {
                return Ok(Decoded::End);
            }
            Ok(Decoded::Last(Frame::trailers(trailers)))
        }
    }
}

/// Whether every line of `lines` ends with CRLF (no bare LF).
fn crlf_lines(lines: &[u8]) -> bool {
    lines
        .iter()
        .enumerate()
        .all(|(i, &b)| b != b'\n' || (i > 0 && lines[i - 1] == b'\r'))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    /// An upstream for one connection: reads a request head, writes
    /// `parts` one after the other (a short pause between them, so they
    /// arrive apart), then closes if `close`, else waits for the peer to.
    /// Gives back the request head it read.
    async fn upstream(
        parts: Vec<&'static [u8]>,
        close: bool,
    ) -> (UpstreamStream, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a listener");
        let addr = listener.local_addr().expect("its address");
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("a connection");
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return seen,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            for part in parts {
                s.write_all(part).await.expect("writing a part");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !close {
                let _ = s.read(&mut buf).await;
            }
            seen
        });
        let io = TcpStream::connect(addr).await.expect("connecting");
        (UpstreamStream::Plain(io), task)
    }

    fn head(method: Method, target: &str) -> http::request::Parts {
        let mut req = http::Request::builder()
            .method(method)
            .uri(target)
            .header(header::HOST, "upstream.test")
            .header("x-forwarded-for", "10.0.0.1")
            .body(())
            .expect("a request");
        req.headers_mut()
            .append("accept", HeaderValue::from_static("text/plain"));
        req.into_parts().0
    }

    async fn exchange(
        parts: Vec<&'static [u8]>,
        close: bool,
        method: Method,
    ) -> Result<http::Response<H1Body>, SendError> {
        let (io, _task) = upstream(parts, close).await;
        H1Conn::new(io).send(&head(method, "/")).await
    }

    /// Reads a body to its end: its data, its trailers, and whether its
    /// connection could take another request.
    async fn read_all(mut body: H1Body) -> Result<(Vec<u8>, Option<HeaderMap>, bool), H1Error> {
        let (mut data, mut trailers) = (Vec::new(), None);
        while let Some(frame) = body.frame().await {
            let frame = frame?;
            match frame.into_data() {
                Ok(d) => data.extend_from_slice(&d),
                Err(f) => trailers = f.into_trailers().ok(),
            }
        }
        assert!(body.is_end_stream());
        Ok((data, trailers, body.take_idle().is_some()))
    }

    #[tokio::test]
    async fn the_request_head_is_written_as_given() {
        let (io, task) = upstream(vec![b"HTTP/1.1 204 No Content\r\n\r\n"], true).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/a/b?c=1&d"))
            .await
            .expect("a response");
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        let seen = task.await.expect("the upstream");
        assert_eq!(
            String::from_utf8(seen).expect("text"),
            "GET /a/b?c=1&d HTTP/1.1\r\nhost: upstream.test\r\nx-forwarded-for: 10.0.0.1\r\n\
             accept: text/plain\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_content_length_body_arrives_in_pieces_and_frees_the_connection() {
        let response = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-A: 1\r\nX-A: 2\r\n\r\nhel",
                b"lo world",
            ],
            false,
            Method::GET,
        )
        .await
        .expect("a response");
        assert_eq!(response.version(), Version::HTTP_11);
        let values: Vec<_> = response.headers().get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"]);
        assert_eq!(response.body().size_hint().exact(), Some(11));
        let (data, trailers, idle) = read_all(response.into_body()).await.expect("the body");
        assert_eq!(data, b"hello world");
        assert!(trailers.is_none());
        assert!(idle, "read to its end on a keep-alive connection");
    }

    #[tokio::test]
    async fn a_head_with_many_fields_keeps_them_all_in_order() {
        let mut bytes = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..3 * SPANS {
            bytes.extend_from_slice(format!("x-f{i}: v{i}\r\n").as_bytes());
        }
        bytes.extend_from_slice(b"content-length: 0\r\n\r\n");
        let response = exchange(vec![Vec::leak(bytes)], false, Method::GET)
            .await
            .expect("a response");
        assert_eq!(response.headers().len(), 3 * SPANS + 1);
        let fields: Vec<(String, String)> = response
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().expect("text").to_string()))
            .collect();
        for (i, (name, value)) in fields.iter().take(3 * SPANS).enumerate() {
            assert_eq!(
                (name.as_str(), value.as_str()),
                (format!("x-f{i}").as_str(), format!("v{i}").as_str())
            );
        }
        assert_eq!(fields[3 * SPANS].0, "content-length");
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_with_its_extensions_and_trailers() {
        let response = exchange(
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n\
                  5;name=val\r\nhel",
                b"lo\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n",
                b"\r\n",
            ],
            false,
            Method::GET,
        )
        .await
        .expect("a response");
        // The chunked framing wins; the length would mislead the client.
        assert!(response.headers().get(header::CONTENT_LENGTH).is_none());
        let (data, trailers, idle) = read_all(response.into_body()).await.expect("the body");
        assert_eq!(data, b"hello world");
        let trailers = trailers.expect("trailers");
        assert_eq!(trailers["x-sum"], "42");
        assert!(idle);
    }

    #[tokio::test]
    async fn a_malformed_chunk_is_an_error() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            // A size line without digits is not a last chunk.
            b"\r\n\r\nhello\r\n0\r\n\r\n",
            b";x\r\n\r\n",
            // Bare LFs: in a size line, in an extension, ending the trailers.
            b"5\nhello\r\n0\r\n\r\n",
            b"5;a\nb\r\nhello\r\n0\r\n\r\n",
            b"5\r\nhello\r\n0\r\n\n",
            b"5\r\nhello\r\n0\r\nx-sum: 1\n\r\n",
        ] {
            let mut whole = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            whole.extend_from_slice(bad);
            let whole: &'static [u8] = Vec::leak(whole);
            let response = exchange(vec![whole], false, Method::GET)
                .await
                .expect("a response head");
            let err = read_all(response.into_body())
                .await
                .expect_err("a bad chunk");
            assert!(matches!(err, H1Error::Chunk), "{err}");
        }
    }

    #[tokio::test]
    async fn interim_responses_are_skipped() {
        let response = exchange(
            vec![
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n",
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            ],
            false,
            Method::GET,
        )
        .await
        .expect("a response");
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get("link").is_none());
        let (data, _, idle) = read_all(response.into_body()).await.expect("the body");
        assert_eq!(data, b"ok");
        assert!(idle);
    }

    #[tokio::test]
    async fn head_204_and_304_responses_have_no_body() {
        let cases: [(&'static [u8], Method); 3] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n",
                Method::HEAD,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", Method::GET),
            (
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
                Method::GET,
            ),
        ];
        for (bytes, method) in cases {
            let response = exchange(vec![bytes], false, method)
                .await
                .expect("a response");
            assert!(response.body().is_end_stream());
            let mut body = response.into_body();
            assert!(body.take_idle().is_some(), "reusable at once");
        }
    }

    #[tokio::test]
    async fn a_204_announcing_a_body_is_not_reused() {
        for bytes in [
            &b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n"[..],
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            let bytes: &'static [u8] = Vec::leak(bytes.to_vec());
            let response = exchange(vec![bytes], false, Method::GET)
                .await
                .expect("a response");
            assert!(response.body().is_end_stream());
            assert!(response.into_body().take_idle().is_none());
        }
    }

    #[tokio::test]
    async fn a_connection_after_a_bodiless_answer_settles_before_reuse() {
        // Stray bytes after a 204 head, a little later.
        let (io, _task) = upstream(vec![b"HTTP/1.1 204 No Content\r\n\r\n", b"STRAY"], false).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/"))
            .await
            .expect("a response");
        let mut conn = response.into_body().take_idle().expect("idle");
        assert_eq!(conn.settled(), Some(false), "not at once");
        tokio::time::sleep(SETTLE + Duration::from_millis(10)).await;
        assert_eq!(conn.settled(), None, "the stray bytes are found");

        // A clean 304: reusable once settled.
        let (io, _task) = upstream(vec![b"HTTP/1.1 304 Not Modified\r\n\r\n"], false).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/"))
            .await
            .expect("a response");
        let mut conn = response.into_body().take_idle().expect("idle");
        tokio::time::sleep(SETTLE + Duration::from_millis(10)).await;
        assert_eq!(conn.settled(), Some(true));
        assert_eq!(conn.settled(), Some(true), "settled for good");
        // A response with a body never waits.
        let (io, _task) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/"))
            .await
            .expect("a response");
        let mut conn = response.into_body().take_idle().expect("idle");
        assert_eq!(conn.settled(), Some(true));
    }

    #[tokio::test]
    async fn a_body_without_length_runs_until_close_and_is_not_reused() {
        let response = exchange(
            vec![b"HTTP/1.1 200 OK\r\n\r\nall ", b"of it"],
            true,
            Method::GET,
        )
        .await
        .expect("a response");
        assert_eq!(response.body().size_hint().exact(), None);
        let (data, _, idle) = read_all(response.into_body()).await.expect("the body");
        assert_eq!(data, b"all of it");
        assert!(!idle);
    }

    #[tokio::test]
    async fn connections_the_upstream_closes_are_not_reused() {
        let cases: [&'static [u8]; 3] = [
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
            // More than announced: the next response would start wrong.
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA",
        ];
        for bytes in cases {
            let response = exchange(vec![bytes], false, Method::GET)
                .await
                .expect("a response");
            let (data, _, idle) = read_all(response.into_body()).await.expect("the body");
            assert_eq!(data, b"ok");
            assert!(!idle, "{}", String::from_utf8_lossy(bytes));
        }
        let response = exchange(
            vec![b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nok"],
            false,
            Method::GET,
        )
        .await
        .expect("a response");
        let (_, _, idle) = read_all(response.into_body()).await.expect("the body");
        assert!(idle, "HTTP/1.0 with keep-alive");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error() {
        for bytes in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"[..],
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
        ] {
            let bytes: &'static [u8] = Vec::leak(bytes.to_vec());
            let response = exchange(vec![bytes], true, Method::GET)
                .await
                .expect("a head");
            let err = read_all(response.into_body()).await.expect_err("cut short");
            assert!(matches!(err, H1Error::BodyCut), "{err}");
        }
    }

    #[tokio::test]
    async fn bad_heads_are_errors_after_a_response_began() {
        type Check = fn(&H1Error) -> bool;
        let cases: [(&'static [u8], Check); 5] = [
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                |e| matches!(e, H1Error::Framing("content-length")),
            ),
            (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", |e| {
                matches!(e, H1Error::Framing("content-length"))
            }),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
                |e| matches!(e, H1Error::Upgrade),
            ),
            (b"NOT HTTP\r\n\r\n", |e| matches!(e, H1Error::Head(_))),
            (
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                |e| matches!(e, H1Error::Framing("transfer-encoding")),
            ),
        ];
        for (bytes, expected) in cases {
            let err = exchange(vec![bytes], true, Method::GET)
                .await
                .expect_err("a bad head");
            assert!(
                expected(&err.error),
                "{}: {}",
                String::from_utf8_lossy(bytes),
                err.error
            );
            assert!(!err.nothing_received);
        }
    }

    #[tokio::test]
    async fn a_head_over_the_limit_is_refused() {
        let mut big = b"HTTP/1.1 200 OK\r\nx-big: ".to_vec();
        big.resize(MAX_HEAD + 10, b'a');
        let err = exchange(vec![Vec::leak(big)], true, Method::GET)
            .await
            .expect_err("too large");
        assert!(matches!(err.error, H1Error::HeadTooLarge), "{}", err.error);
    }

    #[tokio::test]
    async fn a_close_before_any_response_is_told_apart() {
        let err = exchange(vec![], true, Method::GET)
            .await
            .expect_err("no response");
        assert!(
            matches!(err.error, H1Error::ClosedBeforeHead),
            "{}",
            err.error
        );
        assert!(err.written && err.nothing_received);
        let err = exchange(vec![b"HTTP/1.1 200"], true, Method::GET)
            .await
            .expect_err("half a head");
        assert!(!err.nothing_received);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_stale() {
        let (io, task) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], true).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/"))
            .await
            .expect("a response");
        let mut conn = response.into_body().take_idle().expect("idle");
        task.await.expect("the upstream");
        // Let the runtime see the close.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(conn.is_stale());

        let (io, _task) =
            upstream(vec![b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"], false).await;
        let response = H1Conn::new(io)
            .send(&head(Method::GET, "/"))
            .await
            .expect("a response");
        let mut conn = response.into_body().take_idle().expect("idle");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!conn.is_stale(), "an open idle connection");
    }
}
