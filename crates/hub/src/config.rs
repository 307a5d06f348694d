//! [`RedisConfig`]: where and how a node reaches Redis, and what it says
//! about it in logs and errors (never a password).

use std::fmt;
use std::time::Duration;

use lubdub_resp::{redact_url, Cmd, RedisUrl, Resp};
use lubdub_worker::{Backoff, Client, TlsClientConfig};

use crate::error::HubError;
use crate::limits::MAX_NODE_NAME_LEN;

/// The namespace a [`RedisConfig`] starts with.
pub const DEFAULT_NAMESPACE: &str = "lubdub";

/// Where and how to reach Redis, and who this node is.
///
/// The URL is `redis://[user[:password]@]host[:port][/db]`, or `rediss://`
/// for TLS (port 6379 when none is written). A password with `@`, `:`,
/// `/` or `%` in it is %-encoded (`p%40ss` for `p@ss`), or given with
/// [`password`](Self::password) instead. Debug, Display, logs and errors
/// show the URL with the password replaced by `***`.
///
/// ```
/// use lubdub_hub::RedisConfig;
///
/// let config = RedisConfig::new("redis://hub:s3cret@10.0.0.5:6379/2", "eu-1").namespace("chat");
/// assert_eq!(config.url(), "redis://hub:***@10.0.0.5:6379/2");
/// assert!(!format!("{config:?}").contains("s3cret"));
/// ```
///
/// A database number (`/2`) keeps keys apart but not pub/sub, which is
/// global to a Redis server: such a URL needs a namespace of its own
/// ([`namespace`](Self::namespace)), or the hub refuses it.
#[derive(Clone)]
#[non_exhaustive]
pub struct RedisConfig {
    /// As given (it may hold a password): read it through [`Self::url`].
    url: String,
    /// Prefix of every key and channel. Default `lubdub`. 1 to 64 bytes of
    /// printable ASCII, no space.
    pub namespace: String,
    /// This node's name, unique in the cluster: 1 to 64 bytes of printable
    /// ASCII, no space and no `:`. Claimed in Redis when the node starts.
    pub node: String,
    /// How long a silent node's presence and name claim last. Default
    /// 15 s; refreshed every third of it.
    pub presence_ttl: Duration,
    /// Reconnect schedule (full jitter). Default: 100 ms doubling to 5 s.
    pub reconnect: Backoff,
    /// Overrides the URL's user and password.
    auth: Option<(Option<String>, String)>,
    tls: Option<TlsClientConfig>,
}

impl RedisConfig {
    /// Redis at `url` for node `node`, with the defaults. Nothing is
    /// checked yet: [`Hub::with_redis`](crate::Hub::with_redis) does.
    pub fn new(url: &str, node: &str) -> Self {
        RedisConfig {
            url: url.to_owned(),
            namespace: DEFAULT_NAMESPACE.into(),
            node: node.to_owned(),
            presence_ttl: Duration::from_secs(15),
            reconnect: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(5),
                ..Backoff::default()
            },
            auth: None,
            tls: None,
        }
    }

    /// Sets the key and channel prefix.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.to_owned();
        self
    }

    /// Sets the node-liveness TTL (at least 1 s).
    pub fn presence_ttl(mut self, ttl: Duration) -> Self {
        self.presence_ttl = ttl.max(Duration::from_secs(1));
        self
    }

    /// Sets the reconnect schedule.
    pub fn reconnect(mut self, backoff: Backoff) -> Self {
        self.reconnect = backoff;
        self
    }

    /// Authenticates as `requirepass`'s `default` user with `password`,
    /// whatever the URL says.
    pub fn password(mut self, password: &str) -> Self {
        self.auth = Some((None, password.to_owned()));
        self
    }

    /// Authenticates as the ACL user `username` (Redis 6 and later),
    /// whatever the URL says.
    pub fn auth(mut self, username: &str, password: &str) -> Self {
        self.auth = Some((Some(username.to_owned()), password.to_owned()));
        self
    }

    /// TLS settings for a `rediss://` URL: which certificate authorities
    /// to trust (`TlsClientConfig::with_ca_file` for a private CA), a
    /// client certificate (a rustls configuration through
    /// `TlsClientConfig::from_rustls`), the server name. Without it,
    /// `rediss://` trusts Mozilla's roots. A `redis://` URL with TLS
    /// settings is refused.
    pub fn tls(mut self, tls: TlsClientConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The URL with its password replaced by `***`.
    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    /// Parses and checks everything: what the backplane connects with.
    pub(crate) fn resolve(&self) -> Result<Resolved, HubError> {
        check_word("node name", &self.node, true)?;
        check_word("namespace", &self.namespace, false)?;
        let mut url = RedisUrl::parse(&self.url).map_err(|e| HubError::Config(e.to_string()))?;
        if let Some((user, password)) = &self.auth {
            url = url.with_password(user.as_deref(), password);
        }
        if url.database().is_some() && self.namespace == DEFAULT_NAMESPACE {
            return Err(HubError::Config(format!(
                "{url}: a database number does not isolate pub/sub (channels are global to \
                 the server): set a namespace for this cluster (RedisConfig::namespace)"
            )));
        }
        if self.tls.is_some() && !url.is_tls() {
            return Err(HubError::Config(format!(
                "{url}: TLS settings were given for a plain redis:// URL; use rediss://"
            )));
        }
        let tls = match (&self.tls, url.is_tls()) {
            (Some(t), _) => Some(t.clone()),
            (None, true) => Some(TlsClientConfig::default()),
            (None, false) => None,
        };
        Ok(Resolved {
            shown: url.to_string(),
            url,
            tls,
        })
    }
}

/// Where the backplane connects, resolved from a [`RedisConfig`].
#[derive(Debug)]
pub(crate) struct Resolved {
    /// With the credentials to use (shown redacted).
    pub url: RedisUrl,
    pub tls: Option<TlsClientConfig>,
    /// The URL for logs and errors (redacted).
    pub shown: String,
}

impl Resolved {
    /// A client of this Redis whose sessions authenticate, select the
    /// database and name themselves `name` (`CLIENT LIST` shows it) before
    /// they count as connected.
    pub fn client(&self, name: &str) -> Result<Client<Resp>, HubError> {
        let resp = self
            .url
            .apply(Resp::new())
            .setup(Cmd::new("CLIENT").arg("SETNAME").arg(name));
        let mut client = Client::with_protocol(self.url.address().as_str(), resp)
            .map_err(|e| HubError::Config(format!("{}: {e}", self.shown)))?;
        if let Some(tls) = &self.tls {
            client.tls(tls.clone());
        }
        client.connect_timeout(Duration::from_secs(3));
        Ok(client)
    }
}

impl fmt::Debug for RedisConfig {
    /// The URL redacted, the password left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.url())
            .field("namespace", &self.namespace)
            .field("node", &self.node)
            .field("presence_ttl", &self.presence_ttl)
            .field("reconnect", &self.reconnect)
            .field(
                "auth",
                &self.auth.as_ref().map(|(user, _)| match user {
                    Some(u) => format!("{u}:***"),
                    None => "***".to_owned(),
                }),
            )
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl fmt::Display for RedisConfig {
    /// `node n1 at redis://user:***@host:port/db (namespace ns)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "node {} at {} (namespace {})",
            self.node,
            self.url(),
            self.namespace
        )
    }
}

/// Names that go into keys, channels and `CLIENT SETNAME`: 1 to 64 bytes
/// of printable ASCII without spaces (and without `:` for a node name,
/// which a [`GlobalConnId`](crate::GlobalConnId) splits on).
fn check_word(what: &str, s: &str, no_colon: bool) -> Result<(), HubError> {
    let ok = !s.is_empty()
        && s.len() <= MAX_NODE_NAME_LEN
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !(no_colon && b == b':'));
    if ok {
        Ok(())
    } else {
        Err(HubError::Config(format!(
            "the {what} {s:?} is not 1 to {MAX_NODE_NAME_LEN} bytes of printable ASCII \
             without spaces{}",
            if no_colon { " or ':'" } else { "" }
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_debug_and_display_never_show_the_password() {
        for bad in ["redis://u:s3cret@h:1/notadb", "htp://u:s3cret@h:1"] {
            let e = RedisConfig::new(bad, "n1")
                .resolve()
                .unwrap_err()
                .to_string();
            assert!(!e.contains("s3cret") && e.contains("***"), "{e}");
        }
        let c = RedisConfig::new("redis://u:s3cret@h:1/3", "n1");
        let e = c.resolve().unwrap_err().to_string();
        assert!(e.contains("namespace") && !e.contains("s3cret"), "{e}");
        let c = c.namespace("app").password("0ther");
        for shown in [format!("{c:?}"), c.to_string()] {
            assert!(
                !shown.contains("s3cret") && !shown.contains("0ther"),
                "{shown}"
            );
        }
    }

    #[test]
    fn names_and_settings_are_checked() {
        let ok = RedisConfig::new("redis://h:1", "n1");
        assert!(ok.resolve().is_ok());
        for node in ["", "a:b", "a b", &"n".repeat(65), "é"] {
            assert!(
                RedisConfig::new("redis://h:1", node).resolve().is_err(),
                "{node:?}"
            );
        }
        assert!(ok.clone().namespace("a b").resolve().is_err());
        // A database needs a namespace of its own.
        assert!(RedisConfig::new("redis://h:1/1", "n1").resolve().is_err());
        assert!(RedisConfig::new("redis://h:1/1", "n1")
            .namespace("app")
            .resolve()
            .is_ok());
        // TLS settings for a plain URL are refused.
        let tls = TlsClientConfig::webpki_roots();
        assert!(ok.clone().tls(tls.clone()).resolve().is_err());
        let t = RedisConfig::new("rediss://h:1", "n1")
            .tls(tls)
            .resolve()
            .unwrap();
        assert_eq!(t.url.address(), "rediss://h:1");
        // Credentials never reach the client's address; the overrides win.
        let t = RedisConfig::new("redis://u:pw@h:1/4", "n1")
            .namespace("x")
            .auth("app", "s3cret")
            .resolve()
            .unwrap();
        assert_eq!(t.url.address(), "redis://h:1/4");
        assert_eq!(t.shown, "redis://app:***@h:1/4");
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
