//! The scenario registry: every scenario the runner knows, the group it
//! belongs to, and the function that runs it. The scenarios themselves
//! live in one file per family below (`scenarios/tcp.rs`, `tls.rs`,
//! `ws.rs`, `hub.rs`, `attack.rs`, `timers.rs`, `client.rs`, `sweep.rs`),
//! which share `scenarios/runs.rs` and the floors below, never each other
//! nor this registry.
//!
//! # Adding a scenario
//!
//! Write a `fn(&Config, &mut Outcome) -> Result<()>` in its family's file
//! that calls `runs::alternate` with a closure doing one run for one
//! implementation (start a server child from `peers/`, drive it with a
//! load generator from `load/`, return the metric values), push one row
//! per metric onto the outcome, and add a [`Scenario`] entry to
//! [`SCENARIOS`]. A server the scenario needs is a new option or
//! subcommand of a peer (see `peers/tcp.rs`), so that it runs in its own
//! process like the others. The heartbeat sweep went in that way:
//! `sweep::sweep` runs `serve <impl> text --sweep N` children (see
//! `peers/sweep.rs`).

pub mod attack;
pub mod client;
pub mod hub;
pub mod runs;
pub mod sweep;
pub mod tcp;
pub mod timers;
pub mod tls;
pub mod ws;

use anyhow::Result;

use crate::report::{Config, Outcome};

/// Which runs of the runner a scenario is part of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// `all`.
    All,
    /// `tls`: the TLS scenarios (`tls-nginx` needs nginx).
    Tls,
    /// `ws`: the WebSocket scenarios.
    Ws,
    /// `hub`: the hub scenarios (the cluster ones need Redis and Node).
    Hub,
    /// None: runs only when named (`attack`).
    Alone,
}

impl Group {
    /// The group a runner word names: `all`, `tls`, `ws`, `hub`.
    pub fn named(word: &str) -> Option<Group> {
        match word {
            "all" => Some(Group::All),
            "tls" => Some(Group::Tls),
            "ws" => Some(Group::Ws),
            "hub" => Some(Group::Hub),
            _ => None,
        }
    }
}

/// One scenario of the runner.
pub struct Scenario {
    /// Its name on the command line.
    pub name: &'static str,
    /// What it measures, one line.
    pub about: &'static str,
    /// Runs it: alternating runs of lubdub and the peer, rows pushed.
    pub run: fn(&Config, &mut Outcome) -> Result<()>,
    /// The runner's group it is part of.
    pub group: Group,
}

/// Every scenario, in the order `all` and the groups run them.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "echo-1",
        about: "text echo, 32 B lines, 100 conns x 16 pipelined; lubdub count=1 vs tokio current_thread",
        run: |c, o| tcp::echo(c, o, 1),
        group: Group::All,
    },
    Scenario {
        name: "echo-2",
        about: "text echo, 32 B lines, 100 conns x 16 pipelined; lubdub count=2 vs tokio multi_thread(2)",
        run: |c, o| tcp::echo(c, o, 2),
        group: Group::All,
    },
    Scenario {
        name: "echo-1k",
        about: "text echo, 32 B lines, 1,000 conns x 4 pipelined; count=1 vs current_thread",
        run: |c, o| tcp::echo_many(c, o, 1000, 4),
        group: Group::All,
    },
    Scenario {
        name: "echo-10k",
        about: "text echo, 32 B lines, 10,000 conns x 1 (depth 1); count=1 vs current_thread",
        run: |c, o| tcp::echo_many(c, o, c.many_conns, 1),
        group: Group::All,
    },
    Scenario {
        name: "pingpong",
        about: "text ping-pong, depth 1, 100 conns: round trips/s, p50 and p99 latency",
        run: tcp::pingpong,
        group: Group::All,
    },
    Scenario {
        name: "frame-32",
        about: "Workerman Frame echo, 32 B payloads, 100 conns x 16 pipelined",
        run: |c, o| tcp::frame(c, o, 32),
        group: Group::All,
    },
    Scenario {
        name: "frame-4k",
        about: "Workerman Frame echo, 4 KiB payloads, 100 conns x 16 pipelined",
        run: |c, o| tcp::frame(c, o, 4096),
        group: Group::All,
    },
    Scenario {
        name: "idle-mem",
        about: "server RSS per idle connection, 10,000 connections",
        run: tcp::idle_mem,
        group: Group::All,
    },
    Scenario {
        name: "timers",
        about: "timer add + delete, 1,000,000 timers, ns each (DelayQueue for tokio)",
        run: timers::timers,
        group: Group::All,
    },
    Scenario {
        name: "churn",
        about: "connection churn: connect, one echo round trip, close; 32 concurrent churners",
        run: tcp::churn,
        group: Group::All,
    },
    Scenario {
        name: "client",
        about: "client side: lubdub Client vs tokio Framed client, 100 conns x 16 pipelined 32 B lines, same server",
        run: client::client,
        group: Group::All,
    },
    Scenario {
        name: "sweep",
        about: "heartbeat idle sweep over 10,000 idle connections, nothing expires: us per sweep",
        run: sweep::sweep,
        group: Group::All,
    },
    Scenario {
        name: "attack",
        about: "healthy ping-pong under attack (slowloris, endless lines, non-readers, invalid UTF-8, connect storm): \
                latency, losses, server CPU, RSS, fds; not in `all`",
        run: attack::attack,
        group: Group::Alone,
    },
    // TLS (issue 14; bench/src/tls/): the `tls` group, not in `all`
    // (about 6 minutes at --runs 5, and `tls-nginx` needs nginx).
    Scenario {
        name: "tls-echo-32",
        about: "TLS text echo, 32 B lines, 100 conns x 16 pipelined; lubdub TLS vs tokio-rustls current_thread",
        run: |c, o| tls::echo(c, o, 32),
        group: Group::Tls,
    },
    Scenario {
        name: "tls-echo-4k",
        about: "TLS text echo, 4 KiB lines, 100 conns x 16 pipelined; lubdub TLS vs tokio-rustls current_thread",
        run: |c, o| tls::echo(c, o, 4096),
        group: Group::Tls,
    },
    Scenario {
        name: "tls-handshakes",
        about: "full TLS handshakes/s (no resumption): connect, handshake, one echo, close; 32 churners",
        run: tls::handshakes,
        group: Group::Tls,
    },
    Scenario {
        name: "wss-echo",
        about: "wss echo, 32 B text messages, 100 conns x 16 pipelined; lubdub-ws vs tokio-tungstenite, both on TLS",
        run: tls::wss_echo,
        group: Group::Tls,
    },
    Scenario {
        name: "tls-nginx",
        about: "lubdub terminating TLS vs nginx (stream, ssl) in front of plain lubdub: pipelined msg/s, ping-pong p99",
        run: tls::nginx,
        group: Group::Tls,
    },
    Scenario {
        name: "tls-idle-mem",
        about: "server RSS per idle TLS connection after the handshake, 10,000 connections",
        run: tls::idle_mem,
        group: Group::Tls,
    },
    // WebSocket (issue 13; bench/src/ws*.rs): the `ws` group, not in `all`.
    Scenario {
        name: "ws-echo-32",
        about: "WebSocket text echo, 32 B, 100 conns x 16 pipelined, masked client frames; \
                lubdub vs tokio-tungstenite, then vs fastwebsockets (group `ws`, not in `all`)",
        run: |c, o| ws::echo(c, o, 32),
        group: Group::Ws,
    },
    Scenario {
        name: "ws-echo-4k",
        about: "WebSocket text echo, 4 KiB, 100 conns x 16 pipelined; vs tokio-tungstenite, vs fastwebsockets",
        run: |c, o| ws::echo(c, o, 4096),
        group: Group::Ws,
    },
    Scenario {
        name: "ws-handshakes",
        about: "WebSocket handshakes/s: connect, upgrade, close handshake; 32 churners; vs tokio-tungstenite",
        run: ws::handshakes,
        group: Group::Ws,
    },
    Scenario {
        name: "ws-idle-mem",
        about: "server RSS per idle upgraded WebSocket connection, 10,000 connections; vs tokio-tungstenite",
        run: ws::idle_mem,
        group: Group::Ws,
    },
    Scenario {
        name: "ws-deflate",
        about: "WebSocket echo with permessage-deflate, 32 B and 4 KiB word text; lubdub vs lubdub without deflate",
        run: ws::deflate,
        group: Group::Ws,
    },
    Scenario {
        name: "attack-ws",
        about: "WebSocket healthy ping-pong under attack (~10 MiB messages: one frame, fragments, slow, \
                deflate bomb; idle deflate conns; foreign Origin; duplicate headers): latency, losses, RSS, \
                fds, what the attackers met; vs tokio-tungstenite",
        run: attack::attack_ws,
        group: Group::Ws,
    },
    // Hub (issue 15; bench/src/hub*.rs): the `hub` group, not in `all`.
    Scenario {
        name: "hub-fanout-local",
        about: "hub: 1 message to a group of 10,000 local conns, time until the last has it; \
                lubdub Hub vs tokio broadcast + FramedWrite; group `hub`, not in `all`",
        run: hub::fanout_local,
        group: Group::Hub,
    },
    Scenario {
        name: "hub-fanout-cluster",
        about: "hub: Redis + 3 nodes, publisher on node 1, 1,000 members on nodes 2+3, WebSocket; \
                delivered msg/s and p99 vs Socket.IO 4 + redis-adapter; group `hub`",
        run: hub::fanout_cluster,
        group: Group::Hub,
    },
    Scenario {
        name: "hub-backplane",
        about: "hub: Redis + 3 nodes, 1 member on node 2 and 1 on node 3: publishes/s vs Socket.IO \
                and vs redis-benchmark PUBLISH; group `hub`",
        run: hub::backplane,
        group: Group::Hub,
    },
];

/// The scenario called `name`.
pub fn find(name: &str) -> Option<&'static Scenario> {
    SCENARIOS.iter().find(|s| s.name == name)
}

/// Whether `word` names a group or a scenario.
pub fn is_known(word: &str) -> bool {
    Group::named(word).is_some() || find(word).is_some()
}

/// The scenarios `words` (groups and scenario names, each known) stand
/// for, in order; a scenario named twice in a row runs once.
pub fn select(words: &[String]) -> Vec<&'static Scenario> {
    let mut out: Vec<&'static Scenario> = Vec::new();
    for word in words {
        match Group::named(word) {
            Some(g) => out.extend(SCENARIOS.iter().filter(|s| s.group == g)),
            None => out.extend(find(word)),
        }
    }
    out.dedup_by_key(|s| s.name);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names are unique; the `tls`, `ws` and `hub` groups are exactly the
    /// scenarios of their prefixes (and `attack-ws` in `ws`), in registry
    /// order, and none of them is in `all`.
    #[test]
    fn groups_are_the_scenarios_of_their_prefix() {
        let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        let group =
            |g: &str| -> Vec<&str> { select(&[g.to_string()]).iter().map(|s| s.name).collect() };
        let prefixed = |p: &[&str]| -> Vec<&str> {
            names
                .iter()
                .copied()
                .filter(|n| p.iter().any(|p| n.starts_with(p)))
                .collect()
        };
        let mut ws = prefixed(&["ws-"]);
        ws.push("attack-ws");
        assert_eq!(group("ws"), ws);
        assert_eq!(group("tls"), prefixed(&["tls-", "wss-"]));
        assert_eq!(group("hub"), prefixed(&["hub-"]));
        let all = group("all");
        assert!(all
            .iter()
            .all(|n| prefixed(&["ws-", "tls-", "wss-", "hub-"])
                .iter()
                .all(|p| p != n)));
        assert!(!all.contains(&"attack") && !all.contains(&"attack-ws"));
        assert_eq!(all.len(), 12);
        let words = ["echo-1", "echo-1", "pingpong"].map(String::from);
        assert_eq!(select(&words).len(), 2);
        assert!(is_known("all") && is_known("tls-nginx") && !is_known("nope"));
    }
}
