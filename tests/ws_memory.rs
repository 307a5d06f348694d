//! WebSocket messages and the worker's memory budget, against the
//! `ws_echo` example run as a child process (its peak RSS is read from
//! `/proc/PID/status`):
//!
//! * a thousand peers each announcing a message of about 10 MiB and
//!   sending most of it (one large frame with a 64-bit length, or many
//!   fragments, or permessage-deflate where a few KiB on the wire inflate
//!   to megabytes) against a worker with a 256 MiB budget: its peak RSS
//!   stays under the budget plus 64 MiB, every attacker is closed (over the
//!   budget with `CloseReason::Overload`, or with 1009 at the message
//!   limit), and a healthy client's echo keeps coming back throughout;
//! * what an idle connection with permessage-deflate costs the server
//!   (the figure in docs/limits.md).
//!
//! The attackers write from one reused, pre-masked buffer (the deflate
//! ones from one pre-compressed piece), so the test itself allocates
//! little. The two attacks never run at once (one lock).

mod common;
mod ws_raw;
mod ws_support;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ws_raw::deflate::{bomb, TRAILER};
use ws_raw::{mask, RawClient, ACCEPT, KEY};
use ws_support::{example_binary, ChildGuard};

/// The worker's memory budget in the attack.
const BUDGET: usize = 256 << 20;
/// What the server's peak RSS may exceed the budget by.
const MARGIN: usize = 64 << 20;
/// The WebSocket and worker message limit (ws_echo's default).
const MAX_MESSAGE: usize = 10 << 20;
/// The masking key of every attacker frame.
const MASK: [u8; 4] = [0x5a, 0xc3, 0x96, 0x2f];
/// How long the whole attack may take before the test fails.
const ATTACK_BOUND: Duration = Duration::from_secs(40);

/// One attack at a time: each starts its own server and a thousand sockets.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Raises this process's open-file limit (the child inherits it) to at
/// least `need`, or fails saying why.
fn ensure_fds(need: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < need {
            assert!(
                lim.rlim_max >= need,
                "this test needs {need} open files; the hard limit is {}: raise it \
                 (`ulimit -Hn`)",
                lim.rlim_max
            );
            lim.rlim_cur = need;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
}

/// A `kB` field of /proc/PID/status, in bytes.
fn status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        * 1024
}

/// `ws_echo` on a free loopback port with `args`; `deflate` is the value of
/// `LUBDUB_WS_DEFLATE` (`1`: the defaults, `takeover`: context takeover
/// both ways), if any.
fn start_echo(deflate: Option<&str>, args: &[&str]) -> (ChildGuard, SocketAddr) {
    let mut cmd = Command::new(example_binary("ws_echo"));
    cmd.args(["--listen", "ws://127.0.0.1:0"])
        .args(args)
        .env_remove("LUBDUB_WS_MAX_MESSAGE")
        .env_remove("LUBDUB_WS_DEFLATE");
    if let Some(value) = deflate {
        cmd.env("LUBDUB_WS_DEFLATE", value);
    }
    let child = ChildGuard::spawn("ws_echo example", &mut cmd);
    let line = child.line();
    let addr = line
        .strip_prefix("ws echo listening on ws://")
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("ws_echo's banner: {line:?}"));
    (child, addr)
}

/// Opens `n` connections and upgrades them all (requests first, then the
/// answers), offering `extensions` if given; returns them non-blocking.
fn upgrade_many(addr: SocketAddr, n: usize, extensions: Option<&str>) -> Vec<TcpStream> {
    let ext = extensions
        .map(|e| format!("Sec-WebSocket-Extensions: {e}\r\n"))
        .unwrap_or_default();
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n"
    );
    let mut streams: Vec<TcpStream> = (0..n)
        .map(|i| {
            let mut s =
                TcpStream::connect(addr).unwrap_or_else(|e| panic!("attacker {i}: connect: {e}"));
            s.set_read_timeout(Some(ws_support::WAIT)).unwrap();
            s.set_nodelay(true).unwrap();
            s.write_all(request.as_bytes()).unwrap();
            s
        })
        .collect();
    for (i, s) in streams.iter_mut().enumerate() {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            let n = s
                .read(&mut byte)
                .unwrap_or_else(|e| panic!("attacker {i}: upgrade answer: {e}"));
            assert_eq!(n, 1, "attacker {i}: closed during the upgrade");
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        assert!(
            head.starts_with("HTTP/1.1 101") && head.contains(ACCEPT),
            "attacker {i}: {head}"
        );
        if extensions.is_some() {
            assert!(head.contains("permessage-deflate"), "attacker {i}: {head}");
        }
        s.set_nonblocking(true).unwrap();
    }
    streams
}

/// What an attacker sends: a message larger than the limit, so that one
/// the budget does not close first reaches 1009.
#[derive(Clone, Copy, Debug)]
enum Plan {
    /// One frame announcing 9 MiB (a 64-bit length), then 1 MiB fragments.
    LargeFrame,
    /// Fragments of 32 KiB.
    Fragments,
    /// permessage-deflate: fragments of a few KiB each inflating to 1 MiB.
    Deflate,
}

/// How an attacker's connection ended, as the attacker saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ended {
    /// A close frame with this code.
    Close(u16),
    /// A FIN without a close frame.
    Eof,
    /// A reset.
    Reset,
}

/// The bytes every attacker writes: payload bytes (zeros masked with
/// [`MASK`]) and the compressed piece, each made once.
struct Material {
    /// [`MASK`] repeated: zeros, masked, from any offset that is a
    /// multiple of 4.
    zeros: Vec<u8>,
    /// Raw DEFLATE data inflating to 1 MiB of zeros, ending with a full
    /// sync flush (so pieces concatenate), masked from offset 0.
    piece: Vec<u8>,
}

impl Material {
    fn new() -> Self {
        let zeros: Vec<u8> = MASK.iter().copied().cycle().take(64 * 1024).collect();
        let mut piece = bomb(1 << 20);
        piece.extend_from_slice(&TRAILER);
        mask(&mut piece, MASK);
        Material { zeros, piece }
    }
}

/// A masked frame header announcing `len` bytes.
fn header(fin: bool, rsv1: bool, opcode: u8, len: usize) -> Vec<u8> {
    let mut h = vec![(u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode];
    match len {
        0..=125 => h.push(0x80 | len as u8),
        126..=0xFFFF => {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            h.push(0x80 | 127);
            h.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    h.extend_from_slice(&MASK);
    h
}

struct Attacker {
    stream: TcpStream,
    plan: Plan,
    /// Frames started so far.
    frames: usize,
    /// Header bytes of the current frame not written yet.
    head: Vec<u8>,
    /// Payload bytes of the current frame written so far, and its length.
    done: usize,
    len: usize,
    /// Payload bytes of the whole message written so far.
    message: usize,
    /// Bytes read from the server (a close frame, at most).
    inbox: Vec<u8>,
    ended: Option<Ended>,
}

impl Attacker {
    fn new(stream: TcpStream, plan: Plan) -> Self {
        Attacker {
            stream,
            plan,
            frames: 0,
            head: Vec::new(),
            done: 0,
            len: 0,
            message: 0,
            inbox: Vec::new(),
            ended: None,
        }
    }

    /// Sets up the next frame; `false` when the plan is written out.
    fn next_frame(&mut self, m: &Material) -> bool {
        let first = self.frames == 0;
        let opcode = if first { 0x2 } else { 0x0 };
        let (len, limit) = match self.plan {
            Plan::LargeFrame => (
                if first { 9 << 20 } else { 1 << 20 },
                MAX_MESSAGE + (1 << 20),
            ),
            Plan::Fragments => (32 << 10, MAX_MESSAGE + (1 << 20)),
            // Counted in inflated bytes: a piece is 1 MiB.
            Plan::Deflate => (m.piece.len(), 11),
        };
        let sent = match self.plan {
            Plan::Deflate => self.frames,
            _ => self.message,
        };
        if sent >= limit {
            return false;
        }
        let rsv1 = first && matches!(self.plan, Plan::Deflate);
        self.head = header(false, rsv1, opcode, len);
        self.frames += 1;
        self.done = 0;
        self.len = len;
        true
    }

    /// Writes what the socket takes; `true` while there is more to write.
    fn write(&mut self, m: &Material) -> bool {
        loop {
            if self.head.is_empty() && self.done == self.len && !self.next_frame(m) {
                return false;
            }
            let res = if !self.head.is_empty() {
                self.stream.write(&self.head).map(|n| {
                    self.head.drain(..n);
                })
            } else {
                let left = self.len - self.done;
                let src = match self.plan {
                    Plan::Deflate => &m.piece[self.done..],
                    _ => {
                        let at = self.done % m.zeros.len();
                        &m.zeros[at..(at + left).min(m.zeros.len())]
                    }
                };
                self.stream.write(src).map(|n| {
                    self.done += n;
                    self.message += n;
                })
            };
            match res {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // The server closed: reading tells how.
                Err(_) => return false,
            }
        }
    }

    /// Reads what the server sent; sets `ended` once the connection ended.
    fn read(&mut self) {
        let mut buf = [0u8; 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => {
                    self.ended = Some(self.close_code().map_or(Ended::Eof, Ended::Close));
                    return;
                }
                Ok(n) => {
                    self.inbox.extend_from_slice(&buf[..n]);
                    if let Some(code) = self.close_code() {
                        self.ended = Some(Ended::Close(code));
                        return;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    self.ended = Some(self.close_code().map_or(Ended::Reset, Ended::Close));
                    return;
                }
            }
        }
    }

    /// The code of the server's close frame, once it is all in.
    fn close_code(&self) -> Option<u16> {
        match self.inbox.as_slice() {
            [0x88, len, hi, lo, ..] if *len >= 2 && *len <= 125 => {
                Some(u16::from_be_bytes([*hi, *lo]))
            }
            [first, ..] => panic!("the server sent {first:#04x}, not a close frame"),
            [] => None,
        }
    }
}

/// The healthy client: an echo round trip every 20 ms until told to stop;
/// returns the round-trip times.
fn healthy(addr: SocketAddr, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Vec<Duration>> {
    let mut c = RawClient::connect(addr);
    std::thread::spawn(move || {
        let mut times = Vec::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let text = format!("still here {i}");
            let start = Instant::now();
            c.roundtrip(&text);
            times.push(start.elapsed());
            i += 1;
            std::thread::sleep(Duration::from_millis(20));
        }
        c.close(1000, &[Some(1000)]);
        times
    })
}

/// The attack: `n` attackers of each of `plans` against a fresh ws_echo
/// with a 256 MiB budget; asserts the peak RSS, every attacker's end, the
/// server's view of the closes and the healthy client's round trips.
fn attack(deflate: bool, plans: &[Plan], n: usize) {
    let _one = serial();
    let attackers = n * plans.len();
    ensure_fds(2 * attackers as u64 + 256);
    let (server, addr) = start_echo(
        deflate.then_some("1"),
        &["--memory-budget", "256M", "--print-closes"],
    );
    let pid = server.pid();
    let baseline = status_bytes(pid, "VmRSS:");
    let material = Material::new();
    let stop = Arc::new(AtomicBool::new(false));
    let healthy = healthy(addr, stop.clone());

    let offer = deflate.then_some("permessage-deflate; client_max_window_bits");
    let mut all: Vec<Attacker> = Vec::new();
    for plan in plans {
        all.extend(
            upgrade_many(addr, n, offer)
                .into_iter()
                .map(|s| Attacker::new(s, *plan)),
        );
    }
    let start = Instant::now();
    let mut writing: Vec<bool> = vec![true; all.len()];
    let mut fds: Vec<libc::pollfd> = Vec::with_capacity(all.len());
    let mut index: Vec<usize> = Vec::with_capacity(all.len());
    loop {
        fds.clear();
        index.clear();
        for (i, a) in all.iter().enumerate() {
            if a.ended.is_none() {
                let out = if writing[i] { libc::POLLOUT } else { 0 };
                fds.push(libc::pollfd {
                    fd: a.stream.as_raw_fd(),
                    events: libc::POLLIN | out,
                    revents: 0,
                });
                index.push(i);
            }
        }
        if fds.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < ATTACK_BOUND,
            "{} of {} attackers still open after {ATTACK_BOUND:?} (peak RSS {} MiB); \
             server stderr:\n{}",
            fds.len(),
            all.len(),
            status_bytes(pid, "VmHWM:") >> 20,
            server.stderr()
        );
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        assert!(ready >= 0, "poll: {}", std::io::Error::last_os_error());
        for (pfd, &i) in fds.iter().zip(&index) {
            let a = &mut all[i];
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 {
                a.read();
            }
            if a.ended.is_none() && pfd.revents & libc::POLLOUT != 0 {
                writing[i] = a.write(&material);
            }
        }
    }
    let took = start.elapsed();
    let peak = status_bytes(pid, "VmHWM:");
    stop.store(true, Ordering::Relaxed);
    let times = match healthy.join() {
        Ok(t) => t,
        Err(e) => std::panic::resume_unwind(e),
    };

    // What the attackers saw.
    let mut seen = std::collections::BTreeMap::<String, usize>::new();
    for a in &all {
        let ended = a.ended.expect("every attacker ended");
        assert!(
            matches!(ended, Ended::Close(1009) | Ended::Eof | Ended::Reset),
            "an attacker ({:?}) ended with {ended:?}",
            a.plan
        );
        *seen.entry(format!("{ended:?}")).or_default() += 1;
    }
    // What the server saw: a close line per attacker, Overload or Protocol
    // (1009), and the healthy client's own close after that.
    let mut closes = std::collections::BTreeMap::<String, usize>::new();
    let mut counted = 0;
    while counted < all.len() + 1 {
        let line = server.line();
        if let Some(rest) = line.strip_prefix("close ") {
            let reason = rest.split_once(' ').map_or("", |(_, r)| r);
            *closes.entry(reason.to_owned()).or_default() += 1;
            counted += 1;
        }
    }
    let mut sorted = times.clone();
    sorted.sort();
    let p50 = sorted[sorted.len() / 2];
    let worst = sorted.last().copied().unwrap_or_default();
    eprintln!(
        "{} attackers ({plans:?}, deflate {deflate}) closed in {took:.1?}: server RSS \
         {} MiB before, peak {} MiB (budget {} MiB); attackers saw {seen:?}; server closes \
         {closes:?}; healthy client: {} round trips, median {p50:?}, worst {worst:?}",
        all.len(),
        baseline >> 20,
        peak >> 20,
        BUDGET >> 20,
        times.len()
    );
    let budget_or_limit: usize = ["Overload", "Protocol"]
        .iter()
        .map(|r| closes.get(*r).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        budget_or_limit,
        all.len(),
        "every attacker closed over the budget or at the limit: {closes:?}"
    );
    assert!(
        peak < BUDGET + MARGIN,
        "peak RSS {} MiB over the budget of {} MiB + {} MiB",
        peak >> 20,
        BUDGET >> 20,
        MARGIN >> 20
    );
    assert!(times.len() >= 5, "{} round trips", times.len());
    assert!(
        worst < Duration::from_secs(10),
        "a round trip took {worst:?}"
    );
    drop(server);
}

/// 500 peers announcing 9 MiB in one frame, 500 sending 32 KiB fragments,
/// each going on past the 10 MiB limit until closed.
///
/// Ignored: it fails. Measured on a loaded 2-core VM, debug build: peak RSS
/// 339-341 MiB (the budget's charges stay near 256 MiB; the rest is what
/// each connection holds under a 64 KiB charging unit, rounded down, and
/// what the allocator keeps of closed connections: the loop trims only
/// when about to sleep), and the attack takes 32-40 s, over this test's
/// bound. Run it with `--ignored` (docs/reliability.md).
#[test]
#[ignore = "peak RSS 339-341 MiB, over budget + 64 MiB (docs/reliability.md)"]
fn a_thousand_large_plain_messages_stay_within_the_memory_budget() {
    attack(false, &[Plan::LargeFrame, Plan::Fragments], 500);
}

/// 1,000 peers with permessage-deflate sending fragments of about 6.6 KiB
/// that each inflate to 1 MiB, going on past the 10 MiB limit until closed.
///
/// Ignored: it fails on the peak. A poll of a connection now stops
/// decoding once its session grew by 64 KiB, so the budget weighs the
/// growth before the next decode (RSS went past 4.6 GiB before that; 442
/// MiB with a 256 KiB step), and every attacker is closed (Overload or
/// 1009) within 10 s, the healthy client round-tripping (worst 1.1 s), but
/// the peak is 371-390 MiB: the charges still go past the budget while
/// connections charged less than a unit are never held. Run it with
/// `--ignored` (docs/reliability.md).
#[test]
#[ignore = "peak RSS 371-390 MiB, over budget + 64 MiB (docs/reliability.md)"]
fn a_thousand_deflate_bombs_in_pieces_stay_within_the_memory_budget() {
    attack(true, &[Plan::Deflate], 1000);
}

/// What an idle WebSocket connection costs the server in RSS, with
/// permessage-deflate (a browser's offer) and without: `N` connections
/// upgraded (idle, never used), then each sends five compressed messages of
/// 1 KiB and gets their echoes (idle after use: 5 KiB each way, more
/// than a 12-bit window, so what context takeover keeps is held; small
/// messages, so freed buffers are reused rather than left in the
/// allocator's free lists). Prints the figures docs/limits.md gives;
/// asserts the target of 8 KiB per idle deflate connection with the
/// default settings.
#[test]
fn idle_deflate_connections_cost_a_few_kib_each() {
    const N: usize = 1000;
    let _one = serial();
    ensure_fds(2 * N as u64 + 256);
    let texts: Vec<String> = (0..5)
        .map(|i| {
            let line = format!("{{\"type\":\"chat\",\"room\":{i},\"text\":\"lub dub {i}\"}} ");
            line.repeat(40)[..1024].to_owned()
        })
        .collect();
    let mut report = Vec::new();
    for (name, deflate) in [
        ("no deflate", None),
        ("deflate, defaults", Some("1")),
        ("deflate, context takeover", Some("takeover")),
    ] {
        let (server, addr) = start_echo(deflate, &[]);
        let pid = server.pid();
        // One connection first: the loop's buffers and the per-thread
        // spare zlib streams exist before the baseline.
        let offer = [(
            "Sec-WebSocket-Extensions",
            "permessage-deflate; client_max_window_bits",
        )];
        let extra: &[(&str, &str)] = if deflate.is_some() { &offer } else { &[] };
        let mut warm = RawClient::connect_with(addr, extra);
        for text in &texts {
            exchange(&mut warm, text);
        }
        let before = status_bytes(pid, "VmRSS:");
        let mut clients: Vec<RawClient> = (0..N)
            .map(|_| RawClient::connect_with(addr, extra))
            .collect();
        let idle = status_bytes(pid, "VmRSS:");
        for c in &mut clients {
            for text in &texts {
                exchange(c, text);
            }
        }
        let used = status_bytes(pid, "VmRSS:");
        let per = |rss: usize| rss.saturating_sub(before) / N;
        report.push((name, per(idle), per(used)));
        drop(clients);
        drop(server);
    }
    for (name, idle, used) in &report {
        eprintln!(
            "server RSS per idle connection, {name}: {idle} B upgraded, {used} B after \
             five messages of 1 KiB each way ({N} connections)"
        );
    }
    let (_, idle, used) = report[1];
    assert!(idle <= 8192 && used <= 8192, "{report:?}");
}

/// Sends `text` (compressed if deflate was agreed) and expects its echo.
fn exchange(c: &mut RawClient, text: &str) {
    if c.agreed.is_some() {
        c.send_compressed(ws_raw::OP_TEXT, text.as_bytes(), 0);
    } else {
        c.send_frame(true, 0, ws_raw::OP_TEXT, text.as_bytes());
    }
    c.expect(&ws_raw::Ev::text(text));
}
