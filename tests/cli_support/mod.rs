//! Runs an example binary under lubdub's command line (`lubdub::cli`) for
//! tests/cli.rs and tests/cli_storm.rs: every command with a private
//! `--run-dir` under a temporary directory, each bounded in time, and a
//! guard that kills every server process the test saw (daemons, reloads'
//! processes) when it drops, even when the test fails.
//!
//! Daemons leave the test's process group (`setsid`), so the guard kills
//! them by pid: the pids the pid file and `status` named, each only if its
//! command line still names this test's run directory.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::ws_support::{example_binary, TempDir};

/// Bound of one command (a reload starts a debug binary on a loaded
/// 2-core machine) and of every wait here.
pub const WAIT: Duration = Duration::from_secs(60);

/// What one command printed, and how it ended.
#[derive(Debug)]
pub struct Out {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// A server binary and its run directory, for one test.
pub struct Cli {
    /// What runs the commands.
    bin: PathBuf,
    /// What `start` runs (and a reload starts again): `bin`, or a copy.
    server_bin: PathBuf,
    dir: TempDir,
    run_dir: PathBuf,
    seen: Mutex<BTreeSet<u32>>,
}

impl Cli {
    /// The example `name` (target/<profile>/examples/NAME) with a run
    /// directory of its own.
    pub fn example(name: &str) -> Cli {
        Self::new(example_binary(name), name)
    }

    /// The example `name`, whose server [`start_daemon`](Self::start_daemon)
    /// runs from a copy in the test's directory under the same file name:
    /// the binary a reload starts can be swapped
    /// ([`swap_binary`](Self::swap_binary)) while the commands run the
    /// original.
    pub fn copied_example(name: &str) -> Cli {
        let mut cli = Self::new(example_binary(name), name);
        let copy = cli.dir.path().join("bin").join(name);
        std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
        std::fs::copy(&cli.bin, &copy).unwrap();
        cli.server_bin = copy;
        cli
    }

    fn new(bin: PathBuf, tag: &str) -> Cli {
        let dir = TempDir::new(&format!("cli-{tag}"));
        let run_dir = dir.path().join("run");
        Cli {
            server_bin: bin.clone(),
            bin,
            dir,
            run_dir,
            seen: Mutex::default(),
        }
    }

    /// The test's temporary directory (the run directory is `run/` in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    pub fn bin(&self) -> &Path {
        &self.bin
    }

    /// `RUN_DIR/NAME.pid`, `.sock`, `.log` of the instance.
    pub fn file(&self, ext: &str) -> PathBuf {
        let name = self.bin.file_name().unwrap().to_string_lossy();
        self.run_dir.join(format!("{name}.{ext}"))
    }

    /// Replaces the server's binary file by `source` (a new file renamed
    /// over it, as a deployment does; the running processes keep their
    /// own). Only for [`copied_example`](Self::copied_example).
    pub fn swap_binary(&self, source: &Path) {
        assert_ne!(self.server_bin, self.bin, "only a copy is swapped");
        let next = self.server_bin.with_extension("next");
        std::fs::copy(source, &next).unwrap();
        std::fs::rename(&next, &self.server_bin).unwrap();
    }

    /// Replaces the binary file by a script that exits with `code`.
    pub fn swap_binary_for_exit(&self, code: i32) {
        let script = self.dir.path().join("exits");
        std::fs::write(&script, format!("#!/bin/sh\nexit {code}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        self.swap_binary(&script);
    }

    /// The command `BIN --run-dir DIR ARGS...`, not started.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--run-dir").arg(&self.run_dir).args(args);
        cmd
    }

    /// Runs `BIN --run-dir DIR ARGS...` to its end (at most [`WAIT`]).
    pub fn run(&self, args: &[&str]) -> Out {
        self.run_cmd(self.command(args), args)
    }

    fn run_cmd(&self, mut cmd: Command, args: &[&str]) -> Out {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let pipe = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = r.read_to_string(&mut s);
                s
            })
        };
        let stdout = pipe(Box::new(child.stdout.take().unwrap()));
        let stderr = pipe(Box::new(child.stderr.take().unwrap()));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > WAIT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{args:?} did not end within {WAIT:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let out = Out {
            success: status.success(),
            code: status.code(),
            stdout: stdout.join().unwrap(),
            stderr: stderr.join().unwrap(),
        };
        self.note_pid_file();
        out
    }

    /// Runs a command that must succeed; its stdout.
    #[track_caller]
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.success, "{args:?} failed: {out:?}\n{}", self.log());
        out.stdout
    }

    /// Runs a command that must fail; its stderr.
    #[track_caller]
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.success, "{args:?} succeeded: {out:?}");
        out.stderr
    }

    /// `start -d --listen 127.0.0.1:0 EXTRA...`: the daemon's pid and the
    /// address it listens on.
    #[track_caller]
    pub fn start_daemon(&self, extra: &[&str]) -> (u32, SocketAddr) {
        let mut args = vec!["start", "-d", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut cmd = Command::new(&self.server_bin);
        cmd.arg("--run-dir").arg(&self.run_dir).args(&args);
        let out = self.run_cmd(cmd, &args);
        assert!(out.success, "{args:?} failed: {out:?}\n{}", self.log());
        let said = out.stdout;
        assert!(said.contains("started in the background"), "{said}");
        let status = self.status();
        (pid_of(&status), listen_of(&status))
    }

    /// `status --json`, parsed; notes the pid.
    #[track_caller]
    pub fn status(&self) -> serde_json::Value {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["status", "--json"]))
            .expect("status --json prints JSON");
        self.seen.lock().unwrap().insert(pid_of(&v));
        v
    }

    /// `connections --json`, parsed.
    #[track_caller]
    pub fn connections(&self) -> Vec<serde_json::Value> {
        let v: serde_json::Value = serde_json::from_str(&self.ok(&["connections", "--json"]))
            .expect("connections --json prints JSON");
        v.as_array().expect("an array of rows").clone()
    }

    /// The pid in the pid file, if any.
    pub fn pid_file_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.file("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Records the pid file's pid, to kill it at the end.
    pub fn note_pid_file(&self) {
        if let Some(pid) = self.pid_file_pid() {
            self.seen.lock().unwrap().insert(pid);
        }
    }

    /// Every server pid this test saw.
    pub fn seen_pids(&self) -> BTreeSet<u32> {
        self.seen.lock().unwrap().clone()
    }

    /// Records a pid to kill at the end.
    pub fn note_pid(&self, pid: u32) {
        self.seen.lock().unwrap().insert(pid);
    }

    /// The daemon's log (`RUN_DIR/NAME.log`), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.file("log")).unwrap_or_default()
    }

    /// Whether `pid` is one of this test's server processes and runs.
    pub fn is_ours_and_running(&self, pid: u32) -> bool {
        running(pid)
            && std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| contains(&c, self.run_dir.as_os_str().as_encoded_bytes()))
                .unwrap_or(false)
    }

    /// Waits until `pid` no longer runs (at most [`WAIT`]).
    #[track_caller]
    pub fn wait_gone(&self, pid: u32) {
        wait_for(&format!("pid {pid} to exit"), || !running(pid));
    }
}

impl Drop for Cli {
    fn drop(&mut self) {
        self.note_pid_file();
        let pids = self.seen_pids();
        for &pid in &pids {
            if self.is_ours_and_running(pid) {
                // SAFETY: kill(2) on a pid that runs this test's binary
                // with this test's run directory (checked just above).
                unsafe {
                    libc::kill(pid as libc::pid_t, libc::SIGKILL);
                }
            }
        }
        // Before the directory goes: let them die (bounded).
        let until = Instant::now() + Duration::from_secs(10);
        while pids.iter().any(|&p| running(p)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Whether `pid` runs: it exists and is not a zombie (an exited process
/// whose parent is gone stays one under a PID 1 that does not reap).
pub fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// Polls `cond` (a process's state, a file: no event to await) until it
/// holds, at most [`WAIT`].
#[track_caller]
pub fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid in a `status --json`.
pub fn pid_of(status: &serde_json::Value) -> u32 {
    status["pid"].as_u64().expect("status has a pid") as u32
}

/// The address the first worker listens on, from a `status --json`.
pub fn listen_of(status: &serde_json::Value) -> SocketAddr {
    status["loops"][0]["listen"]
        .as_str()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {status}"))
}

/// The sum of one per-loop figure over the loops of a `status --json`.
pub fn loops_sum(status: &serde_json::Value, field: &str) -> u64 {
    status["loops"]
        .as_array()
        .expect("loops")
        .iter()
        .map(|l| l[field].as_u64().unwrap_or(0))
        .sum()
}
