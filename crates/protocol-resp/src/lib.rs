//! RESP, the Redis protocol, for lubdub: talk to Redis from callbacks, over
//! lubdub's own clients (reconnects, backpressure, the event loop; no tokio).
//!
//! [`Resp`] is the client side: it encodes commands ([`Cmd`]) and decodes
//! replies and pushes ([`Value`]). Parsing is the `redis-protocol` crate's
//! sans-IO decoder (RESP2 and RESP3); this crate adds limits, resumable
//! framing and an owned value type. Scheme `redis` (`rediss` over TLS).
//!
//! # Example: a command and its reply
//!
//! Redis answers the commands of one connection in order, so a client that
//! pipelines keeps its own queue of what each reply is for.
//!
//! ```no_run
//! use std::collections::VecDeque;
//! use std::sync::{Arc, Mutex};
//!
//! use lubdub_resp::{Cmd, Resp, Value};
//! use lubdub_worker::{Backoff, Client, EventLoop};
//!
//! let mut client = Client::with_protocol("redis://127.0.0.1:6379", Resp::new()).unwrap();
//! client.auto_reconnect(Backoff::default());
//! // What each outstanding command was, oldest first.
//! let pending = Arc::new(Mutex::new(VecDeque::new()));
//! let sent = pending.clone();
//! client.on_connect(move |conn| {
//!     for key in ["visits", "visits"] {
//!         sent.lock().unwrap().push_back(key);
//!         let _ = conn.send(&Cmd::new("INCR").arg(key));
//!     }
//! });
//! client.on_message(move |_conn, reply: Value| {
//!     let key = pending.lock().unwrap().pop_front();
//!     match reply {
//!         Value::Integer(n) => println!("{key:?} is now {n}"),
//!         Value::Error(e) => eprintln!("{key:?} failed: {e}"),
//!         other => println!("{key:?}: {other}"),
//!     }
//! });
//! EventLoop::run(move |_| {
//!     client.connect().unwrap();
//! });
//! ```
//!
//! Pub/sub messages arrive through `on_message` like replies;
//! [`Value::as_pubsub`] recognises them.
//!
//! # Byte layout
//!
//! A command is a RESP array of bulk strings, the name first:
//!
//! ```text
//! *<argument count>\r\n
//! $<length of argument 0>\r\n<argument 0 bytes>\r\n
//! $<length of argument 1>\r\n<argument 1 bytes>\r\n ...
//! ```
//!
//! A reply is one element; each starts with a type byte:
//!
//! ```text
//! +<text>\r\n                       Simple        -<text>\r\n      Error
//! :<i64>\r\n                        Integer       $-1\r\n / *-1\r\n Nil (RESP2)
//! $<len>\r\n<len bytes>\r\n         Bulk          *<n>\r\n<n elements>  Array
//! RESP3 only:
//! _\r\n Nil   ,<f64>\r\n Double   #t\r\n Boolean   (<digits>\r\n BigNumber
//! !<len>\r\n<bytes>\r\n Error       =<len>\r\ntxt:<bytes>\r\n Verbatim
//! %<n>\r\n<2n elements> Map   ~<n>\r\n Set   ><n>\r\n Push   |<n>\r\n attributes
//! ```
//!
//! RESP3's streamed strings and aggregates (`$?`, `*?`) are refused: Redis
//! does not send them.
//!
//! # Limits
//!
//! On by default ([`RespConfig`]), each checked as soon as the bytes that
//! break it arrive (a length header is enough), before anything of that
//! size is allocated:
//!
//! * a reply is at most 64 MiB, headers included ([`ProtocolError::TooLarge`]);
//! * aggregates nest at most 64 deep, and one reply announces at most
//!   4,194,304 aggregate elements in all ([`RespError`]).
//!
//! The connection's `max_package_size` (10 MiB by default in lubdub's
//! worker) bounds a reply as well. Any violation or malformed byte is a
//! protocol error: the connection closes, and a client with
//! `auto_reconnect` connects again. An error *reply* (`-ERR ...`) is not a
//! protocol error; it is a [`Value::Error`] answering one command.
//!
//! # Session setup
//!
//! [`Resp::resp3`] (`HELLO 3`), [`Resp::auth`], [`Resp::password`],
//! [`Resp::database`] (or a path: `redis://host:6379/2`) and [`Resp::setup`]
//! add commands that are sent first on every connection, reconnections
//! included. Their replies form the handshake ([`Protocol::Handshake`], a
//! `Vec<Value>` in command order): `on_connect` runs once they all arrived
//! without error, and commands sent meanwhile are held back until then. An
//! error reply to one of them fails the session with
//! [`RespError::SetupFailed`].
//!
//! # URLs with credentials
//!
//! A client's address carries no credentials. [`RedisUrl`] takes
//! `redis[s]://[user[:password]@]host[:port][/db]` apart: the address to
//! connect to, and the session's authentication; it and [`redact_url`]
//! show the password as `***`:
//!
//! ```no_run
//! use lubdub_resp::{RedisUrl, Resp};
//! use lubdub_worker::Client;
//!
//! let url = RedisUrl::parse("redis://app:s3cret@10.0.0.5:6379/2")?;
//! let client = Client::with_protocol(url.address().as_str(), url.apply(Resp::new()))?;
//! # let _ = client;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cmd;
mod scan;
mod url;
mod value;

use std::fmt;

use lubdub_protocol::{Decoded, Decoder, Encoder, Protocol, ProtocolError, Start, Wire};

pub use cmd::{Arg, Cmd};
pub use url::{redact_url, RedisUrl, UrlError, DEFAULT_PORT};
pub use value::{PubSub, SubscriptionKind, Value, VerbatimFormat};

/// Default maximum reply size: 64 MiB.
pub const DEFAULT_MAX_REPLY_LEN: usize = 64 * 1024 * 1024;
/// Default maximum nesting of aggregates in a reply.
pub const DEFAULT_MAX_DEPTH: usize = 64;
/// Default maximum aggregate elements in one reply, over all its levels.
pub const DEFAULT_MAX_ELEMENTS: usize = 4 * 1024 * 1024;

/// Limits on what a reply may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespConfig {
    /// Longest accepted reply in bytes, headers included. Default 64 MiB.
    pub max_reply_len: usize,
    /// Deepest nesting of arrays, maps, sets and pushes (a flat array is
    /// depth 1). Default 64.
    pub max_depth: usize,
    /// Most elements that a reply's aggregates announce, summed over all
    /// levels (a map entry counts two). Default 4,194,304.
    pub max_elements: usize,
}

impl Default for RespConfig {
    fn default() -> Self {
        RespConfig {
            max_reply_len: DEFAULT_MAX_REPLY_LEN,
            max_depth: DEFAULT_MAX_DEPTH,
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }
}

/// RESP-specific protocol errors, carried in [`ProtocolError::Other`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RespError {
    /// A reply nests aggregates deeper than the configured maximum.
    TooDeep {
        /// The configured maximum depth.
        max: usize,
    },
    /// A reply's aggregates announce more elements than the maximum.
    TooManyElements {
        /// Elements announced so far (saturating).
        count: usize,
        /// The configured maximum.
        max: usize,
    },
    /// Redis answered a session setup command (`HELLO`, `AUTH`, `SELECT`,
    /// ...) with an error.
    SetupFailed {
        /// The command's name.
        command: String,
        /// Redis's error message (`WRONGPASS invalid username-password pair`).
        message: String,
    },
}

impl fmt::Display for RespError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RespError::TooDeep { max } => {
                write!(f, "reply nesting deeper than the maximum of {max}")
            }
            RespError::TooManyElements { count, max } => {
                write!(f, "reply of {count} elements exceeds the maximum of {max}")
            }
            RespError::SetupFailed { command, message } => {
                write!(f, "redis refused {command}: {message}")
            }
        }
    }
}

impl std::error::Error for RespError {}

impl From<RespError> for ProtocolError {
    fn from(e: RespError) -> Self {
        ProtocolError::Other(Box::new(e))
    }
}

/// The RESP client protocol: sends [`Cmd`]s, receives [`Value`]s (replies,
/// and pub/sub messages or RESP3 pushes). RESP2 unless made with
/// [`resp3`](Self::resp3). Scheme `redis`, `rediss` over TLS.
///
/// A `Resp` is configuration only (limits, authentication, setup
/// commands), shared by every connection: each connection decodes with its
/// own [`RespDecoder`] and encodes with a [`RespEncoder`].
#[derive(Clone, Default)]
pub struct Resp {
    config: RespConfig,
    resp3: bool,
    /// Username (none: `AUTH <password>`, or `default` in `HELLO`) and password.
    auth: Option<(Option<Vec<u8>>, Vec<u8>)>,
    database: Option<u32>,
    setup: Vec<Cmd>,
}

/// One connection's RESP decoding state: how far the reply at the front of
/// the read buffer was scanned, and during session setup the setup commands
/// whose replies are still due and the replies so far.
///
/// The reply being scanned stays in the connection's read buffer; what the
/// decoder keeps besides is one counter per open aggregate (at most
/// [`RespConfig::max_depth`]) and the setup replies, so its
/// [`held_bytes`](Decoder::held_bytes) is the default 0.
#[derive(Debug, Default)]
pub struct RespDecoder {
    scanner: scan::Scanner,
    /// Names of the setup commands whose replies are still due.
    awaiting: Vec<String>,
    setup_replies: Vec<Value>,
}

/// RESP's encoding side: a [`Cmd`] encodes the same on every connection,
/// so there is nothing per connection to keep.
#[derive(Debug, Default, Clone, Copy)]
pub struct RespEncoder;

impl Resp {
    /// RESP2 with the default limits: what every Redis speaks.
    pub fn new() -> Self {
        Self::default()
    }

    /// RESP3: each session starts with `HELLO 3` (Redis 6 and later), whose
    /// reply (a map of server facts) is the first handshake value. Replies
    /// then carry RESP3's types, and pub/sub messages arrive as
    /// [`Value::Push`], so one connection can subscribe and run commands.
    pub fn resp3() -> Self {
        Resp {
            resp3: true,
            ..Self::default()
        }
    }

    /// Sets the limits on replies.
    pub fn with_config(mut self, config: RespConfig) -> Self {
        self.config = config;
        self
    }

    /// Authenticates each session as `username` (Redis 6 ACLs): `AUTH
    /// username password`, or within `HELLO 3` for RESP3.
    pub fn auth(mut self, username: impl Arg, password: impl Arg) -> Self {
        let user = username.with_bytes(<[u8]>::to_vec);
        self.auth = Some((Some(user), password.with_bytes(<[u8]>::to_vec)));
        self
    }

    /// Authenticates each session with `requirepass`'s password: `AUTH
    /// password` (as the `default` user within `HELLO 3` for RESP3).
    pub fn password(mut self, password: impl Arg) -> Self {
        self.auth = Some((None, password.with_bytes(<[u8]>::to_vec)));
        self
    }

    /// Selects database `db` on each session (`SELECT db`), after the
    /// authentication. A `redis://host:port/<db>` address does the same.
    pub fn database(mut self, db: u32) -> Self {
        self.database = Some(db);
        self
    }

    /// Sends `cmd` at the start of each session, after `HELLO`, `AUTH` and
    /// `SELECT` (`CLIENT SETNAME`, `CLIENT TRACKING on`, ...). Its reply is
    /// part of the handshake; an error reply fails the session.
    pub fn setup(mut self, cmd: Cmd) -> Self {
        self.setup.push(cmd);
        self
    }

    /// The limits in force.
    pub fn config(&self) -> &RespConfig {
        &self.config
    }

    /// Whether sessions speak RESP3.
    pub fn is_resp3(&self) -> bool {
        self.resp3
    }

    /// The commands each session starts with, in order.
    fn setup_commands(&self) -> Vec<Cmd> {
        let mut cmds = Vec::new();
        match (&self.auth, self.resp3) {
            (None, true) => cmds.push(Cmd::new("HELLO").arg(3)),
            (Some((user, pass)), true) => cmds.push(
                Cmd::new("HELLO")
                    .arg(3)
                    .arg("AUTH")
                    .arg(user.as_deref().unwrap_or(b"default"))
                    .arg(pass),
            ),
            (Some((Some(user), pass)), false) => cmds.push(Cmd::new("AUTH").arg(user).arg(pass)),
            (Some((None, pass)), false) => cmds.push(Cmd::new("AUTH").arg(pass)),
            (None, false) => {}
        }
        if let Some(db) = self.database {
            cmds.push(Cmd::new("SELECT").arg(db));
        }
        cmds.extend(self.setup.iter().cloned());
        cmds
    }

    fn limits(&self) -> scan::Limits {
        scan::Limits {
            max_len: self.config.max_reply_len.max(4),
            max_depth: self.config.max_depth,
            max_elements: self.config.max_elements,
        }
    }
}

impl RespDecoder {
    /// One setup reply arrived: keep it, and finish the handshake with the last.
    fn setup_reply(
        &mut self,
        value: Value,
        consumed: usize,
    ) -> Result<Decoded<Value, Vec<Value>>, ProtocolError> {
        if value.is_push() {
            // Out of band, not a reply.
            return Ok(Decoded::Consumed(consumed));
        }
        let command = self.awaiting.remove(0);
        if let Value::Error(message) = value {
            return Err(RespError::SetupFailed { command, message }.into());
        }
        self.setup_replies.push(value);
        if !self.awaiting.is_empty() {
            return Ok(Decoded::Consumed(consumed));
        }
        Ok(Decoded::Handshake {
            data: std::mem::take(&mut self.setup_replies),
            consumed,
        })
    }
}

impl fmt::Debug for Resp {
    /// Leaves the password and setup arguments out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resp")
            .field("resp3", &self.resp3)
            .field("config", &self.config)
            .field("auth", &self.auth.as_ref().map(|_| "<redacted>"))
            .field("database", &self.database)
            .field(
                "setup",
                &self
                    .setup
                    .iter()
                    .map(|c| String::from_utf8_lossy(c.name()).into_owned())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Protocol for Resp {
    const SCHEME: &'static str = "redis";
    const TLS_SCHEME: Option<&'static str> = Some("rediss");
    type Message = Value;
    type Outgoing = Cmd;
    type Handshake = Vec<Value>;
    type Decoder = RespDecoder;
    type Encoder = RespEncoder;

    fn decoder(&self) -> RespDecoder {
        RespDecoder::default()
    }

    fn encoder(&self) -> RespEncoder {
        RespEncoder
    }

    /// A path selects the database: `redis://127.0.0.1:6379/2`.
    fn for_client(&self, _host: &str, path_and_query: &str) -> Result<Self, ProtocolError> {
        let db = path_and_query.trim_start_matches('/');
        if db.is_empty() {
            return Ok(self.clone());
        }
        match db.parse::<u32>() {
            Ok(db) => Ok(self.clone().database(db)),
            Err(_) => Err(ProtocolError::Malformed(
                "a redis:// address path must be a database number",
            )),
        }
    }
}

impl Decoder<Resp> for RespDecoder {
    /// Writes the setup commands, if any: their replies are the handshake.
    fn start(&mut self, resp: &Resp, wire: &mut Wire<'_>) -> Start {
        let cmds = resp.setup_commands();
        if cmds.is_empty() {
            return Start::Established;
        }
        self.awaiting.clear();
        self.setup_replies.clear();
        for cmd in &cmds {
            cmd.encode_to(wire.buffer());
            self.awaiting
                .push(String::from_utf8_lossy(cmd.name()).to_ascii_uppercase());
        }
        Start::Handshake
    }

    fn decode(
        &mut self,
        resp: &Resp,
        src: &[u8],
        _wire: &mut Wire<'_>,
    ) -> Result<Decoded<Value, Vec<Value>>, ProtocolError> {
        let limits = resp.limits();
        let Some(len) = self.scanner.scan(src, &limits, resp.resp3)? else {
            return Ok(Decoded::Incomplete);
        };
        let frame = &src[..len];
        let value = if resp.resp3 {
            value::decode_resp3(frame)?
        } else {
            value::decode_resp2(frame)?
        };
        if self.awaiting.is_empty() {
            return Ok(Decoded::Message {
                msg: value,
                consumed: len,
            });
        }
        self.setup_reply(value, len)
    }
}

impl Encoder<Resp> for RespEncoder {
    #[inline]
    fn encode(&mut self, _: &Resp, cmd: &Cmd, dst: &mut Vec<u8>) -> Result<(), ProtocolError> {
        cmd.encode_to(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
