//! The HTTP scenarios' servers (`http-*`, `publish-api`), each in its own
//! child process: `lubdub-bench http-serve <lubdub|hyper>
//! [--pipeline-flush] [--publish-api] [--cpu C] [--report-conns]`.
//!
//! Like `serve` (see `peers/tcp.rs`), the child prints `nofile ...` and
//! `port <port>`, and with `--report-conns` a `conns <n>` line every 50 ms.
//! Both hello-world servers answer every request, on any path, with the
//! same bytes but the date's value ([`BODY`], `content-type: text/plain`,
//! `content-length: 13`, `date`), keep the connection alive and set
//! TCP_NODELAY.
//!
//! * **lubdub**: `Worker::<Http>` on `http://127.0.0.1:0`, `count(1)`,
//!   `on_message` → `conn.send(&req.respond(response))`.
//! * **hyper**: hyper 1.x `server::conn::http1::Builder` on a tokio
//!   current_thread runtime, one task per connection, a `service_fn`
//!   returning a `Full<Bytes>` body; `--pipeline-flush` sets
//!   `pipeline_flush(true)` (answers to pipelined requests wait for the
//!   batch and leave in one write), what a hyper user serving pipelined
//!   clients sets.
//! * **`--publish-api`** (lubdub only): a text worker with a local `Hub`
//!   whose clients say `name UID` (answered `ok`) and the publish API
//!   (`PublishApi::worker`, key [`API_KEY`]) in one process; prints
//!   `text_port <port>` after `port <api port>`.

use std::convert::Infallible;

use anyhow::{bail, Result};
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use lubdub::http::{http, Http, Request};
use lubdub::hub::api::PublishApi;
use lubdub::hub::{Hub, RedisConfig};
use lubdub::{Text, Worker};

use crate::child::Server;
use crate::peers::serve::{accept_each, run_lubdub, run_tokio_peer, start_server_child};

/// The body of every hello-world response.
pub const BODY: &[u8] = b"Hello, World!";

/// The `content-type` of every hello-world response.
pub const CONTENT_TYPE_VALUE: &str = "text/plain";

/// The publish API's key in the `publish-api` scenario.
pub const API_KEY: &str = "bench-api-key-0123456789abcdef";

/// The hub's namespace with `--redis`: uid `U`'s channel is `bench:ch:u:U`.
pub const NAMESPACE: &str = "bench";

/// An HTTP server implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HttpImpl {
    /// lubdub's `Worker<Http>`.
    Lubdub,
    /// hyper 1.x `http1` on a current_thread runtime.
    Hyper,
}

impl HttpImpl {
    /// The name on command lines.
    pub fn name(self) -> &'static str {
        match self {
            HttpImpl::Lubdub => "lubdub",
            HttpImpl::Hyper => "hyper",
        }
    }
}

/// The command line of an `http-serve` child.
#[derive(Debug, Clone, PartialEq, Eq, clap::Parser)]
pub struct HttpServeOpts {
    /// The server.
    #[arg(value_enum)]
    pub imp: HttpImpl,
    /// hyper only: `pipeline_flush(true)`.
    #[arg(long)]
    pub pipeline_flush: bool,
    /// lubdub only: the publish API and a text worker with a local hub.
    #[arg(long)]
    pub publish_api: bool,
    /// `--publish-api` on a cluster: the hub's Redis backplane,
    /// `redis://HOST:PORT` (namespace `bench`), and `--node`.
    #[arg(long, value_name = "URL", requires = "node")]
    pub redis: Option<String>,
    /// The node's name in the cluster (with `--redis`).
    #[arg(long, value_name = "NAME", requires = "redis")]
    pub node: Option<String>,
    /// CPU to pin the whole server process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Print `conns <n>` every 50 ms.
    #[arg(long)]
    pub report_conns: bool,
}

impl HttpServeOpts {
    /// The command line that makes a child run this server.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = vec!["http-serve".to_string(), self.imp.name().into()];
        if self.pipeline_flush {
            a.push("--pipeline-flush".into());
        }
        if self.publish_api {
            a.push("--publish-api".into());
        }
        if let (Some(url), Some(node)) = (&self.redis, &self.node) {
            a.extend(["--redis".into(), url.clone(), "--node".into(), node.clone()]);
        }
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        if self.report_conns {
            a.push("--report-conns".into());
        }
        a
    }

    /// Fails for options the chosen server does not have.
    pub fn check(&self) -> Result<()> {
        if self.pipeline_flush && self.imp != HttpImpl::Hyper {
            bail!("http-serve: --pipeline-flush is for hyper only");
        }
        if self.publish_api && (self.imp != HttpImpl::Lubdub || self.report_conns) {
            bail!("http-serve: --publish-api is for lubdub only, without --report-conns");
        }
        if self.redis.is_some() && !self.publish_api {
            bail!("http-serve: --redis is for --publish-api only");
        }
        Ok(())
    }

    /// Starts this server in a child process.
    pub fn start(&self) -> Result<Server> {
        self.check()?;
        Server::start(&self.to_args())
    }
}

/// Entry point of an `http-serve` child.
pub fn serve(o: &HttpServeOpts) -> Result<()> {
    o.check()?;
    start_server_child(o.cpu)?;
    match o.imp {
        HttpImpl::Lubdub if o.publish_api => {
            serve_publish_api(o.redis.as_deref(), o.node.as_deref())
        }
        HttpImpl::Lubdub => serve_lubdub(o.report_conns),
        HttpImpl::Hyper => serve_hyper(o.pipeline_flush, o.report_conns),
    }
}

/// The hello-world response lubdub sends.
pub fn hello(req: &Request) -> lubdub::http::Reply {
    let mut r = http::Response::new(BODY.to_vec());
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(CONTENT_TYPE_VALUE),
    );
    req.respond(r)
}

fn serve_lubdub(report_conns: bool) -> Result<()> {
    let mut w = Worker::<Http>::new("http://127.0.0.1:0")?;
    w.count(1).name("bench-http");
    w.on_message(|conn, req| {
        let _ = conn.send(&hello(&req));
    });
    run_lubdub(&w.start()?, report_conns)
}

fn serve_hyper(pipeline_flush: bool, report_conns: bool) -> Result<()> {
    use std::sync::atomic::Ordering;
    run_tokio_peer(1, report_conns, |listener, live| async move {
        let live = live.unwrap_or_default();
        accept_each(listener, "hyper server", |sock| {
            let live = live.clone();
            tokio::spawn(async move {
                live.fetch_add(1, Ordering::Relaxed);
                hyper_conn(sock, pipeline_flush).await;
                live.fetch_sub(1, Ordering::Relaxed);
            });
        })
        .await
    })
}

/// One connection of the hyper server, served to its end.
pub async fn hyper_conn(sock: tokio::net::TcpStream, pipeline_flush: bool) {
    let service = hyper::service::service_fn(|_req: hyper::Request<Incoming>| async {
        let mut r = hyper::Response::new(Full::new(Bytes::from_static(BODY)));
        r.headers_mut()
            .insert(CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE_VALUE));
        Ok::<_, Infallible>(r)
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .pipeline_flush(pipeline_flush)
        .serve_connection(hyper_util::rt::TokioIo::new(sock), service)
        .await;
}

/// `--publish-api`: a text worker whose clients bind a uid with
/// `name UID` (answered `ok`), and the publish API of its hub (local, or
/// on the Redis at `redis` as node `node`), both one event loop, in this
/// process.
fn serve_publish_api(redis: Option<&str>, node: Option<&str>) -> Result<()> {
    let hub = match (redis, node) {
        (Some(url), Some(node)) => Hub::with_redis(
            RedisConfig::new(url, node).namespace(NAMESPACE),
            Text::default(),
        )?,
        _ => Hub::<Text>::local(),
    };
    let mut text = Worker::<Text>::new("text://127.0.0.1:0")?;
    text.count(1).name("bench-members");
    text.plugin(hub.plugin());
    let h = hub.clone();
    text.on_message(move |c, line: String| {
        if let Some(("name", uid)) = line.split_once(' ') {
            if h.bind_uid(c, uid).is_ok() {
                let _ = c.send("ok");
            }
        }
    });
    let text = text.start()?;
    let api = PublishApi::new(hub, API_KEY).map_err(anyhow::Error::msg)?;
    let mut w = api.worker("http://127.0.0.1:0")?;
    w.count(1);
    let api = w.start()?;
    println!("port {}", api.local_addr().port());
    println!("text_port {}", text.local_addr().port());
    api.wait();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn options_round_trip_and_refuse_what_a_server_lacks() {
        let parse = |v: &[&str]| HttpServeOpts::try_parse_from(v).unwrap();
        let o = parse(&["http-serve", "hyper", "--pipeline-flush", "--cpu", "0"]);
        assert!(o.check().is_ok());
        assert_eq!(HttpServeOpts::try_parse_from(o.to_args()).unwrap(), o);
        assert!(parse(&["http-serve", "lubdub", "--pipeline-flush"])
            .check()
            .is_err());
        assert!(parse(&["http-serve", "hyper", "--publish-api"])
            .check()
            .is_err());
        assert!(parse(&["http-serve", "lubdub", "--publish-api"])
            .check()
            .is_ok());
        let node = parse(&[
            "http-serve",
            "lubdub",
            "--publish-api",
            "--redis",
            "redis://127.0.0.1:1",
            "--node",
            "a",
        ]);
        assert!(node.check().is_ok());
        assert_eq!(HttpServeOpts::try_parse_from(node.to_args()).unwrap(), node);
        assert!(HttpServeOpts::try_parse_from(["http-serve", "lubdub", "--redis", "x"]).is_err());
        assert!(
            parse(&["http-serve", "lubdub", "--redis", "x", "--node", "a"])
                .check()
                .is_err()
        );
    }
}
