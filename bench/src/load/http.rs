//! The load generator's HTTP mode, the same against lubdub and hyper:
//!
//! * [`HttpUnit`]: a hello-world `GET` and its answer, for the pipelined
//!   load of `load/tcp.rs` (`tcp::pipelined`: depth 1 for
//!   `http-keepalive`, 16 for `http-pipelined`). Every byte of every answer is checked against the
//!   expected response but the date's value (the `date` header is always
//!   29 bytes, so every answer has the same length).
//! * [`idle`]: keep-alive connections that made one request each, then
//!   stay idle (`http-idle-mem`).
//! * [`publish`]: the `publish-api` load: keep-alive `POST /api/publish`
//!   to a uid whose one member is a text connection of the load
//!   generator; requests/s and the time from the `POST`'s write to the
//!   member's receipt. Answers are parsed with `httparse`
//!   ([`parse_response`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use crate::load::connect::{connect, connect_from, many_source, open_in_order};
use crate::load::idle::{measure_idle, wait_until, Idle, IdleConns};
use crate::load::measure::{measure_and_drain, Shared, Throughput};
use crate::load::tcp::{new_histogram, PipelineUnit, REPLY_BUF};
use crate::report::Window;

/// The request every hello-world connection sends.
pub const REQUEST: &[u8] = b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";

/// The answer both servers must send, byte for byte but the date's first
/// 25 bytes (`Thu, 01 Jan 1970 00:00:00`; ` GMT` is checked).
pub const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\
content-length: 13\r\ndate: Thu, 01 Jan 1970 00:00:00 GMT\r\n\r\nHello, World!";

/// Where the date's value varies in [`RESPONSE`].
fn date_range() -> std::ops::Range<usize> {
    let at = RESPONSE
        .windows(6)
        .position(|w| w == b"date: ")
        .expect("RESPONSE has a date")
        + 6;
    at..at + 25
}

/// A hello-world request and its answer, fixed-size both.
#[derive(Debug, Clone, Copy)]
pub struct HttpUnit {
    date_start: usize,
    date_end: usize,
}

impl Default for HttpUnit {
    fn default() -> Self {
        let r = date_range();
        HttpUnit {
            date_start: r.start,
            date_end: r.end,
        }
    }
}

impl PipelineUnit for HttpUnit {
    fn request_size(&self) -> usize {
        REQUEST.len()
    }
    fn reply_size(&self) -> usize {
        RESPONSE.len()
    }
    fn fill_request(&self, _conn: u32, _seq: u64, out: &mut [u8]) {
        out.copy_from_slice(REQUEST);
    }
    /// Every byte of `chunk` (at stream offset `start`) against
    /// [`RESPONSE`], the date's value skipped.
    fn check(&self, conn: u32, start: u64, chunk: &[u8], _scratch: &mut [u8]) -> Result<()> {
        let size = RESPONSE.len();
        let (mut i, mut g) = (0usize, start);
        while i < chunk.len() {
            let p = (g % size as u64) as usize;
            let end = if p < self.date_start {
                self.date_start
            } else if p < self.date_end {
                self.date_end
            } else {
                size
            };
            let n = (end - p).min(chunk.len() - i);
            if !(self.date_start..self.date_end).contains(&p)
                && chunk[i..i + n] != RESPONSE[p..p + n]
            {
                let k = (0..n)
                    .find(|&k| chunk[i + k] != RESPONSE[p + k])
                    .unwrap_or(0);
                bail!(
                    "connection {conn}: answer {} byte {} is {:?}, not {:?} (got {:?})",
                    g / size as u64,
                    p + k,
                    chunk[i + k] as char,
                    RESPONSE[p + k] as char,
                    String::from_utf8_lossy(&chunk[i..i + n])
                );
            }
            i += n;
            g += n as u64;
        }
        Ok(())
    }
}

/// Connection `i` of `n`: from 127.0.0.1, or beyond 1,000 connections from
/// [`many_source`].
async fn open_one(addr: SocketAddr, n: usize, i: usize) -> Result<TcpStream> {
    if n <= 1000 {
        connect(addr).await
    } else {
        connect_from(addr, many_source(i)).await
    }
}

/// One request and its answer, checked, within 5 s.
pub async fn round_trip(s: &mut TcpStream, id: u32) -> Result<()> {
    let unit = HttpUnit::default();
    s.write_all(REQUEST).await?;
    let mut buf = [0u8; REPLY_BUF];
    let mut got = 0;
    tokio::time::timeout(Duration::from_secs(5), async {
        while got < RESPONSE.len() {
            let n = s.read(&mut buf[got..]).await?;
            ensure!(n > 0, "server closed the connection");
            got += n;
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("connection {id}: no answer within 5 s"))??;
    ensure!(
        got == RESPONSE.len(),
        "connection {id}: {got} bytes for one answer"
    );
    unit.check(id, 0, &buf[..got], &mut [])
}

/// Idle keep-alive connections ([`idle`]).
struct HttpIdle {
    addr: SocketAddr,
}

impl IdleConns for HttpIdle {
    type Conn = TcpStream;

    async fn warm_up(&self) -> Result<()> {
        let mut s = connect(self.addr).await?;
        round_trip(&mut s, 0).await
    }

    async fn open(&self, n: usize) -> Result<Vec<TcpStream>> {
        let addr = self.addr;
        open_in_order(n, 250, |i| async move {
            let mut s = open_one(addr, n, i).await?;
            round_trip(&mut s, i as u32).await?;
            Ok(s)
        })
        .await
    }

    async fn round_trip(&self, conn: &mut TcpStream, id: u32) -> Result<()> {
        round_trip(conn, id).await
    }
}

/// Idle memory of `n` keep-alive connections after one request each
/// (`load/idle.rs`).
pub async fn idle(
    addr: SocketAddr,
    server_pid: u32,
    reported: &AtomicUsize,
    n: usize,
) -> Result<Idle> {
    measure_idle(
        &HttpIdle { addr },
        server_pid,
        reported,
        n,
        Duration::from_secs(30),
    )
    .await
}

/// An HTTP response head parsed from the start of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The status code.
    pub status: u16,
    /// Bytes of the head, blank line included.
    pub head: usize,
    /// Bytes of the body (`content-length`).
    pub body: usize,
}

/// Parses the response at the start of `buf`: `None` until its head is
/// whole; an error for a malformed head or one without a
/// `content-length` (the servers here always send one).
pub fn parse_response(buf: &[u8]) -> Result<Option<Parsed>> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut r = httparse::Response::new(&mut headers);
    let head = match r.parse(buf).context("malformed response head")? {
        httparse::Status::Partial => return Ok(None),
        httparse::Status::Complete(n) => n,
    };
    let status = r.code.ok_or_else(|| anyhow!("no status code"))?;
    let len = r
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-length"))
        .ok_or_else(|| anyhow!("a response without content-length"))?;
    let body = std::str::from_utf8(len.value)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow!("content-length {:?}", String::from_utf8_lossy(len.value)))?;
    Ok(Some(Parsed { status, head, body }))
}

/// The `POST /api/publish` of publisher `id`'s message `seq` (to uid
/// `u<id>`, data `p<id>s<seq>`) into `out`, emptied first.
pub fn publish_request(id: usize, seq: u64, out: &mut Vec<u8>) {
    let body = format!(r#"{{"to":"uid","target":"u{id}","data":"p{id}s{seq}"}}"#);
    out.clear();
    out.extend_from_slice(
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: 127.0.0.1\r\nX-API-Key: {}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            crate::peers::http::API_KEY,
            body.len()
        )
        .as_bytes(),
    );
    out.extend_from_slice(body.as_bytes());
}

/// The answer to a publish reaching `local` connections of the node asked.
pub fn published(local: usize) -> Vec<u8> {
    format!(r#"{{"ok":true,"local":{local}}}"#).into_bytes()
}

/// Result of [`publish`].
#[derive(Debug, Clone)]
pub struct Publish {
    /// Publishes per second and CPU use.
    pub throughput: Throughput,
    /// Median time from the `POST`'s write to the member's receipt, µs.
    pub p50_us: f64,
    /// Its 99th percentile, µs.
    pub p99_us: f64,
}

/// Where the `publish-api` load goes: the API, the members' text
/// listener, and with a cluster the Redis whose uid channels
/// (`<namespace>:ch:u:u<id>`) must each have a subscriber (the member's
/// node) before the first publish.
#[derive(Debug, Clone)]
pub struct PublishTarget {
    /// The publish API.
    pub api: SocketAddr,
    /// The text listener the members bind their uid on.
    pub text: SocketAddr,
    /// The cluster's Redis port and the hub's namespace; `None` when the
    /// members are on the API's node.
    pub redis: Option<(u16, &'static str)>,
}

/// `publishers` publishers, each with its keep-alive API connection to
/// `t.api` and its member, a text connection to `t.text` bound to uid
/// `u<id>`: each posts a message to its uid, waits for both the answer
/// (`200`, [`published`]: 1 local connection, or 0 when the member is on
/// another node) and the member's line, then posts the next. The CPU
/// counted is that of `server_pids`.
pub async fn publish(
    t: PublishTarget,
    server_pids: &[u32],
    publishers: usize,
    w: Window,
) -> Result<Publish> {
    let (api, text) = (t.api, t.text);
    let pairs = open_in_order(publishers, 64, |i| async move {
        let mut member = connect(text).await?;
        member.write_all(format!("name u{i}\n").as_bytes()).await?;
        let mut ok = [0u8; 3];
        tokio::time::timeout(Duration::from_secs(5), member.read_exact(&mut ok))
            .await
            .map_err(|_| anyhow!("member {i}: no `ok` within 5 s"))??;
        ensure!(&ok == b"ok\n", "member {i}: {ok:?}, not `ok`");
        Ok((connect(api).await?, member))
    })
    .await?;
    if let Some((port, ns)) = t.redis {
        let channels: Vec<String> = (0..publishers).map(|i| format!("{ns}:ch:u:u{i}")).collect();
        wait_until(Duration::from_secs(10), || {
            subscribers(port, &channels).is_ok_and(|n| n.iter().all(|&n| n >= 1))
        })
        .await
        .context("the members' node did not subscribe to their uid channels")?;
    }
    let want = Arc::new(published(usize::from(t.redis.is_none())));
    let sh = Arc::new(Shared::default());
    let mut set = JoinSet::new();
    for (id, (a, m)) in pairs.into_iter().enumerate() {
        set.spawn(publisher(a, m, id, want.clone(), sh.clone()));
    }
    let (t, hists) = measure_and_drain(&sh, &mut set, w, server_pids).await?;
    let mut all = new_histogram();
    for h in hists {
        all.add(h)?;
    }
    ensure!(!all.is_empty(), "no publish completed within the window");
    Ok(Publish {
        throughput: t,
        p50_us: all.value_at_quantile(0.50) as f64 / 1e3,
        p99_us: all.value_at_quantile(0.99) as f64 / 1e3,
    })
}

/// `PUBSUB NUMSUB` of `channels` on the Redis at `port` (`redis-cli`).
fn subscribers(port: u16, channels: &[String]) -> Result<Vec<u64>> {
    let out = std::process::Command::new("redis-cli")
        .args(["-p", &port.to_string(), "PUBSUB", "NUMSUB"])
        .args(channels)
        .output()
        .context("redis-cli (Debian: apt-get install -y redis-tools)")?;
    ensure!(out.status.success(), "redis-cli: {:?}", out.status);
    numsub_counts(&String::from_utf8_lossy(&out.stdout), channels.len())
}

/// The counts of `redis-cli PUBSUB NUMSUB`'s output (channel and count on
/// alternate lines), `n` of them.
fn numsub_counts(out: &str, n: usize) -> Result<Vec<u64>> {
    let counts: Vec<u64> = out
        .lines()
        .skip(1)
        .step_by(2)
        .map(|l| l.trim().parse())
        .collect::<Result<_, _>>()
        .with_context(|| format!("PUBSUB NUMSUB answered {out:?}"))?;
    ensure!(counts.len() == n, "PUBSUB NUMSUB answered {out:?}");
    Ok(counts)
}

async fn publisher(
    mut api: TcpStream,
    mut member: TcpStream,
    id: usize,
    published: Arc<Vec<u8>>,
    sh: Arc<Shared>,
) -> Result<Histogram<u64>> {
    let mut hist = new_histogram();
    let mut req = Vec::with_capacity(256);
    let (mut abuf, mut mbuf) = (vec![0u8; REPLY_BUF], vec![0u8; REPLY_BUF]);
    let mut seq = 0u64;
    while !sh.stop.load(Ordering::Relaxed) {
        publish_request(id, seq, &mut req);
        let want = format!("p{id}s{seq}\n");
        let t = Instant::now();
        api.write_all(&req).await?;
        let (answer, line) = tokio::join!(
            read_answer(&mut api, &mut abuf),
            read_line(&mut member, &mut mbuf, want.len(), t)
        );
        let (status, body) = answer.with_context(|| format!("publisher {id}: answer {seq}"))?;
        ensure!(
            status == 200 && body == *published,
            "publisher {id}: answer {seq} is {status} {:?}",
            String::from_utf8_lossy(&body)
        );
        let (got, took) = line.with_context(|| format!("member {id}: message {seq}"))?;
        ensure!(
            got == want.as_bytes(),
            "member {id}: got {:?}, not {want:?}",
            String::from_utf8_lossy(&got)
        );
        if sh.measuring.load(Ordering::Relaxed) {
            hist.saturating_record(took.as_nanos() as u64);
        }
        sh.completed.fetch_add(1, Ordering::Relaxed);
        seq += 1;
    }
    Ok(hist)
}

/// Reads one whole response (its status and body) within 5 s.
async fn read_answer(s: &mut TcpStream, buf: &mut [u8]) -> Result<(u16, Vec<u8>)> {
    let mut got = 0;
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Some(p) = parse_response(&buf[..got])? {
                let end = p.head + p.body;
                ensure!(end <= buf.len(), "a {end}-byte answer");
                if got >= end {
                    ensure!(got == end, "more bytes than one answer");
                    return Ok((p.status, buf[p.head..end].to_vec()));
                }
            }
            ensure!(got < buf.len(), "an answer head over {} bytes", buf.len());
            let n = s.read(&mut buf[got..]).await?;
            ensure!(n > 0, "server closed the API connection");
            got += n;
        }
    })
    .await
    .map_err(|_| anyhow!("no answer within 5 s"))?
}

/// Reads one line of `len` bytes and the time since `t` it was whole at.
async fn read_line(
    s: &mut TcpStream,
    buf: &mut [u8],
    len: usize,
    t: Instant,
) -> Result<(Vec<u8>, Duration)> {
    let mut got = 0;
    tokio::time::timeout(Duration::from_secs(5), async {
        while got < len {
            let n = s.read(&mut buf[got..]).await?;
            ensure!(n > 0, "server closed the member connection");
            got += n;
        }
        let took = t.elapsed();
        ensure!(got == len, "{got} bytes for a {len}-byte line");
        Ok((buf[..got].to_vec(), took))
    })
    .await
    .map_err(|_| anyhow!("no message within 5 s"))?
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::tcp::assert_checks_at_any_cut;

    fn answers(dates: &[&str]) -> Vec<u8> {
        let r = date_range();
        let mut out = Vec::new();
        for d in dates {
            let mut a = RESPONSE.to_vec();
            a[r.clone()].copy_from_slice(d.as_bytes());
            out.extend_from_slice(&a);
        }
        out
    }

    /// Answers check out however they are cut, whatever their dates; a
    /// changed status, length or body byte, or a lost byte, does not.
    #[test]
    fn answers_check_byte_for_byte_but_the_date() {
        let unit = HttpUnit::default();
        let dates = ["Fri, 04 Dec 2026 19:57:38"; 40];
        let mut dates = dates.to_vec();
        dates[7] = "Fri, 04 Dec 2026 19:57:39";
        let stream = answers(&dates);
        assert_eq!(stream.len(), 40 * RESPONSE.len());
        assert_checks_at_any_cut(&unit, &stream, &[1, 7, 60, 61, 62, 1000, 5000]);
        let s = RESPONSE.len();
        for (at, what) in [
            (9, "status"),
            (s + 57, "length digit"),
            (2 * s + s - 1, "body"),
            (3 * s + date_range().end, "date's GMT"),
        ] {
            let mut bad = stream.clone();
            bad[at] ^= 1;
            assert!(unit.check(3, 0, &bad, &mut []).is_err(), "{what}");
        }
        let mut lossy = stream.clone();
        lossy.remove(5 * s + 3);
        assert!(unit.check(3, 0, &lossy, &mut []).is_err());
    }

    #[test]
    fn responses_parse_in_pieces() {
        let whole = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
content-length: 21\r\ndate: Fri, 04 Dec 2026 19:57:38 GMT\r\n\r\n{\"ok\":true,\"local\":1}";
        let p = parse_response(whole).unwrap().unwrap();
        assert_eq!(p.status, 200);
        assert_eq!(&whole[p.head..p.head + p.body], published(1));
        assert_eq!(p.head + p.body, whole.len());
        assert_eq!(parse_response(&whole[..p.head - 1]).unwrap(), None);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n").is_err());
        assert!(parse_response(b"HTTX/1.1 200 OK\r\n\r\n").is_err());
        let mut req = Vec::new();
        publish_request(4, 17, &mut req);
        let mut h = [httparse::EMPTY_HEADER; 8];
        let mut r = httparse::Request::new(&mut h);
        let n = match r.parse(&req).unwrap() {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("partial"),
        };
        assert_eq!(
            &req[n..],
            br#"{"to":"uid","target":"u4","data":"p4s17"}"#.as_slice()
        );
    }

    #[test]
    fn numsub_output_gives_the_counts() {
        let out = "bench:ch:u:u0\n1\nbench:ch:u:u1\n0\n";
        assert_eq!(numsub_counts(out, 2).unwrap(), [1, 0]);
        assert!(numsub_counts(out, 3).is_err());
        assert!(numsub_counts("x\ny\n", 1).is_err());
    }

    /// Both servers answer the load generator's request with what
    /// [`HttpUnit`] expects: lubdub's `Worker<Http>` and hyper, started
    /// here on loopback, three pipelined requests each.
    #[test]
    fn both_servers_answer_with_the_expected_bytes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut w = lubdub::Worker::<lubdub::Http>::new("http://127.0.0.1:0").unwrap();
        w.on_message(|c, req| {
            let _ = c.send(&crate::peers::http::hello(&req));
        });
        let h = w.start().unwrap();
        let lubdub_addr = h.local_addr();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let hyper_addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                let (sock, _) = l.accept().await.unwrap();
                crate::peers::http::hyper_conn(sock, true).await;
            });
            for addr in [lubdub_addr, hyper_addr] {
                let mut s = connect(addr).await.unwrap();
                s.write_all(&REQUEST.repeat(3)).await.unwrap();
                let mut buf = vec![0u8; 3 * RESPONSE.len()];
                tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
                    .await
                    .unwrap()
                    .unwrap();
                HttpUnit::default()
                    .check(0, 0, &buf, &mut [])
                    .unwrap_or_else(|e| panic!("{addr}: {e}"));
            }
        });
        h.stop_and_wait();
    }
}
