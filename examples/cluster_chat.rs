//! A chat that spans nodes: `cargo run --example cluster_chat -- --listen 127.0.0.1:7001
//! --redis redis://127.0.0.1:6379 --node n1` (and n2, n3 on other ports); without
//! `--redis` the node runs alone. `--presence-ttl SECS` (default 15) is how
//! long a dead node's users still read as online. Text protocol, one
//! command per line:
//!
//! | command | effect |
//! |---|---|
//! | `name NAME` | binds this connection to uid NAME, once, before any `join`; refused when NAME is online on any node; answers `ok` |
//! | `join ROOM`, `leave ROOM` | answers `ok`; `join` is refused when the connection's name is already in ROOM on any node |
//! | `say ROOM TEXT` | every member of ROOM on every node, the sender included, gets `ROOM NAME: TEXT` |
//! | `dm NAME TEXT` | every connection of NAME on every node gets `dm SENDER: TEXT`; the sender gets `ok`, or `offline` when NAME is on no node |
//! | `who ROOM` | answers `ROOM N`: members of ROOM on all nodes |
//! | `all TEXT` | every connection on every node gets `all NAME: TEXT` |
//!
//! What keeps it safe to deploy:
//!
//! * Names and rooms are 1 to 32 ASCII letters, digits, `_`, `-` or `.`.
//!   A connection without a name speaks as `~guestID@NODE`, which no name
//!   can be. A refused command answers `error: ...`.
//! * Control characters in TEXT (`\r`, ESC...) reach others escaped
//!   (`\r`, `\u{1b}`), and so does anything a peer chose in the log.
//! * Each line counts against the connection's rate: `--rate` lines a
//!   second (default 20), in bursts of `--burst` (40). Past that lines are
//!   refused, with one `error: too many messages...` per episode; a
//!   connection refused `--flood-close` times (100) in one episode is told
//!   `error: too many messages: closing` and closed.
//! * A line over 64 KiB (its line end included) closes the connection.
//! * With `--jwt-secret SECRET` (or `CHAT_JWT_SECRET`) the first line must
//!   be `token JWT`: an HS256 token with an `exp`, whose `sub` is the name
//!   (a user may then be connected from several devices, and `name` is
//!   refused). Anything else, or a token that is not valid, gets
//!   `error: ...` and the connection is closed.
//!
//! The hub's own limits (rooms and names per connection) answer
//! `error: refused: WHY`.
//!
//! Claims are checked across nodes through Redis, then on this node again
//! at the moment the name is bound or the room joined: two nodes that get
//! the same name within one Redis round trip can both accept it, and while
//! Redis is down a node knows only its own names.

mod common;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use clap::Parser;
use common::chat::{check_name, clean, ChatArgs, JwtVerifier, RateLimiter, Verdict, MAX_MESSAGE};
use common::log_limited;
use log::Level;
use lubdub::hub::{Hub, RedisConfig};
use lubdub::{Connection, Limits, Text, Worker};

/// What the chat knows of a connection (its context).
struct Member {
    state: Mutex<State>,
}

struct State {
    /// The name it bound (with a token: the token's subject).
    name: Option<String>,
    /// Whether it joined a room (a name comes before).
    joined: bool,
    limiter: RateLimiter,
}

/// The commands, for the reply to an unknown one.
const COMMANDS: &str =
    "name NAME, join ROOM, leave ROOM, say ROOM TEXT, dm NAME TEXT, who ROOM, all TEXT";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The chat's rules over the hub, shared by every connection.
struct Chat {
    hub: Hub<Text>,
    args: ChatArgs,
    verifier: Option<JwtVerifier>,
    notice: String,
}

impl Chat {
    fn member(&self, c: &Connection<Text>) -> Arc<Member> {
        c.context_or_insert_with(|| Member {
            state: Mutex::new(State {
                name: None,
                joined: false,
                limiter: self.args.limiter(Instant::now()),
            }),
        })
    }

    /// The name others see: the bound name, else `~guestID@NODE`.
    fn display(&self, c: &Connection<Text>, member: &Member) -> String {
        lock(&member.state)
            .name
            .clone()
            .unwrap_or_else(|| format!("~guest{}@{}", c.id(), self.hub.node()))
    }

    /// Handles one line; `None`: no reply.
    async fn handle(&self, c: &Connection<Text>, line: &str) -> Option<String> {
        let member = self.member(c);
        let verdict = lock(&member.state).limiter.check(Instant::now());
        match verdict {
            Verdict::Pass => {}
            Verdict::Notify => return Some(format!("error: {}", self.notice)),
            Verdict::Refuse => return None,
            Verdict::Close => {
                log_limited!(
                    Level::Warn,
                    "{} ({}) kept flooding: closed",
                    self.hub.global_id(c),
                    c.remote_addr()
                );
                c.close_with("error: too many messages: closing");
                return None;
            }
        }
        let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
        if let Some(verifier) = &self.verifier {
            if lock(&member.state).name.is_none() {
                self.authenticate(c, &member, verifier, cmd, rest);
                return None;
            }
        }
        let reply = match (cmd, rest.split_once(' ')) {
            ("name", _) => self.name(c, &member, rest).await.map(Some),
            ("join", _) => self.join(c, &member, rest).await.map(Some),
            ("leave", _) => check_name("a room", rest).map(|()| {
                self.hub.leave(c, rest);
                Some("ok".to_owned())
            }),
            ("say", Some((room, text))) => check_name("a room", room).map(|()| {
                let line = format!("{room} {}: {}", self.display(c, &member), clean(text));
                self.hub.send_to_group(room, &line, &[]);
                None
            }),
            ("dm", Some((name, text))) => match check_name("a name", name) {
                Ok(()) => {
                    let line = format!("dm {}: {}", self.display(c, &member), clean(text));
                    self.hub.send_to_uid(name, &line);
                    let online = self.hub.is_uid_online(name).await;
                    Ok(Some(if online { "ok" } else { "offline" }.to_owned()))
                }
                Err(e) => Err(e),
            },
            ("who", _) => match check_name("a room", rest) {
                Ok(()) => Ok(Some(format!("{rest} {}", self.hub.group_count(rest).await))),
                Err(e) => Err(e),
            },
            ("all", _) => {
                let line = format!("all {}: {}", self.display(c, &member), clean(rest));
                self.hub.send_to_all(&line);
                Ok(None)
            }
            _ => Err(format!("unknown command; the commands are {COMMANDS}")),
        };
        reply.unwrap_or_else(|e| Some(format!("error: {e}")))
    }

    /// `token JWT`, the first line with `--jwt-secret`: binds the token's
    /// subject, or refuses and closes.
    fn authenticate(
        &self,
        c: &Connection<Text>,
        member: &Member,
        verifier: &JwtVerifier,
        cmd: &str,
        token: &str,
    ) {
        let verified = match cmd {
            "token" => verifier.verify(token),
            _ => Err("send `token JWT` first".to_owned()),
        };
        match verified {
            Ok(name) => match self.bind(c, member, &name, "by token") {
                Ok(()) => {
                    let _ = c.send("ok");
                }
                Err(why) => c.close_with(&format!("error: {why}")),
            },
            Err(why) => {
                log_limited!(Level::Info, "refused {}: {why}", c.remote_addr());
                c.close_with(&format!("error: a valid token is required: {why}"));
            }
        }
    }

    async fn name(
        &self,
        c: &Connection<Text>,
        member: &Member,
        name: &str,
    ) -> Result<String, String> {
        if self.verifier.is_some() {
            return Err("your name comes from your token".to_owned());
        }
        {
            let state = lock(&member.state);
            if let Some(have) = &state.name {
                return Err(format!("this connection is already named {have}"));
            }
            if state.joined {
                return Err("name comes before join".to_owned());
            }
        }
        check_name("a name", name)?;
        let taken = || Err(format!("{name} is taken"));
        if self.hub.is_uid_online(name).await {
            return taken();
        }
        // Again on this node, with no await before the bind: another
        // connection here may have taken it meanwhile.
        if self.hub.is_uid_online_local(name) {
            return taken();
        }
        self.bind(c, member, name, "by name")?;
        Ok("ok".to_owned())
    }

    /// Gives the connection its name, `how` it was claimed, unless the hub
    /// refuses it (its limits, a closed connection).
    fn bind(
        &self,
        c: &Connection<Text>,
        member: &Member,
        name: &str,
        how: &str,
    ) -> Result<(), String> {
        self.hub
            .bind_uid(c, name)
            .map_err(|e| format!("refused: {e}"))?;
        lock(&member.state).name = Some(name.to_owned());
        log_limited!(
            Level::Info,
            "{name} is {} ({}), {how}",
            self.hub.global_id(c),
            c.remote_addr()
        );
        Ok(())
    }

    async fn join(
        &self,
        c: &Connection<Text>,
        member: &Member,
        room: &str,
    ) -> Result<String, String> {
        check_name("a room", room)?;
        let name = lock(&member.state).name.clone();
        if let Some(name) = &name {
            let taken = || Err(format!("{name} is already in {room}"));
            if self.hub.group_uids(room).await.contains(name) {
                return taken();
            }
            // Again on this node, with no await before the join.
            if self.hub.group_uids_local(room).contains(name) {
                return taken();
            }
        }
        self.hub
            .join(c, room)
            .map_err(|e| format!("refused: {e}"))?;
        lock(&member.state).joined = true;
        Ok("ok".to_owned())
    }
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
    /// This node's name, unique among the nodes (a name as the chat's: 1 to 32 ASCII letters, digits, `_`, `-`, `.`)
    #[arg(long, value_name = "NAME", default_value = "n1")]
    node: String,
    /// How long a dead node's users still read as online, in seconds (the hub's default: 15)
    #[arg(long, value_name = "SECS")]
    presence_ttl: Option<u64>,
    #[command(flatten)]
    chat: ChatArgs,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    common::init_logging(log::LevelFilter::Info)?;
    check_name("--node", &args.node)?;
    let verifier = args.chat.verifier()?;
    // The hub encodes what it relays with a Text of its own, without the
    // 64 KiB limit on what clients send: a relayed line is longer than the
    // line it came from (`ROOM NAME: ` and escapes).
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
    let mut worker = Worker::with_protocol(
        args.listen.listen.as_str(),
        Text::with_max_length(MAX_MESSAGE),
    )?;
    worker
        .name(&args.node)
        .limits(Limits::default().max_package_size(MAX_MESSAGE))
        .plugin(hub.plugin());
    let chat = Arc::new(Chat {
        hub,
        notice: args.chat.notice(),
        args: args.chat,
        verifier,
    });
    // Async: `name`, `join`, `dm` and `who` ask Redis; one connection's
    // lines still run one at a time, in order.
    worker.on_message_async(move |c, line| {
        let chat = chat.clone();
        async move {
            if let Some(reply) = chat.handle(&c, &line).await {
                let _ = c.send(&reply);
            }
        }
    });
    worker.on_error(|c, err| log_limited!(Level::Warn, "{}: {err}", c.id()));
    let node = args.node.clone();
    worker.on_worker_start(move |w| println!("cluster chat node {node} on {}", w.local_addr()));
    worker.run()?;
    Ok(())
}
