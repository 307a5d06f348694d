//! Helpers of the TLS tests (tests/tls.rs, tests/tls_hostile.rs): a test
//! PKI made with rcgen (a CA and leaves it signs), real peers (`openssl`,
//! Python's `ssl`, Python `websockets`) run as child processes and found on
//! this machine, never mocked, and a raw rustls client for the cases a
//! well-behaved client cannot play (trickled, cut or garbled handshakes).
//!
//! A peer that cannot be found fails the test with what to install
//! (`.ci/run`: the Debian `openssl` package, Python 3 and `websockets`).
//! Children run in their own process group, killed with it when their
//! guard drops; every wait is bounded.
#![allow(dead_code)]

#[path = "../common/process.rs"]
mod process;
use process::output_of;
#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use process::TempDir;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lubdub::{TlsClientConfig, TlsConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore};
use sha2::Digest;

/// Bound for one awaited event (a loaded 2-core machine, a cold Python or
/// openssl start).
pub const WAIT: Duration = Duration::from_secs(30);

/// Receives from `rx` within [`WAIT`], or fails naming `what`.
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: not seen within {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: event channel closed"),
    }
}

/// Polls `cond` until it holds or [`WAIT`] passes (state with no event).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ---------------------------------------------------------------------------
// A test PKI.
// ---------------------------------------------------------------------------

/// A certificate authority: a self-signed CA certificate and its key.
pub struct Ca {
    pub name: String,
    pub cert_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

/// A leaf certificate signed by a [`Ca`], with its key.
#[derive(Clone)]
pub struct Leaf {
    /// The leaf certificate, PEM.
    pub cert_pem: String,
    /// The leaf's DER (its fingerprint is over this).
    pub der: Vec<u8>,
    /// The leaf's private key, PEM (PKCS#8).
    pub key_pem: String,
    /// The chain a server presents: the leaf, then the CA.
    pub chain_pem: String,
}

impl Ca {
    /// A new CA named `name` (its subject's common name).
    pub fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            name: name.to_owned(),
            cert_pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses).
    pub fn leaf(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, names[0].clone());
        params.use_authority_key_identifier_extension = true;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            der: cert.der().to_vec(),
            key_pem: key.serialize_pem(),
            chain_pem: format!("{}{}", cert.pem(), self.cert_pem),
        }
    }

    /// lubdub's client configuration trusting only this CA.
    pub fn client_config(&self) -> TlsClientConfig {
        TlsClientConfig::with_ca_pem(self.cert_pem.as_bytes()).unwrap()
    }

    /// A raw rustls client configuration trusting only this CA (TLS 1.3
    /// and 1.2, ring).
    pub fn rustls_config(&self) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(self.cert_pem.as_bytes()) {
            let cert: CertificateDer<'static> = cert.unwrap();
            roots.add(cert).unwrap();
        }
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }
}

impl Leaf {
    /// lubdub's server configuration presenting this leaf and its CA.
    pub fn server_config(&self) -> TlsConfig {
        TlsConfig::from_pem(self.chain_pem.as_bytes(), self.key_pem.as_bytes()).unwrap()
    }

    /// The SHA-256 fingerprint of the leaf, as `openssl x509 -fingerprint`
    /// prints it (`AB:CD:...`).
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }
}

/// SHA-256 of `der`, upper-case hex pairs joined by `:`.
pub fn fingerprint(der: &[u8]) -> String {
    sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// A PKI most tests use: one CA, one leaf for `localhost` and `127.0.0.1`.
pub fn pki() -> (Ca, Leaf) {
    let ca = Ca::new("lubdub test CA");
    let leaf = ca.leaf(&["localhost", "127.0.0.1"]);
    (ca, leaf)
}

// ---------------------------------------------------------------------------
// Peers found on this machine.
// ---------------------------------------------------------------------------

/// The `openssl` command-line tool (OpenSSL 3). Fails the test with what
/// to install if there is none.
pub fn openssl() -> PathBuf {
    let version = output_of(Command::new("openssl").arg("version")).unwrap_or_else(|e| {
        panic!(
            "the `openssl` command is needed by this test and was not found ({e}). \
             Install it: `apt-get install openssl` (.ci/run does)."
        )
    });
    assert!(
        version.starts_with("OpenSSL 3"),
        "these tests drive OpenSSL 3's s_client and s_server; found `{version}`"
    );
    PathBuf::from("openssl")
}

/// The Python 3 interpreter (`$LUBDUB_PYTHON` or `python3`) with `modules`
/// importable. Fails the test with what to install if there is none.
pub fn python(modules: &[&str]) -> PathBuf {
    let python = std::env::var_os("LUBDUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let imports = format!("import {}", modules.join(", "));
    output_of(Command::new(&python).args(["-c", &imports])).unwrap_or_else(|e| {
        panic!(
            "Python 3 with `{}` is needed by this test and was not found ({e}). Install \
             it: `apt-get install python3` (ssl is in its standard library) and \
             `python3 -m pip install websockets==17.4` (.ci/run does), or point \
             LUBDUB_PYTHON at an interpreter that has them.",
            modules.join("`, `")
        )
    });
    python
}

/// tests/interop/`name`.
pub fn interop_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/interop")
        .join(name)
}

/// A child process in its own process group; dropping the guard kills the
/// group and reaps the child. Its stdout and stderr are read line by line
/// on threads and kept (for checks and failure messages).
pub struct ChildGuard {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    /// Every stdout line seen so far.
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl ChildGuard {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr: Arc<Mutex<String>> = Arc::default();
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err_pipe).lines() {
                let Ok(line) = line else { break };
                let mut s = sink.lock().unwrap();
                if s.len() < 256 * 1024 {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        ChildGuard {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// What the child wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Every stdout line read so far.
    pub fn stdout_seen(&self) -> &[String] {
        &self.seen
    }

    fn explain(&self) -> String {
        format!(
            "{}: stdout so far:\n{}\nstderr:\n{}",
            self.name,
            self.seen.join("\n"),
            self.stderr()
        )
    }

    /// The next stdout line within [`WAIT`]; fails if the output ends or
    /// stays silent.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(line) => {
                self.seen.push(line.clone());
                line
            }
            Err(RecvTimeoutError::Timeout) => {
                panic!("no output line within {WAIT:?}; {}", self.explain())
            }
            Err(RecvTimeoutError::Disconnected) => {
                // Let the stderr reader catch up (bounded) before reporting.
                let _ = self.wait_exit_within(Duration::from_secs(2));
                std::thread::sleep(Duration::from_millis(100));
                panic!("output ended early; {}", self.explain())
            }
        }
    }

    /// Reads stdout lines until one satisfies `pred`; returns it.
    pub fn line_where(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + WAIT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{what}: not seen within {WAIT:?}; {}", self.explain())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let _ = self.wait_exit_within(Duration::from_secs(2));
                    std::thread::sleep(Duration::from_millis(100));
                    panic!("{what}: output ended first; {}", self.explain())
                }
            }
        }
    }

    /// The next stdout line as JSON; `{"error": ...}` fails the test.
    pub fn json(&mut self) -> serde_json::Value {
        let line = self.line();
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}; {}", self.explain()));
        if let Some(err) = v.get("error") {
            panic!("the peer reported an error: {err}; {}", self.explain());
        }
        v
    }

    /// Reads stdout to its end (the child closed it) within [`WAIT`].
    pub fn rest_of_stdout(&mut self) -> Vec<String> {
        let until = Instant::now() + WAIT;
        let mut out = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    out.push(line);
                }
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("stdout still open after {WAIT:?}; {}", self.explain())
                }
            }
        }
    }

    /// Writes `bytes` to the child's stdin.
    pub fn send(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(bytes)
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write to stdin: {e}", self.name));
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    fn wait_exit_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the child to exit within [`WAIT`]; returns its status.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(WAIT)
            .unwrap_or_else(|| panic!("still running after {WAIT:?}; {}", self.explain()))
    }

    /// Waits for a clean exit (status 0) within [`WAIT`].
    pub fn expect_success(&mut self) {
        let status = self.wait_exit();
        assert!(status.success(), "exited with {status}; {}", self.explain());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stdin = None;
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group,
        // the child's own (process_group(0) at spawn).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------
// A raw rustls client.
// ---------------------------------------------------------------------------

/// A new rustls client session for `name`.
pub fn client_session(config: &Arc<ClientConfig>, name: &str) -> ClientConnection {
    ClientConnection::new(
        config.clone(),
        ServerName::try_from(name.to_owned()).unwrap(),
    )
    .unwrap()
}

/// The first flight of a fresh client session: its ClientHello record(s).
pub fn client_hello(config: &Arc<ClientConfig>) -> Vec<u8> {
    let mut conn = client_session(config, "localhost");
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Drives a rustls session's handshake (client or server) over `sock`,
/// handing every flight of ciphertext to `send` (which may trickle it);
/// returns once the handshake is complete and our last flight was handed
/// over.
pub fn handshake<C, S>(
    sock: &mut TcpStream,
    conn: &mut C,
    mut send: impl FnMut(&mut TcpStream, &[u8]),
) -> io::Result<()>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while conn.wants_write() {
            let mut out = Vec::new();
            conn.write_tls(&mut out)?;
            send(sock, &out);
        }
        if !conn.is_handshaking() {
            return Ok(());
        }
        let n = sock.read(&mut buf)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        conn.read_tls(&mut &buf[..n])?;
        conn.process_new_packets().map_err(io::Error::other)?;
    }
}

/// Everything `conn` has queued for the peer, as bytes (one write's worth).
pub fn queued_tls<C, S>(conn: &mut C) -> Vec<u8>
where
    C: std::ops::DerefMut<Target = rustls::ConnectionCommon<S>>,
    S: rustls::SideData,
{
    let mut out = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut out).unwrap();
    }
    out
}

/// Bytes written to `sock` that the peer's kernel has not acknowledged
/// yet (`SIOCOUTQ`).
pub fn unacked_bytes(sock: &TcpStream) -> usize {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int through the pointer.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    assert_eq!(rc, 0, "SIOCOUTQ: {}", io::Error::last_os_error());
    usize::try_from(n).unwrap()
}

/// `n` deterministic pseudo-random bytes (the C library's LCG).
pub fn noise(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7FFF_FFFF;
            (x >> 16) as u8
        })
        .collect()
}

/// A blocking TLS line client over rustls.
pub struct TlsLineClient {
    pub tls: rustls::StreamOwned<ClientConnection, TcpStream>,
    pending: Vec<u8>,
}

impl TlsLineClient {
    /// Connects and completes the handshake (so a failure shows here).
    pub fn connect(addr: SocketAddr, config: &Arc<ClientConfig>, name: &str) -> io::Result<Self> {
        let mut sock = TcpStream::connect(addr)?;
        sock.set_nodelay(true)?;
        sock.set_read_timeout(Some(WAIT))?;
        let mut conn = client_session(config, name);
        handshake(&mut sock, &mut conn, |s, b| s.write_all(b).unwrap())?;
        Ok(TlsLineClient {
            tls: rustls::StreamOwned::new(conn, sock),
            pending: Vec::new(),
        })
    }

    /// A session whose handshake was driven by hand over `sock`.
    pub fn from_parts(conn: ClientConnection, sock: TcpStream) -> Self {
        TlsLineClient {
            tls: rustls::StreamOwned::new(conn, sock),
            pending: Vec::new(),
        }
    }

    /// The TCP socket under the session.
    pub fn sock(&self) -> &TcpStream {
        &self.tls.sock
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// The next line (without `\n`); `Ok(None)` at a clean end (the
    /// server's close_notify).
    pub fn line(&mut self) -> io::Result<Option<String>> {
        let mut buf = [0u8; 4096];
        loop {
            if let Some(i) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=i).collect();
                return Ok(Some(
                    String::from_utf8_lossy(&line[..line.len() - 1]).into_owned(),
                ));
            }
            let n = self.tls.read(&mut buf)?;
            if n == 0 {
                return Ok(None);
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    /// Sends `text\n` and returns the reply line; fails the test otherwise.
    pub fn roundtrip(&mut self, text: &str) -> String {
        self.send(format!("{text}\n").as_bytes())
            .unwrap_or_else(|e| panic!("send `{text}`: {e}"));
        self.line()
            .unwrap_or_else(|e| panic!("reply to `{text}`: {e}"))
            .unwrap_or_else(|| panic!("reply to `{text}`: the stream ended"))
    }

    /// Sends our close_notify (a clean TLS close), keeps the socket.
    pub fn close_notify(&mut self) -> io::Result<()> {
        self.tls.conn.send_close_notify();
        self.tls.flush()
    }
}

/// `SO_LINGER` 0: closing `sock` then resets the connection.
pub fn set_linger_zero(sock: &TcpStream) {
    socket2::SockRef::from(sock)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// The process's resident set size in KiB (Linux).
pub fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Runs the `#[ignore]`d test `child` of this test binary alone in a child
/// process (so no other test's memory is counted); fails with its output
/// if it fails, and returns its stdout.
pub fn run_child_test(child: &str) -> String {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            child,
            "--nocapture",
            "--test-threads=1",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "child {child} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("1 passed"),
        "child {child} did not run:\n{stdout}"
    );
    stdout
}

// ---------------------------------------------------------------------------
// A lubdub TLS text echo server.
// ---------------------------------------------------------------------------

/// What a test server saw.
#[derive(Debug, Clone, PartialEq)]
pub enum Ev {
    Connect(u64),
    Message(u64, String),
    Close(u64, lubdub::CloseReason),
    /// `on_error`: the error's text, and its I/O kind for `Error::Io`.
    Error(u64, String, Option<io::ErrorKind>),
}

/// A lubdub `Text` echo worker over TLS on a free loopback port: echoes
/// every line, closes (`close()`) on `please close`. Stopped on drop.
pub struct TlsEcho {
    pub handle: lubdub::WorkerHandle<lubdub::Text>,
    pub events: Receiver<Ev>,
}

impl TlsEcho {
    /// Starts it with `config`, after `tweak` (limits, plugins...).
    pub fn start(config: TlsConfig, tweak: impl FnOnce(&mut lubdub::Worker<lubdub::Text>)) -> Self {
        let mut w = lubdub::Worker::<lubdub::Text>::new("text://127.0.0.1:0").unwrap();
        w.name("tls-echo").tls(config);
        let (tx, events) = mpsc::channel();
        let tx = Arc::new(Mutex::new(tx));
        let send = move |ev: Ev| {
            let _ = tx.lock().unwrap().send(ev);
        };
        {
            let send = send.clone();
            w.on_connect(move |c| send(Ev::Connect(c.id())));
        }
        {
            let send = send.clone();
            w.on_message(move |c, line| {
                if line == "please close" {
                    c.close();
                } else {
                    let _ = c.send(&line);
                }
                send(Ev::Message(c.id(), line));
            });
        }
        {
            let send = send.clone();
            w.on_close(move |c, r| send(Ev::Close(c.id(), r.clone())));
        }
        w.on_error(move |c, e| {
            let kind = match e {
                lubdub::ConnError::Io(io) => Some(io.kind()),
                _ => None,
            };
            send(Ev::Error(c.id(), e.to_string(), kind))
        });
        tweak(&mut w);
        TlsEcho {
            handle: w.start().unwrap(),
            events,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The next event within [`WAIT`].
    pub fn next(&self, what: &str) -> Ev {
        recv(&self.events, what)
    }

    /// Events that arrived so far, without waiting.
    pub fn drain(&self) -> Vec<Ev> {
        self.events.try_iter().collect()
    }
}

impl Drop for TlsEcho {
    fn drop(&mut self) {
        self.handle.stop_and_wait();
    }
}

/// A standalone lubdub event loop on a thread (for clients), stopped and
/// joined on drop.
pub struct LoopGuard {
    handle: lubdub::LoopHandle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LoopGuard {
    /// Runs `setup` on a new event loop thread.
    pub fn spawn(setup: impl FnOnce(&lubdub::LoopHandle) + Send + 'static) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::spawn(move || {
            lubdub::EventLoop::run(move |h| {
                setup(h);
                tx.send(h.clone()).unwrap();
            })
        });
        LoopGuard {
            handle: recv(&rx, "the event loop's start"),
            thread: Some(thread),
        }
    }

    /// Stops the loop (clients close gracefully) and joins its thread.
    pub fn stop(mut self) {
        self.stop_inner();
    }

    fn stop_inner(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() && !std::thread::panicking() {
                panic!("the event loop thread panicked");
            }
        }
    }
}

impl Drop for LoopGuard {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Starts a lubdub `Text` client of 127.0.0.1:`port` over TLS with
/// `config` on its own loop; `on_connect` sends `hello N` (N counts the
/// sessions from 1). `tweak` sets it up further (reconnects...).
pub fn tls_text_client(
    port: u16,
    config: TlsClientConfig,
    tweak: impl FnOnce(&mut lubdub::Client<lubdub::Text>) + Send + 'static,
) -> (LoopGuard, Receiver<Ev>) {
    let (tx, events) = mpsc::channel();
    let guard = LoopGuard::spawn(move |_| {
        let mut client =
            lubdub::Client::<lubdub::Text>::new(format!("text://127.0.0.1:{port}")).unwrap();
        client.tls(config);
        let tx = Arc::new(Mutex::new(tx));
        let send = move |ev: Ev| {
            let _ = tx.lock().unwrap().send(ev);
        };
        let sessions = Arc::new(AtomicUsize::new(0));
        {
            let send = send.clone();
            client.on_connect(move |c| {
                let n = sessions.fetch_add(1, Ordering::SeqCst) + 1;
                let _ = c.send(&format!("hello {n}"));
                send(Ev::Connect(c.id()));
            });
        }
        {
            let send = send.clone();
            client.on_message(move |c, m| send(Ev::Message(c.id(), m)));
        }
        {
            let send = send.clone();
            client.on_close(move |c, r| send(Ev::Close(c.id(), r.clone())));
        }
        client.on_error(move |c, e| {
            let kind = match e {
                lubdub::ConnError::Io(io) => Some(io.kind()),
                _ => None,
            };
            send(Ev::Error(c.id(), e.to_string(), kind))
        });
        tweak(&mut client);
        client.connect().unwrap();
    });
    (guard, events)
}
