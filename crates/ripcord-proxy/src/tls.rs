//! TLS with rustls and its `ring` provider (feature `tls`): the listeners'
//! certificates (swapped on reload without touching open connections),
//! client-certificate verification, and the upstreams' client side.
//!
//! | key | read from | checked |
//! |---|---|---|
//! | `listeners[i].tls.cert` | PEM certificates, the listener's first | parsed; matches `key` |
//! | `listeners[i].tls.key` | one PEM private key (PKCS#8, PKCS#1, SEC1) | matches `cert` |
//! | `listeners[i].tls.client_ca` | PEM certificates | each a valid trust anchor |
//! | `upstreams.NAME.tls.ca` | PEM certificates (else the system's roots) | each a valid trust anchor |
//! | `upstreams.NAME.tls.client_cert`, `client_key` | as `cert` and `key` | as `cert` and `key` |
//!
//! `ripcord check` builds the same rustls configurations the proxy runs on,
//! so a file that would not work is a check error naming it.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use super::config::{ClientAuth, ListenerTlsConfig, UpstreamTlsConfig};

/// The protocols a TLS listener offers by ALPN, preferred first.
pub const LISTENER_ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// The protocol the HTTP/1.1 upstream client offers by ALPN.
pub const H1_ALPN: &[u8] = b"http/1.1";

/// The protocol the HTTP/2 upstream client (`protocol = "h2c"` or `auto`)
/// offers by ALPN.
pub const H2_ALPN: &[u8] = b"h2";

/// A TLS setting that cannot be used. [`key`](TlsError::key) names the key
/// of the `tls` table it comes from.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{}: cannot read the {what}", file.display())]
    Read {
        /// The key that names the file.
        key: &'static str,
        /// What the file should hold.
        what: &'static str,
        /// The file.
        file: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file does not hold what it should.
    #[error("{}: {problem}", file.display())]
    Content {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        file: PathBuf,
        /// What is wrong and what is expected.
        problem: String,
    },
    /// rustls refused a certificate, a key or the pair.
    #[error("{}: {what}", file.display())]
    Refused {
        /// The key that names the file.
        key: &'static str,
        /// The file.
        file: PathBuf,
        /// What was refused.
        what: &'static str,
        /// Why.
        #[source]
        source: rustls::Error,
    },
    /// A client certificate without its key, or a key without its
    /// certificate.
    #[error("`{key}` is needed with `{with}`")]
    Missing {
        /// The key that is missing.
        key: &'static str,
        /// The key set without it.
        with: &'static str,
    },
    /// The name to check the upstream's certificate against is not a DNS
    /// name or an IP address.
    #[error("{name:?}: expected a DNS name such as `api.internal` or an IP address")]
    ServerName {
        /// The key it comes from (`server_name`, or empty for an address's
        /// host).
        key: &'static str,
        /// The name.
        name: String,
    },
    /// The system has no root certificates to check upstreams against.
    #[error("no root certificates found on this system; set `ca` to a CA bundle")]
    NoSystemRoots,
    /// The client-certificate verifier could not be built.
    #[error("{}: cannot verify client certificates against it", file.display())]
    Verifier {
        /// The file of the authorities.
        file: PathBuf,
        /// Why.
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
}

impl TlsError {
    /// The key of the `tls` table the problem is at (empty for the table
    /// itself).
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::Read { key, .. }
            | TlsError::Content { key, .. }
            | TlsError::Refused { key, .. }
            | TlsError::Missing { key, .. }
            | TlsError::ServerName { key, .. } => key,
            TlsError::NoSystemRoots => "ca",
            TlsError::Verifier { .. } => "client_ca",
        }
    }
}

/// The crypto provider every TLS configuration of the proxy uses.
fn provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    Arc::clone(PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider())))
}

fn read(path: &Path, key: &'static str, what: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        key,
        what,
        file: path.to_path_buf(),
        source,
    })
}

/// The PEM certificates in the file at `path`, at least one.
fn certificates(path: &Path, key: &'static str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read(path, key, "certificate file")?;
    let content = |problem: String| TlsError::Content {
        key,
        file: path.to_path_buf(),
        problem,
    };
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| content(format!("invalid PEM ({e})")))?;
    if certs.is_empty() {
        return Err(content(
            "no certificate in it; expected PEM `-----BEGIN CERTIFICATE-----` blocks".into(),
        ));
    }
    Ok(certs)
}

/// The PEM private key in the file at `path`.
fn private_key(path: &Path, key: &'static str) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read(path, key, "private key file")?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| TlsError::Content {
        key,
        file: path.to_path_buf(),
        problem: match e {
            rustls::pki_types::pem::Error::NoItemsFound => {
                "no private key in it; expected a PEM `-----BEGIN PRIVATE KEY-----` (or RSA/EC) block"
                    .into()
            }
            e => format!("invalid PEM ({e})"),
        },
    })
}

/// The trust anchors in the PEM file at `path`.
fn authorities(path: &Path, key: &'static str) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(path, key)? {
        roots.add(cert).map_err(|source| TlsError::Refused {
            key,
            file: path.to_path_buf(),
            what: "a certificate in it is not a valid certificate authority",
            source,
        })?;
    }
    Ok(roots)
}

/// The system's root certificates, read once.
fn system_roots() -> Result<Arc<RootCertStore>, TlsError> {
    static ROOTS: OnceLock<Option<Arc<RootCertStore>>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let (added, _) =
                roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            (added > 0).then(|| Arc::new(roots))
        })
        .clone()
        .ok_or(TlsError::NoSystemRoots)
}

/// The rustls configuration of a listener with these settings.
pub(crate) fn server_config(c: &ListenerTlsConfig) -> Result<Arc<ServerConfig>, TlsError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused {
            key: "cert",
            file: c.cert.clone(),
            what: "no protocol version to offer",
            source,
        })?;
    let builder = match &c.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let roots = authorities(path, "client_ca")?;
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            if c.client_auth == ClientAuth::Optional {
                verifier = verifier.allow_unauthenticated();
            }
            let verifier = verifier.build().map_err(|source| TlsError::Verifier {
                file: path.clone(),
                source,
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let certs = certificates(&c.cert, "cert")?;
    let key = private_key(&c.key, "key")?;
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|source| TlsError::Refused {
            key: "key",
            file: c.key.clone(),
            what: "this key cannot be used with the certificate `cert` names",
            source,
        })?;
    config.alpn_protocols = LISTENER_ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The rustls configuration of an upstream's connections with these
/// settings, offering `alpn` (preferred first).
pub(crate) fn client_config(
    c: &UpstreamTlsConfig,
    alpn: &[&[u8]],
) -> Result<Arc<ClientConfig>, TlsError> {
    let roots = match &c.ca {
        Some(path) => Arc::new(authorities(path, "ca")?),
        None => system_roots()?,
    };
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Refused {
            key: "ca",
            file: c.ca.clone().unwrap_or_default(),
            what: "no protocol version to offer",
            source,
        })?
        .with_root_certificates(roots);
    let mut config = match (&c.client_cert, &c.client_key) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                certificates(cert, "client_cert")?,
                private_key(key, "client_key")?,
            )
            .map_err(|source| TlsError::Refused {
                key: "client_key",
                file: key.clone(),
                what: "this key cannot be used with the certificate `client_cert` names",
                source,
            })?,
        (Some(_), None) => {
            return Err(TlsError::Missing {
                key: "client_key",
                with: "client_cert",
            })
        }
        (None, Some(_)) => {
            return Err(TlsError::Missing {
                key: "client_cert",
                with: "client_key",
            })
        }
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name an upstream's certificate is checked against: `server_name`,
/// else the address's host (brackets of an IPv6 address removed).
pub(crate) fn server_name(
    c: &UpstreamTlsConfig,
    host: &str,
) -> Result<ServerName<'static>, TlsError> {
    let (key, name) = match &c.server_name {
        Some(n) => ("server_name", n.as_str()),
        None => ("", host.trim_start_matches('[').trim_end_matches(']')),
    };
    ServerName::try_from(name.to_string()).map_err(|_| TlsError::ServerName {
        key,
        name: name.to_string(),
    })
}

/// A listener's TLS configuration, replaced whole on reload: a connection
/// keeps the configuration it was accepted with.
#[derive(Debug)]
pub(crate) struct ServerTls {
    config: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// The listener's configuration, from its files.
    pub(crate) fn new(c: &ListenerTlsConfig) -> Result<Arc<Self>, TlsError> {
        Ok(Arc::new(ServerTls {
            config: RwLock::new(server_config(c)?),
        }))
    }

    /// Accepts the next connection with the configuration in force.
    pub(crate) async fn accept(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
        let config = Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()));
        tokio_rustls::TlsAcceptor::from(config).accept(tcp).await
    }

    /// Puts `config` in force for the connections accepted from now on.
    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = config;
    }
}

/// What an upstream address's connections need for TLS: the upstream's
/// configuration and the name to check.
#[derive(Debug, Clone)]
pub(crate) struct Connector {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl Connector {
    /// TLS with `config` to a server named `name`.
    pub(crate) fn new(config: Arc<ClientConfig>, name: ServerName<'static>) -> Self {
        Connector { config, name }
    }

    /// The handshake over `tcp`.
    pub(crate) async fn connect(
        &self,
        tcp: TcpStream,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        tokio_rustls::TlsConnector::from(Arc::clone(&self.config))
            .connect(self.name.clone(), tcp)
            .await
    }
}
