//! History and recovery on a single node (`Hub::local` keeps history in
//! memory), over real loopback connections.

mod support;

use std::io::Write;

use lubdub_hub::{History, Hub, Position, Target};
use lubdub_text::Text;
use lubdub_worker::{Worker, WorkerHandle};
use support::Peer;

/// A line server: `join G`, `say G T` (to group G), `dm U T`, `name U`,
/// `all T`, `resume KIND NAME EPOCH:OFFSET` (KIND `g`, `u` or `all`, NAME
/// ignored for `all`) answering `recovered N at POS` or `not recovered at
/// POS`, `ack G T` answering `at POS` or `error: WHY`. History on every
/// group but `lobby`, on uids and on everyone; members see `[POS] T`.
fn server(history: History) -> (Hub<Text>, WorkerHandle<Text>) {
    let history = history.stamp(|pos, line| {
        let mut out = format!("[{pos}] ").into_bytes();
        out.extend_from_slice(line);
        out
    });
    let hub = Hub::<Text>::local().with_history(history);
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    // Two loops: members on one, publishers on the other, at times.
    w.count(2).plugin(hub.plugin());
    let h = hub.clone();
    w.on_message_async(move |c, line| {
        let h = h.clone();
        async move {
            let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let reply = match cmd {
                "join" => Some(
                    h.join(&c, rest)
                        .map_or_else(|e| e.to_string(), |()| "ok".into()),
                ),
                "name" => Some(
                    h.bind_uid(&c, rest)
                        .map_or_else(|e| e.to_string(), |()| "ok".into()),
                ),
                "say" => {
                    let (g, t) = rest.split_once(' ').unwrap();
                    h.send_to_group(g, t, &[]);
                    None
                }
                "dm" => {
                    let (u, t) = rest.split_once(' ').unwrap();
                    h.send_to_uid(u, t);
                    None
                }
                "all" => {
                    h.send_to_all(rest);
                    None
                }
                "ack" => {
                    let (g, t) = rest.split_once(' ').unwrap();
                    Some(match h.send_acked(&Target::Group(g.into()), &[], t).await {
                        Ok(pos) => format!("at {pos}"),
                        Err(e) => format!("error: {e}"),
                    })
                }
                "resume" => {
                    let mut w = rest.split(' ');
                    let (kind, name, pos) =
                        (w.next().unwrap(), w.next().unwrap(), w.next().unwrap());
                    let target = match kind {
                        "g" => Target::Group(name.into()),
                        "u" => Target::Uid(name.into()),
                        _ => Target::All,
                    };
                    let since: Position = pos.parse().unwrap();
                    Some(match h.recover(&c, &target, since).await {
                        Ok(r) if r.recovered => {
                            format!("recovered {} at {}", r.delivered, r.position)
                        }
                        Ok(r) => format!("not recovered at {}", r.position),
                        Err(e) => format!("error: {e}"),
                    })
                }
                _ => Some(format!("unknown: {line}")),
            };
            if let Some(reply) = reply {
                let _ = c.send(&reply);
            }
        }
    });
    let handle = w.start().unwrap();
    (hub, handle)
}

fn history() -> History {
    History::default()
        .pattern("g:room*")
        .uids(true)
        .all(true)
        .max_len(100)
}

/// `[POS] TEXT` → (POS, TEXT).
fn split(line: &str) -> (Position, String) {
    let (pos, text) = line
        .strip_prefix('[')
        .and_then(|l| l.split_once("] "))
        .unwrap_or_else(|| panic!("not a stamped line: {line}"));
    (pos.parse().unwrap(), text.to_owned())
}

#[test]
fn a_connection_that_comes_back_gets_what_it_missed_then_live_messages() {
    let (_hub, w) = server(history());
    let mut ann = Peer::new(w.local_addr());
    let mut bob = Peer::new(w.local_addr());
    assert_eq!(ann.ask("join room"), "ok");
    bob.send("say room m1");
    let (p1, t) = split(&ann.line());
    assert_eq!((p1.offset, t.as_str()), (1, "m1"));
    drop(ann);
    for i in 2..=4 {
        bob.send(&format!("say room m{i}"));
    }
    // Back, on a new connection, with the position of m1.
    let mut ann = Peer::new(w.local_addr());
    ann.send(&format!("resume g room {p1}"));
    for i in 2..=4u64 {
        let (p, t) = split(&ann.line());
        assert_eq!((p.epoch, p.offset, t), (p1.epoch, i, format!("m{i}")));
    }
    assert_eq!(
        ann.line(),
        format!("recovered 3 at {}", Position { offset: 4, ..p1 })
    );
    bob.send("say room m5");
    assert_eq!(split(&ann.line()).1, "m5");
    // Up to date: nothing to deliver, recovered.
    let mut amy = Peer::new(w.local_addr());
    let at5 = Position { offset: 5, ..p1 };
    assert_eq!(
        amy.ask(&format!("resume g room {at5}")),
        format!("recovered 0 at {at5}")
    );
    w.stop_and_wait();
}

#[test]
fn resuming_while_messages_pour_in_gets_each_once_in_order() {
    let (_hub, w) = server(history().max_len(5000));
    let mut watcher = Peer::new(w.local_addr());
    assert_eq!(watcher.ask("join room"), "ok");
    let mut bob = Peer::new(w.local_addr());
    bob.send("say room m1");
    let (p1, _) = split(&watcher.line());
    // A publisher floods while ann resumes from m1.
    let addr = w.local_addr();
    let flood = std::thread::spawn(move || {
        let mut p = Peer::new(addr);
        let lines: String = (2..=3000).map(|i| format!("say room m{i}\n")).collect();
        p.w.write_all(lines.as_bytes()).unwrap();
        p
    });
    let mut ann = Peer::new(w.local_addr());
    ann.send(&format!("resume g room {p1}"));
    let mut next = 2u64;
    let mut recovered = false;
    while next <= 3000 {
        let line = ann.line();
        if line.starts_with("recovered") {
            recovered = true;
            continue;
        }
        let (p, t) = split(&line);
        assert_eq!((p.offset, t), (next, format!("m{next}")), "in order, once");
        next += 1;
    }
    if !recovered {
        assert!(ann.line().starts_with("recovered"));
    }
    let _ = flood.join();
    w.stop_and_wait();
}

#[test]
fn another_epoch_or_too_much_missed_is_not_recovered_and_sends_nothing_old() {
    let (_hub, w) = server(history().max_len(3));
    let mut bob = Peer::new(w.local_addr());
    let mut watcher = Peer::new(w.local_addr());
    assert_eq!(watcher.ask("join room"), "ok");
    bob.send("say room m1");
    let (p1, _) = split(&watcher.line());
    for i in 2..=6 {
        bob.send(&format!("say room m{i}"));
        watcher.line();
    }
    // 5 missed, 3 kept.
    let mut ann = Peer::new(w.local_addr());
    let top = Position { offset: 6, ..p1 };
    assert_eq!(
        ann.ask(&format!("resume g room {p1}")),
        format!("not recovered at {top}")
    );
    // An epoch this channel never had (a history lost since).
    let mut amy = Peer::new(w.local_addr());
    let other = Position {
        epoch: lubdub_hub::Epoch(p1.epoch.0 ^ 1),
        offset: 1,
    };
    assert_eq!(
        amy.ask(&format!("resume g room {other}")),
        format!("not recovered at {top}")
    );
    // A position past the top.
    let mut cat = Peer::new(w.local_addr());
    let ahead = Position { offset: 60, ..p1 };
    assert_eq!(
        cat.ask(&format!("resume g room {ahead}")),
        format!("not recovered at {top}")
    );
    // Each goes on live.
    bob.send("say room m7");
    for p in [&mut ann, &mut amy, &mut cat] {
        assert_eq!(split(&p.line()).1, "m7");
    }
    w.stop_and_wait();
}

#[test]
fn acknowledged_sends_return_their_positions_and_channels_without_history_refuse() {
    let (_hub, w) = server(history());
    let mut ann = Peer::new(w.local_addr());
    let first = ann.ask("ack room a");
    let p1: Position = first.strip_prefix("at ").unwrap().parse().unwrap();
    assert_eq!(p1.offset, 1);
    let p2: Position = ann
        .ask("ack room b")
        .strip_prefix("at ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!((p2.epoch, p2.offset), (p1.epoch, 2));
    // Another channel, another epoch and its own offsets.
    let q: Position = ann
        .ask("ack room2 a")
        .strip_prefix("at ")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(q.offset, 1);
    assert_ne!(q.epoch, p1.epoch);
    assert_eq!(
        ann.ask("ack lobby a"),
        "error: this channel keeps no history"
    );
    assert_eq!(
        ann.ask(&format!("resume g lobby {p1}")),
        "error: this channel keeps no history"
    );
    // A group without history is delivered as before, unstamped.
    assert_eq!(ann.ask("join lobby"), "ok");
    ann.send("say lobby plain");
    assert_eq!(ann.line(), "plain");
    w.stop_and_wait();
}

#[test]
fn uid_and_everyone_channels_keep_history_too() {
    let (_hub, w) = server(history());
    let mut ann = Peer::new(w.local_addr());
    assert_eq!(ann.ask("name ann"), "ok");
    let mut bob = Peer::new(w.local_addr());
    bob.send("dm ann d1");
    let (d1, _) = split(&ann.line());
    bob.send("all a1");
    let (a1, _) = split(&ann.line());
    let _ = bob.line(); // bob gets `all` too
    drop(ann);
    bob.send("dm ann d2");
    bob.send("all a2");
    let _ = bob.line();
    let mut ann = Peer::new(w.local_addr());
    ann.send(&format!("resume u ann {d1}"));
    assert_eq!(split(&ann.line()).1, "d2");
    assert!(ann.line().starts_with("recovered 1 "));
    ann.send(&format!("resume all - {a1}"));
    assert_eq!(split(&ann.line()).1, "a2");
    assert!(ann.line().starts_with("recovered 1 "));
    w.stop_and_wait();
}
