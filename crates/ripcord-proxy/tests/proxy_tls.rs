//! TLS through the proxy with certificates made in each test (rcgen): a TLS
//! listener (ALPN picking h2 or HTTP/1.1), client certificates (mTLS)
//! required, upstreams over TLS (SNI, a CA bundle, a client certificate),
//! the listener's certificate read again on reload, and `ripcord check`
//! naming unusable files.

mod proxy_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use proxy_support::{base, client, get, start, unique, Upstream};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use ripcord_proxy::config::ProxyConfig;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority made for one test.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    pem: String,
}

/// A certificate and its key, as PEM.
struct Leaf {
    cert: String,
    key: String,
    der: CertificateDer<'static>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names or IP addresses), for a
    /// server or a client.
    fn leaf(&self, names: &[&str], client: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    fn roots(&self) -> rustls::RootCertStore {
        let mut roots = rustls::RootCertStore::empty();
        let der = rustls::pki_types::pem::PemObject::from_pem_slice(self.pem.as_bytes()).unwrap();
        roots.add(der).unwrap();
        roots
    }
}

/// A directory for one test's files, removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        let dir = std::env::temp_dir().join(format!("ripcord-tls-{}", unique()));
        std::fs::create_dir_all(&dir).unwrap();
        Dir(dir)
    }

    /// Writes `text` to the file `name` and gives its path as a TOML string.
    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        toml_path(&path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn toml_path(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A TLS client trusting `ca`, offering `alpn`, presenting `cert` if given.
fn tls_client(ca: &Ca, alpn: &[&[u8]], cert: Option<&Leaf>) -> tokio_rustls::TlsConnector {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(ca.roots());
    let mut config = match cert {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![leaf.der.clone()],
                rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// A TLS connection to `addr`, the server checked as `name`.
async fn tls_connect(
    connector: &tokio_rustls::TlsConnector,
    addr: SocketAddr,
    name: &str,
) -> std::io::Result<Tls> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from(name.to_string()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), connector.connect(name, tcp))
        .await
        .expect("the handshake ends within 10 s")
}

/// `GET path` over an established TLS connection, as the protocol ALPN
/// picked: the status and body, or the error.
async fn get_over(tls: Tls, path: &str) -> Result<(u16, String), String> {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let req = Request::get(format!("https://localhost{path}"))
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let call = async {
        let response = if h2 {
            let (mut send, conn) =
                hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            send.send_request(req).await.map_err(|e| e.to_string())?
        };
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    };
    tokio::time::timeout(Duration::from_secs(10), call)
        .await
        .expect("an answer or an error within 10 s")
}

/// A proxy configuration: one listener with `listener_tls` (empty for
/// none), one upstream at `upstream` with `upstream_tls`, one route. One
/// worker: one pool of upstream connections, whichever client connection
/// a request comes on.
fn config(listener_tls: &str, upstream: SocketAddr, upstream_tls: &str) -> String {
    format!(
        r#"
[admin]
listen = "127.0.0.1:0"

[limits]
workers = 1

[[listeners]]
listen = "127.0.0.1:0"
{listener_tls}

[upstreams.app]
addresses = ["{upstream}"]
{upstream_tls}

[[routes]]
name = "all"
path_prefix = "/"
upstream = "app"
"#
    )
}

/// `tls = { cert, key }` for `leaf`, its files in `dir`, and `extra` keys.
fn listener_tls(dir: &Dir, leaf: &Leaf, extra: &str) -> String {
    format!(
        "tls = {{ cert = {}, key = {}{extra} }}",
        dir.write("server.pem", &leaf.cert),
        dir.write("server.key", &leaf.key)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_listener_serves_h2_and_http1_as_alpn_picks_and_says_https() {
    let (dir, ca) = (Dir::new(), Ca::new("test CA"));
    let server = ca.leaf(&["localhost", "127.0.0.1"], false);
    let up = Upstream::start().await;
    let proxy = start(&config(&listener_tls(&dir, &server, ""), up.addr, "")).await;
    let addr = proxy.listen_addrs()[0];

    let both = tls_client(&ca, &[b"h2", b"http/1.1"], None);
    let tls = tls_connect(&both, addr, "localhost").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (status, body) = get_over(tls, "/headers").await.unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("x-forwarded-proto: https"), "{body}");

    let h1 = tls_client(&ca, &[b"http/1.1"], None);
    let tls = tls_connect(&h1, addr, "127.0.0.1").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_over(tls, "/").await.unwrap().0, 200);

    // Plain HTTP on the TLS port gets no answer.
    let c = client();
    let plain = tokio::time::timeout(
        Duration::from_secs(10),
        c.request(Request::get(base(&proxy)).body(Full::default()).unwrap()),
    )
    .await
    .expect("plain HTTP ends within 10 s");
    assert!(plain.is_err(), "{plain:?}");
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_silent_in_the_tls_handshake_is_closed_at_the_header_deadline() {
    let dir = Dir::new();
    let ca = Ca::new("listener CA");
    let up = Upstream::start().await;
    let toml = config(
        &listener_tls(&dir, &ca.leaf(&["localhost"], false), ""),
        up.addr,
        "",
    )
    .replacen(
        "workers = 1",
        "workers = 1\nheader_read_timeout = \"1s\"",
        1,
    );
    let proxy = start(&toml).await;
    let addr = proxy.listen_addrs()[0];
    // One sends nothing; one stops after the first bytes of a ClientHello.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let mut partial = TcpStream::connect(addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut partial, &[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    for (what, stream) in [("silent", &mut silent), ("partial", &mut partial)] {
        let mut buf = [0u8; 64];
        // Ten times the deadline: closed (EOF or reset), never left open.
        let read = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(stream, &mut buf),
        )
        .await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "{what}: the connection is still open: {read:?}"
        );
    }
    // The listener still serves a real client.
    let tls = tls_connect(&tls_client(&ca, &[b"http/1.1"], None), addr, "localhost")
        .await
        .unwrap();
    assert_eq!(get_over(tls, "/").await.unwrap().0, 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_refuses_a_client_without_a_certificate_or_with_a_foreign_one() {
    let (dir, ca) = (Dir::new(), Ca::new("test CA"));
    let server = ca.leaf(&["localhost"], false);
    let client_ca = Ca::new("client CA");
    let extra = format!(", client_ca = {}", dir.write("clients.pem", &client_ca.pem));
    let up = Upstream::start().await;
    let proxy = start(&config(&listener_tls(&dir, &server, &extra), up.addr, "")).await;
    let addr = proxy.listen_addrs()[0];
    let alpn: &[&[u8]] = &[b"http/1.1"];

    // TLS 1.3: the client's handshake may end before the server has
    // refused it; the request then fails.
    let anonymous = tls_client(&ca, alpn, None);
    let refused = match tls_connect(&anonymous, addr, "localhost").await {
        Err(e) => Err(e.to_string()),
        Ok(tls) => get_over(tls, "/").await,
    };
    assert!(
        refused.is_err(),
        "served without a certificate: {refused:?}"
    );

    let foreign = Ca::new("someone else").leaf(&["client"], true);
    let stranger = tls_client(&ca, alpn, Some(&foreign));
    let refused = match tls_connect(&stranger, addr, "localhost").await {
        Err(e) => Err(e.to_string()),
        Ok(tls) => get_over(tls, "/").await,
    };
    assert!(
        refused.is_err(),
        "served a foreign certificate: {refused:?}"
    );

    let known = client_ca.leaf(&["client"], true);
    let member = tls_client(&ca, alpn, Some(&known));
    let tls = tls_connect(&member, addr, "localhost").await.unwrap();
    assert_eq!(get_over(tls, "/").await.unwrap().0, 200);
    assert_eq!(up.hits(), 1);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// What a TLS upstream saw.
#[derive(Default)]
struct TlsSeen {
    connections: AtomicUsize,
    sni: Mutex<Vec<Option<String>>>,
}

/// An upstream's TLS acceptor with `leaf`, offering `alpn`, requiring
/// client certificates from `clients` if given.
fn upstream_acceptor(leaf: &Leaf, clients: Option<&Ca>, alpn: &[u8]) -> tokio_rustls::TlsAcceptor {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match clients {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(ca.roots()),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(
            vec![leaf.der.clone()],
            rustls::pki_types::pem::PemObject::from_pem_slice(leaf.key.as_bytes()).unwrap(),
        )
        .unwrap();
    config.alpn_protocols = vec![alpn.to_vec()];
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// A TLS upstream with `leaf`, requiring client certificates from
/// `clients`; answers `secure` to every request.
async fn tls_upstream(leaf: &Leaf, clients: &Ca) -> (SocketAddr, Arc<TlsSeen>) {
    let acceptor = upstream_acceptor(leaf, Some(clients), b"http/1.1");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(TlsSeen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, s) = (acceptor.clone(), Arc::clone(&s));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                s.connections.fetch_add(1, Ordering::SeqCst);
                let sni = tls.get_ref().1.server_name().map(str::to_string);
                s.sni.lock().unwrap().push(sni);
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                        Bytes::from_static(b"secure"),
                    )))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_over_tls_gets_sni_is_checked_against_the_ca_and_sees_the_client_certificate() {
    let dir = Dir::new();
    let (upstream_ca, clients) = (Ca::new("upstream CA"), Ca::new("client CA"));
    let (addr, seen) = tls_upstream(&upstream_ca.leaf(&["upstream.test"], false), &clients).await;
    let ca = dir.write("upstream-ca.pem", &upstream_ca.pem);
    let mine = clients.leaf(&["proxy"], true);
    let (cert, key) = (
        dir.write("proxy.pem", &mine.cert),
        dir.write("proxy.key", &mine.key),
    );
    let full = format!(
        "tls = {{ ca = {ca}, server_name = \"upstream.test\", client_cert = {cert}, client_key = {key} }}"
    );
    let proxy = start(&config("", addr, &full)).await;
    let c = client();
    for _ in 0..3 {
        let r = get(&c, &format!("{}/", base(&proxy))).await;
        assert_eq!((r.status, r.body.as_str()), (200, "secure"));
    }
    // Pooled: one connection for three requests, named by SNI.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(
        *seen.sni.lock().unwrap(),
        vec![Some("upstream.test".to_string())]
    );
    proxy.shutdown(Duration::from_secs(1)).await;

    // Without the client certificate the upstream refuses; trusting
    // another CA, the proxy refuses the upstream; checked against the
    // address (an IP the certificate does not name), likewise.
    let other = dir.write("other-ca.pem", &Ca::new("other").pem);
    for tls in [
        format!("tls = {{ ca = {ca}, server_name = \"upstream.test\" }}"),
        format!("tls = {{ ca = {other}, server_name = \"upstream.test\", client_cert = {cert}, client_key = {key} }}"),
        format!("tls = {{ ca = {ca}, client_cert = {cert}, client_key = {key} }}"),
    ] {
        let proxy = start(&config("", addr, &tls)).await;
        let r = get(&c, &format!("{}/", base(&proxy))).await;
        assert_eq!(r.status, 502, "{tls}: {}", r.body);
        assert_eq!(r.header("x-ripcord-policy"), Some("upstream"));
        proxy.shutdown(Duration::from_secs(1)).await;
    }
}

/// A TLS upstream with `leaf` that offers only `h2` by ALPN and serves
/// HTTP/2; answers each request with its version, scheme and authority, and
/// counts connections.
async fn h2_tls_upstream(leaf: &Leaf) -> (SocketAddr, Arc<TlsSeen>) {
    let acceptor = upstream_acceptor(leaf, None, b"h2");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(TlsSeen::default());
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, s) = (acceptor.clone(), Arc::clone(&s));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
                    return;
                }
                s.connections.fetch_add(1, Ordering::SeqCst);
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let said = format!(
                            "{:?} {} {}",
                            req.version(),
                            req.uri().scheme_str().unwrap_or("-"),
                            req.uri().authority().map_or("-", |a| a.as_str())
                        );
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(said),
                        )))
                    });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_h2_upstream_over_tls_is_reached_by_alpn_h2_on_one_connection() {
    let dir = Dir::new();
    let upstream_ca = Ca::new("upstream CA");
    let (addr, seen) = h2_tls_upstream(&upstream_ca.leaf(&["upstream.test"], false)).await;
    let ca = dir.write("upstream-ca.pem", &upstream_ca.pem);
    let upstream =
        format!("protocol = \"h2c\"\ntls = {{ ca = {ca}, server_name = \"upstream.test\" }}");
    let proxy = start(&config("", addr, &upstream)).await;
    let c = client();
    for _ in 0..3 {
        let r = get(&c, &format!("{}/", base(&proxy))).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r.body.starts_with("HTTP/2.0 https "), "{}", r.body);
    }
    // Multiplexed and kept: one connection for the three requests.
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    proxy.shutdown(Duration::from_secs(1)).await;

    // The same upstream as HTTP/1.1 over TLS: ALPN finds no protocol in
    // common, the handshake fails and the proxy answers 502.
    let plain = format!("tls = {{ ca = {ca}, server_name = \"upstream.test\" }}");
    let proxy = start(&config("", addr, &plain)).await;
    let r = get(&c, &format!("{}/", base(&proxy))).await;
    assert_eq!(r.status, 502, "{}", r.body);
    proxy.shutdown(Duration::from_secs(1)).await;
}

/// The certificate the listener at `addr` presents to a new connection.
async fn presented(connector: &tokio_rustls::TlsConnector, addr: SocketAddr) -> Vec<u8> {
    let tls = tls_connect(connector, addr, "localhost").await.unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_certificate_again_and_a_bad_one_keeps_the_old() {
    let (dir, ca) = (Dir::new(), Ca::new("test CA"));
    let (first, second) = (
        ca.leaf(&["localhost"], false),
        ca.leaf(&["localhost"], false),
    );
    let up = Upstream::start().await;
    let text = config(&listener_tls(&dir, &first, ""), up.addr, "");
    let proxy = start(&text).await;
    let addr = proxy.listen_addrs()[0];
    let connector = tls_client(&ca, &[b"http/1.1"], None);
    assert_eq!(presented(&connector, addr).await, first.der.to_vec());

    // A connection open across the reloads keeps working.
    let tls = tls_connect(&connector, addr, "localhost").await.unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let get_open = |send: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>| {
        send.send_request(
            Request::get("/")
                .header("host", "localhost")
                .body(Empty::new())
                .unwrap(),
        )
    };
    assert_eq!(get_open(&mut open).await.unwrap().status(), 200);

    // The same paths, new files.
    listener_tls(&dir, &second, "");
    let summary = proxy
        .reload(ProxyConfig::parse(&text, "test.toml").unwrap())
        .await
        .unwrap();
    assert_eq!(summary.certificates_reloaded, ["listeners[0]"]);
    assert!(summary.restart_needed.is_empty(), "{summary:?}");
    assert_eq!(presented(&connector, addr).await, second.der.to_vec());
    assert_eq!(get_open(&mut open).await.unwrap().status(), 200);

    // A broken certificate file: the reload is refused, the certificate in
    // force stays. (Written after parsing, as a file may change between
    // `check` and the reload.)
    let config = ProxyConfig::parse(&text, "test.toml").unwrap();
    dir.write("server.pem", "not a certificate\n");
    let err = proxy.reload(config).await.expect_err("refused");
    let chain = error_chain(&err);
    assert!(chain.contains("listeners[0].tls"), "{chain}");
    assert!(chain.contains("server.pem"), "{chain}");
    assert!(chain.contains("no certificate"), "{chain}");
    assert_eq!(presented(&connector, addr).await, second.der.to_vec());
    assert_eq!(get_open(&mut open).await.unwrap().status(), 200);
    proxy.shutdown(Duration::from_secs(1)).await;
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(&format!(": {c}"));
        cause = c.source();
    }
    s
}

#[test]
fn check_names_each_unusable_tls_file_with_its_line() {
    let (dir, ca) = (Dir::new(), Ca::new("test CA"));
    let (server, other) = (ca.leaf(&["localhost"], false), ca.leaf(&["x"], false));
    let cert = dir.write("server.pem", &server.cert);
    let foreign_key = dir.write("other.key", &other.key);
    let garbage = dir.write(
        "garbage.pem",
        "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
    );
    let missing = toml_path(&dir.0.join("missing.pem"));
    let text = format!(
        r#"[[listeners]]
listen = "127.0.0.1:0"
tls = {{ cert = {cert}, key = {foreign_key} }}

[[listeners]]
listen = "127.0.0.1:1"
tls = {{ cert = {missing}, key = {foreign_key}, client_ca = {garbage} }}

[upstreams.app]
addresses = ["127.0.0.1:3000"]
tls = {{ ca = {garbage}, client_cert = {cert} }}

[upstreams.named]
addresses = ["127.0.0.1:3001"]
tls = {{ ca = {cert}, server_name = "not a name" }}

[upstreams.half]
addresses = ["127.0.0.1:3002"]
tls = {{ ca = {cert}, client_cert = {cert} }}

[[routes]]
name = "all"
upstream = "app"
"#
    );
    let file = dir.0.join("ripcord.toml");
    std::fs::write(&file, &text).unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = ripcord_proxy::check(&file, &mut out, &mut err);
    assert_eq!(code, std::process::ExitCode::from(2));
    let err = String::from_utf8(err).unwrap();
    let name = file.display().to_string();
    let line = |needle: &str| {
        err.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no `{needle}` in:\n{err}"))
            .to_string()
    };
    // Each at the line of its key, naming the file and what is wrong.
    let l = line("`listeners[0].tls.key`");
    assert!(l.starts_with(&format!("error: {name}:3:")), "{l}");
    assert!(
        l.contains("other.key") && l.contains("cannot be used with the certificate"),
        "{l}"
    );
    let l = line("`listeners[1].tls");
    assert!(l.starts_with(&format!("error: {name}:7:")), "{l}");
    assert!(
        l.contains("garbage.pem") || l.contains("missing.pem"),
        "{l}"
    );
    let l = line("`upstreams.app.tls");
    assert!(l.starts_with(&format!("error: {name}:11:")), "{l}");
    assert!(
        l.contains("garbage.pem") && l.contains("invalid PEM"),
        "{l}"
    );
    let l = line("`upstreams.named.tls.server_name`");
    assert!(l.starts_with(&format!("error: {name}:15:")), "{l}");
    assert!(l.contains("expected a DNS name"), "{l}");

    // A missing file is named with the reason.
    let text = format!(
        "[[listeners]]\nlisten = \"127.0.0.1:0\"\ntls = {{ cert = {missing}, key = {foreign_key} }}\n\
         [upstreams.app]\naddresses = [\"127.0.0.1:3000\"]\n[[routes]]\nname = \"all\"\nupstream = \"app\"\n"
    );
    let e = ProxyConfig::parse(&text, "t.toml")
        .expect_err("a missing file")
        .to_string();
    assert!(e.contains("t.toml:3:"), "{e}");
    assert!(e.contains("`listeners[0].tls.cert`"), "{e}");
    assert!(
        e.contains("missing.pem: cannot read the certificate file"),
        "{e}"
    );
    // A client certificate needs its key.
    let l = line("`upstreams.half.tls.client_key`");
    assert!(l.starts_with(&format!("error: {name}:19:")), "{l}");
    assert!(
        l.contains("`client_key` is needed with `client_cert`"),
        "{l}"
    );
}
