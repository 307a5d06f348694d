//! TLS in the transport seam, on rustls (ring provider): the server's
//! [`TlsConfig`], the client's [`TlsClientConfig`], and the `Tls` transport
//! that drives rustls' sans-IO connection inside the event loop (no extra
//! thread, no stream wrapper).
//!
//! Reads take up to 64 KiB of ciphertext from the socket in one call into a
//! buffer the loop shares, and feed it to rustls from memory: rustls reads
//! at most 4 KiB per `read_tls` from a socket, which would be 16 syscalls
//! where plain TCP makes one. Decrypted bytes go straight into the shell's
//! read buffer. Writes hand plaintext to rustls, which encrypts into its
//! own queue (bounded: [`SEND_LIMIT`]), written with `writev`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::Error;
use crate::reactor::Io;
use crate::transport::{Received, Transport};

/// Most ciphertext rustls queues for one connection before writes report
/// the socket full; it is counted in the connection's send buffer.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;
/// Ciphertext read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Room left in the plaintext buffer for a record rustls may still hold
/// partly from the previous read (a TLS record is at most 16 KiB of
/// plaintext): what one read decrypts then always fits the buffer.
const PARTIAL_RECORD: usize = 17 * 1024;
/// TLS record overhead per 16 KiB of plaintext, for the send accounting.
const RECORD_OVERHEAD: usize = 29;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
}

/// TLS 1.3 and 1.2 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn config_error(what: impl std::fmt::Display) -> Error {
    Error::Config(format!("TLS: {what}"))
}

/// A server's TLS settings: its certificate chain and key (TLS 1.3 and
/// 1.2, ring). Workerman's `transport = 'ssl'` with a stream context, in
/// one line:
///
/// ```no_run
/// use lubdub_worker::{TlsConfig, Worker};
/// # use lubdub_worker::Raw;
/// let mut worker = Worker::<Raw>::new("tcp://0.0.0.0:4433")?;
/// worker.tls(TlsConfig::from_pem_files("cert.pem", "key.pem")?);
/// # Ok::<(), lubdub_worker::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct TlsConfig {
    config: Arc<ServerConfig>,
}

impl TlsConfig {
    /// Reads a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem_files(
        cert_chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let (cert_chain, key) = (cert_chain.as_ref(), key.as_ref());
        let certs = CertificateDer::pem_file_iter(cert_chain)
            .and_then(|it| it.collect::<Result<Vec<_>, _>>())
            .map_err(|e| config_error(format!("{}: {e}", cert_chain.display())))?;
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| config_error(format!("{}: {e}", key.display())))?;
        Self::from_der(certs, key)
    }

    /// A PEM certificate chain and a PEM private key, in memory.
    pub fn from_pem(cert_chain: &[u8], key: &[u8]) -> Result<Self, Error> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| config_error(format!("certificate chain: {e}")))?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|e| config_error(format!("private key: {e}")))?;
        Self::from_der(certs, key)
    }

    /// A DER certificate chain (leaf first) and private key.
    pub fn from_der(
        cert_chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, Error> {
        if cert_chain.is_empty() {
            return Err(config_error("the certificate chain is empty"));
        }
        let config = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(config_error)?
            .with_no_client_auth()
            .with_single_cert(cert_chain, key)
            .map_err(config_error)?;
        Ok(TlsConfig {
            config: Arc::new(config),
        })
    }

    /// A rustls configuration built elsewhere (client certificates, a
    /// certificate resolver...).
    pub fn from_rustls(config: Arc<ServerConfig>) -> Self {
        TlsConfig { config }
    }

    /// The ALPN protocols offered, in order of preference (`h2`,
    /// `http/1.1`...). Default: none.
    pub fn alpn<I, A>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Vec<u8>>,
    {
        Arc::make_mut(&mut self.config).alpn_protocols =
            protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ServerConfig> {
        &self.config
    }
}

/// A client's TLS settings: which servers it trusts, and what it offers.
///
/// ```
/// use lubdub_worker::TlsClientConfig;
///
/// let public = TlsClientConfig::webpki_roots(); // Mozilla's roots (the default)
/// # let _ = public;
/// ```
#[derive(Clone, Debug)]
pub struct TlsClientConfig {
    config: Arc<ClientConfig>,
    server_name: Option<String>,
}

impl Default for TlsClientConfig {
    fn default() -> Self {
        Self::webpki_roots()
    }
}

impl TlsClientConfig {
    fn from_roots(roots: RootCertStore) -> Result<Self, Error> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map_err(config_error)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Self::from_rustls(Arc::new(config)))
    }

    /// Trusts Mozilla's root certificates (the `webpki-roots` crate), the
    /// same on every machine. The default.
    pub fn webpki_roots() -> Self {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        Self::from_roots(roots).unwrap_or_else(|_| unreachable_config())
    }

    /// Trusts the operating system's root certificates.
    pub fn native_roots() -> Result<Self, Error> {
        let found = rustls_native_certs::load_native_certs();
        let mut roots = RootCertStore::empty();
        let (added, _ignored) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(config_error(format!(
                "no usable root certificate in the system store ({} error(s))",
                found.errors.len()
            )));
        }
        Self::from_roots(roots)
    }

    /// Trusts only the certificate authorities in this PEM (a test CA, a
    /// private PKI).
    pub fn with_ca_pem(pem: &[u8]) -> Result<Self, Error> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| config_error(format!("CA certificate: {e}")))?;
            roots.add(cert).map_err(config_error)?;
        }
        if roots.is_empty() {
            return Err(config_error("no CA certificate in the PEM"));
        }
        Self::from_roots(roots)
    }

    /// [`with_ca_pem`](Self::with_ca_pem), from a file.
    pub fn with_ca_file(path: impl AsRef<Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let pem =
            std::fs::read(path).map_err(|e| config_error(format!("{}: {e}", path.display())))?;
        Self::with_ca_pem(&pem)
    }

    /// **Development only: accepts any certificate from any server**, so
    /// the connection is encrypted but not authenticated: anyone in the
    /// middle can read and change everything. For a self-signed server on
    /// your own machine; never in production (trust that server's
    /// certificate with [`with_ca_pem`](Self::with_ca_pem) instead).
    pub fn dangerous_accept_any_certificate() -> Self {
        let config = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(VERSIONS)
            .map(|b| {
                b.dangerous()
                    .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider())))
                    .with_no_client_auth()
            })
            .unwrap_or_else(|_| unreachable_config());
        Self::from_rustls(Arc::new(config))
    }

    /// A rustls configuration built elsewhere (client certificates...).
    /// Reconnects share it, and so its session cache: they resume.
    pub fn from_rustls(config: Arc<ClientConfig>) -> Self {
        TlsClientConfig {
            config,
            server_name: None,
        }
    }

    /// The ALPN protocols to offer, in order of preference. Default: none.
    pub fn alpn<I, A>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<Vec<u8>>,
    {
        Arc::make_mut(&mut self.config).alpn_protocols =
            protocols.into_iter().map(Into::into).collect();
        self
    }

    /// The name to send as SNI and to check the certificate against.
    /// Default: the host of the address connected to.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// The rustls configuration.
    pub fn rustls(&self) -> &Arc<ClientConfig> {
        &self.config
    }

    /// The server name for a connection to `host` (`example.com:443`,
    /// `[::1]:8443`).
    pub(crate) fn name_for(&self, host: &str) -> Result<ServerName<'static>, Error> {
        let name = match &self.server_name {
            Some(n) => n.clone(),
            None => host_without_port(host).to_owned(),
        };
        ServerName::try_from(name.clone())
            .map_err(|_| config_error(format!("`{name}` is not a valid server name")))
    }
}

/// The builders above cannot fail with the ring provider and these
/// versions; should a future rustls make them fail, fail loudly at
/// configuration time rather than later.
fn unreachable_config() -> ! {
    panic!("rustls rejected its own ring provider with TLS 1.3 and 1.2")
}

fn host_without_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    }
}

/// See [`TlsClientConfig::dangerous_accept_any_certificate`].
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

thread_local! {
    /// Ciphertext read from a socket, shared by the loop's TLS connections.
    static CIPHERTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connection's TLS session: rustls' sans-IO connection, driven by the
/// connection's shell.
pub(crate) struct Tls {
    conn: rustls::Connection,
    /// Ciphertext queued in rustls, estimated (for the send buffer limit).
    queued: usize,
    /// The peer's TCP EOF came without a close_notify.
    truncated: bool,
    close_notify_sent: bool,
}

impl Tls {
    pub fn server(config: &Arc<ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Self::new(conn.into()))
    }

    pub fn client(config: &TlsClientConfig, name: ServerName<'static>) -> io::Result<Self> {
        let conn =
            rustls::ClientConnection::new(config.config.clone(), name).map_err(io::Error::other)?;
        Ok(Self::new(conn.into()))
    }

    fn new(mut conn: rustls::Connection) -> Self {
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Tls {
            conn,
            queued: 0,
            truncated: false,
            close_notify_sent: false,
        }
    }

    /// Moves decrypted bytes into `buf[*filled..]`; `Some` when the stream
    /// ended (cleanly or truncated).
    fn take_plaintext(&mut self, buf: &mut [u8], filled: &mut usize) -> io::Result<Option<()>> {
        while *filled < buf.len() {
            match self.conn.reader().read(&mut buf[*filled..]) {
                Ok(0) => return Ok(Some(())),
                Ok(n) => *filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.truncated = true;
                    return Ok(Some(()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Writes queued ciphertext until done or the socket is full.
    fn flush_tls(
        &mut self,
        sock: &Io<TcpStream>,
        cx: Option<&mut Context<'_>>,
    ) -> io::Result<bool> {
        let mut writer = SockWriter { sock, cx };
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut writer) {
                Ok(n) => self.queued = self.queued.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.queued = 0;
        Ok(true)
    }

    fn fail(&mut self, sock: &Io<TcpStream>, e: rustls::Error) -> io::Error {
        // Send the alert rustls queued for the peer, if the socket takes it.
        let _ = self.flush_tls(sock, None);
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The socket as rustls' writer; with a context, a full socket registers
/// for writability.
struct SockWriter<'a, 'b> {
    sock: &'a Io<TcpStream>,
    cx: Option<&'a mut Context<'b>>,
}

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.cx {
            Some(cx) => match self.sock.poll_write_vectored(cx, bufs) {
                Poll::Ready(r) => r,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            },
            None => self.sock.get_ref().write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Tls {
    fn read(&mut self, sock: &Io<TcpStream>, buf: &mut [u8]) -> io::Result<Received> {
        let mut filled = 0;
        if self.take_plaintext(buf, &mut filled)?.is_some() && filled == 0 {
            return Ok(Received::Eof);
        }
        if filled > 0 {
            return Ok(Received::Data(filled));
        }
        CIPHERTEXT.with(|cell| {
            let mut input = cell.borrow_mut();
            if input.len() < READ_CHUNK {
                input.resize(READ_CHUNK, 0);
            }
            let room = buf.len().saturating_sub(PARTIAL_RECORD).max(4096);
            let want = room.min(input.len());
            let n = loop {
                match sock.get_ref().read(&mut input[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        sock.clear_readable();
                        return Ok(Received::WouldBlock);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n < want && sock.short_read_drains() {
                sock.clear_readable();
            }
            let mut ciphertext: &[u8] = &input[..n];
            let mut ended;
            loop {
                // At TCP EOF this tells rustls the stream ended (read_tls of
                // an empty slice), so the reader reports close_notify or
                // truncation.
                self.conn.read_tls(&mut ciphertext)?;
                if let Err(e) = self.conn.process_new_packets() {
                    return Err(self.fail(sock, e));
                }
                ended = self.take_plaintext(buf, &mut filled)?.is_some();
                if ended && filled == 0 {
                    return Ok(Received::Eof);
                }
                if ciphertext.is_empty() || ended {
                    break;
                }
            }
            // Handshake messages, alerts or key updates may want an answer.
            let _ = self.flush_tls(sock, None);
            if filled > 0 && (ended || filled == buf.len()) {
                // The end of the stream came with data, or more plaintext
                // may wait in rustls: the next read must come even if the
                // socket has nothing new, so it is marked readable again.
                sock.mark_readable();
            }
            Ok(if filled > 0 {
                Received::Data(filled)
            } else if n == 0 {
                Received::Eof
            } else {
                Received::Nothing
            })
        })
    }

    fn write(
        &mut self,
        sock: &Io<TcpStream>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.flush_tls(sock, Some(cx)) {
            return Poll::Ready(Err(e));
        }
        let n = match self.conn.writer().write(buf) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.queued += n + n.div_ceil(16 * 1024) * RECORD_OVERHEAD;
        if let Err(e) = self.flush_tls(sock, Some(cx)) {
            return Poll::Ready(Err(e));
        }
        if n == 0 {
            // rustls' queue is at its limit and the socket is full: the
            // flush above registered for writability.
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, sock: &Io<TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.flush_tls(sock, Some(cx)) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn shutdown(&mut self, sock: &Io<TcpStream>) -> io::Result<()> {
        self.close(sock);
        sock.get_ref().shutdown(Shutdown::Write)
    }

    fn close(&mut self, sock: &Io<TcpStream>) {
        // Once: a shutdown already sent it.
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
            let _ = self.flush_tls(sock, None);
        }
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn pending(&self) -> usize {
        self.queued
    }

    fn take_truncation(&mut self) -> bool {
        std::mem::take(&mut self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_lose_their_port() {
        assert_eq!(host_without_port("example.com:443"), "example.com");
        assert_eq!(host_without_port("example.com"), "example.com");
        assert_eq!(host_without_port("127.0.0.1:8443"), "127.0.0.1");
        assert_eq!(host_without_port("[::1]:8443"), "::1");
    }

    #[test]
    fn bad_pem_is_a_clear_configuration_error() {
        let e = TlsConfig::from_pem(b"not pem", b"not pem").unwrap_err();
        assert!(e.to_string().contains("TLS:"), "{e}");
        let e = TlsClientConfig::with_ca_pem(b"").unwrap_err();
        assert!(e.to_string().contains("no CA certificate"), "{e}");
        let e =
            TlsConfig::from_pem_files("/nonexistent/cert.pem", "/nonexistent/key.pem").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/cert.pem"), "{e}");
    }

    #[test]
    fn a_server_name_comes_from_the_host_or_the_override() {
        let c = TlsClientConfig::webpki_roots();
        assert!(matches!(
            c.name_for("localhost:1").unwrap(),
            ServerName::DnsName(_)
        ));
        assert!(matches!(
            c.name_for("127.0.0.1:1").unwrap(),
            ServerName::IpAddress(_)
        ));
        let c = c.server_name("example.org");
        assert_eq!(
            c.name_for("127.0.0.1:1").unwrap(),
            ServerName::try_from("example.org").unwrap()
        );
    }
}
