//! Child processes: each server (and each timer measurement) runs in its own
//! process, a re-exec of this binary with a hidden subcommand. The child
//! reports on stdout, one `key value` pair a line; it is killed on drop, so
//! no error path (nor a panic) can leave one running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// The runner's `--wrap-server CMD`: a command prefix for every server
/// child (`valgrind --tool=callgrind ...`, say).
pub static SERVER_WRAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

pub struct Child {
    child: std::process::Child,
    pid: u32,
    lines: Receiver<String>,
    /// Latest `conns N` the child reported (servers started with `--report-conns`).
    conns: Arc<AtomicUsize>,
    /// Latest value of each `stat KEY VALUE` line the child printed.
    stats: Arc<Mutex<HashMap<String, String>>>,
    /// The child's stdin, if it was spawned with [`Child::spawn_piped`].
    stdin: Option<ChildStdin>,
    reader: Option<JoinHandle<()>>,
    what: String,
}

impl Child {
    /// Runs `current_exe args...` with stdin from /dev/null.
    pub fn spawn(args: &[String]) -> Result<Child> {
        Self::spawn_with(args, false)
    }

    /// Runs `current_exe args...` with a pipe to its stdin, for
    /// [`send_line`](Self::send_line) and [`close_stdin`](Self::close_stdin).
    pub fn spawn_piped(args: &[String]) -> Result<Child> {
        Self::spawn_with(args, true)
    }

    /// Runs `current_exe args...` under the runner's `--wrap-server`
    /// command, if one was given (`sh -c 'exec CMD "$0" "$@"'`: the wrapper
    /// keeps the child's pid), else as [`spawn`](Self::spawn) does.
    pub fn spawn_server(args: &[String]) -> Result<Child> {
        match SERVER_WRAP.get() {
            None => Self::spawn(args),
            Some(wrap) => {
                let exe = std::env::current_exe()?;
                let mut full = vec![
                    "-c".to_string(),
                    format!("exec {wrap} \"$0\" \"$@\""),
                    exe.to_string_lossy().into_owned(),
                ];
                full.extend(args.iter().cloned());
                Self::spawn_cmd(Command::new("sh").args(&full), args, false)
            }
        }
    }

    fn spawn_with(args: &[String], piped: bool) -> Result<Child> {
        let exe = std::env::current_exe()?;
        Self::spawn_cmd(Command::new(exe).args(args), args, piped)
    }

    fn spawn_cmd(cmd: &mut Command, args: &[String], piped: bool) -> Result<Child> {
        let mut child = cmd
            .stdin(if piped { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let pid = child.id();
        let stdout = child.stdout.take().expect("piped stdout");
        let stdin = child.stdin.take();
        let (tx, rx) = mpsc::channel();
        let conns = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(HashMap::new()));
        let (c2, s2) = (conns.clone(), stats.clone());
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
                    if let Some((k, v)) = line.strip_prefix("stat ").and_then(|r| r.split_once(' '))
                    {
                        s2.lock()
                            .unwrap()
                            .insert(k.to_string(), v.trim().to_string());
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
            stats,
            stdin,
            reader: Some(reader),
            what: args.join(" "),
        })
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("child `{}` has no stdin pipe", self.what);
        };
        writeln!(stdin, "{line}")?;
        stdin.flush()?;
        Ok(())
    }

    /// Closes the child's stdin: it reads end-of-file.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The latest value of `stat KEY VALUE` lines the child printed.
    pub fn stat(&self, key: &str) -> Option<String> {
        self.stats.lock().unwrap().get(key).cloned()
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
        self.stdin = None;
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
        let mut child = Child::spawn_server(args)?;
        // A wrapped server (valgrind...) starts slowly.
        let wait = if SERVER_WRAP.get().is_some() { 60 } else { 10 };
        let nofile = child.expect("nofile", Duration::from_secs(wait))?;
        let port = child.expect("port", Duration::from_secs(wait))?.parse()?;
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
