//! The certificates of the TLS scenarios, shared by the servers and the
//! load generator: a CA and a leaf for `localhost` and `127.0.0.1` (ECDSA
//! P-256), made with rcgen per scenario ([`Pki`]) and written to a
//! temporary directory that every server of the scenario reads (lubdub
//! through `TlsConfig::from_pem_files`, the tokio peer through
//! [`server_config`], nginx through `ssl_certificate`). The servers present
//! the leaf; the load generator trusts the CA, or for the handshake churn
//! exactly the leaf.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context as _, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::Resumption;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};

/// The server name the load generator checks.
pub const SERVER_NAME: &str = "localhost";

/// TLS 1.3 and 1.2, as lubdub's `TlsConfig`.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

/// The ring crypto provider, as lubdub's rustls uses it.
fn ring() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A CA and a leaf certificate it signed, the leaf's chain and key in PEM
/// files of a temporary directory (removed on drop).
pub struct Pki {
    dir: PathBuf,
    /// The leaf certificate, PEM: what the servers present.
    pub cert: PathBuf,
    /// The leaf's private key, PEM (PKCS#8).
    pub key: PathBuf,
    ca_der: CertificateDer<'static>,
    leaf_der: CertificateDer<'static>,
}

impl Pki {
    /// A new CA and a leaf for `localhost` and `127.0.0.1`, written out.
    pub fn generate() -> Result<Pki> {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "lubdub-bench CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.use_authority_key_identifier_extension = true;
        leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let leaf_key = KeyPair::generate()?;
        let leaf_cert = leaf.signed_by(&leaf_key, &issuer)?;

        let dir = std::env::temp_dir().join(format!(
            "lubdub-bench-tls-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let pki = Pki {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            dir,
            ca_der: ca_cert.der().clone(),
            leaf_der: leaf_cert.der().clone(),
        };
        std::fs::write(&pki.cert, leaf_cert.pem())?;
        std::fs::write(&pki.key, leaf_key.serialize_pem())?;
        Ok(pki)
    }

    /// The load generator's client configuration: trusts only this CA,
    /// never resumes (the name to check is `localhost`).
    pub fn client_config(&self) -> Result<Arc<ClientConfig>> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let mut config = ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(VERSIONS)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }

    /// The handshake churn's client configuration: accepts exactly this leaf (its DER
    /// compared byte for byte) without verifying signatures, neither the
    /// CA's over the leaf nor the server's CertificateVerify; never
    /// resumes. Verifying them costs the client two ECDSA P-256
    /// verifications per handshake, more than the server's one signature:
    /// with them the load generator's core, not the server, set the rate.
    /// The server's work is the same either way.
    pub fn churn_client_config(&self) -> Result<Arc<ClientConfig>> {
        let provider = ring();
        let mut config = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedLeaf {
                leaf: self.leaf_der.clone(),
                provider,
            }))
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        Ok(Arc::new(config))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate "verifier" for the handshake churn: the leaf must be the
/// one expected, byte for byte; no signature is checked (see
/// [`Pki::churn_client`]).
#[derive(Debug)]
struct PinnedLeaf {
    leaf: CertificateDer<'static>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn verify_tls13_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Ok(HandshakeSignatureValid::assertion())
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The tokio peer's rustls configuration, built as a tokio-rustls user
/// builds it, with what lubdub's `TlsConfig::from_pem_files` sets: ring,
/// TLS 1.3 and 1.2, no client authentication, rustls' defaults otherwise
/// (its in-memory session cache and two TLS 1.3 tickets per handshake on
/// both sides).
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("reading {}", cert.display()))?;
    let key =
        PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading {}", key.display()))?;
    let config = ServerConfig::builder_with_provider(ring())
        .with_protocol_versions(VERSIONS)?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives a handshake between a client of `client` and a server
    /// presenting `server`'s certificate, in memory. `Ok(true)`: done, and
    /// a full one; `Err`: the client refused.
    fn handshake_in_memory(client: Arc<ClientConfig>, server: &Pki) -> Result<bool, rustls::Error> {
        let config = server_config(&server.cert, &server.key).unwrap();
        let name = ServerName::try_from(SERVER_NAME).unwrap();
        let (mut c, mut s) = (
            rustls::ClientConnection::new(client, name).unwrap(),
            rustls::ServerConnection::new(config).unwrap(),
        );
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            s.read_tls(&mut &buf[..]).unwrap();
            if s.process_new_packets().is_err() {
                // The server got the client's alert: see the client's error.
                break;
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            c.read_tls(&mut &buf[..]).unwrap();
            c.process_new_packets()?;
        }
        Ok(!c.is_handshaking()
            && !s.is_handshaking()
            && c.handshake_kind() == Some(rustls::HandshakeKind::Full))
    }

    /// The certificate the scenarios make verifies for `localhost` with the
    /// client's configuration, and the peer's server configuration loads
    /// it from the files.
    #[test]
    fn pki_files_load_and_the_client_trusts_only_its_ca() {
        let pki = Pki::generate().unwrap();
        let other = Pki::generate().unwrap();
        assert!(handshake_in_memory(pki.client_config().unwrap(), &pki).unwrap());
        assert!(
            handshake_in_memory(other.client_config().unwrap(), &pki).is_err(),
            "a client of another CA must refuse the certificate"
        );
        // The churn's client accepts its own leaf only.
        assert!(handshake_in_memory(pki.churn_client_config().unwrap(), &pki).unwrap());
        assert!(
            handshake_in_memory(other.churn_client_config().unwrap(), &pki).is_err(),
            "the churn's client must refuse another leaf"
        );
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists(), "the PEM files are removed with the Pki");
    }
}
