//! The proxy's sockets: a client connection as accepted ([`ClientStream`])
//! and an upstream connection as made ([`UpstreamStream`]), each plain TCP
//! or, with the `tls` feature, TLS over TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Forwards the I/O traits of an enum of streams to its variants.
macro_rules! forward_io {
    ($name:ident { $($variant:ident),* }) => {
        impl AsyncRead for $name {
            fn poll_read(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(s) => Pin::new(s).poll_read(cx, buf),)*
                }
            }
        }

        impl AsyncWrite for $name {
            fn poll_write(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(s) => Pin::new(s).poll_write(cx, buf),)*
                }
            }

            fn poll_write_vectored(
                self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[io::IoSlice<'_>],
            ) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $($name::$variant(s) => Pin::new(s).poll_write_vectored(cx, bufs),)*
                }
            }

            fn is_write_vectored(&self) -> bool {
                match self {
                    $($name::$variant(s) => s.is_write_vectored(),)*
                }
            }

            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(s) => Pin::new(s).poll_flush(cx),)*
                }
            }

            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $($name::$variant(s) => Pin::new(s).poll_shutdown(cx),)*
                }
            }
        }
    };
}

/// A client connection: plain, or TLS once its handshake is done.
#[derive(Debug)]
pub(crate) enum ClientStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (feature `tls`).
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

#[cfg(feature = "tls")]
forward_io!(ClientStream { Plain, Tls });
#[cfg(not(feature = "tls"))]
forward_io!(ClientStream { Plain });

/// A connection to an upstream: plain, or TLS once its handshake is done.
#[derive(Debug)]
pub(crate) enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS (feature `tls`).
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

#[cfg(feature = "tls")]
forward_io!(UpstreamStream { Plain, Tls });
#[cfg(not(feature = "tls"))]
forward_io!(UpstreamStream { Plain });

impl UpstreamStream {
    /// Whether the upstream closed this idle connection, or sent on it
    /// unasked. Plain TCP: a system call only when the runtime has seen
    /// the socket readable. TLS: records are read (a session ticket or a
    /// key update is handled, and is no reason to drop the connection).
    pub(crate) fn is_stale(&mut self) -> bool {
        match self {
            UpstreamStream::Plain(io) => {
                let mut cx = Context::from_waker(Waker::noop());
                match io.poll_read_ready(&mut cx) {
                    Poll::Pending => false,
                    Poll::Ready(Err(_)) => true,
                    Poll::Ready(Ok(())) => !nothing_waiting(io),
                }
            }
            #[cfg(feature = "tls")]
            UpstreamStream::Tls(_) => !self.read_would_block(),
        }
    }

    /// Whether a read now (not the runtime's last word on readiness)
    /// finds nothing waiting and the connection open.
    pub(crate) fn read_would_block(&mut self) -> bool {
        match self {
            UpstreamStream::Plain(io) => nothing_waiting(io),
            #[cfg(feature = "tls")]
            UpstreamStream::Tls(io) => {
                let mut cx = Context::from_waker(Waker::noop());
                let mut probe = [0u8; 1];
                let mut buf = ReadBuf::new(&mut probe);
                Pin::new(io.as_mut())
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            }
        }
    }
}

/// Whether a read of `io` would block (nothing waiting, not closed).
fn nothing_waiting(io: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(io.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}
