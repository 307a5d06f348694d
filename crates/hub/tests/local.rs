//! The hub in one process, over real loopback connections.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use lubdub_hub::{GlobalConnId, Hub, HubError, HubLimits};
use lubdub_text::Text;
use lubdub_worker::{Limits, Worker, WorkerHandle};

const WAIT: Duration = Duration::from_secs(20);

/// A line server speaking the chat commands through the hub:
/// `name U`, `join G`, `leave G`, `say G T`, `dm U T`, `all T`, `to ID T`,
/// `id` (answers this connection's global id), `except G T` (to G but me).
/// `name`, `unname`, `join` and `leave` answer `ok`, or `refused: WHY`.
fn chat(count: usize) -> (Hub<Text>, WorkerHandle<Text>) {
    chat_with(count, Hub::<Text>::local())
}

fn chat_with(count: usize, hub: Hub<Text>) -> (Hub<Text>, WorkerHandle<Text>) {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.count(count).plugin(hub.plugin());
    let h = hub.clone();
    w.on_message(move |c, line| {
        let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
        let done = match cmd {
            "name" => h.bind_uid(c, rest),
            "unname" => {
                h.unbind_uid(c, rest);
                Ok(())
            }
            "join" => h.join(c, rest),
            "leave" => {
                h.leave(c, rest);
                Ok(())
            }
            "say" => {
                let (g, t) = rest.split_once(' ').unwrap();
                h.send_to_group(g, t, &[]);
                return;
            }
            "except" => {
                let (g, t) = rest.split_once(' ').unwrap();
                h.send_to_group(g, t, &[h.global_id(c)]);
                return;
            }
            "dm" => {
                let (u, t) = rest.split_once(' ').unwrap();
                h.send_to_uid(u, t);
                return;
            }
            "all" => {
                h.send_to_all(rest);
                return;
            }
            "to" => {
                let (id, t) = rest.split_once(' ').unwrap();
                h.send_to_conn(&id.parse::<GlobalConnId>().unwrap(), t);
                return;
            }
            "id" => {
                let _ = c.send(&h.global_id(c).to_string());
                return;
            }
            _ => Ok(()),
        };
        let _ = c.send(&match done {
            Ok(()) => "ok".to_owned(),
            Err(e) => format!("refused: {e}"),
        });
    });
    let handle = w.start().unwrap();
    (hub, handle)
}

struct Peer {
    w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Peer {
    fn new(addr: SocketAddr) -> Self {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(WAIT)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Peer { w, r }
    }
    fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }
    fn line(&mut self) -> String {
        let mut s = String::new();
        self.r.read_line(&mut s).expect("a line");
        s.trim_end().to_owned()
    }
    fn cmd(&mut self, line: &str) {
        self.send(line);
        assert_eq!(self.line(), "ok", "{line}");
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < WAIT, "timed out: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

#[test]
fn users_groups_everyone_and_one_connection() {
    let (hub, h) = chat(2);
    let a = h.local_addr();
    let (mut ann1, mut ann2, mut bob) = (Peer::new(a), Peer::new(a), Peer::new(a));
    ann1.cmd("name ann");
    ann2.cmd("name ann");
    bob.cmd("name bob");
    assert!(hub.is_uid_online_local("ann"));
    assert!(!hub.is_uid_online_local("eve"));
    assert_eq!(hub.uid_count_local(), 2);
    // A uid with two devices gets it on both.
    bob.send("dm ann hi ann");
    assert_eq!(ann1.line(), "hi ann");
    assert_eq!(ann2.line(), "hi ann");
    // Groups, with an exception.
    ann1.cmd("join room");
    bob.cmd("join room");
    assert_eq!(hub.group_count_local("room"), 2);
    let mut uids = hub.group_uids_local("room");
    uids.sort();
    assert_eq!(uids, ["ann", "bob"]);
    bob.send("say room hello room");
    assert_eq!(ann1.line(), "hello room");
    assert_eq!(bob.line(), "hello room", "the sender is a member too");
    bob.send("except room not for bob");
    assert_eq!(ann1.line(), "not for bob");
    // Everyone.
    ann2.send("all everyone");
    for p in [&mut ann1, &mut ann2, &mut bob] {
        assert_eq!(p.line(), "everyone");
    }
    // One connection by its global id.
    ann2.send("id");
    let id = ann2.line();
    assert!(id.starts_with("local:"), "{id}");
    bob.send(&format!("to {id} just you"));
    assert_eq!(ann2.line(), "just you");
    // Leave and unbind.
    ann1.cmd("leave room");
    assert_eq!(hub.group_count_local("room"), 1);
    ann2.cmd("unname ann");
    bob.send("dm ann once");
    assert_eq!(ann1.line(), "once");
    // Everything a connection was part of ends with it.
    drop((ann1, ann2, bob));
    wait_until("memberships dropped", || hub.member_count_local() == 0);
    assert_eq!(hub.uid_count_local(), 0);
    assert_eq!(hub.group_count_total_local(), 0);
    h.stop_and_wait();
}

#[test]
fn ten_thousand_churned_connections_leave_nothing_behind() {
    let (hub, h) = chat(2);
    let addr = h.local_addr();
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..4)
        .map(|t| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for i in 0..2_500 {
                    let mut p = Peer::new(addr);
                    p.cmd(&format!("name u{t}-{}", i % 50));
                    p.cmd(&format!("join g{}", i % 7));
                    p.cmd("join all-of-them");
                }
                tx.send(()).unwrap();
            })
        })
        .collect();
    for _ in 0..4 {
        rx.recv_timeout(Duration::from_secs(120))
            .expect("churn done");
    }
    for w in workers {
        w.join().unwrap();
    }
    wait_until("every membership dropped", || {
        hub.member_count_local() == 0 && h.connections().is_empty()
    });
    assert_eq!(hub.uid_count_local(), 0);
    assert_eq!(hub.group_count_total_local(), 0);
    h.stop_and_wait();
}

#[test]
fn a_member_that_never_reads_does_not_block_the_group() {
    let (hub, h) = chat(1);
    let a = h.local_addr();
    let mut sender = Peer::new(a);
    let mut reader = Peer::new(a);
    let mut mute = Peer::new(a);
    // The sender is no member: it never reads, and under the default
    // backpressure a member that never reads would stop being read from.
    for p in [&mut reader, &mut mute] {
        p.cmd("join g");
    }
    // The mute member never reads again; 5,000 broadcasts of 4 KiB each
    // (20 MB) are far more than its send buffer and loopback's socket
    // buffers hold.
    let text = "x".repeat(4096);
    let reader_thread = std::thread::spawn(move || {
        for i in 0..5000 {
            assert_eq!(reader.line().len(), 4096, "message {i}");
        }
    });
    for _ in 0..5000 {
        sender.send(&format!("say g {text}"));
    }
    reader_thread.join().unwrap();
    wait_until("the mute member's refusals counted", || {
        hub.stats().refused > 0
    });
    assert!(hub.stats().delivered >= 5_000);
    drop(mute);
    h.stop_and_wait();
}

/// The deadlock of issue 19: a room broadcast holds the room's lock while
/// it queues on every member; a member that stopped reading fills its send
/// buffer during that broadcast, and its `on_buffer_full` takes the same
/// lock (it leaves the room, and tells the room). When `send` ran
/// `on_buffer_full` inside itself (on the connection's own loop), the loop
/// locked itself and never served anyone again. Now the callback runs after
/// the broadcast, before the member's next message.
#[test]
fn on_buffer_full_may_leave_and_broadcast_to_the_room_being_broadcast_to() {
    let hub = Hub::<Text>::local();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    // One loop: the broadcaster and the non-reader share it, so the
    // non-reader's buffer fills inside the broadcaster's `on_message`.
    w.count(1)
        .limits(Limits::default().send_buffer_size(512 * 1024))
        .plugin(hub.plugin());
    let (full_tx, full_rx) = mpsc::channel::<u64>();
    {
        let h = hub.clone();
        w.on_buffer_full(move |c| {
            // Both take the room's lock that a broadcast holds.
            h.leave(c, "room");
            h.send_to_group("room", &format!("{} left: too slow", c.id()), &[]);
            let _ = full_tx.send(c.id());
        });
    }
    let h = hub.clone();
    w.on_message(move |c, line| match line.split_once(' ') {
        Some(("say", text)) => {
            h.send_to_group("room", text, &[]);
        }
        _ => {
            h.join(c, "room").unwrap();
            let _ = c.send("ok");
        }
    });
    let handle = w.start().unwrap();
    let a = handle.local_addr();
    let mut healthy = Peer::new(a);
    healthy.cmd("join");
    let mut mute = Peer::new(a);
    mute.cmd("join");
    socket2::SockRef::from(&mute.w)
        .set_recv_buffer_size(4096)
        .unwrap();
    let reader = std::thread::spawn(move || {
        let mut says = 0;
        loop {
            let line = healthy.line();
            if line.ends_with("left: too slow") {
                return (healthy, says, line);
            }
            says += 1;
        }
    });
    // Broadcasts, 80 KiB at a time (the healthy member's queue drains
    // between batches and stays far under its limit), until the mute
    // member's buffer fills (its socket buffers first: a few MB). A locked
    // loop stops reading the broadcaster: its writes then time out and the
    // test fails instead of hanging.
    let mut broadcaster = Peer::new(a);
    broadcaster.w.set_write_timeout(Some(WAIT)).unwrap();
    let text = "x".repeat(8 * 1024);
    let mut sent = 0;
    let left = loop {
        for _ in 0..10 {
            broadcaster.send(&format!("say {text}"));
        }
        sent += 10;
        if let Ok(id) = full_rx.recv_timeout(Duration::from_millis(20)) {
            break id;
        }
        assert!(sent < 10_000, "the mute member's buffer never filled");
    };
    let (mut healthy, says, notice) = reader.join().unwrap();
    assert_eq!(notice, format!("{left} left: too slow"));
    assert!(says > 0 && says <= sent);
    // The loop goes on serving the room, without the mute member.
    broadcaster.send("say still here");
    loop {
        if healthy.line() == "still here" {
            break;
        }
    }
    assert!(full_rx.try_recv().is_err(), "one episode, one callback");
    drop(mute);
    handle.stop_and_wait();
}

#[test]
fn joins_and_binds_past_the_limits_are_refused_and_the_app_sees_why() {
    let limits = HubLimits::default()
        .max_groups_per_conn(3)
        .max_uids_per_conn(2)
        .max_name_len(8);
    let (hub, h) = chat_with(1, Hub::<Text>::local().with_limits(limits));
    let a = h.local_addr();
    let (mut greedy, mut other) = (Peer::new(a), Peer::new(a));
    for g in ["g0", "g1", "g2"] {
        greedy.cmd(&format!("join {g}"));
    }
    greedy.send("join g3");
    assert_eq!(
        greedy.line(),
        format!("refused: {}", HubError::TooManyGroups { limit: 3 })
    );
    assert_eq!(
        hub.group_count_local("g3"),
        0,
        "a refused join leaves nothing"
    );
    // Joining a group again is no new membership; leaving makes room.
    greedy.cmd("join g1");
    greedy.cmd("leave g0");
    greedy.cmd("join g3");
    // Names: at most 8 bytes, never empty.
    greedy.send("join 123456789");
    assert_eq!(
        greedy.line(),
        format!("refused: {}", HubError::BadName { len: 9, limit: 8 })
    );
    greedy.send("name ");
    assert_eq!(
        greedy.line(),
        format!("refused: {}", HubError::BadName { len: 0, limit: 8 })
    );
    greedy.cmd("name ann");
    greedy.cmd("name ann2");
    greedy.send("name ann3");
    assert_eq!(
        greedy.line(),
        format!("refused: {}", HubError::TooManyUids { limit: 2 })
    );
    assert!(!hub.is_uid_online_local("ann3"));
    // Sends to a name no one can have reach no one.
    assert_eq!(hub.send_to_group("123456789", "x", &[]), 0);
    // The limits are per connection: the other member is unaffected.
    for g in ["g1", "g2", "g3"] {
        other.cmd(&format!("join {g}"));
    }
    greedy.send("say g3 both of us");
    assert_eq!(greedy.line(), "both of us");
    assert_eq!(other.line(), "both of us");
    h.stop_and_wait();
}

#[test]
fn a_connection_that_closed_can_join_nothing() {
    let hub = Hub::<Text>::local();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.count(1).plugin(hub.plugin());
    let (tx, rx) = mpsc::channel();
    let h = hub.clone();
    w.on_message(move |c, _| {
        h.join(c, "room").unwrap();
        let _ = c.send("ok");
    });
    let h = hub.clone();
    // The hub's plugin forgot the connection before this runs: a join now
    // would stay behind for good.
    w.on_close(move |c, _| {
        let _ = tx.send((h.join(c, "late"), h.bind_uid(c, "late")));
    });
    let handle = w.start().unwrap();
    let mut p = Peer::new(handle.local_addr());
    p.cmd("join");
    assert_eq!(hub.group_count_local("room"), 1);
    drop(p);
    let (join, bind) = rx.recv_timeout(WAIT).expect("on_close ran");
    assert_eq!(join, Err(HubError::Closed));
    assert_eq!(bind, Err(HubError::Closed));
    wait_until("memberships dropped", || hub.member_count_local() == 0);
    assert_eq!(hub.group_count_total_local(), 0);
    assert_eq!(hub.uid_count_local(), 0);
    handle.stop_and_wait();
}
