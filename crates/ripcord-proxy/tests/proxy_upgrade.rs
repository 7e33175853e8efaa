//! Upgrades through the proxy: a WebSocket echo with real WebSocket peers
//! on both sides (tokio-tungstenite), the breaker counting upgrade
//! responses, and a quiet tunnel cut at `limits.upgrade_idle_timeout`,
//! giving its connection's place back.

mod proxy_support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use proxy_support::{eventually, start};
use ripcord::State;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

/// A WebSocket upstream: greets each connection with `welcome` (sent right
/// after its `101`, so it may share a segment with the head), then echoes
/// every text and binary message. Refuses handshakes with 503 while
/// `refuse` is set.
struct WsUpstream {
    addr: SocketAddr,
    refuse: Arc<AtomicBool>,
    handshakes: Arc<AtomicUsize>,
}

impl WsUpstream {
    async fn start() -> WsUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refuse = Arc::new(AtomicBool::new(false));
        let handshakes = Arc::new(AtomicUsize::new(0));
        let (r, h) = (Arc::clone(&refuse), Arc::clone(&handshakes));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, h) = (Arc::clone(&r), Arc::clone(&h));
                tokio::spawn(async move {
                    // The callback's type is tungstenite's.
                    #[allow(clippy::result_large_err)]
                    let check = move |req: &Request, resp: Response| {
                        h.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(
                            req.headers().get("upgrade").map(|v| v.as_bytes()),
                            Some(&b"websocket"[..])
                        );
                        if r.load(Ordering::SeqCst) {
                            let mut refused = ErrorResponse::new(Some("refused".into()));
                            *refused.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                            return Err(refused);
                        }
                        Ok(resp)
                    };
                    let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, check).await
                    else {
                        return;
                    };
                    if ws.send(Message::text("welcome")).await.is_err() {
                        return;
                    }
                    while let Some(Ok(m)) = ws.next().await {
                        if (m.is_text() || m.is_binary()) && ws.send(m).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        WsUpstream {
            addr,
            refuse,
            handshakes,
        }
    }
}

fn config(up: &WsUpstream, limits: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[limits]
{limits}

[[listeners]]
listen = "127.0.0.1:0"

[upstreams.ws]
addresses = ["{addr}"]

[[routes]]
name = "chat"
path_prefix = "/"
upstream = "ws"
pipeline = {{ circuit_breaker = {{ consecutive_failures = 2, open_for = "60s" }} }}
"#,
        addr = up.addr
    )
}

type Ws = WebSocketStream<TcpStream>;

/// A WebSocket handshake through the proxy at `proxy`.
async fn connect(proxy: SocketAddr) -> Result<Ws, WsError> {
    let tcp = TcpStream::connect(proxy).await.unwrap();
    let (ws, response) = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_tungstenite::client_async(format!("ws://{proxy}/chat"), tcp),
    )
    .await
    .expect("the handshake ends within 10 s")?;
    assert_eq!(response.status(), 101);
    Ok(ws)
}

/// The next message, within 10 s.
async fn next(ws: &mut Ws) -> Message {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("a message within 10 s")
        .expect("the stream is open")
        .expect("a message")
}

/// The status a refused handshake got, and its `x-ripcord-policy`.
fn refused(e: WsError) -> (u16, Option<String>) {
    match e {
        WsError::Http(r) => (
            r.status().as_u16(),
            r.headers()
                .get("x-ripcord-policy")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        ),
        other => panic!("expected an HTTP refusal, got {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_echoes_through_the_proxy_and_its_upgrade_counts_in_the_breaker() {
    let up = WsUpstream::start().await;
    let proxy = start(&config(&up, "")).await;
    let addr = proxy.listen_addrs()[0];

    let mut ws = connect(addr).await.expect("a WebSocket through the proxy");
    // Sent by the upstream right after its 101.
    assert_eq!(next(&mut ws).await, Message::text("welcome"));
    ws.send(Message::text("hello")).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::text("hello"));
    let big: Vec<u8> = (0..256 * 1024).map(|i| (i % 251) as u8).collect();
    ws.send(Message::binary(big.clone())).await.unwrap();
    assert_eq!(next(&mut ws).await, Message::binary(big));
    ws.close(None).await.unwrap();
    drop(ws);

    let breaker = proxy.breaker("chat").unwrap();
    assert_eq!(breaker.stats().calls(), 1, "the 101 counted once");
    assert_eq!(breaker.stats().failures(), 0);

    // Refused upgrades are failures of the breaker; once open, it answers
    // for the upstream.
    up.refuse.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let e = connect(addr).await.expect_err("refused by the upstream");
        assert_eq!(refused(e), (503, None));
    }
    // The verdict is recorded as the proxy ends the refusal's body, which
    // may be just after the client has read its head.
    assert!(
        eventually(Duration::from_secs(10), || breaker.state() == State::Open).await,
        "two refused upgrades open the breaker"
    );
    let seen = up.handshakes.load(Ordering::SeqCst);
    let e = connect(addr).await.expect_err("refused by the breaker");
    assert_eq!(refused(e), (503, Some("circuit_breaker".to_string())));
    assert_eq!(up.handshakes.load(Ordering::SeqCst), seen);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_websocket_is_cut_and_gives_its_connection_place_back() {
    let up = WsUpstream::start().await;
    let proxy = start(&config(
        &up,
        r#"idle_timeout = "1s"
header_read_timeout = "1s"
upgrade_idle_timeout = "2s"
max_connections = 1
max_connections_per_peer = 1"#,
    ))
    .await;
    let addr = proxy.listen_addrs()[0];
    let mut ws = connect(addr).await.expect("a WebSocket through the proxy");
    assert_eq!(next(&mut ws).await, Message::text("welcome"));

    // Talking for 3.2 s, past both the idle and the tunnel deadline: the
    // tunnel stays, and holds the only connection place.
    for i in 0..8 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let text = format!("message {i}");
        ws.send(Message::text(text.clone())).await.unwrap();
        assert_eq!(next(&mut ws).await, Message::text(text));
    }
    assert_eq!(proxy.open_connections(), 1);
    let mut other = TcpStream::connect(addr).await.unwrap();
    let mut buf = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(10), other.read(&mut buf))
        .await
        .expect("the connection past the cap is closed at once");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // Quiet: cut 2 s after the last byte (checked every 0.5 s).
    let ended = tokio::time::timeout(Duration::from_secs(20), ws.next())
        .await
        .expect("the quiet tunnel is cut within 20 s");
    assert!(!matches!(ended, Some(Ok(Message::Text(_)))), "{ended:?}");
    assert!(
        eventually(Duration::from_secs(10), || proxy.open_connections() == 0).await,
        "the tunnel's place is given back"
    );
    let mut again = connect(addr).await.expect("a WebSocket in the freed place");
    assert_eq!(next(&mut again).await, Message::text("welcome"));
    proxy.shutdown(Duration::from_secs(1)).await;
}
