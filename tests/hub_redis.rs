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
    raise_fd_limit, two_and_one_in_g, wait_until, Barrier, GarbageServer, InProcessNode,
    LineClient, Node, Redis, CONNECTED, LOST, WAIT,
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

/// Two `cluster_chat` nodes on `url`: ann on n1 and bob on n2, bound to
/// their names and in `room`, the cluster settled.
struct AnnAndBob {
    n1: Node,
    n2: Node,
    barrier: Barrier,
    ann: LineClient,
    bob: LineClient,
}

fn ann_and_bob(url: &str, presence_ttl: Option<u64>) -> AnnAndBob {
    let n1 = Node::start("n1", url, presence_ttl);
    let n2 = Node::start("n2", url, presence_ttl);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut bob = n2.client();
    ann.cmd("name ann");
    bob.cmd("name bob");
    ann.cmd("join room");
    bob.cmd("join room");
    barrier.sync();
    AnnAndBob {
        n1,
        n2,
        barrier,
        ann,
        bob,
    }
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
    let AnnAndBob {
        n1: _n1,
        mut n2,
        barrier,
        mut ann,
        mut bob,
    } = ann_and_bob(&redis.url(), Some(TTL));
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
    let AnnAndBob {
        n1,
        n2,
        mut barrier,
        mut ann,
        mut bob,
    } = ann_and_bob(&redis.url(), None);
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

/// The line a node writes when it refuses to start under a taken name.
const NAME_TAKEN: &str = "is held by another running node";

#[test]
fn a_node_killed_and_restarted_under_its_name_waits_for_its_claim_then_erases_its_last_life() {
    // The old life's claim lasts the TTL after its last renewal (every
    // third of it): long enough for a restart attempt to find it held.
    const TTL: u64 = 5;
    let redis = Redis::start();
    let url = redis.url();
    let AnnAndBob {
        n1,
        mut n2,
        barrier,
        mut ann,
        bob,
    } = ann_and_bob(&url, Some(TTL));
    assert_eq!(ann.ask("who room"), "room 2");
    drop((barrier, bob));

    n2.kill();
    let killed = Instant::now();
    // The name is still claimed by the dead instance: a new n2 refuses
    // to start, saying why, rather than share the name.
    let log = match Node::try_start("n2", &url, Some(TTL)) {
        Ok(_) => panic!("a second n2 started while the first one's claim was alive"),
        Err(log) => log,
    };
    assert!(log.contains(NAME_TAKEN), "{log}");
    // Once the claim expires, n2 starts...
    let n2 = loop {
        assert!(
            killed.elapsed() < Duration::from_secs(TTL) + WAIT,
            "n2 never got its name back"
        );
        match Node::try_start("n2", &url, Some(TTL)) {
            Ok(n) => break n,
            Err(log) => assert!(log.contains(NAME_TAKEN), "{log}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let waited = killed.elapsed();
    n2.log.wait_for(CONNECTED, 1, WAIT);
    // ...and erases what its last life published, first thing.
    wait_until("the old n2's presence to be erased", WAIT, || {
        redis.command(&["HEXISTS", "lubdub:groupcount:room", "n2"]) == ":0"
            && redis.command(&["SISMEMBER", "lubdub:uidnodes:bob", "n2"]) == ":0"
            && redis.command(&["EXISTS", "lubdub:nodegroups:n2"]) == ":0"
    });
    assert_eq!(ann.ask("who room"), "room 1");
    assert_eq!(ann.ask("dm bob hi"), "offline");
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
    eprintln!("n2 got its name back {waited:?} after it was killed (TTL {TTL} s)");
}

#[test]
fn a_node_stopped_gracefully_frees_its_name_and_presence_at_once() {
    // The default 15 s TTL: what is checked here happens well before.
    let redis = Redis::start();
    let url = redis.url();
    let AnnAndBob {
        n1,
        mut n2,
        barrier,
        mut ann,
        bob,
    } = ann_and_bob(&url, None);
    assert_eq!(ann.ask("who room"), "room 2");
    drop((barrier, bob));
    let stopped = Instant::now();
    n2.terminate();
    assert_eq!(redis.command(&["EXISTS", "lubdub:node:n2"]), ":0");
    assert_eq!(
        redis.command(&["HEXISTS", "lubdub:groupcount:room", "n2"]),
        ":0"
    );
    assert_eq!(ann.ask("who room"), "room 1");
    assert_eq!(ann.ask("dm bob still there"), "offline");
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    barrier.sync();
    eprintln!("n2 stopped and back in {:?}", stopped.elapsed());
}

#[test]
fn a_second_node_under_a_running_nodes_name_fails_to_start_and_the_first_goes_on() {
    let redis = Redis::start();
    let url = redis.url();
    let AnnAndBob {
        n1: _n1,
        n2: _n2,
        barrier: _barrier,
        mut ann,
        mut bob,
    } = ann_and_bob(&url, None);
    // The impostor exits at once with a clear error, before it listens.
    let t = Instant::now();
    let log = match Node::try_start("n1", &url, None) {
        Ok(_) => panic!("two nodes run under the name n1"),
        Err(log) => log,
    };
    assert!(log.contains(NAME_TAKEN), "{log}");
    assert!(log.contains("node name `n1`"), "{log}");
    eprintln!("the second n1 gave up in {:?}: {log}", t.elapsed());
    // The first n1 kept its name, its presence and its connections.
    let pttl = redis.command(&["PTTL", "lubdub:node:n1"]);
    assert!(pttl.starts_with(':') && !pttl.starts_with(":-"), "{pttl}");
    assert_eq!(bob.ask("dm ann still you"), "ok");
    ann.expect(&["dm bob: still you"]);
    assert_eq!(ann.ask("dm bob and you"), "ok");
    bob.expect(&["dm ann: and you"]);
    for c in [&mut ann, &mut bob] {
        c.expect_silence(QUIET);
    }
}

#[test]
fn a_node_whose_name_is_taken_while_it_runs_leaves_the_cluster_until_it_is_back() {
    // What an operator's mistake or a long partition can do: another
    // instance holds `a`'s name. `a` stops publishing and listening (it
    // would take the other's messages), serves its own connections, and
    // comes back when the name is free.
    let redis = Redis::start();
    let url = redis.url();
    let a = InProcessNode::start_with(
        lubdub::hub::RedisConfig::new(&url, "a").presence_ttl(Duration::from_secs(3)),
    );
    let b = InProcessNode::start(&url, "b");
    let (mut barrier, [mut ann, mut amy, mut bob]) = two_and_one_in_g(&a, &b);
    bob.send("say g before");
    for c in [&mut ann, &mut amy, &mut bob] {
        c.line();
    }
    // Only `a` listens on its own channel: PUBLISH says how many heard.
    let listeners = || redis.command(&["PUBLISH", "lubdub:ch:n:a", "probe"]);
    assert_eq!(listeners(), ":1");
    assert_eq!(
        redis.command(&["SET", "lubdub:node:a", "another-instance", "PX", "4000"]),
        "+OK"
    );
    wait_until("a to leave the cluster", WAIT, || listeners() == ":0");
    let left = Instant::now();
    // Off the cluster: nothing crosses either way; local delivery goes on.
    let dropped = a.hub.stats().dropped;
    bob.send("say g from b");
    assert!(bob.line().ends_with(": from b"));
    ann.send("say g from a");
    for c in [&mut ann, &mut amy] {
        assert!(c.line().ends_with(": from a"));
    }
    assert!(a.hub.stats().dropped > dropped);
    for c in [&mut ann, &mut amy, &mut bob] {
        c.expect_silence(QUIET);
    }
    // The other instance's claim expires: `a` takes its name back at its
    // next renewal, and listens and publishes again.
    wait_until("a to take its name back", WAIT, || listeners() == ":1");
    let back = left.elapsed();
    barrier.sync();
    bob.send("say g after");
    for c in [&mut ann, &mut amy, &mut bob] {
        let l = c.line();
        assert!(l.ends_with(": after"), "{l}");
    }
    eprintln!("a was off the cluster for {back:?}");
}

#[test]
fn three_thousand_groups_are_resubscribed_and_republished_after_a_restart() {
    // More channels than one SUBSCRIBE carries (the backplane sends them
    // 1,024 at a time) and as many presence entries to write again: 24
    // members of 125 groups each (a connection may be in 128).
    const GROUPS: usize = 3_000;
    const PER_MEMBER: usize = 125;
    let mut redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut members: Vec<LineClient> = (0..GROUPS / PER_MEMBER).map(|_| n2.client()).collect();
    for (k, member) in members.iter_mut().enumerate() {
        // 25 commands in flight at a time.
        let groups: Vec<usize> = (k * PER_MEMBER..(k + 1) * PER_MEMBER).collect();
        for chunk in groups.chunks(25) {
            for g in chunk {
                member.send(&format!("join g{g}"));
            }
            for _ in chunk {
                assert_eq!(member.line(), "ok");
            }
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
    let mut got = Vec::with_capacity(GROUPS);
    for member in &mut members {
        for _ in 0..PER_MEMBER {
            let l = member.line();
            let (group, _) = l.split_once(' ').expect("a group message");
            got.push(group[1..].parse::<usize>().expect("a group number"));
        }
    }
    got.sort_unstable();
    assert_eq!(got, (0..GROUPS).collect::<Vec<_>>());
    // One window for all: each member had as long to get a stray line.
    members[0].expect_silence(QUIET);
    for member in &mut members[1..] {
        member.expect_silence(Duration::from_millis(1));
    }
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

#[test]
fn query_timers_end_with_their_query() {
    // Each query arms a timeout timer on the asking connection's loop;
    // the reply deletes it, so a busy node does not pile up thousands of
    // timers that fire seconds later.
    let redis = Redis::start();
    let a = InProcessNode::start(&redis.url(), "a");
    let mut c = LineClient::connect(a.addr());
    c.cmd("join g");
    let before: usize = c.ask("timers").parse().unwrap();
    for _ in 0..200 {
        c.send("who g");
    }
    for _ in 0..200 {
        assert_eq!(c.line(), "g 1");
    }
    for _ in 0..50 {
        assert_eq!(c.ask("online nobody"), "no");
        assert_eq!(c.ask("members g"), "");
    }
    let after: usize = c.ask("timers").parse().unwrap();
    assert_eq!(after, before, "timers left behind by answered queries");
}

#[test]
fn one_connection_joining_a_million_groups_is_refused_at_the_limit() {
    const JOINS: usize = 1_000_000;
    const LIMIT: usize = 128; // HubLimits::default().max_groups_per_conn
    let redis = Redis::start();
    let url = redis.url();
    let n1 = Node::start("n1", &url, None);
    let n2 = Node::start("n2", &url, None);
    let mut barrier = Barrier::new(&addrs(&[&n1, &n2]));
    let mut ann = n1.client();
    let mut bob = n2.client();
    ann.cmd("join room");
    bob.cmd("join room");
    barrier.sync();
    let keys_before = redis.dbsize();

    // One connection asks for a million groups, as fast as it can write.
    let greedy = TcpStream::connect(n1.addr).unwrap();
    greedy.set_read_timeout(Some(WAIT)).unwrap();
    let mut w = std::io::BufWriter::new(greedy.try_clone().unwrap());
    let writer = std::thread::spawn(move || {
        for g in 0..JOINS {
            writeln!(w, "join g{g}").unwrap();
        }
        w.flush().unwrap();
    });
    let started = Instant::now();
    let mut r = BufReader::new(greedy);
    let mut line = String::new();
    let mut refused = 0;
    for i in 0..JOINS {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "closed after {i} replies"
        );
        if i < LIMIT {
            assert_eq!(line.trim_end(), "ok", "join {i}");
        } else {
            assert!(line.starts_with("error: refused: "), "join {i}: {line}");
            refused += 1;
        }
        if i == JOINS / 2 {
            // The others are unaffected meanwhile.
            bob.send("say room halfway");
            for c in [&mut ann, &mut bob] {
                assert!(c.line().ends_with(": halfway"));
            }
        }
    }
    writer.join().unwrap();
    let took = started.elapsed();
    assert_eq!(refused, JOINS - LIMIT);
    assert!(
        line.contains("128 groups already"),
        "the app sees why: {line}"
    );
    barrier.sync();
    // Redis holds a key per group the connection is in, no more.
    let keys_after = redis.dbsize();
    assert!(
        keys_after <= keys_before + LIMIT + 2,
        "{keys_before} keys before, {keys_after} after"
    );
    assert_eq!(ann.ask("who g0"), "g0 1");
    assert_eq!(ann.ask(&format!("who g{LIMIT}")), format!("g{LIMIT} 0"));
    ann.send("say room after");
    for c in [&mut ann, &mut bob] {
        assert!(c.line().ends_with(": after"));
    }
    eprintln!("{JOINS} joins answered in {took:?}; redis keys {keys_before} -> {keys_after}");
}
