//! Listen addresses: Workerman style (`text://0.0.0.0:1234`) or typed.

use std::fmt;
use std::net::{SocketAddr, ToSocketAddrs};
use std::str::FromStr;

use crate::error::ConfigError;

/// Where a worker listens (or a client connects), with an optional scheme.
///
/// Parses `scheme://host:port` (`text://0.0.0.0:1234`, `tcp://[::1]:0`,
/// `frame://localhost:1235`) and plain `host:port`. Port 0 asks the OS for a
/// free port; the worker reports the bound address. Build one directly from
/// a [`SocketAddr`] for the typed form.
///
/// ```
/// use lubdub_worker::ListenAddr;
///
/// let a: ListenAddr = "text://127.0.0.1:1234".parse().unwrap();
/// assert_eq!(a.scheme(), Some("text"));
/// assert_eq!(a.socket_addr().port(), 1234);
/// let b: ListenAddr = "tcp://[::1]:0".parse().unwrap();
/// assert!(b.socket_addr().is_ipv6());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenAddr {
    scheme: Option<String>,
    addr: SocketAddr,
    /// The host and port as written (`example.com:8080`).
    host: String,
    /// The path and query after the host, if any (`/chat?room=1`).
    path: Option<String>,
}

impl ListenAddr {
    /// A typed address with no scheme (the worker's protocol applies).
    pub fn new(addr: SocketAddr) -> Self {
        ListenAddr {
            scheme: None,
            addr,
            host: addr.to_string(),
            path: None,
        }
    }

    /// The scheme, if the address named one.
    pub fn scheme(&self) -> Option<&str> {
        self.scheme.as_deref()
    }

    /// The socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The host and port as written (`example.com:8080`): what a client
    /// names the server by (WebSocket's `Host` header, TLS's SNI).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The path and query written after the host (`/chat?room=1`), if any:
    /// what a WebSocket client requests.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// Checks the scheme against a protocol's schemes (`tcp` is not a
    /// wildcard: it names the raw protocol, as in Workerman). Returns
    /// whether the address names the protocol's TLS scheme (`wss`).
    pub(crate) fn check_scheme(
        &self,
        expected: &'static str,
        tls: Option<&'static str>,
    ) -> Result<bool, ConfigError> {
        match &self.scheme {
            None => Ok(false),
            Some(s) if s.eq_ignore_ascii_case(expected) => Ok(false),
            Some(s) if tls.is_some_and(|t| s.eq_ignore_ascii_case(t)) => Ok(true),
            Some(s) => Err(ConfigError::SchemeMismatch {
                expected,
                found: s.clone(),
            }),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, ConfigError> {
        let s = s.trim();
        let (scheme, rest) = match s.split_once("://") {
            Some((scheme, rest)) => {
                if scheme.is_empty()
                    || !scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '+' || c == '-' || c == '.')
                {
                    return Err(ConfigError::Address(format!("invalid scheme in `{s}`")));
                }
                (Some(scheme.to_ascii_lowercase()), rest)
            }
            None => (None, s),
        };
        // `host:port` then, for URLs, `/path?query`.
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) => (&rest[..i], Some(&rest[i..])),
            None => (rest, None),
        };
        // Credentials (`user:password@host`) have no place here, and an
        // error must not repeat them.
        if let Some((_, host)) = authority.rsplit_once('@') {
            let scheme = scheme
                .as_deref()
                .map(|s| format!("{s}://"))
                .unwrap_or_default();
            return Err(ConfigError::Address(format!(
                "`{scheme}***@{host}`: an address takes no credentials; give them to what \
                 uses them (RedisConfig takes a redis://user:password@ URL)"
            )));
        }
        let path = match path {
            None | Some("/") => None,
            Some(p) if p.starts_with('?') => Some(format!("/{p}")),
            Some(p) => Some(p.to_owned()),
        };
        let addr = match authority.parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => authority
                .to_socket_addrs()
                .map_err(|e| ConfigError::Address(format!("`{s}`: {e}")))?
                .next()
                .ok_or_else(|| ConfigError::Address(format!("`{s}` resolved to no address")))?,
        };
        Ok(ListenAddr {
            scheme,
            addr,
            host: authority.to_owned(),
            path,
        })
    }
}

impl From<SocketAddr> for ListenAddr {
    fn from(addr: SocketAddr) -> Self {
        ListenAddr::new(addr)
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.scheme {
            Some(s) => write!(f, "{s}://{}", self.addr)?,
            None => write!(f, "{}", self.addr)?,
        }
        match &self.path {
            Some(p) => f.write_str(p),
            None => Ok(()),
        }
    }
}

/// Anything a worker can listen on: `&str`, `String`, [`SocketAddr`], [`ListenAddr`].
pub trait IntoListenAddr {
    /// Converts (parsing or resolving if needed).
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError>;
}

impl IntoListenAddr for ListenAddr {
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError> {
        Ok(self)
    }
}
impl IntoListenAddr for SocketAddr {
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError> {
        Ok(ListenAddr::new(self))
    }
}
impl IntoListenAddr for &str {
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError> {
        self.parse()
    }
}
impl IntoListenAddr for String {
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError> {
        self.parse()
    }
}
impl IntoListenAddr for &String {
    fn into_listen_addr(self) -> Result<ListenAddr, ConfigError> {
        self.parse()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_refused_and_never_repeated() {
        for s in ["redis://u:s3cret@127.0.0.1:6379", "tcp://:s3cret@[::1]:1/x"] {
            let err = s.parse::<ListenAddr>().unwrap_err().to_string();
            assert!(!err.contains("s3cret"), "{err}");
            assert!(
                err.contains("***@") && err.contains("no credentials"),
                "{err}"
            );
        }
    }

    #[test]
    fn parses_workerman_forms() {
        let a: ListenAddr = "text://0.0.0.0:1234".parse().unwrap();
        assert_eq!(a.scheme(), Some("text"));
        assert_eq!(a.socket_addr(), "0.0.0.0:1234".parse().unwrap());
        let b: ListenAddr = "TCP://[::1]:0".parse().unwrap();
        assert_eq!(b.scheme(), Some("tcp"));
        assert_eq!(b.socket_addr(), "[::1]:0".parse().unwrap());
        let c: ListenAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(c.scheme(), None);
        let d: ListenAddr = "text://localhost:5".parse().unwrap();
        assert!(d.socket_addr().ip().is_loopback());
        assert_eq!(a.to_string(), "text://0.0.0.0:1234");
    }

    #[test]
    fn urls_keep_their_host_and_path() {
        let a: ListenAddr = "ws://localhost:8080/chat?room=1".parse().unwrap();
        assert_eq!(a.scheme(), Some("ws"));
        assert_eq!(a.host(), "localhost:8080");
        assert_eq!(a.path(), Some("/chat?room=1"));
        assert_eq!(a.socket_addr().port(), 8080);
        let b: ListenAddr = "ws://127.0.0.1:9/".parse().unwrap();
        assert_eq!(b.path(), None);
        assert_eq!(b.to_string(), "ws://127.0.0.1:9");
        let c: ListenAddr = "ws://127.0.0.1:9?x=1".parse().unwrap();
        assert_eq!(c.path(), Some("/?x=1"));
        assert_eq!(c.to_string(), "ws://127.0.0.1:9/?x=1");
        let d = ListenAddr::new("[::1]:7".parse().unwrap());
        assert_eq!((d.host(), d.path()), ("[::1]:7", None));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "text://",
            "://1.2.3.4:5",
            "text://1.2.3.4",
            "te xt://1.2.3.4:5",
            "1.2.3.4:99999",
        ] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn scheme_check() {
        let a: ListenAddr = "frame://127.0.0.1:1".parse().unwrap();
        assert!(matches!(a.check_scheme("frame", None), Ok(false)));
        let wss: ListenAddr = "wss://127.0.0.1:1".parse().unwrap();
        assert!(matches!(wss.check_scheme("ws", Some("wss")), Ok(true)));
        assert!(wss.check_scheme("ws", None).is_err());
        assert!(matches!(
            a.check_scheme("text", None),
            Err(ConfigError::SchemeMismatch {
                expected: "text",
                ..
            })
        ));
        assert!(ListenAddr::new("127.0.0.1:1".parse().unwrap())
            .check_scheme("text", None)
            .is_ok());
    }
}
