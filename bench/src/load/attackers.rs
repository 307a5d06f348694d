//! The attackers of the `attack` and `attack-ws` scenarios, one child
//! process per attack:
//! `lubdub-bench attack-child <kind> --port P --n N [--cpu C] [--nice N]`
//! (see [`child_main`] and [`Attack`] for the kinds). The text attacks
//! speak to the Text echo server, the `ws-*` ones to the WebSocket echo
//! server, with the load generator's WebSocket client codec
//! (`load/ws_codec.rs`).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use flate2::{Compress, Compression};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;

use crate::child::Placement;
use crate::load::connect::connect_from;
use crate::load::healthy::PING;
use crate::load::tcp::Unit;
use crate::load::ws::PATH;
use crate::load::ws_codec::{
    apply_mask, check_response, close_code, compress_message, parse_server_header,
    push_client_frame, push_close, read_response_head, response_status, upgrade_request_with,
    write_header, DeflateParams, FIN, OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_TEXT, RSV1,
};
use crate::report::bytes;
use crate::sys;

/// One kind of attacker process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Attack {
    /// `n` connections, each sending one byte (never a newline) a second.
    Slowloris,
    /// `n` connections each writing a line without end, 64 KiB a write, as
    /// fast as the server takes it; reconnecting when the server cuts it.
    #[value(name = "longline")]
    LongLine,
    /// `n` connections writing valid 32-byte lines as fast as they can and
    /// never reading a reply.
    #[value(name = "nonreader")]
    NonReader,
    /// `n` loops of: connect, send a valid line and a line of invalid
    /// UTF-8, wait (at most 2 s) for the server to close, close.
    Invalid,
    /// `n` loops of: connect, close at once (every other one with a reset,
    /// `SO_LINGER` 0).
    Storm,
    /// WebSocket: `n` connections, each upgraded, then one binary frame
    /// whose header announces [`BIG`] bytes (a 64-bit length), all but the
    /// last 64 KiB of it as fast as the server takes them, then a byte a
    /// second; reconnecting when the server ends it.
    #[value(name = "ws-bigframe")]
    WsBigFrame,
    /// WebSocket: as `ws-bigframe`, the message in 4 KiB fragments instead
    /// of one frame (all but the last 64 KiB of them sent).
    #[value(name = "ws-fragments")]
    WsFragments,
    /// WebSocket: as `ws-bigframe`, the payload at 64 KiB a second
    /// (16 KiB every 250 ms) per connection.
    #[value(name = "ws-slowframe")]
    WsSlowFrame,
    /// WebSocket with permessage-deflate offered: [`BIG`] bytes of `x` as
    /// one compressed binary message (about 14 KiB on the wire), a
    /// fragment per 64 KiB of `x`; all fragments but the last as fast as
    /// the server takes them (it inflates nearly 10 MiB), then a byte a
    /// second.
    #[value(name = "ws-bomb")]
    WsBomb,
    /// WebSocket: `n` connections offering permessage-deflate, each
    /// sending one small (compressed) text message, reading its echo, then
    /// idle.
    #[value(name = "ws-idle-deflate")]
    WsIdleDeflate,
    /// WebSocket: `n` loops of: connect, an upgrade request with a foreign
    /// `Origin` ([`FOREIGN_ORIGIN`]), read the answer; on a `101`, a close
    /// frame.
    #[value(name = "ws-origin")]
    WsOrigin,
    /// WebSocket: `n` loops of: connect, an upgrade request with one of
    /// `Host`, `Sec-WebSocket-Key`, `Sec-WebSocket-Version`, `Upgrade`
    /// twice (in turn, [`DUPLICATES`]), read the answer; on a `101`, a
    /// close frame.
    #[value(name = "ws-dupheaders")]
    WsDupHeaders,
}

/// The server an attack is made for: the Text echo of the `attack`
/// scenario or the WebSocket echo of `attack-ws`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// `attack`: the Text echo server.
    Text,
    /// `attack-ws`: the WebSocket echo server.
    Ws,
}

impl Target {
    /// The scenario that attacks this server.
    pub fn scenario(self) -> &'static str {
        match self {
            Target::Text => "attack",
            Target::Ws => "attack-ws",
        }
    }
}

impl Attack {
    /// Every attack, in the order of the full plans.
    pub const ALL: [Attack; 12] = [
        Attack::Slowloris,
        Attack::LongLine,
        Attack::NonReader,
        Attack::Invalid,
        Attack::Storm,
        Attack::WsBigFrame,
        Attack::WsFragments,
        Attack::WsSlowFrame,
        Attack::WsBomb,
        Attack::WsIdleDeflate,
        Attack::WsOrigin,
        Attack::WsDupHeaders,
    ];

    /// The name on command lines and in `--attacks`.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Slowloris => "slowloris",
            Attack::LongLine => "longline",
            Attack::NonReader => "nonreader",
            Attack::Invalid => "invalid",
            Attack::Storm => "storm",
            Attack::WsBigFrame => "ws-bigframe",
            Attack::WsFragments => "ws-fragments",
            Attack::WsSlowFrame => "ws-slowframe",
            Attack::WsBomb => "ws-bomb",
            Attack::WsIdleDeflate => "ws-idle-deflate",
            Attack::WsOrigin => "ws-origin",
            Attack::WsDupHeaders => "ws-dupheaders",
        }
    }

    /// The server it attacks.
    pub fn target(self) -> Target {
        match self {
            Attack::Slowloris
            | Attack::LongLine
            | Attack::NonReader
            | Attack::Invalid
            | Attack::Storm => Target::Text,
            _ => Target::Ws,
        }
    }

    /// The attack called `s`.
    pub fn parse(s: &str) -> Result<Attack> {
        Attack::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| anyhow!("unknown attack {s:?}"))
    }

    /// Each attack connects from its own /16 of loopback addresses
    /// (127.10.0.0/16, 127.11.0.0/16, ...), a new address per connection in
    /// turn, so no attack runs out of ephemeral ports.
    pub fn source(self, seq: u64) -> IpAddr {
        let net = 10 + self as u8;
        let k = seq as u16;
        Ipv4Addr::new(127, net, (k >> 8) as u8, k as u8).into()
    }
}

/// The command line of an `attack-child`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct AttackerOpts {
    /// The attack.
    #[arg(value_enum)]
    pub kind: Attack,
    /// The server's port on 127.0.0.1.
    #[arg(long)]
    pub port: u16,
    /// Connections, or concurrent loops, of the attack.
    #[arg(long, default_value_t = 1)]
    pub n: usize,
    /// Where the process runs.
    #[command(flatten)]
    pub placement: Placement,
}

impl AttackerOpts {
    /// The command line that makes a child run this attack.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec![
            "attack-child".to_string(),
            self.kind.name().into(),
            "--port".into(),
            self.port.to_string(),
            "--n".into(),
            self.n.to_string(),
        ];
        a.extend(self.placement.to_args());
        a
    }
}

/// What an attacker process counts.
#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    connect_errors: AtomicU64,
    /// Connections the server closed or reset (or on which a write failed).
    server_closes: AtomicU64,
    /// Invalid-input connections the server had not closed 2 s later.
    not_closed: AtomicU64,
    bytes_sent: AtomicU64,
    /// Connections open now.
    open: AtomicU64,
    /// The WebSocket attacks: what the server did, by [`End::key`] (and
    /// `deflate-on`, `deflate-off`), counted.
    outcomes: Mutex<BTreeMap<String, u64>>,
}

impl Counters {
    /// Counts one `key` outcome.
    fn outcome(&self, key: impl Into<String>) {
        *self.outcomes.lock().unwrap().entry(key.into()).or_default() += 1;
    }

    /// The `result` line: the counters, then ` | ` and the outcomes if
    /// there are any (see [`AttackerResult::parse`]).
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut line = format!(
            "connects={} connect_errors={} server_closes={} not_closed={} sent={} open={}",
            g(&self.connects),
            g(&self.connect_errors),
            g(&self.server_closes),
            g(&self.not_closed),
            bytes(g(&self.bytes_sent) as f64).replace(' ', ""),
            g(&self.open)
        );
        let outcomes = self.outcomes.lock().unwrap();
        if !outcomes.is_empty() {
            line.push_str(" |");
            for (k, n) in outcomes.iter() {
                line.push_str(&format!(" {k}={n}"));
            }
        }
        line
    }
}

/// An attacker's `result` line, read back by the runner.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttackerResult {
    /// Connections made.
    pub connects: u64,
    /// Connections still open when the attack stopped.
    pub open: u64,
    /// What the server did to them (WebSocket attacks): outcome key →
    /// count (see [`outcome_label`]).
    pub outcomes: BTreeMap<String, u64>,
}

impl AttackerResult {
    /// Parses the value of a `result` line (what follows `result `).
    pub fn parse(line: &str) -> Result<AttackerResult> {
        let (counters, outcomes) = line.split_once(" | ").unwrap_or((line, ""));
        let pairs = |part: &str| -> Result<Vec<(String, String)>> {
            part.split_whitespace()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| anyhow!("bad attacker result {line:?}"))
                })
                .collect()
        };
        let num = |v: &str| -> Result<u64> {
            v.parse()
                .map_err(|_| anyhow!("bad count {v:?} in attacker result {line:?}"))
        };
        let mut r = AttackerResult::default();
        for (k, v) in pairs(counters)? {
            match k.as_str() {
                "connects" => r.connects = num(&v)?,
                "open" => r.open = num(&v)?,
                _ => {}
            }
        }
        for (k, v) in pairs(outcomes)? {
            r.outcomes.insert(k, num(&v)?);
        }
        Ok(r)
    }
}

/// How the table names an outcome key of [`AttackerResult::outcomes`].
pub fn outcome_label(key: &str) -> String {
    let (header, key) = match key.split_once(':') {
        Some((h, k)) => (Some(h), k),
        None => (None, key),
    };
    let what = if let Some(code) = key.strip_prefix("http") {
        format!("answered {code}")
    } else if let Some(code) = key.strip_prefix("close") {
        if code.is_empty() {
            "closed without a code".to_string()
        } else {
            format!("closed with {code}")
        }
    } else {
        match key {
            "eof" => "cut without a close frame (EOF)".to_string(),
            "reset" => "reset".to_string(),
            "upgrade-eof" => "cut before answering the upgrade".to_string(),
            "upgrade-reset" => "reset before answering the upgrade".to_string(),
            "no-answer" => "no answer to the upgrade within 5 s".to_string(),
            "bad-101" => "answered 101 with a wrong accept key".to_string(),
            "deflate-on" => "deflate negotiated".to_string(),
            "deflate-off" => "deflate not negotiated".to_string(),
            "unexpected" => "sent something unexpected".to_string(),
            other => other.to_string(),
        }
    };
    match header {
        Some(h) => format!("duplicate {h}: {what}"),
        None => what,
    }
}

/// Longest life of an attacker process whatever happens to the runner.
const ATTACKER_LIFETIME: Duration = Duration::from_secs(120);
/// Connects in flight at once per attacker process.
const CONNECTS_IN_FLIGHT: usize = 64;

/// Entry point of `attack-child <kind> --port P --n N`: runs the attack
/// until its stdin reaches end-of-file (or 120 s passed), then prints
/// `result <counters>` and exits, leaving the kernel to close its sockets.
pub fn child_main(o: &AttackerOpts) -> Result<()> {
    sys::die_with_parent();
    sys::raise_fd_limit()?;
    sys::place(o.placement.cpu, o.placement.nice)?;
    let (kind, port, n) = (o.kind, o.port, o.n);
    if port == 0 || n == 0 {
        bail!("attack-child: --port and --n must be non-zero");
    }
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let counters = Arc::new(Counters::default());
    {
        let c = counters.clone();
        std::thread::Builder::new()
            .name("attack-stdin".into())
            .spawn(move || {
                let mut sink = Vec::new();
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                println!("result {}", c.line());
                std::process::exit(0);
            })?;
    }
    run_for(kind, addr, n, ATTACKER_LIFETIME, &counters)?;
    println!("result {}", counters.line());
    Ok(())
}

/// Runs attack `kind` (`n` connections or loops) against `addr` for
/// `time` in this thread, as an `attack-child` does, and returns what its
/// attackers reported (the end-to-end tests).
#[cfg(test)]
pub fn attack_for(
    kind: Attack,
    addr: SocketAddr,
    n: usize,
    time: Duration,
) -> Result<AttackerResult> {
    let counters = Arc::new(Counters::default());
    run_for(kind, addr, n, time, &counters)?;
    AttackerResult::parse(&counters.line())
}

/// Runs the attack for `time` on a current_thread runtime of this thread;
/// its connections close when it returns.
fn run_for(
    kind: Attack,
    addr: SocketAddr,
    n: usize,
    time: Duration,
    c: &Arc<Counters>,
) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    // Built once, before the clock starts (compressing the bomb takes a
    // moment), and shared by every connection of the process.
    let msg = Rc::new(match kind {
        Attack::WsBigFrame | Attack::WsSlowFrame => BigMessage::one_frame(),
        Attack::WsFragments => BigMessage::fragments(),
        Attack::WsBomb => BigMessage::bomb(),
        _ => BigMessage::default(),
    });
    let hello = Rc::new(IdleHello::new());
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let attack = run_attack(kind, addr, n, c.clone(), msg, hello);
        let _ = tokio::time::timeout(time, attack).await;
    });
    Ok(())
}

/// Runs `n` attackers of `kind` until they all end (never, in practice);
/// `msg` and `hello` are what the big-message and idle-deflate attackers
/// send.
async fn run_attack(
    kind: Attack,
    addr: SocketAddr,
    n: usize,
    c: Arc<Counters>,
    msg: Rc<BigMessage>,
    hello: Rc<IdleHello>,
) {
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, gate, msg, hello) = (c.clone(), gate.clone(), msg.clone(), hello.clone());
        let task = async move {
            // Each loop connects from its own run of source addresses.
            let mut seq = i as u64;
            let mut next_source = move || {
                seq += n as u64;
                kind.source(seq)
            };
            match kind {
                Attack::Slowloris => slowloris(addr, i, n, &gate, &c, &mut next_source).await,
                Attack::LongLine => flood(addr, false, &gate, &c, &mut next_source).await,
                Attack::NonReader => flood(addr, true, &gate, &c, &mut next_source).await,
                Attack::Invalid => invalid(addr, &gate, &c, &mut next_source).await,
                Attack::Storm => storm(addr, &c, &mut next_source).await,
                Attack::WsBigFrame | Attack::WsFragments | Attack::WsBomb => {
                    let pace = Pace::FlatOut;
                    big_message(addr, &msg, pace, &gate, &c, &mut next_source).await
                }
                Attack::WsSlowFrame => {
                    // Spread the connections' writes over each period.
                    let offset = SLOW_PERIOD * i as u32 / n as u32;
                    let pace = Pace::Slow(offset);
                    big_message(addr, &msg, pace, &gate, &c, &mut next_source).await
                }
                Attack::WsIdleDeflate => {
                    idle_deflate(addr, &hello, &gate, &c, &mut next_source).await
                }
                Attack::WsOrigin | Attack::WsDupHeaders => {
                    bad_upgrades(addr, kind, i, &gate, &c, &mut next_source).await
                }
            }
        };
        tasks.push(tokio::task::spawn_local(task));
    }
    for t in tasks {
        let _ = t.await;
    }
}

/// Connects from `source`, at most [`CONNECTS_IN_FLIGHT`] at once.
async fn attacker_connect(
    addr: SocketAddr,
    source: IpAddr,
    gate: &Semaphore,
    c: &Counters,
) -> Option<TcpStream> {
    let _permit = gate.acquire().await.ok()?;
    match tokio::time::timeout(Duration::from_secs(5), connect_from(addr, source)).await {
        Ok(Ok(s)) => {
            c.connects.fetch_add(1, Ordering::Relaxed);
            Some(s)
        }
        _ => {
            c.connect_errors.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

async fn slowloris(
    addr: SocketAddr,
    i: usize,
    n: usize,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    loop {
        let Some(mut s) = attacker_connect(addr, next_source(), gate, c).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        c.open.fetch_add(1, Ordering::Relaxed);
        // Spread the connections' bytes over each second.
        tokio::time::sleep(Duration::from_millis((i * 1000 / n) as u64)).await;
        while s.write_all(b"a").await.is_ok() {
            c.bytes_sent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        c.open.fetch_sub(1, Ordering::Relaxed);
        c.server_closes.fetch_add(1, Ordering::Relaxed);
    }
}

/// `valid`: 32-byte lines, never reading; otherwise one endless line.
async fn flood(
    addr: SocketAddr,
    valid: bool,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    let chunk: Vec<u8> = if valid {
        let unit = Unit::text(PING);
        let mut v = vec![0u8; 2048 * PING];
        for (k, u) in v.chunks_exact_mut(PING).enumerate() {
            unit.fill(u32::MAX, k as u64, u);
        }
        v
    } else {
        vec![b'x'; 64 * 1024]
    };
    loop {
        let Some(mut s) = attacker_connect(addr, next_source(), gate, c).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        c.open.fetch_add(1, Ordering::Relaxed);
        while let Ok(k) = s.write(&chunk).await {
            if k == 0 {
                break;
            }
            c.bytes_sent.fetch_add(k as u64, Ordering::Relaxed);
        }
        c.open.fetch_sub(1, Ordering::Relaxed);
        c.server_closes.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the invalid-input attack sends on each connection: a valid line,
/// then one that is not UTF-8 (a lone continuation byte, an overlong
/// encoding, a truncated sequence).
const INVALID_PAYLOAD: &[u8] = b"a valid line first\n\x80 \xc0\xaf \xe2\x82 invalid\n";

async fn invalid(
    addr: SocketAddr,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Some(mut s) = attacker_connect(addr, next_source(), gate, c).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if s.write_all(INVALID_PAYLOAD).await.is_ok() {
            c.bytes_sent
                .fetch_add(INVALID_PAYLOAD.len() as u64, Ordering::Relaxed);
        }
        let closed = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        match closed {
            Ok(()) => c.server_closes.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.not_closed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

async fn storm(addr: SocketAddr, c: &Counters, next_source: &mut impl FnMut() -> IpAddr) {
    let mut reset = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), connect_from(addr, next_source())).await
        {
            Ok(Ok(s)) => {
                c.connects.fetch_add(1, Ordering::Relaxed);
                if reset {
                    reset_on_close(&s);
                }
                reset = !reset;
                drop(s);
            }
            _ => {
                c.connect_errors.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// `SO_LINGER` with a zero timeout: closing sends a reset, not a FIN.
fn reset_on_close(s: &TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads a `linger` from a valid pointer.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

// ---- the WebSocket attacks ----

/// Size of the message the big-message attacks announce (`ws-bigframe`,
/// `ws-slowframe`) or send (`ws-fragments`, inflated in `ws-bomb`):
/// 10 MiB less 64 KiB, just under the servers' 10 MiB message limit
/// (`peers::serve::MAX_MESSAGE`), so it is a message they must take.
pub const BIG: usize = 10 * 1024 * 1024 - 64 * 1024;
/// The payload bytes of each fragment of `ws-fragments`.
const FRAGMENT: usize = 4 * 1024;
/// What `ws-slowframe` writes each [`SLOW_PERIOD`] per connection.
const SLOW_STEP: usize = 16 * 1024;
/// The period of `ws-slowframe`'s writes (64 KiB a second per connection).
const SLOW_PERIOD: Duration = Duration::from_millis(250);
/// The masking key of every attack frame (the server cannot tell).
const KEY: [u8; 4] = [0x1f, 0x2e, 0x3d, 0x4c];
/// The `Origin` of `ws-origin`'s requests.
pub const FOREIGN_ORIGIN: &str = "https://attacker.example";
/// The header lines `ws-dupheaders` adds, in turn, to an otherwise valid
/// upgrade request (which has each of these once): a second `Host` naming
/// another site, a second (fresh) `Sec-WebSocket-Key`, the version and the
/// `Upgrade` token repeated. `None` stands for a fresh key.
pub const DUPLICATES: [(&str, Option<&str>); 4] = [
    ("Host", Some("attacker.example")),
    ("Sec-WebSocket-Key", None),
    ("Sec-WebSocket-Version", Some("13")),
    ("Upgrade", Some("websocket")),
];
/// Longest wait for the server's answer to an upgrade request.
const UPGRADE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest server frame an attacker reads (they expect close frames and
/// short echoes).
const MAX_SERVER_FRAME: usize = 64 * 1024;

/// What a big-message attacker writes on each connection after the
/// upgrade, a whole message of [`BIG`] bytes if it were all sent: `head`,
/// then `body` over and over for `body_len` bytes, then `tail`; the first
/// `most` bytes at the attack's [`Pace`], the rest a byte a second.
/// Built once per process: `body` is the one payload buffer every
/// connection writes from.
#[derive(Debug, Default)]
pub struct BigMessage {
    head: Vec<u8>,
    body: Vec<u8>,
    body_len: usize,
    tail: Vec<u8>,
    most: usize,
    /// Offer permessage-deflate in the upgrade.
    deflate: bool,
}

impl BigMessage {
    /// `ws-bigframe`, `ws-slowframe`: one masked binary frame announcing
    /// [`BIG`] bytes (a 64-bit length); the body is 64 KiB of masked `x`
    /// (a multiple of 4 bytes, so the mask's phase carries over from one
    /// copy to the next). `most` leaves out the last 64 KiB.
    pub fn one_frame() -> BigMessage {
        let mut head = vec![0u8; 14];
        let h = write_header(&mut head, FIN | OP_BINARY, true, BIG);
        head.truncate(h);
        head.extend_from_slice(&KEY);
        let mut body = vec![b'x'; 64 * 1024];
        apply_mask(&mut body, KEY);
        let total = head.len() + BIG;
        BigMessage {
            most: total - body.len(),
            head,
            body,
            body_len: BIG,
            tail: Vec::new(),
            deflate: false,
        }
    }

    /// `ws-fragments`: a binary message in [`FRAGMENT`]-byte masked
    /// frames ([`BIG`] / [`FRAGMENT`] of them): the first with the opcode,
    /// continuations, the last with FIN; the body is 16 continuations.
    /// `most` leaves out the last 16 (64 KiB of payload).
    pub fn fragments() -> BigMessage {
        let x = [b'x'; FRAGMENT];
        let mut head = Vec::new();
        push_client_frame(&mut head, OP_BINARY, &x, KEY);
        let mut body = Vec::new();
        for _ in 0..16 {
            push_client_frame(&mut body, OP_CONTINUATION, &x, KEY);
        }
        let mut tail = Vec::new();
        push_client_frame(&mut tail, FIN | OP_CONTINUATION, &x, KEY);
        let frame = head.len();
        let body_len = frame * (BIG / FRAGMENT - 2);
        BigMessage {
            most: head.len() + body_len + tail.len() - 16 * frame,
            head,
            body_len,
            body,
            tail,
            deflate: false,
        }
    }

    /// `ws-bomb`: [`BIG`] bytes of `x` as one compressed binary message,
    /// a fragment per 64 KiB of `x`. Each 64 KiB is compressed with a full
    /// flush (no reference to what came before), so after the first every
    /// fragment carries the same 83 bytes: 64 KiB are compressed twice,
    /// once for all (level 9, a 512-byte window, which suits any
    /// `client_max_window_bits` the server asks for). About 14 KiB on the
    /// wire; `most` leaves out the last fragment.
    pub fn bomb() -> BigMessage {
        let x = vec![b'x'; 64 * 1024];
        let mut compress = Compress::new_with_window_bits(Compression::best(), false, 9);
        let mut segment = |out: &mut Vec<u8>| {
            out.reserve(x.len());
            compress
                .compress_vec(&x, out, flate2::FlushCompress::Full)
                .expect("deflate of a buffer in memory");
            assert!(out.ends_with(&[0, 0, 0xff, 0xff]), "a flushed segment");
        };
        let (mut first, mut next) = (Vec::new(), Vec::new());
        segment(&mut first);
        segment(&mut next);
        let mut head = Vec::new();
        push_client_frame(&mut head, RSV1 | OP_BINARY, &first, KEY);
        let mut body = Vec::new();
        push_client_frame(&mut body, OP_CONTINUATION, &next, KEY);
        // The message ends without the last flush's 00 00 ff ff (RFC 7692).
        let mut tail = Vec::new();
        push_client_frame(
            &mut tail,
            FIN | OP_CONTINUATION,
            &next[..next.len() - 4],
            KEY,
        );
        let body_len = body.len() * (BIG / x.len() - 2);
        BigMessage {
            most: head.len() + body_len,
            head,
            body,
            body_len,
            tail,
            deflate: true,
        }
    }

    /// Bytes of the whole message on the wire.
    fn total(&self) -> usize {
        self.head.len() + self.body_len + self.tail.len()
    }

    /// The bytes at stream offset `at`, at most `max` of them.
    fn slice(&self, at: usize, max: usize) -> &[u8] {
        let max = max.min(self.total().saturating_sub(at));
        let body_end = self.head.len() + self.body_len;
        if at < self.head.len() {
            &self.head[at..(at + max).min(self.head.len())]
        } else if at < body_end {
            let off = (at - self.head.len()) % self.body.len();
            let n = max.min(self.body.len() - off).min(body_end - at);
            &self.body[off..off + n]
        } else {
            let off = at - body_end;
            &self.tail[off..off + max]
        }
    }

    /// The first `n` bytes of what a connection writes (tests).
    #[cfg(test)]
    fn bytes(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.extend_from_slice(self.slice(out.len(), n - out.len()));
        }
        out
    }
}

/// How fast a big-message attacker writes the first `most` bytes.
#[derive(Debug, Clone, Copy)]
enum Pace {
    /// As fast as the server takes them.
    FlatOut,
    /// [`SLOW_STEP`] bytes every [`SLOW_PERIOD`], the first after this delay.
    Slow(Duration),
}

/// How the server ended (or answered) one of an attacker's WebSocket
/// connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// It answered the upgrade with this status (not `101`).
    Status(u16),
    /// It answered `101` with an accept key for another key.
    Bad101,
    /// No answer to the upgrade within 5 s.
    NoAnswer,
    /// It closed before answering the upgrade.
    UpgradeEof,
    /// It reset the connection before answering the upgrade.
    UpgradeReset,
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Eof,
    /// The connection was reset (or a write failed).
    Reset,
    /// A masked or oversized frame: not what a server sends.
    Unexpected,
}

impl End {
    /// The outcome key it is counted under (see [`outcome_label`]).
    pub fn key(self) -> String {
        match self {
            End::Status(code) => format!("http{code}"),
            End::Bad101 => "bad-101".into(),
            End::NoAnswer => "no-answer".into(),
            End::UpgradeEof => "upgrade-eof".into(),
            End::UpgradeReset => "upgrade-reset".into(),
            End::Close(Some(code)) => format!("close{code}"),
            End::Close(None) => "close".into(),
            End::Eof => "eof".into(),
            End::Reset => "reset".into(),
            End::Unexpected => "unexpected".into(),
        }
    }
}

/// Sends an upgrade request (with `extra` header lines, permessage-deflate
/// offered if `deflate`) and reads the answer: the negotiated deflate
/// parameters and the bytes after the head on `101`, else how it ended.
async fn attack_upgrade(
    s: &mut TcpStream,
    host: &str,
    deflate: bool,
    extra: &[(&str, &str)],
    c: &Counters,
) -> Result<(Option<DeflateParams>, Vec<u8>), End> {
    let key = generate_key();
    let req = upgrade_request_with(host, PATH, &key, deflate, extra);
    if s.write_all(req.as_bytes()).await.is_err() {
        return Err(End::UpgradeReset);
    }
    c.bytes_sent.fetch_add(req.len() as u64, Ordering::Relaxed);
    let (head, end) = match tokio::time::timeout(UPGRADE_TIMEOUT, read_response_head(s)).await {
        Err(_) => return Err(End::NoAnswer),
        Ok(Err(e)) => {
            return Err(if is_reset(&e) {
                End::UpgradeReset
            } else {
                End::UpgradeEof
            })
        }
        Ok(Ok(h)) => h,
    };
    match response_status(&head[..end]) {
        Ok(101) => {}
        Ok(code) => return Err(End::Status(code)),
        Err(_) => return Err(End::Unexpected),
    }
    match check_response(&head[..end], &key, deflate) {
        Ok(params) => Ok((params, head[end..].to_vec())),
        Err(_) => Err(End::Bad101),
    }
}

/// Whether `e` is a connection reset or a broken pipe.
fn is_reset(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>().is_some_and(|e| {
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        })
    })
}

/// Reads server frames until a close frame, EOF or an error; other frames
/// (pongs, echoes) are passed over. `buf` holds what was read already.
async fn watch_server<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> End {
    loop {
        match next_frame(r, buf).await {
            Ok((OP_CLOSE, payload)) => return End::Close(close_code(&payload).ok().flatten()),
            Ok(_) => {}
            Err(end) => return end,
        }
    }
}

/// Reads the next whole server frame from `r` (`buf` holds what was read
/// before and keeps what follows the frame): its opcode and payload, or
/// how the connection ended.
async fn next_frame<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(u8, Vec<u8>), End> {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_server_header(buf) {
            Err(_) => return Err(End::Unexpected),
            Ok(Some((_, _, len))) if len > MAX_SERVER_FRAME => return Err(End::Unexpected),
            Ok(Some((h, b0, len))) if buf.len() >= h + len => {
                let payload = buf[h..h + len].to_vec();
                buf.drain(..h + len);
                return Ok((b0 & 0x0f, payload));
            }
            Ok(_) => {}
        }
        match r.read(&mut chunk).await {
            Ok(0) => return Err(End::Eof),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(End::Reset),
        }
    }
}

/// Connects and upgrades from `source` (deflate offered if `deflate`);
/// counts a refusal as its outcome and returns `None` then.
async fn ws_connect(
    addr: SocketAddr,
    source: IpAddr,
    deflate: bool,
    gate: &Semaphore,
    c: &Counters,
) -> Option<(TcpStream, Option<DeflateParams>, Vec<u8>)> {
    let mut s = attacker_connect(addr, source, gate, c).await?;
    match attack_upgrade(&mut s, &addr.to_string(), deflate, &[], c).await {
        Ok((params, leftover)) => {
            if deflate {
                c.outcome(if params.is_some() {
                    "deflate-on"
                } else {
                    "deflate-off"
                });
            }
            Some((s, params, leftover))
        }
        Err(end) => {
            c.outcome(end.key());
            None
        }
    }
}

/// `ws-bigframe`, `ws-fragments`, `ws-slowframe`, `ws-bomb`: connect,
/// upgrade, write `msg` (see [`BigMessage`]) while watching what the
/// server sends, until it ends the connection; then again.
async fn big_message(
    addr: SocketAddr,
    msg: &BigMessage,
    pace: Pace,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    loop {
        let Some((mut s, _, mut leftover)) =
            ws_connect(addr, next_source(), msg.deflate, gate, c).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        c.open.fetch_add(1, Ordering::Relaxed);
        let (mut rd, mut wr) = s.split();
        let mut watch = std::pin::pin!(watch_server(&mut rd, &mut leftover));
        let send = write_big(&mut wr, msg, pace, c);
        let end = tokio::select! {
            end = &mut watch => end,
            _ = send => {
                // A write failed: the server closed or reset; its close
                // frame may still be on the way.
                tokio::time::timeout(Duration::from_secs(1), &mut watch)
                    .await
                    .unwrap_or(End::Reset)
            }
        };
        c.open.fetch_sub(1, Ordering::Relaxed);
        c.server_closes.fetch_add(1, Ordering::Relaxed);
        c.outcome(end.key());
    }
}

/// Writes `msg` at `pace`, then the rest a byte a second, then waits
/// forever; returns when a write fails.
async fn write_big<W: AsyncWrite + Unpin>(w: &mut W, msg: &BigMessage, pace: Pace, c: &Counters) {
    let mut at = 0;
    if let Pace::Slow(offset) = pace {
        tokio::time::sleep(offset).await;
    }
    while at < msg.most {
        let step = match pace {
            Pace::FlatOut => 64 * 1024,
            Pace::Slow(_) => SLOW_STEP,
        };
        let end = (at + step).min(msg.most);
        while at < end {
            match w.write(msg.slice(at, end - at)).await {
                Ok(0) | Err(_) => return,
                Ok(k) => {
                    at += k;
                    c.bytes_sent.fetch_add(k as u64, Ordering::Relaxed);
                }
            }
        }
        if let Pace::Slow(_) = pace {
            tokio::time::sleep(SLOW_PERIOD).await;
        }
    }
    while at < msg.total() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        if w.write_all(msg.slice(at, 1)).await.is_err() {
            return;
        }
        at += 1;
        c.bytes_sent.fetch_add(1, Ordering::Relaxed);
    }
    std::future::pending::<()>().await
}

/// The first message of `ws-idle-deflate`: a short text message,
/// compressed once (a 512-byte window, any `client_max_window_bits`
/// suits it) for servers that negotiate permessage-deflate, plain for
/// those that do not.
struct IdleHello {
    compressed: Vec<u8>,
    plain: Vec<u8>,
}

/// The text of [`IdleHello`].
const HELLO: &[u8] = b"an idle permessage-deflate connection says hello";

impl IdleHello {
    fn new() -> IdleHello {
        let mut compress = Compress::new_with_window_bits(Compression::default(), false, 9);
        let mut z = Vec::new();
        compress_message(&mut compress, HELLO, &mut z).expect("deflate of a buffer in memory");
        let mut compressed = Vec::new();
        push_client_frame(&mut compressed, FIN | RSV1 | OP_TEXT, &z, KEY);
        let mut plain = Vec::new();
        push_client_frame(&mut plain, FIN | OP_TEXT, HELLO, KEY);
        IdleHello { compressed, plain }
    }
}

/// `ws-idle-deflate`: connect, upgrade offering permessage-deflate, one
/// message and its echo (so the server's compressor and inflater exist),
/// then nothing until the server ends the connection; then again.
async fn idle_deflate(
    addr: SocketAddr,
    hello: &IdleHello,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    loop {
        let Some((mut s, params, mut buf)) = ws_connect(addr, next_source(), true, gate, c).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let first = if params.is_some() {
            &hello.compressed
        } else {
            &hello.plain
        };
        let echoed = async {
            s.write_all(first).await.map_err(|_| End::Reset)?;
            c.bytes_sent
                .fetch_add(first.len() as u64, Ordering::Relaxed);
            loop {
                match next_frame(&mut s, &mut buf).await? {
                    (OP_CLOSE, payload) => {
                        return Err(End::Close(close_code(&payload).ok().flatten()))
                    }
                    (OP_TEXT, _) => return Ok(()),
                    _ => {}
                }
            }
        };
        let end = match tokio::time::timeout(UPGRADE_TIMEOUT, echoed).await {
            Ok(Ok(())) => {
                c.open.fetch_add(1, Ordering::Relaxed);
                let end = watch_server(&mut s, &mut buf).await;
                c.open.fetch_sub(1, Ordering::Relaxed);
                end
            }
            Ok(Err(end)) => end,
            Err(_) => End::NoAnswer,
        };
        c.server_closes.fetch_add(1, Ordering::Relaxed);
        c.outcome(end.key());
    }
}

/// The extra header line of upgrade attempt `attempt` of `kind`
/// (`ws-origin` or `ws-dupheaders`; `fresh_key` for a second key), and the
/// prefix of its outcome keys (the duplicated header's name and `:`).
fn bad_upgrade_header(
    kind: Attack,
    attempt: usize,
    fresh_key: &str,
) -> ((&'static str, String), String) {
    if kind == Attack::WsOrigin {
        return (("Origin", FOREIGN_ORIGIN.to_string()), String::new());
    }
    let (name, value) = DUPLICATES[attempt % DUPLICATES.len()];
    (
        (name, value.unwrap_or(fresh_key).to_string()),
        format!("{name}:"),
    )
}

/// `ws-origin`, `ws-dupheaders`: loops of connect, upgrade request (see
/// [`bad_upgrade_header`]), the answer counted; a `101` is closed at once
/// with a close frame.
async fn bad_upgrades(
    addr: SocketAddr,
    kind: Attack,
    i: usize,
    gate: &Semaphore,
    c: &Counters,
    next_source: &mut impl FnMut() -> IpAddr,
) {
    let host = addr.to_string();
    let mut close = Vec::new();
    push_close(&mut close, KEY);
    for attempt in i.. {
        let Some(mut s) = attacker_connect(addr, next_source(), gate, c).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let fresh = generate_key();
        let ((name, value), prefix) = bad_upgrade_header(kind, attempt, &fresh);
        match attack_upgrade(&mut s, &host, false, &[(name, &value)], c).await {
            Ok((_, mut buf)) => {
                c.outcome(format!("{prefix}http101"));
                if s.write_all(&close).await.is_ok() {
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        watch_server(&mut s, &mut buf),
                    )
                    .await;
                }
            }
            Err(end) => c.outcome(format!("{prefix}{}", end.key())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn attack_names_round_trip_and_sources_differ() {
        let all = Attack::ALL;
        for a in all {
            assert_eq!(Attack::parse(a.name()).unwrap(), a);
            let o = AttackerOpts {
                kind: a,
                port: 9,
                n: 3,
                placement: Placement {
                    cpu: Some(1),
                    nice: None,
                },
            };
            assert_eq!(AttackerOpts::try_parse_from(o.to_args()).unwrap(), o);
        }
        assert!(Attack::parse("nope").is_err());
        let s: std::collections::HashSet<_> = all.iter().map(|a| a.source(1)).collect();
        assert_eq!(
            s.len(),
            all.len(),
            "each attack has its own source addresses"
        );
        assert_ne!(Attack::Storm.source(1), Attack::Storm.source(2));
    }

    /// The result line reads back: counters and outcomes; a text
    /// attacker's line has no outcomes.
    #[test]
    fn result_lines_read_back() {
        let c = Counters::default();
        c.connects.store(7, Ordering::Relaxed);
        c.open.store(2, Ordering::Relaxed);
        c.bytes_sent.store(3 << 20, Ordering::Relaxed);
        assert_eq!(AttackerResult::parse(&c.line()).unwrap().outcomes.len(), 0);
        c.outcome(End::Close(Some(1009)).key());
        c.outcome(End::Close(Some(1009)).key());
        c.outcome(format!("Host:{}", End::Status(400).key()));
        c.outcome("deflate-on");
        let r = AttackerResult::parse(&c.line()).unwrap();
        assert_eq!((r.connects, r.open), (7, 2));
        let got: Vec<(&str, u64)> = r.outcomes.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        assert_eq!(
            got,
            [("Host:http400", 1), ("close1009", 2), ("deflate-on", 1)]
        );
        assert!(AttackerResult::parse("connects=x open=0").is_err());
        assert!(AttackerResult::parse("connects=1 open=0 | close1009").is_err());
    }

    #[test]
    fn outcomes_have_labels() {
        assert_eq!(outcome_label("close1009"), "closed with 1009");
        assert_eq!(outcome_label("close"), "closed without a code");
        assert_eq!(outcome_label("http403"), "answered 403");
        assert_eq!(
            outcome_label("Host:http400"),
            "duplicate Host: answered 400"
        );
        assert_eq!(outcome_label(&End::Reset.key()), "reset");
        assert_eq!(
            outcome_label(&End::Eof.key()),
            "cut without a close frame (EOF)"
        );
        assert_eq!(
            outcome_label(&End::NoAnswer.key()),
            "no answer to the upgrade within 5 s"
        );
    }

    /// Every WebSocket attack is `attack-ws`'s and connects from its own
    /// /16 of loopback addresses, apart from the text attacks'.
    #[test]
    fn websocket_attacks_target_the_websocket_server() {
        for a in Attack::ALL {
            assert_eq!(
                a.target() == Target::Ws,
                a.name().starts_with("ws-"),
                "{a:?}"
            );
        }
        assert_eq!(Target::Ws.scenario(), "attack-ws");
        assert_eq!(Attack::WsDupHeaders.source(0), Ipv4Addr::new(127, 21, 0, 0));
    }

    /// tungstenite's frame parser reads `frames` as frames of the given
    /// first bytes (FIN, RSV1, opcode) and payload lengths, all masked with
    /// [`KEY`]; returns the unmasked payloads joined.
    fn parse_frames(frames: &[u8], want: &[(bool, bool, u8, u64)]) -> Vec<u8> {
        use std::io::Cursor;
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        let mut cur = Cursor::new(frames);
        let mut payload = Vec::new();
        for (i, &(fin, rsv1, op, len)) in want.iter().enumerate() {
            let (h, n) = FrameHeader::parse(&mut cur)
                .unwrap()
                .expect("a whole header");
            assert_eq!(
                (h.is_final, h.rsv1, u8::from(h.opcode), n),
                (fin, rsv1, op, len),
                "frame {i}"
            );
            assert_eq!(h.mask, Some(KEY));
            let at = cur.position() as usize;
            let mut p = frames[at..at + n as usize].to_vec();
            apply_mask(&mut p, KEY);
            payload.extend_from_slice(&p);
            cur.set_position((at + n as usize) as u64);
        }
        assert_eq!(
            cur.position() as usize,
            frames.len(),
            "nothing after the frames"
        );
        payload
    }

    /// Decodes `bytes` with lubdub's server session: the messages.
    fn lubdub_decodes(
        ws: &mut lubdub::protocol::Session<lubdub::ws::Ws>,
        bytes: &[u8],
    ) -> Vec<lubdub::ws::Message> {
        crate::load::ws_codec::lubdub_side::decode_all(ws, bytes)
    }

    /// `ws-bigframe` (and `ws-slowframe`): one masked binary frame whose
    /// 64-bit length announces [`BIG`] bytes; what the attacker writes
    /// before trickling leaves the message open in lubdub's decoder,
    /// which then holds nearly all of it, and the rest completes it.
    #[test]
    fn bigframe_announces_a_big_message_and_sends_most_of_it() {
        use crate::load::ws_codec::lubdub_side::server_frames;
        let msg = BigMessage::one_frame();
        assert_eq!(
            &msg.head[..2],
            &[FIN | OP_BINARY, 0x80 | 127],
            "a 64-bit length"
        );
        assert_eq!(msg.total() - msg.most, 64 * 1024);
        let all = msg.bytes(msg.total());
        let payload = parse_frames(&all, &[(true, false, OP_BINARY, BIG as u64)]);
        assert!(payload.iter().all(|&b| b == b'x'));
        let mut ws = server_frames(false);
        assert!(lubdub_decodes(&mut ws, &all[..msg.most]).is_empty());
        assert!(ws.held_bytes() >= msg.most - 14, "held {}", ws.held_bytes());
        let done = lubdub_decodes(&mut ws, &all[msg.most..]);
        assert_eq!(done, [lubdub::ws::Message::Binary(payload)]);
    }

    /// `ws-fragments`: a binary first fragment, continuations of 4 KiB
    /// each and a final one, [`BIG`] bytes in all; lubdub's decoder
    /// reassembles what comes before the last 64 KiB without delivering
    /// anything, and the rest completes the message.
    #[test]
    fn fragments_are_a_big_message_left_open() {
        use crate::load::ws_codec::lubdub_side::server_frames;
        let msg = BigMessage::fragments();
        let all = msg.bytes(msg.total());
        let n = BIG / FRAGMENT;
        let mut want = vec![(false, false, OP_BINARY, FRAGMENT as u64)];
        want.resize(n - 1, (false, false, OP_CONTINUATION, FRAGMENT as u64));
        want.push((true, false, OP_CONTINUATION, FRAGMENT as u64));
        let payload = parse_frames(&all, &want);
        assert_eq!(payload.len(), BIG);
        assert_eq!(msg.total() - msg.most, 16 * (FRAGMENT + 8));
        let mut ws = server_frames(false);
        assert!(lubdub_decodes(&mut ws, &all[..msg.most]).is_empty());
        assert!(ws.held_bytes() >= BIG - 16 * FRAGMENT);
        assert_eq!(
            lubdub_decodes(&mut ws, &all[msg.most..]),
            [lubdub::ws::Message::Binary(payload)]
        );
    }

    /// `ws-bomb`: about 14 KiB on the wire, a compressed fragment per
    /// 64 KiB of one binary message (RSV1 on the first); lubdub's
    /// inflating decoder holds nearly 10 MiB once everything but the last
    /// fragment is in, and the last yields [`BIG`] bytes of `x`.
    #[test]
    fn the_bomb_inflates_to_nearly_ten_mib_from_about_fourteen_kib() {
        use crate::load::ws_codec::lubdub_side::server_frames;
        let msg = BigMessage::bomb();
        assert!(msg.deflate);
        assert!(
            (12 * 1024..16 * 1024).contains(&msg.total()),
            "{} bytes",
            msg.total()
        );
        let all = msg.bytes(msg.total());
        let n = BIG / (64 * 1024);
        let z = (msg.body.len() - 6) as u64;
        let mut want = vec![(false, true, OP_BINARY, (msg.head.len() - 6) as u64)];
        want.resize(n - 1, (false, false, OP_CONTINUATION, z));
        want.push((true, false, OP_CONTINUATION, z - 4));
        parse_frames(&all, &want);
        assert_eq!(
            msg.total() - msg.most,
            msg.tail.len(),
            "all but the last fragment"
        );
        let mut ws = server_frames(true);
        assert!(lubdub_decodes(&mut ws, &all[..msg.most]).is_empty());
        assert!(
            ws.held_bytes() > 9 * 1024 * 1024,
            "held {}",
            ws.held_bytes()
        );
        let done = lubdub_decodes(&mut ws, &all[msg.most..]);
        let [lubdub::ws::Message::Binary(b)] = &done[..] else {
            panic!("{} messages", done.len())
        };
        assert!(b.len() == BIG && b.iter().all(|&x| x == b'x'));
    }

    /// A connection's stream is the same whatever the write sizes: head,
    /// the one body buffer cycled (the mask phase kept), tail, then nothing.
    #[test]
    fn big_message_slices_follow_the_stream() {
        for msg in [BigMessage::one_frame(), BigMessage::fragments()] {
            let whole = msg.bytes(msg.total());
            let mut pieced = Vec::new();
            for step in [1, 7, 13, 65_536, 100_000].iter().cycle() {
                if pieced.len() >= whole.len() {
                    break;
                }
                pieced.extend_from_slice(msg.slice(pieced.len(), *step));
            }
            assert_eq!(pieced, whole);
            assert!(whole.ends_with(&msg.tail));
            assert_eq!(msg.slice(msg.total(), 10), b"");
        }
    }

    /// The request of attempt `attempt` of `kind`, as `bad_upgrades` sends
    /// it, and its outcome prefix.
    fn bad_request(kind: Attack, attempt: usize, key: &str, fresh: &str) -> (String, String) {
        let ((name, value), prefix) = bad_upgrade_header(kind, attempt, fresh);
        let req = upgrade_request_with("127.0.0.1:9", PATH, key, false, &[(name, &value)]);
        (req, prefix)
    }

    /// The header lines of a request head, by lowercase name, in order.
    fn header_lines(req: &str) -> Vec<(String, String)> {
        let mut slots = [httparse::EMPTY_HEADER; 16];
        let mut r = httparse::Request::new(&mut slots);
        assert!(r.parse(req.as_bytes()).unwrap().is_complete());
        r.headers
            .iter()
            .map(|h| {
                let v = String::from_utf8(h.value.to_vec()).unwrap();
                (h.name.to_ascii_lowercase(), v)
            })
            .collect()
    }

    /// What lubdub's server role makes of a request: its header lines of
    /// `name` if it reads it as an upgrade, or the status of its refusal.
    fn lubdub_reads(req: &str, name: &str) -> Result<Vec<String>, String> {
        use lubdub::protocol::Session;
        use lubdub::ws::{Ws, WsConfig};
        use lubdub::Decoded;
        let mut s = Session::new(Ws::server(WsConfig::default()));
        s.start();
        match s.decode(req.as_bytes()) {
            Ok(Decoded::Handshake { data, consumed }) => {
                assert_eq!(consumed, req.len());
                let r = data.request().expect("a request");
                assert_eq!(r.path(), PATH);
                Ok(r.headers()
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                    .map(|(_, v)| String::from_utf8(v.to_vec()).unwrap())
                    .collect())
            }
            Ok(other) => panic!("{other:?}"),
            Err(_) => {
                let head = String::from_utf8_lossy(&s.wire.take()).into_owned();
                Err(head.lines().next().unwrap_or_default().to_string())
            }
        }
    }

    /// `ws-origin`: a valid upgrade request plus one foreign `Origin`.
    #[test]
    fn the_origin_attack_sends_a_foreign_origin() {
        let key = generate_key();
        let (req, prefix) = bad_request(Attack::WsOrigin, 0, &key, "unused");
        assert_eq!(prefix, "");
        let lines = header_lines(&req);
        let origins: Vec<_> = lines.iter().filter(|(n, _)| n == "origin").collect();
        assert_eq!(
            origins,
            [&("origin".to_string(), FOREIGN_ORIGIN.to_string())]
        );
        assert_eq!(req, {
            let plain = crate::load::ws_codec::upgrade_request("127.0.0.1:9", PATH, &key, false);
            format!(
                "{}Origin: {FOREIGN_ORIGIN}\r\n\r\n",
                &plain[..plain.len() - 2]
            )
        });
        match lubdub_reads(&req, "Origin") {
            Ok(v) => assert_eq!(v, [FOREIGN_ORIGIN]),
            Err(status) => assert!(status.contains(" 403 "), "{status}"),
        }
    }

    /// `ws-dupheaders`: in turn, each of the four headers twice (with the
    /// value [`DUPLICATES`] gives), every other header once; lubdub's
    /// decoder reads both lines (or refuses the request with 400).
    #[test]
    fn the_duplicate_attack_repeats_each_header_in_turn() {
        let (key, fresh) = (generate_key(), generate_key());
        let once = [
            "host",
            "upgrade",
            "connection",
            "sec-websocket-key",
            "sec-websocket-version",
        ];
        for (attempt, &(name, value)) in DUPLICATES.iter().enumerate() {
            let (req, prefix) = bad_request(Attack::WsDupHeaders, attempt, &key, &fresh);
            assert_eq!(prefix, format!("{name}:"));
            let lines = header_lines(&req);
            for h in once {
                let n = lines.iter().filter(|(n, _)| n == h).count();
                let want = if h == name.to_ascii_lowercase() { 2 } else { 1 };
                assert_eq!(n, want, "{h} in attempt {attempt}");
            }
            assert_eq!(lines.len(), once.len() + 1);
            let second = &lines.last().unwrap().1;
            assert_eq!(second, value.unwrap_or(&fresh));
            match lubdub_reads(&req, name) {
                Ok(v) => assert_eq!(v.len(), 2, "{name}: {v:?}"),
                Err(status) => assert!(status.contains(" 400 "), "{name}: {status}"),
            }
        }
        // Attempts go round the four headers.
        assert_eq!(
            bad_request(Attack::WsDupHeaders, 4, &key, &fresh).1,
            "Host:"
        );
    }

    #[test]
    fn the_invalid_attack_sends_a_valid_line_then_invalid_utf8() {
        let lines: Vec<&[u8]> = INVALID_PAYLOAD.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 2);
        assert!(std::str::from_utf8(lines[0]).is_ok());
        assert!(std::str::from_utf8(lines[1]).is_err());
        assert!(lines[1].ends_with(b"\n"));
    }
}
