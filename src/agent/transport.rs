//! QUIC between agents: quinn over rustls (ring only, TLS 1.3 only), mutual
//! TLS with the lab's CA as the only trust anchor, 0-RTT off (its data can be
//! replayed), bounded windows and stream counts, and an optional key log so
//! Wireshark can decrypt captures.

use std::fs::File;
use std::io::Write;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;

use super::identity::Identity;

/// Every agent listens on this UDP port in its node.
pub const AGENT_PORT: u16 = 4433;
/// ALPN of the testbed's agent protocol.
pub const ALPN: &[u8] = b"testbed/1";

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
    #[error("QUIC configuration: {0}")]
    Quic(String),
    #[error("UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// What a peer may make this endpoint hold (CWE-770): streams it may open,
/// bytes in flight per stream and per connection, queued datagrams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub bidi_streams: u32,
    pub uni_streams: u32,
    pub stream_window: u32,
    pub connection_window: u32,
    pub datagram_buffer: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            bidi_streams: 4,
            uni_streams: 16,
            stream_window: 64 * 1024,
            connection_window: 256 * 1024,
            datagram_buffer: 64 * 1024,
        }
    }
}

fn transport(limits: Limits) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    t.max_concurrent_bidi_streams(limits.bidi_streams.into())
        .max_concurrent_uni_streams(limits.uni_streams.into())
        .stream_receive_window(limits.stream_window.into())
        .receive_window(limits.connection_window.into())
        .send_window(u64::from(limits.connection_window))
        .datagram_receive_buffer_size(Some(limits.datagram_buffer))
        .datagram_send_buffer_size(limits.datagram_buffer)
        .keep_alive_interval(Some(Duration::from_secs(2)))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(Duration::from_secs(10)).expect("10 s fits a VarInt"),
        ));
    t
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(identity: &Identity) -> Result<Arc<RootCertStore>, TransportError> {
    let mut roots = RootCertStore::empty();
    roots.add(identity.ca.clone())?;
    Ok(Arc::new(roots))
}

/// Server side: only clients with a certificate from this lab's CA get in.
pub fn server_config(
    identity: &Identity,
    limits: Limits,
    keylog: Option<Arc<dyn rustls::KeyLog>>,
) -> Result<quinn::ServerConfig, TransportError> {
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots(identity)?, provider()).build()?;
    let mut tls = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![identity.cert.clone()], identity.private_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // 0 (the default) keeps 0-RTT off; set explicitly because it matters.
    tls.max_early_data_size = 0;
    if let Some(k) = keylog {
        tls.key_log = k;
    }
    let quic = QuicServerConfig::try_from(tls).map_err(|e| TransportError::Quic(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits)));
    Ok(config)
}

/// Client side: presents the node's certificate, trusts only this lab's CA.
pub fn client_config(
    identity: &Identity,
    limits: Limits,
    keylog: Option<Arc<dyn rustls::KeyLog>>,
) -> Result<quinn::ClientConfig, TransportError> {
    let mut tls = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots(identity)?)
        .with_client_auth_cert(vec![identity.cert.clone()], identity.private_key())?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    tls.enable_early_data = false;
    if let Some(k) = keylog {
        tls.key_log = k;
    }
    let quic = QuicClientConfig::try_from(tls).map_err(|e| TransportError::Quic(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(quic));
    config.transport_config(Arc::new(transport(limits)));
    Ok(config)
}

/// Bind the UDP socket of an endpoint. With `receive_buffer`, the kernel's
/// receive buffer is forced to that size (needs CAP_NET_ADMIN, so call it
/// before dropping privileges): a server that a thousand clients dial at
/// once would otherwise drop their handshakes and make them wait out QUIC's
/// retransmission timers.
pub fn bind(addr: SocketAddr, receive_buffer: Option<usize>) -> Result<UdpSocket, TransportError> {
    let socket = UdpSocket::bind(addr)?;
    if let Some(bytes) = receive_buffer {
        nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::RcvBufForce, &bytes)
            .map_err(std::io::Error::from)?;
    }
    Ok(socket)
}

/// An endpoint on `socket` that accepts (when `server` is given) and
/// connects. Call inside a tokio runtime.
pub fn endpoint(
    socket: UdpSocket,
    server: Option<quinn::ServerConfig>,
    client: quinn::ClientConfig,
) -> Result<quinn::Endpoint, TransportError> {
    let mut endpoint = quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        server,
        socket,
        Arc::new(quinn::TokioRuntime),
    )?;
    endpoint.set_default_client_config(client);
    Ok(endpoint)
}

/// The NSS key log format (`CLIENT_HANDSHAKE_TRAFFIC_SECRET <random> <secret>`)
/// appended to a file opened before the agent dropped its privileges. Each
/// line is one `write` on an `O_APPEND` file, so agents sharing the file never
/// interleave within a line.
#[derive(Debug)]
pub struct KeyLogFile(Mutex<File>);

impl KeyLogFile {
    /// A key log shared by every TLS session of the agent.
    pub fn shared(file: File) -> Arc<dyn rustls::KeyLog> {
        Arc::new(KeyLogFile(Mutex::new(file)))
    }
}

impl rustls::KeyLog for KeyLogFile {
    fn log(&self, label: &str, client_random: &[u8], secret: &[u8]) {
        use std::fmt::Write as _;
        let mut line =
            String::with_capacity(label.len() + 2 * (client_random.len() + secret.len()) + 3);
        line.push_str(label);
        line.push(' ');
        for b in client_random {
            let _ = write!(line, "{b:02x}");
        }
        line.push(' ');
        for b in secret {
            let _ = write!(line, "{b:02x}");
        }
        line.push('\n');
        if let Ok(mut f) = self.0.lock() {
            let _ = f.write_all(line.as_bytes());
        }
    }
}
