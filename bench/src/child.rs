//! Child processes: each server (and each timer measurement, client, healthy
//! client or attacker) runs in its own process, a re-exec of this binary
//! with a hidden subcommand; Redis and the Socket.IO nodes are other
//! programs run the same way. The child reports on stdout, one `key value`
//! pair a line; it is killed on drop, so no error path (nor a panic) can
//! leave one running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};

/// The runner's `--wrap-server CMD`: a command prefix for every measured
/// child: servers, and the timer and client children
/// (`valgrind --tool=callgrind ...`, or `bench/scripts/ab-against.sh`).
pub static SERVER_WRAP: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// A running child process and the lines it prints.
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
    /// How errors name it: "child `serve tokio text`", "redis-server".
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
                Self::spawn_cmd(Command::new("sh").args(&full), described(args), false)
            }
        }
    }

    /// Runs another program (`redis-server`, `node`), named `what` in
    /// errors, SIGKILLed when the runner dies (as this binary's children
    /// ask for themselves); `install` says how to get it when it cannot be
    /// started.
    pub fn spawn_program(cmd: &mut Command, what: &str, install: &str) -> Result<Child> {
        // SAFETY: prctl is async-signal-safe; it runs in the forked child
        // before exec and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        Self::spawn_cmd(cmd, what.to_owned(), false)
            .map_err(|e| anyhow!("cannot run {what} ({e}): {install}"))
    }

    fn spawn_with(args: &[String], piped: bool) -> Result<Child> {
        let exe = std::env::current_exe()?;
        Self::spawn_cmd(Command::new(exe).args(args), described(args), piped)
    }

    fn spawn_cmd(cmd: &mut Command, what: String, piped: bool) -> Result<Child> {
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
            what,
        })
    }

    /// Writes `line` and a newline to the child's stdin.
    pub fn send_line(&mut self, line: &str) -> Result<()> {
        let Some(stdin) = self.stdin.as_mut() else {
            bail!("{} has no stdin pipe", self.what);
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

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The latest `conns N` the server reported, shared.
    pub fn conns_handle(&self) -> Arc<AtomicUsize> {
        self.conns.clone()
    }

    /// Waits for a `key value` line and returns the value; an `error MSG`
    /// line first fails with MSG.
    pub fn expect(&mut self, key: &str, timeout: Duration) -> Result<String> {
        let what = format!("`{key}`");
        self.wait_for(&what, timeout, |line| {
            if let Some(v) = line.strip_prefix(key).and_then(|r| r.strip_prefix(' ')) {
                return Some(Ok(v.trim().to_string()));
            }
            line.strip_prefix("error ").map(|msg| Err(msg.to_owned()))
        })
    }

    /// Waits for a line `pick` accepts (`Some(Ok)`) or refuses (`Some(Err)`,
    /// the child failed); `wanted` names what is awaited in errors, which
    /// also list the lines passed over.
    pub fn wait_for<T>(
        &mut self,
        wanted: &str,
        timeout: Duration,
        pick: impl Fn(&str) -> Option<Result<T, String>>,
    ) -> Result<T> {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        let seen_lines = |seen: &[String]| {
            if seen.is_empty() {
                String::new()
            } else {
                format!("; it printed:\n{}", seen.join("\n"))
            }
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => match pick(&line) {
                    Some(Ok(v)) => return Ok(v),
                    Some(Err(msg)) => bail!("{} failed: {msg}", self.what),
                    None => seen.push(line),
                },
                Err(RecvTimeoutError::Timeout) => bail!(
                    "{} did not report {wanted} within {timeout:?}{}",
                    self.what,
                    seen_lines(&seen)
                ),
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.try_wait().ok().flatten();
                    bail!(
                        "{} exited before reporting {wanted} ({status:?}){}",
                        self.what,
                        seen_lines(&seen)
                    )
                }
            }
        }
    }
}

/// How errors name a child of this binary run with `args`.
fn described(args: &[String]) -> String {
    format!("child `{}`", args.join(" "))
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
    /// The server's process.
    pub child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The child's `nofile` line: soft limit before, soft limit, hard limit.
    pub nofile: String,
}

impl Server {
    /// Starts a server child with `args` (see [`Child::spawn_server`]) and
    /// waits for its `nofile` and `port` lines.
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

    /// Where it listens.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }
}

/// Where a child process runs: `--cpu C` pins it, `--nice N` sets its
/// priority (the attack scenario's children).
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct Placement {
    /// CPU to pin the whole process to.
    #[arg(long, value_name = "C")]
    pub cpu: Option<usize>,
    /// Nice value of the process (below 0 needs root or CAP_SYS_NICE).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub nice: Option<i32>,
}

impl Placement {
    /// The options on a child's command line.
    pub fn to_args(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(cpu) = self.cpu {
            a.extend(["--cpu".into(), cpu.to_string()]);
        }
        if let Some(nice) = self.nice {
            a.extend(["--nice".into(), nice.to_string()]);
        }
        a
    }
}
