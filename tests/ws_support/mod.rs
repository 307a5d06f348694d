//! Helpers of the WebSocket interop tests (tests/ws_interop.rs,
//! tests/ws_browser.rs): real peers (Python `websockets`, Node `ws`,
//! Chromium) run as child processes, found on this machine, never mocked.
//!
//! A peer that cannot be found fails the test with what to install
//! (`.ci/run` installs all of them). Children run in their own process group
//! and the whole group is killed when their guard drops, so a failing test
//! leaves nothing behind; every wait is bounded.
#![allow(dead_code)]

#[path = "../common/process.rs"]
mod process;
use process::output_of;
#[allow(unused_imports)] // not every test binary that includes this module uses it
pub use process::TempDir;

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub mod echo_server;

/// Bound for one event of a peer (a loaded 2-core machine, a cold Python
/// or Node start, a browser start).
pub const WAIT: Duration = Duration::from_secs(45);

/// The pinned `websockets` version (also in .ci/run).
pub const PY_WEBSOCKETS: &str = "17.4";

/// tests/interop: the peers' scripts.
pub fn interop_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop")
}

/// Receives from `rx` within `WAIT`, or fails naming `what`.
pub fn recv<T>(rx: &Receiver<T>, what: &str) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("{what}: not seen within {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("{what}: event channel closed"),
    }
}

/// A child process in its own process group; dropping the guard kills the
/// group (SIGKILL) and reaps the child. Its stdout is read line by line on
/// a thread; its stderr is collected for failure messages.
pub struct ChildGuard {
    name: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl ChildGuard {
    /// Starts `cmd` with piped stdin, stdout and stderr.
    pub fn spawn(name: &str, cmd: &mut Command) -> Self {
        use std::os::unix::process::CommandExt;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {cmd:?}: {e}"));
        let stdin = child.stdin.take();
        let (tx, lines) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr: Arc<Mutex<Vec<u8>>> = Arc::default();
        let mut err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut s = sink.lock().unwrap();
                // Keep the last 64 KiB: enough to explain a failure.
                s.extend_from_slice(&buf[..n]);
                if s.len() > 64 * 1024 {
                    let cut = s.len() - 64 * 1024;
                    s.drain(..cut);
                }
            }
        });
        ChildGuard {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            stderr,
        }
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What the child wrote to stderr so far (its last 64 KiB).
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The next stdout line within `timeout`; fails with the child's stderr
    /// if it ends or stays silent.
    pub fn line_within(&self, timeout: Duration) -> String {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!(
                "{}: no output line within {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            ),
            Err(RecvTimeoutError::Disconnected) => {
                // Let the stderr reader catch up (bounded) before reporting.
                let until = Instant::now() + Duration::from_secs(2);
                while Instant::now() < until && !self.stderr_done() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                panic!(
                    "{}: output ended early; stderr:\n{}",
                    self.name,
                    self.stderr()
                )
            }
        }
    }

    fn stderr_done(&self) -> bool {
        // The reader thread holds the only other reference while it runs.
        Arc::strong_count(&self.stderr) == 1
    }

    /// The next stdout line within [`WAIT`].
    pub fn line(&self) -> String {
        self.line_within(WAIT)
    }

    /// The next stdout line, parsed as JSON; `{"error": ...}` fails the test.
    pub fn json(&self) -> serde_json::Value {
        let line = self.line();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| {
            panic!(
                "{}: not a JSON line ({e}): {line}\nstderr:\n{}",
                self.name,
                self.stderr()
            )
        });
        if let Some(err) = v.get("error") {
            panic!(
                "{} reported an error: {err}\nstderr:\n{}",
                self.name,
                self.stderr()
            );
        }
        v
    }

    /// Writes a line to the child's stdin.
    pub fn send_line(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: write to stdin: {e}", self.name));
    }

    /// Closes the child's stdin (EOF).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for the child to exit within `timeout`, or fails.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                start.elapsed() < timeout,
                "{}: still running after {timeout:?}; stderr:\n{}",
                self.name,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for a clean exit (status 0) within [`WAIT`], or fails.
    pub fn expect_success(&mut self) {
        let status = self.wait_exit(WAIT);
        assert!(
            status.success(),
            "{} exited with {status}; stderr:\n{}",
            self.name,
            self.stderr()
        );
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.stdin = None;
        // The whole group: browsers and runtimes start helper processes.
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with a negative pid signals that process group;
        // the group is the child's own (process_group(0) at spawn).
        unsafe {
            libc::kill(-pgid, libc::SIGKILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `name` on the PATH, or `None`.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// The Python interpreter with `websockets` importable: `$LUBDUB_PYTHON`
/// or `python3`. Fails the test with what to install if there is none.
pub fn python() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_python).clone()
}

fn check_python() -> PathBuf {
    let python = std::env::var_os("LUBDUB_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("python3"));
    let version = output_of(
        Command::new(&python).args(["-c", "import websockets; print(websockets.__version__)"]),
    )
    .unwrap_or_else(|e| {
        panic!(
            "Python `websockets` is needed by this test and was not found ({e}). Install it: \
             `python3 -m pip install websockets=={PY_WEBSOCKETS}` (.ci/run does), or point \
             LUBDUB_PYTHON at an interpreter that has it."
        )
    });
    let major: u32 = version
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    assert!(
        major >= 14,
        "Python websockets {version} is too old for websockets.asyncio: \
         `python3 -m pip install websockets=={PY_WEBSOCKETS}`"
    );
    python
}

/// A Python script of tests/interop with its arguments.
pub fn python_script(script: &str) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg("-u")
        .arg(interop_dir().join(script))
        .current_dir(interop_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1");
    cmd
}

/// tests/interop/node, where `npm ci` installed `ws`.
pub fn node_dir() -> PathBuf {
    interop_dir().join("node")
}

/// `node` with the `ws` package installed in tests/interop/node; fails the
/// test with what to install if either is missing.
pub fn node() -> PathBuf {
    static CHECKED: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CHECKED.get_or_init(check_node).clone()
}

fn check_node() -> PathBuf {
    let node = std::env::var_os("LUBDUB_NODE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("node"));
    let version = output_of(Command::new(&node).arg("--version")).unwrap_or_else(|e| {
        panic!("Node.js is needed by this test and was not found ({e}): install nodejs (v18+)")
    });
    let ws = node_dir().join("node_modules/ws/package.json");
    assert!(
        ws.is_file(),
        "the npm package `ws` is not installed in {} (node {version}): run `npm ci` there \
         (.ci/run does)",
        node_dir().display()
    );
    node
}

/// A Node script of tests/interop/node with its arguments.
pub fn node_script(script: &str) -> Command {
    let mut cmd = Command::new(node());
    cmd.arg(node_dir().join(script)).current_dir(node_dir());
    cmd
}

/// The Chromium binary: `$LUBDUB_CHROMIUM`, else `chromium`,
/// `chromium-browser` or `google-chrome` on the PATH. Fails the test with
/// what to install if there is none.
pub fn chromium() -> PathBuf {
    let found = match std::env::var_os("LUBDUB_CHROMIUM") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => ["chromium", "chromium-browser", "google-chrome"]
            .iter()
            .find_map(|n| which(n)),
    };
    found.unwrap_or_else(|| {
        panic!(
            "Chromium is needed by this test and was not found (PATH, or $LUBDUB_CHROMIUM): \
             `apt-get install -y chromium` (.ci/run does)"
        )
    })
}

/// The text unit of tests/interop/payloads.py: 16 bytes of UTF-8.
pub const TEXT_UNIT: &str = "lub ✓ ünïcø";

/// One MiB.
pub const MIB: usize = 1 << 20;

/// payloads.py `text_payload`: `n_bytes` (a multiple of 16) of text.
pub fn text_payload(n_bytes: usize) -> String {
    assert_eq!(TEXT_UNIT.len(), 16);
    assert_eq!(n_bytes % 16, 0);
    TEXT_UNIT.repeat(n_bytes / 16)
}

/// payloads.py `binary_payload`: the C library LCG (mod 2^31), bits 16..23.
pub fn binary_payload(n: usize, seed: u32) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345) & 0x7fff_ffff;
            (x >> 16) as u8
        })
        .collect()
}

/// An example's binary, target/<profile>/examples/NAME, next to the test
/// binary (target/<profile>/deps/TEST-*). A plain `cargo test` builds the
/// examples; `cargo test --test X` alone does not, hence the message.
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let bin = profile_dir.join("examples").join(name);
    assert!(
        bin.is_file(),
        "the {name} example is not built at {}: run `cargo build --example {name}` \
         (a plain `cargo test` builds the examples)",
        bin.display()
    );
    bin
}

/// The ws_chat example on a free loopback port, with `extra` flags and
/// environment variables; returns it and its port once its banner names
/// `scheme` (`http`, or `https` with TLS).
pub fn start_ws_chat(extra: &[&str], env: &[(&str, &str)], scheme: &str) -> (ChildGuard, u16) {
    let mut cmd = Command::new(example_binary("ws_chat"));
    cmd.args(["--listen", "ws://127.0.0.1:0"]).args(extra);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let chat = ChildGuard::spawn("ws_chat example", &mut cmd);
    // It prints `chat on http://127.0.0.1:PORT (WebSocket on /ws?name=NAME)`.
    let prefix = format!("chat on {scheme}://127.0.0.1:");
    let line = chat.line();
    let port = line
        .strip_prefix(prefix.as_str())
        .and_then(|rest| rest.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("ws_chat's banner: {line:?}"));
    (chat, port)
}
