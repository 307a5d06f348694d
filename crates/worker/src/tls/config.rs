//! TLS settings: the server's [`TlsConfig`] and the client's
//! [`TlsClientConfig`] (rustls with the ring provider, TLS 1.3 and 1.2).

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{ring as ring_provider, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

use crate::error::{ConfigError, Error};

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring_provider::default_provider())
}

/// TLS 1.3 and 1.2 only.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

fn config_error(what: impl std::fmt::Display) -> Error {
    Error::Config(ConfigError::Tls(what.to_string()))
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
