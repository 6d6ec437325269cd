//! The server address, TLS trust and the QUIC connection.

use crate::error::{ClientError, Untrusted};
use crate::router::Router;
use quinn::crypto::rustls::QuicClientConfig;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// How long a connection attempt may take: a server that answers at all does so within a
/// round trip or two (QUIC resends a lost first packet after about a second, and again two
/// seconds later); silence past that is nobody listening, or UDP blocked on the way.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The largest UDP payload path MTU discovery looks for: a jumbo frame (9,000-byte MTU, less
/// the IPv6 and UDP headers). Over the internet discovery settles near 1,400; on a LAN with
/// jumbo frames, or to a server on the same machine, an upload then takes a sixth of the
/// packets, and the CPU that each packet costs both ends. Probes that get lost cost nothing
/// but the probe (quinn: "safe ... regardless of the network path's MTU").
const MTU_UPPER_BOUND: u16 = 8952;

/// Bytes the client may have in flight per connection: bounds its memory whatever the file
/// size. One upload runs at most this much per round trip: 16 MiB is 160 MB/s over a 100 ms
/// path, and twice the most a server grows its receive window to by default
/// (`transport.connection_receive_window_max`, 8 MiB).
const SEND_WINDOW: u64 = 16 * 1024 * 1024;

/// Where to connect and whom to trust.
#[derive(Debug, Clone, Default)]
pub struct ClientConfig {
    /// `https://HOST:PORT`, `HOST:PORT` or `HOST` (port 4433).
    pub server: String,
    /// A PEM CA to trust (e.g. the dev CA `certs/ca.pem`); else the system's roots.
    pub ca: Option<PathBuf>,
    /// The token sent with every job whose header has none.
    pub token: Option<String>,
}

/// A parsed server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    /// Host name or IP address (also the TLS server name).
    pub host: String,
    /// UDP port.
    pub port: u16,
}

impl Server {
    /// Parses `https://HOST:PORT`, `HOST:PORT`, `HOST`, with IPv6 hosts in brackets.
    pub fn parse(text: &str) -> Result<Server, ClientError> {
        let bad = || ClientError::BadServer(text.to_owned());
        let rest = match text.split_once("://") {
            Some(("https", rest)) => rest,
            Some(_) => return Err(bad()),
            None => text,
        };
        let rest = rest.trim_end_matches('/');
        if rest.is_empty() || rest.contains('/') {
            return Err(bad());
        }
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(bad)?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(bad)?),
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) if !host.contains(':') => (host, Some(port)),
                Some(_) => return Err(bad()),
                None => (rest, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().map_err(|_| bad())?,
            None => edge_proto::DEFAULT_PORT,
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(Server {
            host: host.to_owned(),
            port,
        })
    }
}

impl std::fmt::Display for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A connection to an edge server; cheap to clone, jobs run concurrently on it.
#[derive(Debug, Clone)]
pub struct Client {
    pub(crate) transport: Transport,
    pub(crate) token: Option<String>,
}

/// What a [`Client`] talks over.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// `edge/1` over QUIC.
    Quic {
        connection: quinn::Connection,
        router: Arc<Router>,
    },
    /// HTTP/2 over TCP + TLS, on the same port.
    Tcp(crate::tcp::TcpClient),
}

impl Client {
    /// Connects over QUIC, verifying the server's certificate; when UDP gets no answer
    /// (nobody listening, or UDP blocked on the way), over TCP (HTTP/2) on the same port
    /// instead. [`Client::transport`] says which.
    pub async fn connect(config: &ClientConfig) -> Result<Client, ClientError> {
        match open(config, edge_proto::ALPN_EDGE).await {
            Ok((connection, _)) => {
                let router = Router::start(connection.clone());
                Ok(Client {
                    transport: Transport::Quic { connection, router },
                    token: config.token.clone(),
                })
            }
            Err(quic @ ClientError::Unreachable { .. }) => {
                // Only when TCP answers is it the way: else the QUIC error says more.
                Client::connect_tcp(config).await.map_err(|_| quic)
            }
            Err(e) => Err(e),
        }
    }

    /// Connects over TCP + TLS (HTTP/2) only, on the server's port.
    pub async fn connect_tcp(config: &ClientConfig) -> Result<Client, ClientError> {
        Ok(Client {
            transport: Transport::Tcp(crate::tcp::connect(config).await?),
            token: config.token.clone(),
        })
    }

    /// What the client talks over, for people: `QUIC` or `TCP (HTTP/2)`.
    pub fn transport(&self) -> &'static str {
        match self.transport {
            Transport::Quic { .. } => "QUIC",
            Transport::Tcp(_) => "TCP (HTTP/2)",
        }
    }

    /// Closes the connection (code 0) once the server has been told; see [`close`].
    pub async fn close(self) {
        if let Transport::Quic { connection, .. } = &self.transport {
            close(connection).await;
        }
    }
}

/// How long [`close`] waits at most for its CONNECTION_CLOSE to leave.
const CLOSE_SENT_WITHIN: Duration = Duration::from_millis(200);

/// Closes `connection` with code 0 and returns once its CONNECTION_CLOSE has been sent.
///
/// It does not wait out the draining period (three probe timeouts, 80-90 ms on loopback):
/// that exists to answer the peer's late packets, and a one-shot command that has all its
/// answers has nothing left to hear, so it would only make every command cost 100 ms more than
/// curl's request. If the close cannot be sent (a dead path), the server times the connection
/// out as it would anyway.
pub(crate) async fn close(connection: &quinn::Connection) {
    // A closed connection sends nothing but its close, so the first datagram counted after
    // this one is the close. (quinn counts no CONNECTION_CLOSE frames; an ACK sent between this
    // line and the next would end the wait early, leaving the server to time out the
    // connection: nothing is lost, the answers are all in.)
    let before = connection.stats().udp_tx.datagrams;
    connection.close(
        quinn::VarInt::from_u32(edge_proto::AppCode::NoError.value()),
        b"done",
    );
    let sent = async {
        while connection.stats().udp_tx.datagrams == before {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    };
    if tokio::time::timeout(CLOSE_SENT_WITHIN, sent).await.is_err() {
        tracing::debug!("the connection's close was not sent in time");
    }
}

/// Opens a QUIC connection speaking `alpn` to the configured server.
pub(crate) async fn open(
    config: &ClientConfig,
    alpn: &[u8],
) -> Result<(quinn::Connection, Server), ClientError> {
    let server = Server::parse(&config.server)?;
    let addr = resolve(&server).await?;
    let (crypto, refusal) = tls_config(&server, config.ca.as_deref(), alpn)?;
    let quic = QuicClientConfig::try_from(crypto)
        .expect("a TLS 1.3 config with the ring provider always suits QUIC");
    let mut client_config = quinn::ClientConfig::new(Arc::new(quic));
    client_config.transport_config(Arc::new(transport()));
    let bind: SocketAddr = if addr.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    }
    .parse()
    .expect("a literal socket address");
    let unreachable = |detail: String| ClientError::Unreachable {
        server: server.to_string(),
        detail,
    };
    let mut endpoint = quinn::Endpoint::client(bind).map_err(|e| unreachable(e.to_string()))?;
    endpoint.set_default_client_config(client_config);
    let connecting = endpoint
        .connect(addr, &server.host)
        .map_err(|e| unreachable(e.to_string()))?;
    let connection = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(e)) => {
            return Err(handshake_error(
                &server,
                &e,
                refusal.get(),
                config.ca.as_deref(),
            ))
        }
        Err(_) => {
            return Err(unreachable(format!(
                "no answer within {} s on UDP port {} (a firewall that drops UDP looks the same)",
                CONNECT_TIMEOUT.as_secs(),
                server.port
            )))
        }
    };
    // The endpoint's driver lives on while its connection does; the handle is not needed.
    Ok((connection, server))
}

pub(crate) async fn resolve(server: &Server) -> Result<SocketAddr, ClientError> {
    let mut addrs = tokio::net::lookup_host((server.host.as_str(), server.port))
        .await
        .map_err(|source| ClientError::Resolve {
            host: server.host.clone(),
            source,
        })?;
    addrs.next().ok_or_else(|| ClientError::Resolve {
        host: server.host.clone(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "no address"),
    })
}

/// TLS 1.3 with the given ALPN id, trusting `ca` or else the system's roots; with where the
/// verifier leaves its error if it refuses the server's certificate.
pub(crate) fn tls_config(
    server: &Server,
    ca: Option<&Path>,
    alpn: &[u8],
) -> Result<(rustls::ClientConfig, Refusal), ClientError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca {
        Some(path) => {
            let fail = |message: String| ClientError::Ca {
                path: path.to_owned(),
                message,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("no CERTIFICATE in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        // The only way it fails without revocation lists: no root at all (this system has
        // none and no --ca was given), so no certificate could be trusted.
        .map_err(|e| ClientError::NotTrusted {
            server: server.to_string(),
            detail: e.to_string(),
            reason: Untrusted::UnknownIssuer,
            ca: ca.map(Path::to_owned),
        })?;
    let verifier = Arc::new(RecordingVerifier {
        webpki,
        refusal: Refusal::default(),
    });
    let refusal = verifier.refusal.clone();
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .expect("the ring provider supports TLS 1.3")
        // Not dangerous here: every check is rustls' own WebPKI verifier's, only its error
        // is kept on the way out.
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config.enable_early_data = false;
    Ok((config, refusal))
}

/// The error the verifier refused the server's certificate with, if it did (one connection).
pub(crate) type Refusal = Arc<OnceLock<rustls::Error>>;

/// rustls' WebPKI verifier, keeping the error it refuses a certificate with: quinn hands back
/// a failed handshake as a TLS alert code and a message, which would lose the error's type.
#[derive(Debug)]
struct RecordingVerifier {
    webpki: Arc<WebPkiServerVerifier>,
    refusal: Refusal,
}

impl RecordingVerifier {
    fn keep<T>(&self, verdict: Result<T, rustls::Error>) -> Result<T, rustls::Error> {
        if let Err(error) = &verdict {
            // The first refusal ends the handshake; nothing follows it.
            let _ = self.refusal.set(error.clone());
        }
        verdict
    }
}

impl ServerCertVerifier for RecordingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.keep(self.webpki.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ))
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.keep(self.webpki.verify_tls12_signature(message, cert, dss))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.keep(self.webpki.verify_tls13_signature(message, cert, dss))
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.webpki.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[rustls::DistinguishedName]> {
        self.webpki.root_hint_subjects()
    }
}

fn transport() -> quinn::TransportConfig {
    let mut transport = quinn::TransportConfig::default();
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    transport
        .mtu_discovery_config(Some(mtu))
        .send_window(SEND_WINDOW)
        .keep_alive_interval(Some(Duration::from_secs(5)))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            30_000,
        ))));
    transport
}

/// A failed handshake: untrusted if the verifier refused the server's certificate (`refusal`),
/// else the server is unreachable (no answer, or a handshake failure of another kind).
pub(crate) fn handshake_error(
    server: &Server,
    e: &dyn std::fmt::Display,
    refusal: Option<&rustls::Error>,
    ca: Option<&Path>,
) -> ClientError {
    match refusal {
        Some(refusal) => ClientError::NotTrusted {
            server: server.to_string(),
            detail: e.to_string(),
            reason: Untrusted::from(refusal),
            ca: ca.map(Path::to_owned),
        },
        None => ClientError::Unreachable {
            server: server.to_string(),
            detail: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_addresses() {
        let ok = |text: &str, host: &str, port: u16| {
            assert_eq!(
                Server::parse(text).unwrap(),
                Server {
                    host: host.into(),
                    port
                },
                "{text}"
            );
        };
        ok("https://localhost:4433", "localhost", 4433);
        ok("https://localhost:4433/", "localhost", 4433);
        ok("localhost", "localhost", 4433);
        ok("127.0.0.1:9000", "127.0.0.1", 9000);
        ok("https://[::1]:5000", "::1", 5000);
        ok("[::1]", "::1", 4433);
        for bad in [
            "http://localhost:4433",
            "https://",
            "host:port",
            "::1:4433",
            "https://h:1/path",
            "[::1",
        ] {
            assert!(
                matches!(Server::parse(bad), Err(ClientError::BadServer(_))),
                "{bad}"
            );
        }
        assert_eq!(Server::parse("[::1]:7").unwrap().to_string(), "[::1]:7");
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let server = Server::parse("localhost").unwrap();
        let ca = Path::new("/nonexistent/ca.pem");
        let err = tls_config(&server, Some(ca), b"edge/1").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
        assert!(err.is_connect());
    }
}
