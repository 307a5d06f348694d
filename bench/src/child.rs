//! Child processes: each server (and each timer measurement) runs in its own
//! process, a re-exec of this binary with a hidden subcommand. The child
//! reports on stdout, one `key value` pair a line; it is killed on drop, so
//! no error path (nor a panic) can leave one running.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

pub struct Child {
    child: std::process::Child,
    pid: u32,
    lines: Receiver<String>,
    /// Latest `conns N` the child reported (servers started with `--report-conns`).
    conns: Arc<AtomicUsize>,
    reader: Option<JoinHandle<()>>,
    what: String,
}

impl Child {
    /// Runs `current_exe args...`.
    pub fn spawn(args: &[String]) -> Result<Child> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        let conns = Arc::new(AtomicUsize::new(0));
        let c2 = conns.clone();
        let reader = std::thread::Builder::new()
            .name("child-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if let Some(n) = line.strip_prefix("conns ") {
                        if let Ok(n) = n.trim().parse() {
                            c2.store(n, Ordering::SeqCst);
                        }
                        continue;
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            })?;
        Ok(Child {
            child,
            pid,
            lines: rx,
            conns,
            reader: Some(reader),
            what: args.join(" "),
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The latest `conns N` the server reported, shared.
    pub fn conns_handle(&self) -> Arc<AtomicUsize> {
        self.conns.clone()
    }

    /// Waits for a `key value` line and returns the value.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
                        return Ok(v.trim().to_string());
                    }
                    if let Some(msg) = line.strip_prefix("error ") {
                        bail!("child `{}` failed: {msg}", self.what);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    bail!(
                        "child `{}` did not report `{key}` within {timeout:?}",
                        self.what
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "child `{}` exited before reporting `{key}` ({status:?})",
                        self.what
                    )
                }
            }
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A running server child and the port it listens on (127.0.0.1).
pub struct Server {
    pub child: Child,
    pub port: u16,
    /// The child's `nofile` line: soft limit before, soft limit, hard limit.
    pub nofile: String,
}

impl Server {
    pub fn start(args: &[String]) -> Result<Server> {
        let mut child = Child::spawn(args)?;
        let nofile = child.expect("nofile", Duration::from_secs(10))?;
        let port = child.expect("port", Duration::from_secs(10))?.parse()?;
        Ok(Server {
            child,
            port,
            nofile,
        })
    }

    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}
