//! The attackers of the `attack` scenario, one child process per attack:
//! `lubdub-bench attack-child <kind> --port P --n N [--cpu C] [--nice N]`
//! (see [`child_main`] and [`Attack`] for the kinds).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use crate::child::Placement;
use crate::load::connect::connect_from;
use crate::load::healthy::PING;
use crate::load::tcp::Unit;
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
}

impl Attack {
    /// Every attack, in the order of the full plan.
    pub const ALL: [Attack; 5] = [
        Attack::Slowloris,
        Attack::LongLine,
        Attack::NonReader,
        Attack::Invalid,
        Attack::Storm,
    ];

    /// The name on command lines and in `--attacks`.
    pub fn name(self) -> &'static str {
        match self {
            Attack::Slowloris => "slowloris",
            Attack::LongLine => "longline",
            Attack::NonReader => "nonreader",
            Attack::Invalid => "invalid",
            Attack::Storm => "storm",
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
}

impl Counters {
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!(
            "connects={} connect_errors={} server_closes={} not_closed={} sent={} open={}",
            g(&self.connects),
            g(&self.connect_errors),
            g(&self.server_closes),
            g(&self.not_closed),
            bytes(g(&self.bytes_sent) as f64).replace(' ', ""),
            g(&self.open)
        )
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let _ = tokio::time::timeout(
            ATTACKER_LIFETIME,
            run_attack(kind, addr, n, counters.clone()),
        )
        .await;
    });
    println!("result {}", counters.line());
    Ok(())
}

async fn run_attack(kind: Attack, addr: SocketAddr, n: usize, c: Arc<Counters>) {
    let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
    let mut tasks = Vec::new();
    for i in 0..n {
        let (c, gate) = (c.clone(), gate.clone());
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

    #[test]
    fn the_invalid_attack_sends_a_valid_line_then_invalid_utf8() {
        let lines: Vec<&[u8]> = INVALID_PAYLOAD.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), 2);
        assert!(std::str::from_utf8(lines[0]).is_ok());
        assert!(std::str::from_utf8(lines[1]).is_err());
        assert!(lines[1].ends_with(b"\n"));
    }
}
