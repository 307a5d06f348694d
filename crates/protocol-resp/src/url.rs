//! Redis URLs: `redis[s]://[user[:password]@]host[:port][/db]`, split into
//! the address a client connects to (no credentials) and the session's
//! authentication, and shown everywhere with the password as `***`.

use std::fmt;

use crate::Resp;

/// Redis's default port, for a URL that names none.
pub const DEFAULT_PORT: u16 = 6379;

/// A Redis URL: `redis://[user[:password]@]host[:port][/db]`, or `rediss://`
/// for TLS. A password with `@`, `:`, `/` or `%` in it is %-encoded
/// (`p%40ss` for `p@ss`); the port defaults to 6379.
///
/// lubdub's `Client` takes an address without credentials
/// ([`address`](Self::address)); the credentials go into the session's
/// setup ([`apply`](Self::apply)). Debug and Display, and every
/// [`UrlError`], show the password as `***`.
///
/// ```
/// use lubdub_resp::{RedisUrl, Resp};
///
/// let url = RedisUrl::parse("redis://hub:s3cret@10.0.0.5/2").unwrap();
/// assert_eq!(url.address(), "redis://10.0.0.5:6379/2");
/// assert_eq!(url.to_string(), "redis://hub:***@10.0.0.5:6379/2");
/// assert_eq!(url.user(), Some("hub"));
/// // Client::with_protocol(url.address().as_str(), url.apply(Resp::new()))
/// let resp = url.apply(Resp::new()); // AUTH hub s3cret, first thing
/// # let _ = resp;
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    tls: bool,
    /// `host:port`.
    host: String,
    user: Option<String>,
    password: Option<String>,
    database: Option<u32>,
}

/// Why a string is not a [`RedisUrl`]. Its Display shows the URL with the
/// password as `***`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    url: String,
    why: &'static str,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}`: {}", self.url, self.why)
    }
}

impl std::error::Error for UrlError {}

impl RedisUrl {
    /// Parses `url`.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let bad = |why| UrlError {
            url: redact_url(url),
            why,
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("not a redis:// or rediss:// URL"))?;
        let tls = match scheme.to_ascii_lowercase().as_str() {
            "redis" => false,
            "rediss" => true,
            _ => return Err(bad("not a redis:// or rediss:// URL")),
        };
        // The userinfo ends at the last `@`: a password may hold an
        // unencoded `/` or `@`.
        let (userinfo, rest) = match rest.rfind('@') {
            Some(i) => (Some(&rest[..i]), &rest[i + 1..]),
            None => (None, rest),
        };
        let (host, path) = match rest.find(['/', '?', '#']) {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let has_port = match host.strip_prefix('[') {
            Some(v6) => v6.contains("]:"),
            None => host.contains(':'),
        };
        let host = if has_port {
            host.to_owned()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        };
        let database = match path.trim_start_matches('/') {
            "" => None,
            n => Some(
                n.parse::<u32>()
                    .map_err(|_| bad("the path must be a database number (`/2`), nothing else"))?,
            ),
        };
        let (user, password) = match userinfo {
            None => (None, None),
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((u, p)) => (u, Some(p)),
                    None => (info, None),
                };
                let user = percent_decode(user).ok_or_else(|| bad("a bad %-escape in the user"))?;
                let password = match password {
                    Some(p) => Some(
                        percent_decode(p).ok_or_else(|| bad("a bad %-escape in the password"))?,
                    ),
                    None => None,
                };
                ((!user.is_empty()).then_some(user), password)
            }
        };
        if user.is_some() && password.is_none() {
            return Err(bad("a user without a password"));
        }
        Ok(RedisUrl {
            tls,
            host,
            user,
            password,
            database,
        })
    }

    /// Whether it is `rediss://` (TLS).
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// `host:port`.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The ACL user, if the URL names one (none: `requirepass`'s
    /// `default`).
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Whether the session authenticates.
    pub fn has_password(&self) -> bool {
        self.password.is_some()
    }

    /// The database number (`/2`), if any.
    pub fn database(&self) -> Option<u32> {
        self.database
    }

    /// The same URL authenticating as `user` (`None`: `requirepass`'s
    /// `default` user) with `password`, whatever it said.
    pub fn with_password(mut self, user: Option<&str>, password: &str) -> Self {
        self.user = user.map(str::to_owned);
        self.password = Some(password.to_owned());
        self
    }

    /// What `Client::with_protocol` takes: `redis[s]://host:port[/db]`,
    /// without credentials.
    pub fn address(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        match self.database {
            Some(db) => format!("{scheme}://{}/{db}", self.host),
            None => format!("{scheme}://{}", self.host),
        }
    }

    /// `resp` authenticating as the URL says ([`Resp::auth`] or
    /// [`Resp::password`]); unchanged for a URL without a password. The
    /// database comes with the [`address`](Self::address)'s path.
    pub fn apply(&self, resp: Resp) -> Resp {
        match (&self.user, &self.password) {
            (Some(user), Some(password)) => resp.auth(user.as_str(), password.as_str()),
            (None, Some(password)) => resp.password(password.as_str()),
            _ => resp,
        }
    }
}

impl fmt::Display for RedisUrl {
    /// The URL with the password as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        write!(f, "{scheme}://")?;
        if self.password.is_some() {
            write!(f, "{}:***@", self.user.as_deref().unwrap_or(""))?;
        }
        f.write_str(&self.host)?;
        if let Some(db) = self.database {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for RedisUrl {
    /// As Display: the password as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({self})")
    }
}

/// `%XX` escapes decoded; `None` for a bad escape or bytes that are not
/// UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `url` with its password (anything after the user's `:` up to the last
/// `@`) replaced by `***`; a URL without one unchanged. Works on any
/// string, a URL or not: for logs and errors that show an address.
///
/// ```
/// use lubdub_resp::redact_url;
///
/// assert_eq!(redact_url("redis://hub:s3cret@h:6379/1"), "redis://hub:***@h:6379/1");
/// assert_eq!(redact_url("redis://h:6379"), "redis://h:6379");
/// ```
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // No scheme: a `user:pass@host` is still hidden.
        return match url.rfind('@') {
            Some(i) => format!("***@{}", &url[i + 1..]),
            None => url.to_owned(),
        };
    };
    match rest.rfind('@') {
        Some(i) => {
            let user = rest[..i].split_once(':').map_or(&rest[..i], |(u, _)| u);
            format!("{scheme}://{user}:***@{}", &rest[i + 1..])
        }
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_databases_tls_and_default_ports() {
        let u = RedisUrl::parse("redis://hub:s3cret@127.0.0.1:6380/2").unwrap();
        assert!(!u.is_tls());
        assert_eq!(
            (u.host(), u.user(), u.password.as_deref(), u.database()),
            ("127.0.0.1:6380", Some("hub"), Some("s3cret"), Some(2))
        );
        assert_eq!(u.address(), "redis://127.0.0.1:6380/2");
        let u = RedisUrl::parse("rediss://:p%40ss%3Aw%2Frd@cache.internal").unwrap();
        assert!(u.is_tls());
        assert_eq!(u.address(), "rediss://cache.internal:6379");
        assert_eq!((u.user(), u.password.as_deref()), (None, Some("p@ss:w/rd")));
        // Unencoded `@` and `/` in a password: the userinfo ends at the
        // last `@`.
        let u = RedisUrl::parse("redis://u:p@s/s@[::1]:7000").unwrap();
        assert_eq!(
            (u.host(), u.password.as_deref()),
            ("[::1]:7000", Some("p@s/s"))
        );
        assert_eq!(
            RedisUrl::parse("redis://[::1]").unwrap().host(),
            "[::1]:6379"
        );
        for bad in [
            "http://h:1",
            "redis://",
            "redis://u:p@",
            "redis://h:1/x",
            "redis://h:1/2?x=1",
            "redis://u@h:1",
            "redis://u:p%zz@h:1",
        ] {
            assert!(RedisUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_password_never_shows() {
        for (url, shown) in [
            ("redis://hub:s3cret@h:1/2", "redis://hub:***@h:1/2"),
            ("redis://:s3cret@h:1", "redis://:***@h:1"),
            ("rediss://u:s3cret@x@h:1", "rediss://u:***@h:1"),
            ("redis://h:1", "redis://h:1"),
            ("hub:s3cret@h:1", "***@h:1"),
        ] {
            assert_eq!(redact_url(url), shown);
            if let Ok(u) = RedisUrl::parse(url) {
                assert_eq!(u.to_string(), shown);
                assert!(!format!("{u:?}").contains("s3cret"));
            }
        }
        for bad in [
            "redis://u:s3cret@h:1/notadb",
            "htp://u:s3cret@h:1",
            "redis://u:s3cret%@h:1",
            "redis://u:s3cret@",
        ] {
            let e = RedisUrl::parse(bad).unwrap_err().to_string();
            assert!(!e.contains("s3cret"), "{e}");
            assert!(e.contains("***"), "{e}");
        }
        let u = RedisUrl::parse("redis://h:1")
            .unwrap()
            .with_password(Some("app"), "0ther");
        assert_eq!(u.to_string(), "redis://app:***@h:1");
        assert!(!format!("{:?}", u.apply(Resp::new())).contains("0ther"));
    }
}
