//! Connections that switch protocols (`Connection: upgrade`, answered
//! `101 Switching Protocols`), WebSockets above all.
//!
//! An HTTP/1.1 request without a body that asks for an upgrade goes to the
//! upstream with its `Connection: upgrade` and `Upgrade` fields (the other
//! hop-by-hop fields are stripped as usual), once, through the route's
//! policies: a breaker counts the upgrade response (a `101` is a success,
//! a 5xx or no answer a failure), a timeout bounds the wait for it. When
//! the upstream answers `101`, the client gets that head and the two
//! connections are joined: bytes are copied both ways until either side
//! closes, or until neither has sent anything for
//! `limits.upgrade_idle_timeout`. The tunnel still holds its client
//! connection's place under `limits.max_connections` (and per peer), and a
//! shutdown cuts it at the drain deadline.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::header::{self, HeaderValue};
use http::{Request, Version};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::conn::{idle_cut, Activity, Watched};
use super::h1::asks_upgrade;
use super::stream::UpstreamStream;

/// A tunnel to run once its connection's HTTP part has ended.
pub(crate) type Tunnel = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the client asked to switch to (its `Upgrade` field), when the
/// request is one the proxy tunnels: HTTP/1.1, `Connection: upgrade`, no
/// body. Takes the client's side of the upgrade out of the request.
pub(crate) fn upgrade_of(req: &mut Request<Incoming>) -> Option<(HeaderValue, OnUpgrade)> {
    use http_body::Body;
    if req.version() != Version::HTTP_11
        || !asks_upgrade(req.headers())
        || !req.body().is_end_stream()
    {
        return None;
    }
    let protocol = req.headers().get(header::UPGRADE)?.clone();
    Some((protocol, hyper::upgrade::on(req)))
}

/// Joins the client's upgraded connection and the upstream's (with the
/// bytes that came after the upstream's `101` head) until either closes or
/// both are quiet for `idle`.
pub(crate) fn tunnel(
    client: OnUpgrade,
    upstream: UpstreamStream,
    early: BytesMut,
    idle: Duration,
) -> Tunnel {
    Box::pin(async move {
        let Ok(client) = client.await else {
            return;
        };
        let mut client = TokioIo::new(client);
        if !early.is_empty() && client.write_all(&early).await.is_err() {
            return;
        }
        let activity = Activity::new();
        let mut client = Watched::new(client, Arc::clone(&activity));
        let mut upstream = Watched::new(upstream, Arc::clone(&activity));
        tokio::select! {
            _ = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {}
            () = idle_cut(&activity, idle) => {}
        }
    })
}
