//! The TLS scenarios (issue 14, section 7): lubdub terminating TLS itself
//! next to tokio-rustls, tokio-tungstenite over tokio-rustls, and nginx
//! terminating TLS in front of plain lubdub.
//!
//! * One certificate per scenario: a CA and a leaf for `localhost` and
//!   `127.0.0.1` (ECDSA P-256), made with rcgen ([`Pki`]) and written to a
//!   temporary directory that every server of the scenario reads (lubdub
//!   through `TlsConfig::from_pem_files`, the tokio peer through rustls'
//!   PEM parsing, nginx through `ssl_certificate`). The servers present
//!   the leaf; the load generator trusts the CA.
//! * The load generator is `loadgen.rs`'s, given TLS streams
//!   (tokio-rustls' client, the same rustls 0.23 with the ring provider as
//!   lubdub's) instead of TCP streams ([`load`]). Its client never
//!   resumes a session (`Resumption::disabled()`), and every handshake is
//!   checked to have been a full one.
//! * The servers are child processes: `serve-tls` ([`servers`]), the
//!   plain lubdub `serve` child behind nginx, and nginx itself
//!   ([`nginx`]).

#[cfg(test)]
mod e2e;
pub mod load;
pub mod nginx;
pub mod servers;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

use crate::child::Server;
use crate::loadgen::{self, Unit};
use crate::scenarios::{
    alternate, bytes, describe, median, push_rate_rows, rate_metrics, start_server, Better, Config,
    Outcome, Row,
};
use crate::servers::{Impl, Proto};
use load::TlsClient;
use servers::{Kind, TlsServeOpts};

/// The scenarios `tls` runs, in order.
pub const GROUP: &[&str] = &[
    "tls-echo-32",
    "tls-echo-4k",
    "tls-handshakes",
    "wss-echo",
    "tls-nginx",
    "tls-idle-mem",
];

/// TLS 1.3 and 1.2, as lubdub's `TlsConfig`.
static VERSIONS: &[&rustls::SupportedProtocolVersion] =
    &[&rustls::version::TLS13, &rustls::version::TLS12];

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

    /// The load generator's client: trusts only this CA, checks the name
    /// `localhost`, never resumes.
    pub fn client(&self) -> Result<TlsClient> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_der.clone())?;
        let mut config = ClientConfig::builder_with_provider(ring())
            .with_protocol_versions(VERSIONS)?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = Resumption::disabled();
        TlsClient::new(Arc::new(config), "localhost")
    }

    /// The handshake churn's client: accepts exactly this leaf (its DER
    /// compared byte for byte) without verifying signatures, neither the
    /// CA's over the leaf nor the server's CertificateVerify; never
    /// resumes. Verifying them costs the client two ECDSA P-256
    /// verifications per handshake, more than the server's one signature:
    /// with them the load generator's core, not the server, set the rate.
    /// The server's work is the same either way.
    pub fn churn_client(&self) -> Result<TlsClient> {
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
        TlsClient::new(Arc::new(config), "localhost")
    }

    /// The options of a `serve-tls` child presenting this certificate.
    fn serve(&self, cfg: &Config, imp: Impl, kind: Kind, report_conns: bool) -> TlsServeOpts {
        TlsServeOpts {
            imp,
            kind,
            cert: self.cert.clone(),
            key: self.key.clone(),
            cpu: cfg.server_cpu(1),
            report_conns,
        }
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

/// Starts a `serve-tls` child.
fn start_tls(opts: &TlsServeOpts) -> Result<Server> {
    Server::start(&opts.to_args())
}

/// The peer's name in the labels of a TLS scenario.
fn peer(kind: Kind) -> &'static str {
    match kind {
        Kind::Text => "tokio-rustls current_thread",
        Kind::Ws => "tokio-tungstenite on tokio-rustls, current_thread",
    }
}

/// A note under the table: is lubdub's median at least `target` x the
/// peer's on `row`?
fn target_note(out: &mut Outcome, what: &str, row: usize, target: f64) {
    let r = &out.rows[row];
    let ratio = r.ratio();
    out.notes.push(format!(
        "{what}: target >= {target:.1}x the peer; {ratio:.2}x (medians): {}",
        if ratio >= target { "met" } else { "NOT met" }
    ));
}

/// `tls-echo-32`, `tls-echo-4k`: TLS text echo, 100 x 16 pipelined.
pub fn echo(cfg: &Config, out: &mut Outcome, line: usize) -> Result<()> {
    let name = if line >= 1024 {
        format!("tls-echo-{}k", line / 1024)
    } else {
        format!("tls-echo-{line}")
    };
    let pki = Pki::generate()?;
    let client = pki.client()?;
    let unit = Unit::text(line);
    let [l, p] = alternate(cfg, &name, 2, |imp| {
        let server = start_tls(&pki.serve(cfg, imp, Kind::Text, false))?;
        let (addr, pids) = (server.addr(), [server.child.pid()]);
        let (t, session) = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            load::pipelined(&client, addr, &pids, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "msg/s")),
        ))
    })?;
    let first = out.rows.len();
    let label = format!(
        "TLS text echo {}, {}x{} pipelined, count=1 vs {}",
        bytes(line as f64),
        cfg.conns,
        cfg.depth,
        peer(Kind::Text)
    );
    push_rate_rows(out, label, "msg/s", &l, &p);
    target_note(out, &name, first, 1.0);
    Ok(())
}

/// `tls-handshakes`: full handshakes per second, each followed by one echo
/// and a close (close_notify, then FIN), 32 churners.
pub fn handshakes(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = pki.churn_client()?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-handshakes", 2, |imp| {
        let server = start_tls(&pki.serve(cfg, imp, Kind::Text, false))?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let (t, session) = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            load::handshakes(&client, addr, pid, cfg.churners, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "handshakes/s")),
        ))
    })?;
    let first = out.rows.len();
    let label = format!(
        "TLS full handshakes (no resumption), {} churners: connect, handshake, 1 echo, close, vs {}",
        cfg.churners,
        peer(Kind::Text)
    );
    push_rate_rows(out, label, "handshakes/s", &l, &p);
    target_note(out, "tls-handshakes", first, 1.0);
    Ok(())
}

/// `wss-echo`: WebSocket over TLS, 32-byte text messages, 100 x 16
/// pipelined.
pub fn wss_echo(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = pki.client()?;
    let unit = crate::ws_load::WsUnit::text(32);
    let [l, p] = alternate(cfg, "wss-echo", 2, |imp| {
        let server = start_tls(&pki.serve(cfg, imp, Kind::Ws, false))?;
        let (addr, pid) = (server.addr(), server.child.pid());
        let (t, session) = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            load::ws_pipelined(&client, addr, pid, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}; {session}", describe(&t, "msg/s")),
        ))
    })?;
    let label = format!(
        "wss echo 32 B text messages, {}x{} pipelined, lubdub-ws vs {}",
        cfg.conns,
        cfg.depth,
        peer(Kind::Ws)
    );
    push_rate_rows(out, label, "msg/s", &l, &p);
    Ok(())
}

/// One side of `tls-nginx`: lubdub terminating TLS (`Impl::Lubdub`), or
/// nginx terminating it in front of the plain lubdub server
/// (`Impl::Tokio` stands for the peer in `alternate`). Both pinned to the
/// server CPU: the same core serves either way.
struct NginxSide {
    /// The lubdub server: TLS, or the plain backend behind nginx.
    lubdub: Server,
    nginx: Option<nginx::Nginx>,
}

impl NginxSide {
    fn start(cfg: &Config, pki: &Pki, bin: &nginx::NginxBin, imp: Impl) -> Result<NginxSide> {
        Ok(match imp {
            Impl::Lubdub => NginxSide {
                lubdub: start_tls(&pki.serve(cfg, Impl::Lubdub, Kind::Text, false))?,
                nginx: None,
            },
            Impl::Tokio => {
                let lubdub = start_server(cfg, Impl::Lubdub, Proto::Text, 1, false)?;
                let nginx =
                    nginx::Nginx::start(bin, &pki.cert, &pki.key, lubdub.port, cfg.server_cpu(1))?;
                NginxSide {
                    lubdub,
                    nginx: Some(nginx),
                }
            }
        })
    }

    /// Where the load generator connects (TLS either way).
    fn addr(&self) -> std::net::SocketAddr {
        match &self.nginx {
            Some(n) => n.addr(),
            None => self.lubdub.addr(),
        }
    }

    /// The processes whose CPU time is the server's.
    fn pids(&self) -> Vec<u32> {
        let mut p = vec![self.lubdub.child.pid()];
        if let Some(n) = &self.nginx {
            p.insert(0, n.pid());
        }
        p
    }

    fn name(&self) -> &'static str {
        if self.nginx.is_some() {
            "nginx -> lubdub"
        } else {
            "lubdub TLS"
        }
    }
}

/// `tls-nginx`: lubdub terminating TLS against nginx's stream module
/// terminating it in front of plain lubdub; pipelined throughput, then
/// depth-1 ping-pong latency.
pub fn nginx(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let bin = nginx::NginxBin::find()?;
    let pki = Pki::generate()?;
    let client = pki.client()?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-nginx echo", 2, |imp| {
        let side = NginxSide::start(cfg, &pki, &bin, imp)?;
        let (addr, pids) = (side.addr(), side.pids());
        let (t, session) = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            load::pipelined(&client, addr, &pids, cfg.conns, cfg.depth, unit, cfg.window)
        })?;
        Ok((
            rate_metrics(&t),
            format!("{}: {}; {session}", side.name(), describe(&t, "msg/s")),
        ))
    })?;
    let label = format!(
        "TLS text echo 32 B, {}x{} pipelined: lubdub TLS vs nginx TLS -> plain lubdub, one core",
        cfg.conns, cfg.depth
    );
    push_rate_rows(out, label, "msg/s", &l, &p);

    let [l, p] = alternate(cfg, "tls-nginx ping-pong", 4, |imp| {
        let side = NginxSide::start(cfg, &pki, &bin, imp)?;
        let (addr, pids) = (side.addr(), side.pids());
        let (r, session) = loadgen::run(cfg.loadgen_cpu(1), cfg.limit(), || {
            load::pingpong(&client, addr, &pids, cfg.conns, unit, cfg.window)
        })?;
        let mut m = rate_metrics(&r.throughput);
        m.extend([r.p50_us, r.p99_us]);
        Ok((
            m,
            format!(
                "{}: {}; p50 {:.1} us, p99 {:.1} us over {} round trips; {session}",
                side.name(),
                describe(&r.throughput, "rt/s"),
                r.p50_us,
                r.p99_us,
                r.samples
            ),
        ))
    })?;
    let label = format!(
        "TLS text ping-pong depth 1, {} conns: lubdub TLS vs nginx TLS -> plain lubdub",
        cfg.conns
    );
    push_rate_rows(out, label, "round trips/s", &l, &p);
    for (i, q) in [(2, "p50"), (3, "p99")] {
        out.rows.push(Row {
            label: format!("↳ {q} round trip (us)"),
            unit: "us",
            better: Better::Lower,
            lubdub: l[i].clone(),
            peer: p[i].clone(),
        });
    }
    let (lm, pm) = (median(&l[3]), median(&p[3]));
    out.notes.push(format!(
        "tls-nginx: target p99 better than the nginx hop; lubdub {lm:.1} us, nginx -> lubdub {pm:.1} us (medians): {}",
        if lm < pm { "met" } else { "NOT met" }
    ));
    out.notes.push(format!(
        "tls-nginx: {} ({}), stream module, `listen ... ssl` + `proxy_pass`, master_process off, \
         pinned with the plain lubdub backend to the server CPU; its CPU rows add both processes",
        bin.path.display(),
        bin.version
    ));
    Ok(())
}

/// `tls-idle-mem`: server RSS per idle TLS connection after the handshake.
pub fn idle_mem(cfg: &Config, out: &mut Outcome) -> Result<()> {
    let pki = Pki::generate()?;
    let client = pki.client()?;
    let unit = Unit::text(32);
    let [l, p] = alternate(cfg, "tls-idle-mem", 1, |imp| {
        let server = start_tls(&pki.serve(cfg, imp, Kind::Text, true))?;
        let (addr, pid, reported) = (
            server.addr(),
            server.child.pid(),
            server.child.conns_handle(),
        );
        let r = loadgen::run(cfg.loadgen_cpu(1), Duration::from_secs(180), || {
            load::idle(&client, addr, pid, reported, cfg.idle_conns, unit)
        })?;
        drop(server);
        Ok(r.outcome("idle TLS"))
    })?;
    out.rows.push(Row {
        label: format!(
            "idle TLS memory, {} conns after the handshake, server RSS per conn vs {} (bytes)",
            cfg.idle_conns,
            peer(Kind::Text)
        ),
        unit: "B",
        better: Better::Lower,
        lubdub: l[0].clone(),
        peer: p[0].clone(),
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The certificate the scenarios make verifies for `localhost` with the
    /// client's configuration, and the peer's server configuration loads
    /// it from the files.
    /// Drives a handshake between `client` and a server presenting
    /// `server`'s certificate, in memory. `Ok(true)`: done, and a full
    /// one; `Err`: the client refused.
    fn handshake_in_memory(client: &TlsClient, server: &Pki) -> Result<bool, rustls::Error> {
        let config = server_config(&server.cert, &server.key).unwrap();
        let (mut c, mut s) = (
            client.connection().unwrap(),
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

    #[test]
    fn pki_files_load_and_the_client_trusts_only_its_ca() {
        let pki = Pki::generate().unwrap();
        let other = Pki::generate().unwrap();
        assert!(handshake_in_memory(&pki.client().unwrap(), &pki).unwrap());
        assert!(
            handshake_in_memory(&other.client().unwrap(), &pki).is_err(),
            "a client of another CA must refuse the certificate"
        );
        // The churn's client accepts its own leaf only.
        assert!(handshake_in_memory(&pki.churn_client().unwrap(), &pki).unwrap());
        assert!(
            handshake_in_memory(&other.churn_client().unwrap(), &pki).is_err(),
            "the churn's client must refuse another leaf"
        );
        let dir = pki.dir.clone();
        drop(pki);
        assert!(!dir.exists(), "the PEM files are removed with the Pki");
    }
}
