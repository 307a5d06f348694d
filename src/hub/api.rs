//! The publish API: how any backend (PHP, Python, Node, a cron job with
//! `curl`) sends to connected users and groups, and asks who is online,
//! over HTTP (feature `api`).
//!
//! | request | answer |
//! |---|---|
//! | `POST /api/publish` `{"to":"uid","target":"alice","data":"hi"}` | `200 {"ok":true,"local":1}` |
//! | `POST /api/publish` `[{...}, {...}]` (a batch, at most [`MAX_BATCH`]) | `200 {"ok":true,"results":[{"local":1},{"error":"..."}]}` |
//! | `GET /api/presence?group=room` | `200 {"group":"room","uids":["alice","bob"],"members":3}` |
//! | `GET /api/presence` | `200 {"uids":12}` |
//! | `GET /api/online?uid=alice` | `200 {"uid":"alice","online":true}` |
//!
//! `to` is `uid`, `group`, `all` (no `target`) or `conn` (`target` is a
//! connection's global id, `node:id`); a group publish may name connections
//! to skip in `except`. `local` counts the connections of this node the
//! message was queued on; the other nodes get it through the backplane
//! (at most once, as every hub send). Presence and online status are
//! cluster-wide (the answer of this node alone while the backplane is
//! down).
//!
//! Every request carries the API key, in `X-API-Key: KEY` or
//! `Authorization: apikey KEY`, compared in constant time; without it or
//! with another, `401`. An API without a key must be asked for by name
//! ([`PublishApi::without_key`]). Refusals are JSON too:
//! `{"ok":false,"error":"..."}` with `400`, `401`, `404` or `405`.
//!
//! [`PublishApi::handle`] is sans-IO: it takes a request's parts and returns
//! the answer, whatever HTTP server parsed them. [`PublishApi::respond`]
//! answers a request of lubdub's own `Http` protocol (route `/api/` to it
//! in your HTTP worker), and [`PublishApi::worker`] is a worker that serves
//! nothing else:
//!
//! ```no_run
//! use lubdub::hub::{api::PublishApi, Hub};
//! # fn demo(hub: Hub<lubdub::Text>) -> Result<(), Box<dyn std::error::Error>> {
//! let key = std::env::var("API_KEY")?;
//! let api = PublishApi::new(hub, &key)?;
//! let handle = api.worker("http://127.0.0.1:8081")?.start()?;
//! // curl -H "X-API-Key: $API_KEY" -d '{"to":"all","data":"hi"}' http://127.0.0.1:8081/api/publish
//! # handle.stop_and_wait(); Ok(()) }
//! ```

use std::fmt::Write as _;

use lubdub_http::http::{header, Response};
use lubdub_http::{Http, Reply, Request};
use lubdub_hub::{GlobalConnId, Hub};
use lubdub_worker::{Protocol, Worker};
use serde::Deserialize;

/// The most messages one batch may carry.
pub const MAX_BATCH: usize = 1000;

/// How a protocol carries the publish API's `data` (a string).
pub trait ApiData: Protocol {
    /// Hands `data` as this protocol's outgoing message to `send`, or says
    /// why the protocol cannot carry it.
    fn with_data(data: &str, send: &mut dyn FnMut(&Self::Outgoing)) -> Result<(), &'static str>;
}

impl ApiData for lubdub_text::Text {
    fn with_data(data: &str, send: &mut dyn FnMut(&str)) -> Result<(), &'static str> {
        if data.contains('\n') {
            return Err("data contains a newline, which the text protocol cannot carry");
        }
        send(data);
        Ok(())
    }
}

impl ApiData for lubdub_text::TextBytes {
    fn with_data(data: &str, send: &mut dyn FnMut(&[u8])) -> Result<(), &'static str> {
        if data.contains('\n') {
            return Err("data contains a newline, which the text protocol cannot carry");
        }
        send(data.as_bytes());
        Ok(())
    }
}

impl ApiData for lubdub_frame::Frame {
    fn with_data(data: &str, send: &mut dyn FnMut(&[u8])) -> Result<(), &'static str> {
        send(data.as_bytes());
        Ok(())
    }
}

impl ApiData for lubdub_ws::Ws {
    fn with_data(
        data: &str,
        send: &mut dyn FnMut(&lubdub_ws::Message),
    ) -> Result<(), &'static str> {
        send(&lubdub_ws::Message::Text(data.to_owned()));
        Ok(())
    }
}

/// One request's parts, as an HTTP server parsed them.
#[derive(Debug, Clone, Copy)]
pub struct ApiRequest<'a> {
    /// `GET`, `POST`...
    pub method: &'a str,
    /// The path, without the query.
    pub path: &'a str,
    /// The query string, without `?`.
    pub query: Option<&'a str>,
    /// The key the request presented ([`api_key`] finds it in the headers).
    pub key: Option<&'a [u8]>,
    /// The body.
    pub body: &'a [u8],
}

/// The key a request presents: `X-API-Key: KEY`, or `Authorization:
/// apikey KEY` (scheme case-insensitive). Give it each header's value.
pub fn api_key<'a>(
    x_api_key: Option<&'a [u8]>,
    authorization: Option<&'a [u8]>,
) -> Option<&'a [u8]> {
    if let Some(k) = x_api_key {
        return Some(trim(k));
    }
    let auth = trim(authorization?);
    let (scheme, rest) = auth.split_at(auth.iter().position(|b| *b == b' ')?);
    scheme.eq_ignore_ascii_case(b"apikey").then(|| trim(rest))
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

/// An answer: a status and a JSON body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status.
    pub status: u16,
    /// The JSON body.
    pub body: String,
}

impl ApiResponse {
    fn ok(body: String) -> Self {
        ApiResponse { status: 200, body }
    }

    fn error(status: u16, why: &str) -> Self {
        let mut body = String::from("{\"ok\":false,\"error\":");
        json_string(&mut body, why);
        body.push('}');
        ApiResponse { status, body }
    }

    /// Whether the answer asks for credentials (`401`: send
    /// `WWW-Authenticate: apikey` with it).
    pub fn wants_key(&self) -> bool {
        self.status == 401
    }
}

/// The publish API of one hub. Cheap to clone.
pub struct PublishApi<P: Protocol> {
    hub: Hub<P>,
    key: Option<Vec<u8>>,
}

impl<P: Protocol> Clone for PublishApi<P> {
    fn clone(&self) -> Self {
        PublishApi {
            hub: self.hub.clone(),
            key: self.key.clone(),
        }
    }
}

impl<P: Protocol> std::fmt::Debug for PublishApi<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("PublishApi")
            .field("node", &self.hub.node())
            .field("key", &self.key.as_ref().map(|_| "***"))
            .finish()
    }
}

/// What one publish asks for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    to: String,
    #[serde(default)]
    target: Option<String>,
    data: String,
    #[serde(default)]
    except: Vec<String>,
}

impl<P: ApiData> PublishApi<P> {
    /// The API of `hub`, for requests that present `key` (at least 16
    /// bytes: a short key is guessable; `Err` says so).
    pub fn new(hub: Hub<P>, key: &str) -> Result<Self, &'static str> {
        if key.len() < 16 {
            return Err("the API key must be at least 16 bytes long");
        }
        Ok(PublishApi {
            hub,
            key: Some(key.as_bytes().to_vec()),
        })
    }

    /// The API of `hub` open to anyone who reaches it: only behind a
    /// network boundary of your own.
    pub fn without_key(hub: Hub<P>) -> Self {
        PublishApi { hub, key: None }
    }

    /// The hub it publishes to.
    pub fn hub(&self) -> &Hub<P> {
        &self.hub
    }

    /// Answers one request of the `Http` protocol: JSON, with
    /// `WWW-Authenticate: apikey` on a `401`.
    pub async fn respond(&self, req: &Request) -> Reply {
        let h = req.headers();
        let key = api_key(
            h.get("x-api-key").map(|v| v.as_bytes()),
            h.get(header::AUTHORIZATION).map(|v| v.as_bytes()),
        );
        let answer = self
            .handle(ApiRequest {
                method: req.method().as_str(),
                path: req.uri().path(),
                query: req.uri().query(),
                key,
                body: req.body(),
            })
            .await;
        let mut response = Response::new(answer.body.into_bytes());
        *response.status_mut() = lubdub_http::http::StatusCode::from_u16(answer.status)
            .unwrap_or(lubdub_http::http::StatusCode::INTERNAL_SERVER_ERROR);
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            header::HeaderValue::from_static("application/json"),
        );
        if answer.status == 401 {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("apikey"),
            );
        }
        req.respond(response)
    }

    /// A worker of the `Http` protocol on `listen` that serves this API
    /// (requests answered in order, one at a time per connection), named
    /// `api`. Start it, or hand it to `lubdub::cli`'s `Server::serve`.
    pub fn worker(&self, listen: &str) -> Result<Worker<Http>, lubdub_worker::Error> {
        let mut w = Worker::<Http>::new(listen)?;
        w.name("api");
        let api = self.clone();
        w.on_message_async(move |conn, req| {
            let api = api.clone();
            async move {
                let reply = api.respond(&req).await;
                let _ = conn.send(&reply);
            }
        });
        Ok(w)
    }

    /// Answers one request.
    pub async fn handle(&self, req: ApiRequest<'_>) -> ApiResponse {
        if let Some(key) = &self.key {
            let presented = req.key.unwrap_or_default();
            if !constant_time_eq::constant_time_eq(presented, key) {
                return ApiResponse::error(401, "an API key is required (X-API-Key)");
            }
        }
        match (req.path, req.method) {
            ("/api/publish", "POST") => self.publish(req.body),
            ("/api/presence", "GET") => match query_param(req.query, "group") {
                Some(group) => self.group_presence(&group).await,
                None => {
                    let n = self.hub.uid_count().await;
                    ApiResponse::ok(format!("{{\"uids\":{n}}}"))
                }
            },
            ("/api/online", "GET") => match query_param(req.query, "uid") {
                Some(uid) => {
                    let online = self.hub.is_uid_online(&uid).await;
                    let mut body = String::from("{\"uid\":");
                    json_string(&mut body, &uid);
                    let _ = write!(body, ",\"online\":{online}}}");
                    ApiResponse::ok(body)
                }
                None => ApiResponse::error(400, "missing the uid parameter"),
            },
            ("/api/publish" | "/api/presence" | "/api/online", _) => {
                ApiResponse::error(405, "method not allowed")
            }
            _ => ApiResponse::error(404, "no such endpoint"),
        }
    }

    fn publish(&self, body: &[u8]) -> ApiResponse {
        // One message, or a batch: told apart by the first byte, so a
        // refusal names what is wrong with the message.
        let batch = body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        if !batch {
            return match serde_json::from_slice::<Publish>(body) {
                Err(e) => ApiResponse::error(400, &format!("invalid JSON: {e}")),
                Ok(p) => match self.publish_one(&p) {
                    Ok(n) => ApiResponse::ok(format!("{{\"ok\":true,\"local\":{n}}}")),
                    Err(why) => ApiResponse::error(400, &why),
                },
            };
        }
        match serde_json::from_slice::<Vec<Publish>>(body) {
            Err(e) => ApiResponse::error(400, &format!("invalid JSON: {e}")),
            Ok(all) => {
                if all.len() > MAX_BATCH {
                    return ApiResponse::error(
                        400,
                        &format!("a batch carries at most {MAX_BATCH} messages"),
                    );
                }
                let mut body = String::from("{\"ok\":true,\"results\":[");
                for (i, p) in all.iter().enumerate() {
                    if i > 0 {
                        body.push(',');
                    }
                    match self.publish_one(p) {
                        Ok(n) => {
                            let _ = write!(body, "{{\"local\":{n}}}");
                        }
                        Err(why) => {
                            body.push_str("{\"error\":");
                            json_string(&mut body, &why);
                            body.push('}');
                        }
                    }
                }
                body.push_str("]}");
                ApiResponse::ok(body)
            }
        }
    }

    /// Sends one message; the local connections it was queued on.
    fn publish_one(&self, p: &Publish) -> Result<usize, String> {
        let limits = self.hub.limits();
        if p.data.len() > limits.max_message_size {
            return Err(format!(
                "data is over the hub's message limit ({} bytes)",
                limits.max_message_size
            ));
        }
        let target = |what: &str| -> Result<&str, String> {
            match p.target.as_deref() {
                Some("") => Err(format!("an empty {what}")),
                Some(t) if t.len() > limits.max_name_len => Err(format!(
                    "the {what} is longer than {} bytes",
                    limits.max_name_len
                )),
                Some(t) => Ok(t),
                None => Err(format!("\"to\":\"{}\" needs a target ({what})", p.to)),
            }
        };
        if !p.except.is_empty() && p.to != "group" {
            return Err("except applies to a group publish only".into());
        }
        let mut queued = 0;
        let mut failed = None;
        let sent = match p.to.as_str() {
            "uid" => {
                let uid = target("uid")?;
                P::with_data(&p.data, &mut |m| queued = self.hub.send_to_uid(uid, m))
            }
            "group" => {
                let group = target("group")?;
                if p.except.len() > limits.max_except {
                    return Err(format!(
                        "except names at most {} connections",
                        limits.max_except
                    ));
                }
                let except: Vec<GlobalConnId> = match p.except.iter().map(|e| e.parse()).collect() {
                    Ok(v) => v,
                    Err(_) => return Err("except holds connection ids (node:id)".into()),
                };
                P::with_data(&p.data, &mut |m| {
                    queued = self.hub.send_to_group(group, m, &except)
                })
            }
            "all" => {
                if p.target.is_some() {
                    return Err("\"to\":\"all\" takes no target".into());
                }
                P::with_data(&p.data, &mut |m| queued = self.hub.send_to_all(m))
            }
            "conn" => {
                let id: GlobalConnId = target("connection id")?
                    .parse()
                    .map_err(|_| "the target is not a connection id (node:id)".to_owned())?;
                P::with_data(&p.data, &mut |m| {
                    if self.hub.send_to_conn(&id, m) {
                        queued = usize::from(id.node() == self.hub.node());
                    } else {
                        failed = Some("the connection is not here and the backplane is down");
                    }
                })
            }
            _ => return Err("\"to\" is uid, group, all or conn".into()),
        };
        sent.map_err(str::to_owned)?;
        match failed {
            Some(why) => Err(why.into()),
            None => Ok(queued),
        }
    }

    async fn group_presence(&self, group: &str) -> ApiResponse {
        if group.is_empty() || group.len() > self.hub.limits().max_name_len {
            return ApiResponse::error(400, "not a group name");
        }
        let uids = self.hub.group_uids(group).await;
        let members = self.hub.group_count(group).await;
        let mut body = String::from("{\"group\":");
        json_string(&mut body, group);
        body.push_str(",\"uids\":[");
        for (i, u) in uids.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            json_string(&mut body, u);
        }
        let _ = write!(body, "],\"members\":{members}}}");
        ApiResponse::ok(body)
    }
}

/// `name`'s value in a query string, percent-decoded.
fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Appends `s` as a JSON string.
fn json_string(out: &mut String, s: &str) {
    // serde_json escapes exactly as JSON wants; a String cannot fail.
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_found_in_either_header() {
        assert_eq!(api_key(Some(b" k1 "), None), Some(&b"k1"[..]));
        assert_eq!(api_key(None, Some(b"ApiKey  k2")), Some(&b"k2"[..]));
        assert_eq!(api_key(None, Some(b"Bearer k2")), None);
        assert_eq!(api_key(None, Some(b"apikey")), None);
        assert_eq!(api_key(None, None), None);
    }

    #[test]
    fn query_parameters_are_decoded() {
        assert_eq!(
            query_param(Some("a=1&uid=al%20ice"), "uid").as_deref(),
            Some("al ice")
        );
        assert_eq!(query_param(Some("uid=a+b"), "uid").as_deref(), Some("a b"));
        assert_eq!(query_param(Some("x=1"), "uid"), None);
        assert_eq!(query_param(None, "uid"), None);
    }

    #[test]
    fn errors_are_json() {
        let r = ApiResponse::error(400, "a \"quoted\" why\n");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["ok"], false);
        assert_eq!(v["error"], "a \"quoted\" why\n");
        assert!(!r.wants_key());
        assert!(ApiResponse::error(401, "x").wants_key());
    }
}
