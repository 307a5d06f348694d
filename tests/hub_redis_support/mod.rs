//! What tests/hub_redis.rs drives: a `redis-server` of the test's own (that
//! can be killed and restarted on the same port), `cluster_chat` nodes as
//! child processes, line clients, a fake "redis" answering garbage, an
//! in-process node, and a barrier that makes the cluster's state settle
//! before a test counts lines.
//!
//! Every child process is killed (SIGKILL) in a `Drop` guard, so a failing
//! test leaves nothing running; when a test panics, the nodes' logs are
//! printed to help read the failure.
#![allow(dead_code)]

#[path = "../common/process.rs"]
mod process;
pub use process::TempDir;

pub mod pki;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use lubdub::hub::{Hub, RedisConfig};
use lubdub::{Text, Worker, WorkerHandle};

/// Generous bound for any event a test awaits (loaded 2-core CI machine).
pub const WAIT: Duration = Duration::from_secs(30);

/// Panics with `what` if `start` is more than `limit` ago.
pub fn check_deadline(start: Instant, limit: Duration, what: &str) {
    assert!(
        start.elapsed() < limit,
        "timed out after {limit:?} waiting for: {what}"
    );
}

/// Polls `cond` every 20 ms until it holds; panics after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        check_deadline(start, limit, what);
        std::thread::sleep(Duration::from_millis(20));
    }
    start.elapsed()
}

/// The `cluster_chat` example next to this test binary
/// (`target/<profile>/deps/hub_redis-*` → `target/<profile>/examples/`).
/// `cargo test` builds the examples; `cargo test --test hub_redis` alone
/// does not, hence the message.
pub fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("the test binary sits in target/<profile>/deps");
    let bin = profile_dir.join("examples").join("cluster_chat");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build --example cluster_chat` \
         (plain `cargo test` builds it; `cargo test --test hub_redis` does not)",
        bin.display()
    );
    bin
}

/// Raises this process's soft RLIMIT_NOFILE to at least `want` (up to the
/// hard limit); children started afterwards inherit it. Returns the new
/// soft limit.
pub fn raise_fd_limit(want: u64) -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write one rlimit struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < want as libc::rlim_t {
            lim.rlim_cur = (want as libc::rlim_t).min(lim.rlim_max);
            assert_eq!(
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim),
                0,
                "setrlimit: {}",
                std::io::Error::last_os_error()
            );
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 everywhere
    let soft = lim.rlim_cur as u64;
    soft
}

/// A port below Linux's ephemeral range (32768 and up) that is free now:
/// no outgoing connection can take it while Redis is down between a kill
/// and a restart on the same port.
pub fn free_port() -> u16 {
    let seed = std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    let mut x = seed | 1;
    for _ in 0..1000 {
        // xorshift: a different port per try and per process
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let port = 20_000 + (x % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in 20000..32000");
}

/// Lines a child process wrote, and a way to wait for one.
#[derive(Default)]
pub struct Log {
    lines: Mutex<Vec<String>>,
    grew: Condvar,
}

impl Log {
    fn push(&self, line: String) {
        self.lines.lock().unwrap().push(line);
        self.grew.notify_all();
    }

    /// Lines containing `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits until `count` lines contain `needle`; returns how long it took.
    pub fn wait_for(&self, needle: &str, count: usize, limit: Duration) -> Duration {
        let start = Instant::now();
        let mut lines = self.lines.lock().unwrap();
        loop {
            if lines.iter().filter(|l| l.contains(needle)).count() >= count {
                return start.elapsed();
            }
            let left = limit.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "timed out after {limit:?} waiting for {count} log line(s) with {needle:?}; log:\n{}",
                    lines.join("\n")
                )
            });
            lines = self.grew.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// Every line so far.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Reads `from` line by line into `log` on a thread, until EOF.
    fn drain(log: &Arc<Self>, from: impl Read + Send + 'static) {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines() {
                let Ok(line) = line else { break };
                log.push(line);
            }
        });
    }
}

/// A `redis-server` of this test's own (`--save '' --appendonly no`), killed
/// on drop; it can be killed with SIGKILL and restarted on the same port.
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    pub log: Arc<Log>,
    /// More command-line arguments (`--requirepass`, `--user`, TLS).
    args: Vec<String>,
    /// What [`Self::command`] authenticates with (`AUTH` arguments).
    auth: Vec<String>,
    /// The TLS port, if it listens for TLS too.
    pub tls_port: Option<u16>,
}

impl Redis {
    /// Starts Redis on a free port.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts Redis on a free port with more arguments.
    pub fn start_with(args: &[&str]) -> Self {
        for _ in 0..10 {
            let mut r = Redis {
                child: None,
                port: free_port(),
                log: Arc::default(),
                args: args.iter().map(|a| a.to_string()).collect(),
                auth: Vec::new(),
                tls_port: None,
            };
            if r.spawn().is_ok() {
                return r;
            }
        }
        panic!("redis-server found no free port");
    }

    /// Starts Redis on a free plain port (for [`Self::command`]) and a free
    /// TLS port, with `pki`'s server certificate and CA, and more
    /// arguments (`--tls-auth-clients no`, say).
    pub fn start_tls(dir: &TempDir, pki: &pki::Pki, args: &[&str]) -> Self {
        let cert = dir.write("redis.crt", &pki.server_cert);
        let key = dir.write("redis.key", &pki.server_key);
        let ca = dir.write("ca.crt", &pki.ca_cert);
        for _ in 0..10 {
            let tls_port = free_port();
            let mut all: Vec<String> = vec!["--tls-port".into(), tls_port.to_string()];
            for (flag, path) in [
                ("--tls-cert-file", &cert),
                ("--tls-key-file", &key),
                ("--tls-ca-cert-file", &ca),
            ] {
                all.push(flag.into());
                all.push(path.display().to_string());
            }
            all.extend(args.iter().map(|a| a.to_string()));
            let mut r = Redis {
                child: None,
                port: free_port(),
                log: Arc::default(),
                args: all,
                auth: Vec::new(),
                tls_port: Some(tls_port),
            };
            if r.spawn().is_ok() {
                return r;
            }
        }
        panic!("redis-server found no free ports");
    }

    /// [`Self::command`] authenticates with `AUTH args...` first.
    pub fn authed(mut self, args: &[&str]) -> Self {
        self.auth = args.iter().map(|a| a.to_string()).collect();
        self
    }

    /// Starts Redis on `port` (after a fake server there is gone, say).
    pub fn start_on(port: u16) -> Self {
        let mut r = Redis {
            child: None,
            port,
            log: Arc::default(),
            args: Vec::new(),
            auth: Vec::new(),
            tls_port: None,
        };
        r.restart();
        r
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Spawns redis-server and waits for "Ready to accept connections";
    /// `Err` when the port is taken.
    fn spawn(&mut self) -> Result<(), String> {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run redis-server ({e}): these tests need a real Redis on the PATH \
                     (Debian: apt-get install -y redis-server)"
                )
            });
        let log = Arc::new(Log::default());
        Log::drain(&log, child.stdout.take().expect("piped stdout"));
        self.log = log.clone();
        let start = Instant::now();
        loop {
            let text = log.text();
            if text.contains("Ready to accept connections") {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                // Give the drain thread a moment to collect the last lines.
                std::thread::sleep(Duration::from_millis(50));
                let text = log.text();
                if text.contains("Address already in use") {
                    return Err(text);
                }
                panic!("redis-server exited ({status}) before it was ready:\n{text}");
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("redis-server not ready within {WAIT:?}:\n{text}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Runs one command on a connection of its own (on the plain port,
    /// authenticated as [`Self::authed`] says) and returns the first line
    /// of the reply (`:1`, `+OK`, ...).
    pub fn command(&self, args: &[&str]) -> String {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// [`Self::command`] with arguments of any bytes.
    pub fn command_bytes(&self, args: &[&[u8]]) -> String {
        let (mut c, mut r) = self.session();
        c.write_all(&resp_command(args)).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).expect("redis's reply");
        line.trim_end().to_owned()
    }

    /// A command whose reply is one bulk string (`INFO`, say): its text.
    pub fn command_text(&self, args: &[&str]) -> String {
        let (mut c, mut r) = self.session();
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        c.write_all(&resp_command(&args)).unwrap();
        let mut line = String::new();
        r.read_line(&mut line).expect("redis's reply");
        let len: usize = line
            .trim_end()
            .strip_prefix('$')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("not a bulk string: {line}"));
        let mut body = vec![0; len + 2];
        r.read_exact(&mut body).unwrap();
        body.truncate(len);
        String::from_utf8(body).expect("text")
    }

    /// A connection of its own on the plain port, authenticated as
    /// [`Self::authed`] says.
    fn session(&self) -> (TcpStream, BufReader<TcpStream>) {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to redis");
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut r = BufReader::new(c.try_clone().unwrap());
        if !self.auth.is_empty() {
            let mut auth: Vec<&[u8]> = vec![b"AUTH"];
            auth.extend(self.auth.iter().map(|a| a.as_bytes()));
            c.write_all(&resp_command(&auth)).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).expect("redis's reply to AUTH");
            assert_eq!(line.trim_end(), "+OK", "AUTH");
        }
        (c, r)
    }

    /// `rediss://127.0.0.1:TLS_PORT`.
    pub fn tls_url(&self) -> String {
        format!(
            "rediss://127.0.0.1:{}",
            self.tls_port.expect("a redis started with start_tls")
        )
    }

    /// How many keys the database holds.
    pub fn dbsize(&self) -> usize {
        let r = self.command(&["DBSIZE"]);
        r.strip_prefix(':')
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("DBSIZE answered {r}"))
    }

    /// Kills Redis with SIGKILL (no shutdown, no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts Redis again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis is still running");
        let start = Instant::now();
        loop {
            match self.spawn() {
                Ok(()) => return,
                Err(log) => {
                    // A closing socket of the old server or the fake may
                    // hold the port a moment longer.
                    check_deadline(
                        start,
                        WAIT,
                        &format!("port {} to be free:\n{log}", self.port),
                    );
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }
}

/// A command as RESP: an array of bulk strings.
pub fn resp_command(args: &[&[u8]]) -> Vec<u8> {
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    req
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `cluster_chat` node as a child process, killed on drop.
pub struct Node {
    child: Option<Child>,
    pub name: String,
    pub addr: SocketAddr,
    /// What the node logged (stderr).
    pub log: Arc<Log>,
}

/// The chat's rate limit raised out of the way: the hub tests drive a node
/// far faster than people type (thousands of joins, a `say` every few
/// milliseconds, queries in a loop). tests/cluster_chat_safety.rs tests
/// the limit at its defaults.
pub const UNLIMITED: &[&str] = &["--rate", "1000000", "--burst", "1000000"];

/// The log line a node writes when its command connection comes up.
pub const CONNECTED: &str = "connected to redis";
/// The log line a node writes when its command connection goes down.
pub const LOST: &str = "lost redis";

impl Node {
    /// Starts `cluster_chat --listen 127.0.0.1:0 --redis URL --node NAME
    /// [--presence-ttl SECS]` with [`UNLIMITED`] and waits for the address
    /// it listens on.
    pub fn start(name: &str, redis_url: &str, presence_ttl: Option<u64>) -> Self {
        Self::try_start(name, redis_url, presence_ttl)
            .unwrap_or_else(|log| panic!("node {name} exited at start:\n{log}"))
    }

    /// [`Self::start`], or what the node wrote (stderr) if it exited
    /// before it listened.
    pub fn try_start(
        name: &str,
        redis_url: &str,
        presence_ttl: Option<u64>,
    ) -> Result<Self, String> {
        let ttl = presence_ttl.map(|t| t.to_string());
        let mut flags = UNLIMITED.to_vec();
        if let Some(ttl) = &ttl {
            flags.extend(["--presence-ttl", ttl]);
        }
        Self::try_start_with(name, redis_url, &flags)
    }

    /// Starts `cluster_chat --listen 127.0.0.1:0 --redis URL --node NAME`
    /// with `flags` (the chat's defaults for those it does not give) and
    /// waits for the address it listens on.
    pub fn start_with(name: &str, redis_url: &str, flags: &[&str]) -> Self {
        Self::try_start_with(name, redis_url, flags)
            .unwrap_or_else(|log| panic!("node {name} exited at start:\n{log}"))
    }

    /// [`Self::start_with`], or what the node wrote (stderr) if it exited
    /// before it listened.
    pub fn try_start_with(name: &str, redis_url: &str, flags: &[&str]) -> Result<Self, String> {
        let mut cmd = Command::new(example_binary());
        cmd.args([
            "--listen",
            "127.0.0.1:0",
            "--redis",
            redis_url,
            "--node",
            name,
        ])
        .args(flags);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn cluster_chat");
        let log = Arc::new(Log::default());
        Log::drain(&log, child.stderr.take().expect("piped stderr"));
        let out = Arc::new(Log::default());
        Log::drain(&out, child.stdout.take().expect("piped stdout"));
        let mut node = Node {
            child: Some(child),
            name: name.to_owned(),
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
        };
        let banner = format!("cluster chat node {name} on ");
        let start = Instant::now();
        while out.count(&banner) == 0 {
            let child = node.child.as_mut().expect("the child");
            if let Ok(Some(status)) = child.try_wait() {
                node.child = None;
                // Let the drain threads collect the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Err(format!("{status}\n{}\n{}", node.log.text(), out.text()));
            }
            check_deadline(start, WAIT, &format!("node {name} to listen"));
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = out.text();
        let addr = text
            .lines()
            .find_map(|l| l.strip_prefix(&banner))
            .expect("the banner line");
        node.addr = addr.trim().parse().expect("a socket address");
        Ok(node)
    }

    /// A new line client of this node.
    pub fn client(&self) -> LineClient {
        LineClient::connect(self.addr)
    }

    /// Stops the node with SIGTERM (a graceful stop) and waits for it to
    /// exit.
    pub fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > WAIT {
                    let _ = child.kill();
                    panic!("node {} did not stop within {WAIT:?} of SIGTERM", self.name);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// Kills the node with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- log of node {} ---\n{}", self.name, self.log.text());
        }
    }
}

/// A line client; a thread reads its lines into a channel.
pub struct LineClient {
    stream: TcpStream,
    lines: Receiver<String>,
    pub addr: SocketAddr,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect to a node");
        stream.set_nodelay(true).unwrap();
        let reader = stream.try_clone().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        LineClient {
            stream,
            lines,
            addr,
        }
    }

    /// Sends `line` and a newline.
    pub fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .expect("write a line");
    }

    /// Sends `lines`, each with a newline, in one write.
    pub fn send_lines(&mut self, lines: &[String]) {
        let bytes: String = lines.iter().map(|l| format!("{l}\n")).collect();
        self.stream
            .write_all(bytes.as_bytes())
            .expect("write lines");
    }

    /// The next line, within `WAIT`.
    pub fn line(&mut self) -> String {
        match self.lines.recv_timeout(WAIT) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!("no line within {WAIT:?} on a client of {}", self.addr)
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!(
                    "connection to {} closed while a line was expected",
                    self.addr
                )
            }
        }
    }

    /// The next line if one comes within `timeout`.
    pub fn try_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// Sends `line` and returns the reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Sends a command whose reply is `ok`.
    pub fn cmd(&mut self, line: &str) {
        assert_eq!(self.ask(line), "ok", "reply to {line:?}");
    }

    /// The next lines are exactly `want`, in order.
    pub fn expect(&mut self, want: &[&str]) {
        for (i, w) in want.iter().enumerate() {
            let got = self.line();
            assert_eq!(got, *w, "line {i} of {want:?} on a client of {}", self.addr);
        }
    }

    /// The next `want.len()` lines are `want` in any order.
    pub fn expect_unordered(&mut self, want: &[&str]) {
        let mut got: Vec<String> = (0..want.len()).map(|_| self.line()).collect();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "on a client of {}", self.addr);
    }

    /// The node closes the connection within `WAIT`, with no line before.
    pub fn expect_closed(&mut self) {
        match self.lines.recv_timeout(WAIT) {
            Err(RecvTimeoutError::Disconnected) => {}
            Ok(l) => panic!(
                "line {l:?} where a close was due on a client of {}",
                self.addr
            ),
            Err(RecvTimeoutError::Timeout) => {
                panic!("still open after {WAIT:?} on a client of {}", self.addr)
            }
        }
    }

    /// Nothing arrives within `window` (a "must not happen" check).
    pub fn expect_silence(&mut self, window: Duration) {
        if let Some(l) = self.try_line(window) {
            panic!("unexpected line {l:?} on a client of {}", self.addr);
        }
    }
}

impl Drop for LineClient {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
    }
}

/// Makes the cluster settle: one probe connection per node joins a fresh
/// group, then each probe in turn says to it until every node's probe
/// hears it, and the group's cluster-wide count reaches the number of
/// probes.
///
/// Why it works: each node has one subscriber and one command connection
/// to Redis, and Redis runs a connection's commands in order. A probe's
/// `join` is handled after every command the test's clients had answered
/// `ok` to on that node, so its SUBSCRIBE and presence writes leave after
/// theirs. When a message to the fresh group reaches a node, that node's
/// earlier SUBSCRIBEs were run too (a node's own probe hears it locally,
/// hence a sender on every node); when the group's count is complete,
/// every node's earlier presence writes were run. Any later publish or
/// query then sees them.
pub struct Barrier {
    probes: Vec<LineClient>,
    round: u32,
}

impl Barrier {
    /// One probe per node address (nodes that answer `join`, `leave`,
    /// `say` and `who` as `cluster_chat` does).
    pub fn new(addrs: &[SocketAddr]) -> Self {
        Barrier {
            probes: addrs.iter().map(|a| LineClient::connect(*a)).collect(),
            round: 0,
        }
    }

    /// [`new`](Self::new), each probe first sending `hello(k)` (a token,
    /// say), answered `ok`.
    pub fn with_hello(addrs: &[SocketAddr], hello: impl Fn(usize) -> String) -> Self {
        let mut b = Self::new(addrs);
        for (k, p) in b.probes.iter_mut().enumerate() {
            p.cmd(&hello(k));
        }
        b
    }

    /// Waits until the cluster settled (see the type's docs).
    pub fn sync(&mut self) {
        self.round += 1;
        let group = format!("barrier{}", self.round);
        for p in &mut self.probes {
            // `all` broadcasts reach the probes too: skip them.
            p.send(&format!("join {group}"));
            loop {
                let l = p.line();
                if l == "ok" {
                    break;
                }
            }
        }
        let prefix = format!("{group} ");
        let start = Instant::now();
        let n = self.probes.len();
        // Every node must hear every other: each probe in turn says to the
        // group until all probes heard it.
        for k in 0..n {
            let mine = format!(": s{k}-");
            let mut heard = vec![false; n];
            let mut i = 0;
            while heard.contains(&false) {
                check_deadline(start, WAIT, "every node to hear a barrier message");
                self.probes[k].send(&format!("say {group} s{k}-{i}"));
                i += 1;
                for (j, p) in self.probes.iter_mut().enumerate() {
                    let wait = Duration::from_millis(if heard[j] { 0 } else { 50 });
                    while let Some(l) = p.try_line(wait) {
                        if l.starts_with(&prefix) && l.contains(&mine) {
                            heard[j] = true;
                        }
                    }
                }
            }
        }
        // Drain each probe up to every sender's last marker.
        for (k, p) in self.probes.iter_mut().enumerate() {
            p.send(&format!("say {group} done{k}"));
        }
        for p in &mut self.probes {
            let mut done = 0;
            while done < n {
                let l = p.line();
                if l.starts_with(&prefix) && l.contains(": done") {
                    done += 1;
                }
            }
        }
        let want = format!("{group} {}", self.probes.len());
        loop {
            check_deadline(start, WAIT, "the barrier group's count to be complete");
            self.probes[0].send(&format!("who {group}"));
            let l = loop {
                let l = self.probes[0].line();
                if l.starts_with(&prefix) {
                    break l;
                }
            };
            if l == want {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for p in &mut self.probes {
            p.send(&format!("leave {group}"));
            loop {
                if p.line() == "ok" {
                    break;
                }
            }
        }
    }
}

/// A fake "redis" that reads what a connection sends first, notes when and
/// what (the first command's name: a hub's command connection starts with
/// `EVAL`, its subscriber with `SUBSCRIBE`), answers with bytes that are
/// not RESP (an HTTP error page) and closes; until dropped.
pub struct GarbageServer {
    pub port: u16,
    /// Connections accepted.
    pub accepted: Arc<AtomicUsize>,
    /// When each connection's first bytes came, and its first command.
    pub sessions: Arc<Mutex<Vec<(Instant, String)>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl GarbageServer {
    pub fn start(port: u16) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind the fake redis");
        listener.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let sessions = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, rec, s) = (accepted.clone(), sessions.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((c, _)) => {
                        a.fetch_add(1, Ordering::Relaxed);
                        let rec = rec.clone();
                        std::thread::spawn(move || Self::serve(c, &rec));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        GarbageServer {
            port,
            accepted,
            sessions,
            stop,
            thread: Some(thread),
        }
    }

    fn serve(mut c: TcpStream, rec: &Mutex<Vec<(Instant, String)>>) {
        let _ = c.set_nonblocking(false);
        let _ = c.set_read_timeout(Some(WAIT));
        let mut buf = [0u8; 4096];
        let Ok(n) = c.read(&mut buf) else { return };
        let first = String::from_utf8_lossy(&buf[..n]);
        // RESP: *<argc>\r\n$<len>\r\n<arg>\r\n...; a node names its
        // connections first (`CLIENT SETNAME ns-node-cmd`/`-sub`): the kind
        // is that suffix, else the first command's name.
        let args: Vec<&str> = first.split("\r\n").skip(2).step_by(2).collect();
        let name = match args.as_slice() {
            [c, s, n, ..]
                if c.eq_ignore_ascii_case("CLIENT") && s.eq_ignore_ascii_case("SETNAME") =>
            {
                n.rsplit('-').next().unwrap_or("").to_ascii_uppercase()
            }
            [c, ..] => c.to_ascii_uppercase(),
            [] => String::new(),
        };
        rec.lock().unwrap().push((Instant::now(), name));
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n<html>no</html>\r\n");
        let _ = c.shutdown(Shutdown::Write);
        // Until the client gives up on this connection.
        let _ = c.read_to_end(&mut Vec::new());
    }

    /// Times at which connections of kind `name` came (`CMD`, `SUB`, or a
    /// first command's name).
    pub fn times_of(&self, name: &str) -> Vec<Instant> {
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, n)| n == name)
            .map(|(t, _)| *t)
            .collect()
    }
}

impl Drop for GarbageServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A node in this process (a worker and `Hub::with_redis`), so its hub's
/// counters can be read and the whole API driven. It speaks `join`,
/// `leave`, `say` and `who` as `cluster_chat` does (same replies), and:
/// `name U`, `unname U` (→ `ok`), `id` (→ this connection's global id),
/// `to ID T` (send_to_conn), `except G T` (to G but this connection),
/// `dm U T` (send_to_uid), `all T`: these deliver the bare `T`; and the
/// queries `online U` (→ `yes`/`no`), `uids` (→ the count), `members G`
/// (→ the group's uids, sorted, comma-separated), `timers` (→ how many
/// timers this connection's event loop has). A refused `name` or `join`
/// answers `refused: WHY`. Stopped on drop.
pub struct InProcessNode {
    pub hub: Hub<Text>,
    pub handle: WorkerHandle<Text>,
}

impl InProcessNode {
    pub fn start(redis_url: &str, node: &str) -> Self {
        Self::start_with(RedisConfig::new(redis_url, node))
    }

    /// A node with this configuration (credentials, TLS, namespace).
    pub fn start_with(config: RedisConfig) -> Self {
        let hub = Hub::with_redis(config, Text::new()).unwrap();
        Self::serve(hub)
    }

    /// Serves `hub` on a worker of its own (one event loop).
    pub fn serve(hub: Hub<Text>) -> Self {
        let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
        w.plugin(hub.plugin());
        let h = hub.clone();
        w.on_message_async(move |c, line| {
            let h = h.clone();
            async move {
                let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
                let done = |r: Result<(), lubdub::hub::HubError>| match r {
                    Ok(()) => Some("ok".to_owned()),
                    Err(e) => Some(format!("refused: {e}")),
                };
                let reply = match (cmd, rest.split_once(' ')) {
                    ("name", _) => done(h.bind_uid(&c, rest)),
                    ("unname", _) => {
                        h.unbind_uid(&c, rest);
                        Some("ok".to_owned())
                    }
                    ("join", _) => done(h.join(&c, rest)),
                    ("leave", _) => {
                        h.leave(&c, rest);
                        Some("ok".to_owned())
                    }
                    ("say", Some((room, text))) => {
                        let msg = format!("{room} guest{}: {text}", c.id());
                        h.send_to_group(room, &msg, &[]);
                        None
                    }
                    ("except", Some((room, text))) => {
                        h.send_to_group(room, text, &[h.global_id(&c)]);
                        None
                    }
                    ("dm", Some((uid, text))) => {
                        h.send_to_uid(uid, text);
                        None
                    }
                    ("to", Some((id, text))) => {
                        let id = id.parse().expect("a global connection id");
                        h.send_to_conn(&id, text);
                        None
                    }
                    ("all", _) => {
                        h.send_to_all(rest);
                        None
                    }
                    ("id", _) => Some(h.global_id(&c).to_string()),
                    ("timers", _) => Some(lubdub::Timer::count().to_string()),
                    ("who", _) => Some(format!("{rest} {}", h.group_count(rest).await)),
                    ("online", _) => Some(
                        if h.is_uid_online(rest).await {
                            "yes"
                        } else {
                            "no"
                        }
                        .to_owned(),
                    ),
                    ("uids", _) => Some(h.uid_count().await.to_string()),
                    ("members", _) => {
                        let mut uids = h.group_uids(rest).await;
                        uids.sort();
                        Some(uids.join(","))
                    }
                    _ => Some(format!("unknown command: {line}")),
                };
                if let Some(reply) = reply {
                    let _ = c.send(&reply);
                }
            }
        });
        let handle = w.start().unwrap();
        InProcessNode { hub, handle }
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }
}

/// Two clients of `a` and one of `b`, all in group `g`, the two nodes
/// settled: the barrier, then the clients.
pub fn two_and_one_in_g(a: &InProcessNode, b: &InProcessNode) -> (Barrier, [LineClient; 3]) {
    let mut barrier = Barrier::new(&[a.addr(), b.addr()]);
    let mut clients = [a.addr(), a.addr(), b.addr()].map(LineClient::connect);
    for c in &mut clients {
        c.cmd("join g");
    }
    barrier.sync();
    (barrier, clients)
}

impl Drop for InProcessNode {
    fn drop(&mut self) {
        self.handle.stop_and_wait();
    }
}
