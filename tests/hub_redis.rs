//! The hub across nodes over a real `redis-server`: `cluster_chat` nodes
//! as separate processes (the compiled example, next to this test binary:
//! plain `cargo test` builds it), line clients on each, and Redis or a node
//! killed mid-conversation.
//!
//! Each test starts its own `redis-server` on a free port with `--save ''
//! --appendonly no` and stops it; every child is killed in a `Drop` guard.
//! Waits are bounded; the only fixed sleeps are "must not happen" windows
//! and the window in which the reconnect schedule is watched.
//! Without `redis-server` on the PATH the tests fail, saying so (Debian:
//! `apt-get install -y redis-server`).

mod hub_redis_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hub_redis_support::{
    raise_fd_limit, wait_until, Barrier, GarbageServer, InProcessNode, LineClient, Node, Redis,
    CONNECTED, LOST, WAIT,
};

/// A "must not happen" window: long enough for a stray message over
/// loopback and Redis, short enough to keep the tests quick.
const QUIET: Duration = Duration::from_millis(300);

/// The reconnect schedule's cap (RedisConfig's default): a node is back at
/// most this long after Redis is, plus the connect itself.
const BACKOFF_CAP: Duration = Duration::from_secs(5);

fn addrs(nodes: &[&Node]) -> Vec<SocketAddr> {
    nodes.iter().map(|n| n.addr).collect()
}

#[test]
fn three_nodes_every_command_works_across_nodes() {
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let n3 = Node::start("n3", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2, &n3]));

    let mut ann = n1.client();
    let mut bob = n2.client();
    let mut cat = n3.client();
    // dan, on another node, in no room.
    let mut dan = n3.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    cat.cmd("name cat");
    dan.cmd("name dan");
    for c in [&mut ann, &mut bob, &mut cat] {
        c.cmd("join room");
    }
    barrier.sync();

    // who: the count spans the nodes, from any of them.
    for c in [&mut ann, &mut bob, &mut dan] {
        assert_eq!(c.ask("who room"), "room 3");
    }
    assert_eq!(cat.ask("who nowhere"), "nowhere 0");

    // say: every member on every node, the sender included, once.
    ann.send("say room hello from n1");
    for c in [&mut ann, &mut bob, &mut cat] {
        c.expect(&["room ann: hello from n1"]);
    }
    cat.send("say room hello from n3");
    for c in [&mut ann, &mut bob, &mut cat] {
        c.expect(&["room cat: hello from n3"]);
    }

    // dm: to a user on another node; the sender gets ok (a user on
    // several devices: tests/cluster_chat_safety.rs, with tokens).
    bob.send("dm ann hi ann");
    bob.expect(&["ok"]);
    ann.expect(&["dm bob: hi ann"]);
    // ...and a uid on no node is offline.
    assert_eq!(bob.ask("dm zed anyone there"), "offline");
    // A dm to a uid on the sender's own node.
    dan.send("dm cat same node");
    dan.expect(&["ok"]);
    cat.expect(&["dm dan: same node"]);

    // leave: the count drops everywhere and cat stops getting the room.
    cat.cmd("leave room");
    barrier.sync();
    assert_eq!(ann.ask("who room"), "room 2");
    assert_eq!(cat.ask("who room"), "room 2");
    bob.send("say room without cat");
    for c in [&mut ann, &mut bob] {
        c.expect(&["room bob: without cat"]);
    }

    // all: every connection of every node (the barrier's probes too).
    cat.send("all to everyone");
    for c in [&mut ann, &mut bob, &mut cat, &mut dan] {
        c.expect(&["all cat: to everyone"]);
    }

    // Nothing else arrived anywhere: no duplicates, nothing for cat or
    // dan from the room.
    for c in [&mut ann, &mut bob, &mut cat, &mut dan] {
        c.expect_silence(QUIET);
    }
}

#[test]
fn redis_killed_and_restarted_mid_conversation() {
    let mut redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut amy = n1.client();
    let mut bob = n2.client();
    for (c, name) in [(&mut ann, "ann"), (&mut amy, "amy"), (&mut bob, "bob")] {
        c.cmd(&format!("name {name}"));
        c.cmd("join room");
    }
    barrier.sync();
    ann.send("say room before");
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect(&["room ann: before"]);
    }
    assert_eq!(bob.ask("who room"), "room 3");

    // SIGKILL: no goodbye; both nodes notice their connections broke.
    let lost = (n1.log.count(LOST), n2.log.count(LOST));
    redis.kill();
    n1.log.wait_for(LOST, lost.0 + 1, WAIT);
    n2.log.wait_for(LOST, lost.1 + 1, WAIT);

    // Local delivery goes on during the outage; nothing crosses.
    ann.send("say room during on n1");
    for c in [&mut ann, &mut amy] {
        c.expect(&["room ann: during on n1"]);
    }
    bob.send("say room during on n2");
    bob.expect(&["room bob: during on n2"]);
    // A direct message to a local user still arrives.
    amy.send("dm ann local dm");
    ann.expect(&["dm amy: local dm"]);
    assert_eq!(amy.line(), "ok", "ann is online here");
    // Queries answer from the node's own knowledge meanwhile.
    assert_eq!(ann.ask("who room"), "room 2");
    assert_eq!(bob.ask("who room"), "room 1");

    // Redis comes back, empty, on the same port; the nodes reconnect by
    // themselves within the backoff's cap.
    let connected = (n1.log.count(CONNECTED), n2.log.count(CONNECTED));
    redis.restart();
    let back = Instant::now();
    let limit = BACKOFF_CAP + Duration::from_secs(10);
    n1.log.wait_for(CONNECTED, connected.0 + 1, limit);
    n2.log.wait_for(CONNECTED, connected.1 + 1, limit);
    let reconnected_in = back.elapsed();

    // Presence is republished and the subscriptions renewed.
    barrier.sync();
    assert_eq!(ann.ask("who room"), "room 3");
    assert_eq!(bob.ask("who room"), "room 3");
    assert_eq!(bob.ask("dm ann after"), "ok");
    ann.expect(&["dm bob: after"]);
    assert_eq!(ann.ask("dm bob after too"), "ok");
    bob.expect(&["dm ann: after too"]);

    // Cross-node delivery resumes, each message exactly once: what was
    // said during the outage never turns up.
    ann.send("say room after on n1");
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect(&["room ann: after on n1"]);
    }
    bob.send("say room after on n2");
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect(&["room bob: after on n2"]);
    }
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect_silence(QUIET);
    }
    eprintln!("nodes reconnected {reconnected_in:?} after redis restarted");
}

#[test]
fn a_killed_node_reads_offline_within_the_presence_ttl() {
    const TTL: u64 = 2;
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, Some(TTL));
    let mut n2 = Node::start("n2", &url, Some(TTL));
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut bob = n2.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    ann.cmd("join room");
    bob.cmd("join room");
    barrier.sync();
    assert_eq!(ann.ask("dm bob hello"), "ok");
    bob.expect(&["dm ann: hello"]);
    assert_eq!(ann.ask("who room"), "room 2");
    drop(barrier); // its probe on n2 would die with n2

    n2.kill();
    let killed = Instant::now();
    let bound = Duration::from_secs(TTL + 3);
    let mut dm_offline = None;
    let mut who_dropped = None;
    while dm_offline.is_none() || who_dropped.is_none() {
        assert!(
            killed.elapsed() < bound,
            "n2's users still read as online {bound:?} after it was killed \
             (dm offline after {dm_offline:?}, who dropped after {who_dropped:?})"
        );
        if dm_offline.is_none() {
            match ann.ask("dm bob are you there").as_str() {
                "offline" => dm_offline = Some(killed.elapsed()),
                "ok" => {}
                other => panic!("dm answered {other:?}"),
            }
        }
        if who_dropped.is_none() {
            match ann.ask("who room").as_str() {
                "room 1" => who_dropped = Some(killed.elapsed()),
                "room 2" => {}
                other => panic!("who answered {other:?}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // The node that is left goes on.
    ann.send("say room alone");
    ann.expect(&["room ann: alone"]);
    eprintln!("after SIGKILL: dm offline in {dm_offline:?}, who dropped in {who_dropped:?}");
}

#[test]
fn the_whole_api_across_two_in_process_nodes() {
    let redis = Redis::start();
    let url = redis.url();
    let a = InProcessNode::start(&url, "a");
    let b = InProcessNode::start(&url, "b");
    let mut barrier = Barrier::new(&[a.addr(), b.addr()]);
    let mut ann = LineClient::connect(a.addr());
    let mut ann_b = LineClient::connect(b.addr()); // ann's second device
    let mut bob = LineClient::connect(b.addr());
    let mut cat = LineClient::connect(a.addr()); // no uid
    ann.cmd("name ann");
    ann_b.cmd("name ann");
    bob.cmd("name bob");
    for c in [&mut ann, &mut bob, &mut cat] {
        c.cmd("join g");
    }
    barrier.sync();

    // Queries span the nodes.
    assert_eq!(cat.ask("uids"), "2", "ann (on both nodes) and bob");
    assert_eq!(cat.ask("members g"), "ann,bob");
    assert_eq!(bob.ask("who g"), "g 3");
    assert_eq!(cat.ask("online bob"), "yes");
    assert_eq!(cat.ask("online zed"), "no");

    // One connection, by its global id, on the other node and on this one.
    let bob_id = bob.ask("id");
    assert!(bob_id.starts_with("b:"), "{bob_id}");
    cat.send(&format!("to {bob_id} just bob"));
    bob.expect(&["just bob"]);
    let cat_id = cat.ask("id");
    bob.send(&format!("to {cat_id} back to cat"));
    cat.expect(&["back to cat"]);

    // A group but one connection: the exception holds on the other node.
    bob.send("except g not for bob");
    ann.expect(&["not for bob"]);
    cat.expect(&["not for bob"]);
    cat.send("except g not for cat");
    ann.expect(&["not for cat"]);
    bob.expect(&["not for cat"]);

    // A uid: every device, on both nodes.
    cat.send("dm ann both devices");
    ann.expect(&["both devices"]);
    ann_b.expect(&["both devices"]);

    // Unbinding one device leaves ann online through the other...
    ann_b.cmd("unname ann");
    barrier.sync();
    cat.send("dm ann one device");
    ann.expect(&["one device"]);
    assert_eq!(bob.ask("online ann"), "yes");
    assert_eq!(bob.ask("uids"), "2");
    // ...and unbinding the last one takes ann offline everywhere; her
    // connection stays in the group, with no uid.
    ann.cmd("unname ann");
    barrier.sync();
    assert_eq!(bob.ask("online ann"), "no");
    assert_eq!(bob.ask("uids"), "1");
    assert_eq!(bob.ask("members g"), "bob");
    assert_eq!(bob.ask("who g"), "g 3");

    // Everyone, on every node (the barrier's probes too).
    bob.send("all everyone");
    for c in [&mut ann, &mut ann_b, &mut bob, &mut cat] {
        c.expect(&["everyone"]);
    }

    // A connection that closes leaves its uid and groups, cluster-wide.
    drop(bob);
    wait_until("bob's close to reach the cluster", WAIT, || {
        cat.ask("who g") == "g 2" && cat.ask("uids") == "0"
    });
    assert_eq!(cat.ask("online bob"), "no");
    assert_eq!(cat.ask("members g"), "");

    for c in [&mut ann, &mut ann_b, &mut cat] {
        c.expect_silence(QUIET);
    }
    let (sa, sb) = (a.hub.stats(), b.hub.stats());
    assert!(sa.published > 0 && sa.received > 0, "{sa:?}");
    assert!(sb.published > 0 && sb.received > 0, "{sb:?}");
    assert_eq!(sa.dropped + sb.dropped, 0, "redis was up all along");
}

#[test]
fn subscribers_dropped_by_redis_come_back_with_every_channel() {
    // What Redis does to a subscriber past its output buffer limit, or an
    // operator with CLIENT KILL: the command connections stay up.
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut bob = n2.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    ann.cmd("join room");
    bob.cmd("join room");
    barrier.sync();
    let lost = (n1.log.count(LOST), n2.log.count(LOST));
    assert_eq!(redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]), ":2");
    // Each node subscribes again, to every channel it had: group, uid,
    // `all`, its own.
    barrier.sync();
    ann.send("say room back");
    ann.expect(&["room ann: back"]);
    bob.expect(&["room ann: back"]);
    assert_eq!(bob.ask("dm ann to ann"), "ok");
    ann.expect(&["dm bob: to ann"]);
    assert_eq!(ann.ask("dm bob to bob"), "ok");
    bob.expect(&["dm ann: to bob"]);
    bob.send("all to all");
    ann.expect(&["all bob: to all"]);
    bob.expect(&["all bob: to all"]);
    for c in [&mut ann, &mut bob] {
        c.expect_silence(QUIET);
    }
    // The command connections never broke.
    assert_eq!((n1.log.count(LOST), n2.log.count(LOST)), lost);
}

#[test]
fn a_node_restarted_under_its_name_erases_its_last_life_at_once() {
    // The default 15 s presence TTL: what is checked here must happen
    // well before it.
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let mut n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut bob = n2.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    ann.cmd("join room");
    bob.cmd("join room");
    barrier.sync();
    assert_eq!(ann.ask("who room"), "room 2");
    assert_eq!(ann.ask("dm bob hi"), "ok");
    bob.expect(&["dm ann: hi"]);
    drop((barrier, bob));

    n2.kill();
    let n2 = Node::start("n2", &url, None);
    let restarted = Instant::now();
    n2.log.wait_for(CONNECTED, 1, WAIT);
    let took = wait_until(
        "the new n2 to erase what the old one published",
        Duration::from_secs(8),
        || ann.ask("who room") == "room 1" && ann.ask("dm bob hi") == "offline",
    );
    // And the new life works.
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut bob = n2.client();
    bob.cmd("name bob");
    bob.cmd("join room");
    barrier.sync();
    assert_eq!(ann.ask("who room"), "room 2");
    ann.send("say room welcome back");
    ann.expect(&["room ann: welcome back"]);
    bob.expect(&["room ann: welcome back"]);
    eprintln!(
        "stale presence gone {took:?} after the new n2 connected ({:?} after its start)",
        restarted.elapsed()
    );
}

#[test]
fn three_thousand_groups_are_resubscribed_and_republished_after_a_restart() {
    // More channels than one SUBSCRIBE carries (the backplane sends them
    // 1,024 at a time) and as many presence entries to write again.
    const GROUPS: usize = 3_000;
    let mut redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut member = n2.client();
    // 50 commands in flight at a time.
    for chunk in (0..GROUPS).collect::<Vec<_>>().chunks(50) {
        for g in chunk {
            member.send(&format!("join g{g}"));
        }
        for _ in chunk {
            assert_eq!(member.line(), "ok");
        }
    }
    let connected = n2.log.count(CONNECTED);
    redis.kill();
    redis.restart();
    n2.log
        .wait_for(CONNECTED, connected + 1, BACKOFF_CAP + WAIT);
    // Twice: the second round's SUBSCRIBE leaves after the resubscription
    // of the session the first round saw.
    barrier.sync();
    barrier.sync();
    let mut sender = n1.client();
    assert_eq!(
        sender.ask(&format!("who g{}", GROUPS - 1)),
        format!("g{} 1", GROUPS - 1)
    );
    assert_eq!(sender.ask("who g0"), "g0 1");
    for g in 0..GROUPS {
        sender.send(&format!("say g{g} hi"));
        if g % 50 == 49 {
            // A reply: the 50 before it were handled (in order).
            assert_eq!(sender.ask("who g0"), "g0 1");
        }
    }
    let mut got: Vec<usize> = (0..GROUPS)
        .map(|_| {
            let l = member.line();
            let (group, _) = l.split_once(' ').expect("a group message");
            group[1..].parse().expect("a group number")
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..GROUPS).collect::<Vec<_>>());
    member.expect_silence(QUIET);
}

/// A member connection of the big group, read without a thread of its own
/// (and with one descriptor: no `try_clone`).
struct Member {
    r: BufReader<TcpStream>,
}

impl Member {
    fn send(&mut self, bytes: &[u8]) {
        self.r
            .get_ref()
            .write_all(bytes)
            .expect("write to a member");
    }

    fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.r.read_line(&mut s).expect("read a line");
        assert!(n > 0, "a member's connection closed");
        s.truncate(s.trim_end().len());
        s
    }
}

/// Connects `count` members to `addr` and has each join `group`, in
/// batches (a full accept queue would drop SYNs and stall connects by a
/// second each).
fn join_members(addr: SocketAddr, group: &str, count: usize, out: &mut Vec<Member>) {
    const BATCH: usize = 250;
    let join = format!("join {group}\n");
    let mut left = count;
    while left > 0 {
        let n = left.min(BATCH);
        let start = out.len();
        for k in 0..n {
            // Each member from an address of its own, as ten thousand
            // users would come: one address may open only
            // `Limits::max_connections_per_ip` (1,024 by default).
            let seq = (out.len() + k) as u32;
            let from: SocketAddr = format!("127.77.{}.{}:0", (seq >> 8) & 0xff, seq & 0xff)
                .parse()
                .unwrap();
            let sock =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            sock.bind(&from.into()).expect("bind a member's address");
            sock.connect(&addr.into()).expect("connect a member");
            let s: TcpStream = sock.into();
            s.set_read_timeout(Some(WAIT)).unwrap();
            out.push(Member {
                r: BufReader::with_capacity(256, s),
            });
        }
        for m in &mut out[start..] {
            m.send(join.as_bytes());
        }
        for m in &mut out[start..] {
            assert_eq!(m.line(), "ok");
        }
        left -= n;
    }
}

#[test]
fn ten_thousand_members_across_two_nodes_get_one_say_exactly_once() {
    const PER_NODE: usize = 5_000;
    let limit = raise_fd_limit(2 * PER_NODE as u64 + 1_000);
    assert!(
        limit >= 2 * PER_NODE as u64 + 500,
        "RLIMIT_NOFILE is {limit}: this test needs about {} descriptors",
        2 * PER_NODE + 500
    );
    let started = Instant::now();
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut members = Vec::with_capacity(2 * PER_NODE);
    join_members(n1.addr, "big", PER_NODE, &mut members);
    join_members(n2.addr, "big", PER_NODE, &mut members);
    let joined = started.elapsed();
    barrier.sync();
    let mut sender = n1.client();
    assert_eq!(sender.ask("who big"), format!("big {}", 2 * PER_NODE));

    let t = Instant::now();
    sender.send("say big one for ten thousand");
    for (i, m) in members.iter_mut().enumerate() {
        let l = m.line();
        assert!(
            l.starts_with("big ~guest") && l.ends_with(": one for ten thousand"),
            "member {i} got {l:?}"
        );
    }
    let delivered_in = t.elapsed();
    // Exactly once: the next line each member reads is the next message.
    sender.send("say big end");
    for (i, m) in members.iter_mut().enumerate() {
        let l = m.line();
        assert!(
            l.ends_with(": end"),
            "member {i} got {l:?} where `end` was due"
        );
    }
    eprintln!(
        "10,000 members: joined in {joined:?}, one say reached all in {delivered_in:?}, \
         whole test {:?}",
        started.elapsed()
    );
}

/// A member that joins `group`, reads its `ok` byte by byte (nothing
/// beyond it), and never reads again.
fn mute_member(addr: SocketAddr, group: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).expect("connect a member");
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(format!("join {group}\n").as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut byte = [0u8; 1];
    while !reply.ends_with(b"\n") {
        s.read_exact(&mut byte).expect("the join's reply");
        reply.push(byte[0]);
    }
    assert_eq!(reply, b"ok\n");
    s
}

#[test]
fn a_non_reading_member_does_not_block_the_group_across_nodes() {
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let c = InProcessNode::start(&url, "c");
    let mut barrier = Barrier::new(&[n1.addr, c.addr()]);

    // On each node, one member that reads and one that never does; the
    // sender is on n1 and in no group (it never reads either).
    let mut readers = vec![n1.client(), LineClient::connect(c.addr())];
    for r in &mut readers {
        r.cmd("join g");
    }
    let mutes = [mute_member(n1.addr, "g"), mute_member(c.addr(), "g")];
    barrier.sync();
    let mut sender = n1.client();

    // 4 KiB messages, numbered. The readers check every one, in order,
    // and count; the sender keeps at most WINDOW messages ahead of the
    // slowest reader, so a reader is never far enough behind to fill its
    // own send buffer, while the mute members' buffers fill up.
    const WINDOW: usize = 32;
    const MAX: usize = 20_000; // 80 MB: well past what a mute member holds
    const AFTER_FULL: usize = 500;
    let pad = "x".repeat(4096);
    let counts: Vec<Arc<AtomicUsize>> = (0..readers.len()).map(|_| Arc::default()).collect();
    let threads: Vec<_> = readers
        .into_iter()
        .zip(counts.iter().cloned())
        .map(|(mut r, count)| {
            let pad = pad.clone();
            std::thread::spawn(move || {
                let mut i = 0;
                loop {
                    let l = r.line();
                    if l.ends_with(": end") {
                        return (i, r);
                    }
                    let text = l.split_once(": ").map(|x| x.1).unwrap_or("");
                    let want = format!("{i:06} {pad}");
                    assert!(text == want, "message {i}: got {:.40}...", l);
                    i += 1;
                    count.store(i, Ordering::Release);
                }
            })
        })
        .collect();

    let slowest = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .min()
            .unwrap()
    };
    let start = Instant::now();
    let mut sent = 0;
    let mut full_at = None;
    while full_at.map_or(true, |f| sent < f + AFTER_FULL) {
        assert!(
            sent < MAX,
            "{MAX} messages of 4 KiB and the in-process node refused none (stats {:?})",
            c.hub.stats()
        );
        for _ in 0..WINDOW {
            sender.send(&format!("say g {sent:06} {pad}"));
            sent += 1;
        }
        let due = sent;
        wait_until("the readers to catch up", WAIT, || slowest() >= due);
        if full_at.is_none() && c.hub.stats().refused > 0 {
            full_at = Some(sent);
        }
    }
    sender.send("say g end");
    for t in threads {
        let (got, _reader) = t.join().expect("a reader saw every message in order");
        assert_eq!(got, sent);
    }
    let stats = c.hub.stats();
    assert!(stats.refused > 0);
    // Every message reached the in-process node once; the barrier's count
    // among what it received too.
    assert!(stats.received > sent as u64, "{stats:?}");
    assert!(stats.delivered >= sent as u64, "{stats:?}");
    eprintln!(
        "{sent} messages of 4 KiB through a group with non-reading members in {:?}; \
         refusals began after {full_at:?}; in-process node: {stats:?}",
        start.elapsed()
    );
    drop(mutes);
}

#[test]
fn garbage_from_redis_then_a_real_redis() {
    let fake = GarbageServer::start(hub_redis_support::free_port());
    let url = format!("redis://127.0.0.1:{}", fake.port);
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);

    // Each node opens two connections and, refused with garbage, opens
    // them again: at least two rounds each.
    wait_until("both nodes to reconnect to the fake", WAIT, || {
        fake.accepted.load(Ordering::Relaxed) >= 8
    });
    // They say the connection failed, and why, at warn level (once per
    // outage)...
    // (Never "connected", so never "lost": the garbage fails the
    // connection's setup, before it counts as up.)
    for n in [&n1, &n2] {
        n.log.wait_for("not a RESP type byte", 1, WAIT);
        let log = n.log.text();
        assert!(
            log.lines()
                .any(|l| l.starts_with("[WARN]") && l.contains("not a RESP type byte")),
            "the cause is not logged at warn level:\n{log}"
        );
    }
    // ...and go on serving local delivery.
    let mut ann = n1.client();
    let mut amy = n1.client();
    let mut bob = n2.client();
    for c in [&mut ann, &mut amy, &mut bob] {
        c.cmd("join room");
    }
    ann.send("say room local only");
    let a = ann.line();
    assert!(a.ends_with(": local only"), "{a}");
    assert_eq!(amy.line(), a);
    bob.expect_silence(QUIET);

    // A real redis-server takes the port: the nodes reconnect by
    // themselves and cross-node delivery works.
    let port = fake.port;
    drop(fake);
    let redis = Redis::start_on(port);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    barrier.sync();
    assert_eq!(bob.ask("who room"), "room 3");
    bob.send("say room across");
    let b = bob.line();
    assert!(b.ends_with(": across"), "{b}");
    for c in [&mut ann, &mut amy] {
        c.expect(&[&b]);
    }
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect_silence(QUIET);
    }
    drop(redis);
}

/// RedisConfig's reconnect schedule, as the nodes run it: before attempt
/// `n` a node waits `random(0, min(5 s, 100 ms * 2^n))` (full jitter),
/// each connection on its own.
fn backoff_ceiling(n: usize) -> Duration {
    Duration::from_millis(100u64 << n.min(16)).min(BACKOFF_CAP)
}

#[test]
fn a_node_reconnects_with_jittered_backoff_from_100_ms_to_5_s() {
    // A fake that always answers garbage: every session fails at once, so
    // no connection ever counts as healthy and the backoff keeps growing.
    let fake = GarbageServer::start(hub_redis_support::free_port());
    let n1 = Node::start("n1", &format!("redis://127.0.0.1:{}", fake.port), None);
    // An observation window, not a synchronisation: long enough for the
    // ceiling to reach the 5 s cap (cumulative ceilings pass 6 s by
    // attempt 6).
    std::thread::sleep(Duration::from_secs(14));
    let slack = Duration::from_millis(1500); // a loaded machine's scheduling
    let mut early = 0; // delays well under their ceiling: the jitter
    let mut late = 0; // gaps whose ceiling is 800 ms or more
    for kind in ["CMD", "SUB"] {
        let times = fake.times_of(kind);
        assert!(
            times.len() >= 4,
            "{kind}: only {} attempt(s) in 14 s: the node does not retry",
            times.len()
        );
        assert!(
            times.len() <= 40,
            "{kind}: {} attempts in 14 s: the node does not back off",
            times.len()
        );
        for (n, pair) in times.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let ceiling = backoff_ceiling(n);
            assert!(
                gap <= ceiling + slack,
                "{kind}: attempt {} came {gap:?} after the one before, over its ceiling {ceiling:?}",
                n + 1
            );
            if ceiling >= Duration::from_millis(800) {
                late += 1;
                if gap < ceiling.mul_f64(0.6) {
                    early += 1;
                }
            }
        }
    }
    // Full jitter puts each delay anywhere in [0, ceiling]: with no jitter
    // every gap would be at least its ceiling. The chance that a dozen
    // jittered gaps all land in the top 40% is about 0.4^12 (2e-5).
    assert!(late >= 6, "only {late} gaps past the first ceilings");
    assert!(
        early > 0,
        "none of {late} gaps came early: no jitter ({:?})",
        fake.sessions.lock().unwrap()
    );
    eprintln!(
        "attempts: EVAL {}, SUBSCRIBE {}; {early} of {late} later gaps under 60% of their ceiling",
        fake.times_of("EVAL").len(),
        fake.times_of("SUBSCRIBE").len()
    );
    drop(n1);
}
