//! A chat that spans nodes: `cargo run --example cluster_chat -- --listen 127.0.0.1:7001
//! --redis redis://127.0.0.1:6379 --node n1` (and n2, n3 on other ports); without
//! `--redis` the node runs alone. `--presence-ttl SECS` (default 15) is how
//! long a dead node's users still read as online. Text protocol, one
//! command per line:
//!
//! | command | effect |
//! |---|---|
//! | `name NAME` | binds this connection to uid NAME; answers `ok`, or `refused: WHY` past the hub's limits |
//! | `join ROOM`, `leave ROOM` | answers `ok` (a join past the hub's limits: `refused: WHY`) |
//! | `say ROOM TEXT` | every member of ROOM on every node, the sender included, gets `ROOM NAME: TEXT` |
//! | `dm UID TEXT` | every connection of UID on every node gets `dm NAME: TEXT`; the sender gets `ok`, or `offline` when UID is on no node |
//! | `who ROOM` | answers `ROOM N`: members of ROOM on all nodes |
//! | `all TEXT` | every connection on every node gets `all NAME: TEXT` |

mod common;

use clap::Parser;
use lubdub::hub::{Hub, RedisConfig};
use lubdub::{Connection, Text, Worker};

/// The name a connection bound with `name`.
struct Name(String);

fn name_of(c: &Connection<Text>) -> String {
    c.context::<Name>()
        .map(|n| n.0.clone())
        .unwrap_or_else(|| format!("guest{}", c.id()))
}

/// A chat that spans nodes over Redis; one text command per line.
#[derive(Parser)]
#[command(mut_arg("listen", |a| a.default_value("127.0.0.1:7001")))]
struct Args {
    #[command(flatten)]
    listen: common::ListenArgs,
    /// The Redis server that joins the nodes (`redis://HOST:PORT`); without it the node runs alone
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
    /// This node's name, unique among the nodes
    #[arg(long, value_name = "NAME", default_value = "n1")]
    node: String,
    /// How long a dead node's users still read as online, in seconds (the hub's default: 15)
    #[arg(long, value_name = "SECS")]
    presence_ttl: Option<u64>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    common::init_logging(log::LevelFilter::Info)?;
    let hub = match &args.redis {
        Some(url) => {
            let mut config = RedisConfig::new(url, &args.node);
            if let Some(secs) = args.presence_ttl {
                config = config.presence_ttl(std::time::Duration::from_secs(secs));
            }
            Hub::with_redis(config, Text::new())?
        }
        None => Hub::<Text>::new(&args.node, Text::new(), None),
    };
    let mut worker = Worker::<Text>::new(args.listen.listen.as_str())?;
    worker.name(&args.node).plugin(hub.plugin());
    let h = hub.clone();
    // Async: `dm` and `who` ask Redis; one connection's commands still run
    // one at a time, in order.
    worker.on_message_async(move |c, line| {
        let hub = h.clone();
        async move {
            let (cmd, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            let reply = match (cmd, rest.split_once(' ')) {
                ("name", _) if !rest.is_empty() => Some(match hub.bind_uid(&c, rest) {
                    Ok(()) => {
                        c.set_context(Name(rest.to_owned()));
                        "ok".to_owned()
                    }
                    Err(e) => format!("refused: {e}"),
                }),
                ("join", _) if !rest.is_empty() => Some(match hub.join(&c, rest) {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("refused: {e}"),
                }),
                ("leave", _) if !rest.is_empty() => {
                    hub.leave(&c, rest);
                    Some("ok".to_owned())
                }
                ("say", Some((room, text))) => {
                    hub.send_to_group(room, &format!("{room} {}: {text}", name_of(&c)), &[]);
                    None
                }
                ("dm", Some((uid, text))) => {
                    hub.send_to_uid(uid, &format!("dm {}: {text}", name_of(&c)));
                    let online = hub.is_uid_online(uid).await;
                    Some(if online { "ok" } else { "offline" }.to_owned())
                }
                ("who", _) if !rest.is_empty() => {
                    Some(format!("{rest} {}", hub.group_count(rest).await))
                }
                ("all", _) => {
                    hub.send_to_all(&format!("all {}: {rest}", name_of(&c)));
                    None
                }
                _ => Some(format!("unknown command: {line}")),
            };
            if let Some(reply) = reply {
                let _ = c.send(&reply);
            }
        }
    });
    let node = args.node.clone();
    worker.on_worker_start(move |w| println!("cluster chat node {node} on {}", w.local_addr()));
    worker.run()?;
    Ok(())
}
