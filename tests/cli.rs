//! lubdub's command line (`lubdub::cli`) on the real heartbeat example
//! (target/<profile>/examples/heartbeat; a plain `cargo test` builds it,
//! else `cargo build --example heartbeat`): `start -d`, `status --json`,
//! `connections --json`, `stop`, a second start, a stale pid file,
//! `reload` with and without `-g`, a reload whose new binary fails,
//! `reload-logs` and SIGUSR1 after a log rotation, SIGTERM; with no command
//! the server runs in the foreground (`cargo run --example heartbeat`);
//! ws_chat and cluster_chat under the same commands. Each test has
//! its own run directory in a temporary directory and listens on a free
//! loopback port (`--listen 127.0.0.1:0`, the port read from `status`);
//! every process it starts is killed when it ends (tests/cli_support).

mod cli_support;
mod common;
mod ws_raw;
mod ws_support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use cli_support::{loops_sum, pid_of, running, wait_for, Cli};
use common::LineClient;

/// What the heartbeat example's Text protocol says on a reload.
const RESTART_LINE: &str = "bye: server restarting, reconnect\n";

/// Connects to `addr` over and over until stopped, each time sending a
/// line and reading the answer (the echo, or the restart line of a
/// process that accepted it just before it drained): what went wrong with
/// each connect that failed (refused, reset, closed without an answer).
struct Prober {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<(usize, Vec<String>)>,
}

impl Prober {
    fn start(addr: SocketAddr) -> Prober {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut done, mut failures) = (0usize, Vec::new());
            while !flag.load(Ordering::Relaxed) {
                match probe(addr) {
                    Ok(()) => done += 1,
                    Err(e) => failures.push(e),
                }
                // Pacing, not synchronisation: a steady trickle of connects.
                std::thread::sleep(Duration::from_millis(2));
            }
            (done, failures)
        });
        Prober { stop, thread }
    }

    /// Stops; the connects made and the failures.
    fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the prober")
    }
}

fn probe(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(10))
        .map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(b"probe\n").map_err(|e| format!("write: {e}"))?;
    let mut line = String::new();
    match BufReader::new(&s).read_line(&mut line) {
        Ok(0) => Err("closed without an answer".into()),
        Ok(_) if line == "probe\n" || line == RESTART_LINE => Ok(()),
        Ok(_) => Err(format!("unexpected answer {line:?}")),
        Err(e) => Err(format!("read: {e}")),
    }
}

#[test]
fn start_d_then_status_and_connections_report_a_client_and_stop_removes_everything() {
    let cli = Cli::example("heartbeat");
    let (pid, addr) = cli.start_daemon(&[]);
    assert!(running(pid));
    assert_eq!(cli.pid_file_pid(), Some(pid));
    assert!(cli.file("sock").exists());

    let mut client = LineClient::connect(addr);
    assert_eq!(client.roundtrip("hello"), "hello");
    let status = cli.status();
    assert_eq!(pid_of(&status), pid);
    assert_eq!(status["instance"], "heartbeat");
    assert_eq!(status["reloads"], 0);
    let loops = status["loops"].as_array().unwrap();
    assert_eq!(loops.len(), 1, "one event loop: {status}");
    let row = &loops[0];
    assert_eq!(row["worker"], "heartbeat");
    assert_eq!(row["protocol"], "text");
    assert_eq!(row["accepting"], true);
    assert_eq!(row["connections"], 1, "{status}");
    assert!(row["accepted"].as_u64().unwrap() >= 1, "{status}");
    assert!(row["messages_in"].as_u64().unwrap() >= 1, "{status}");
    assert!(row["messages_out"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["rss_bytes"].as_u64().unwrap() > 0, "{status}");

    let rows = cli.connections();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0]["remote"].as_str().unwrap(),
        client.stream.local_addr().unwrap().to_string()
    );
    assert_eq!(rows[0]["protocol"], "text");
    assert_eq!(rows[0]["messages_in"], 1);
    // The tables too.
    assert!(cli.ok(&["status"]).contains(&pid.to_string()));
    assert!(cli
        .ok(&["connections"])
        .contains(&client.stream.local_addr().unwrap().to_string()));

    let said = cli.ok(&["stop"]);
    assert!(said.contains(&format!("stopped (pid {pid})")), "{said}");
    assert!(!running(pid), "stop returns once the process is gone");
    assert!(!cli.file("pid").exists(), "the pid file is removed");
    assert!(!cli.file("sock").exists(), "the control socket is removed");
    assert!(client.read_to_eof().is_empty(), "the client was closed");
    let err = cli.fails(&["status"]);
    assert!(err.contains("not running"), "{err}");
}

#[test]
fn a_second_start_says_already_running() {
    let cli = Cli::example("heartbeat");
    let (pid, addr) = cli.start_daemon(&[]);
    let err = cli.fails(&["start", "-d", "--listen", "127.0.0.1:0"]);
    assert!(
        err.contains(&format!("already running (pid {pid})")),
        "{err}"
    );
    let err = cli.fails(&["start", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("already running"), "{err}");
    // The first one is untouched.
    assert_eq!(cli.pid_file_pid(), Some(pid));
    assert_eq!(LineClient::connect(addr).roundtrip("still"), "still");
    cli.ok(&["stop"]);
}

/// A pid file naming a process that is gone, and a control socket no one
/// listens on, as a crash leaves them.
fn plant_stale_files(cli: &Cli) -> u32 {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(cli.run_dir())
        .unwrap();
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead = gone.id();
    gone.wait().unwrap();
    std::fs::write(cli.file("pid"), format!("{dead}\n")).unwrap();
    drop(std::os::unix::net::UnixListener::bind(cli.file("sock")).unwrap());
    assert!(cli.file("sock").exists());
    dead
}

#[test]
fn a_stale_pid_file_is_detected_and_replaced() {
    let cli = Cli::example("heartbeat");
    let dead = plant_stale_files(&cli);
    let err = cli.fails(&["status"]);
    assert!(
        err.contains(&format!("pid {dead} is gone")) && err.contains("stale"),
        "{err}"
    );
    assert!(!cli.file("pid").exists(), "the stale pid file is removed");

    plant_stale_files(&cli);
    let (pid, addr) = cli.start_daemon(&[]);
    assert_ne!(pid, dead);
    assert_eq!(cli.pid_file_pid(), Some(pid));
    assert_eq!(LineClient::connect(addr).roundtrip("up"), "up");
    cli.ok(&["stop"]);
}

#[test]
fn reload_tells_a_client_to_reconnect_and_never_refuses_a_connect() {
    let cli = Cli::example("heartbeat");
    let (old, addr) = cli.start_daemon(&[]);
    let mut client = LineClient::connect(addr);
    assert_eq!(client.roundtrip("before"), "before");

    let prober = Prober::start(addr);
    let said = cli.ok(&["reload", "--spread", "0.2", "--wait"]);
    let new = cli.pid_file_pid().expect("a pid file");
    cli.note_pid(new);
    assert!(said.contains(&format!("pid {old} exited")), "{said}");
    // The client was told, then closed.
    assert_eq!(client.line(), RESTART_LINE);
    assert!(client.read_to_eof().is_empty(), "nothing after the goodbye");
    // A few more connects to the new process only, then the count.
    let status = cli.status();
    let (connects, failures) = prober.finish();
    assert!(
        failures.is_empty(),
        "{} of {connects} connects failed during the reload: {failures:?}\n{}",
        failures.len(),
        cli.log()
    );
    assert!(connects > 0);

    assert_ne!(new, old);
    assert!(!running(old), "--wait returns once the old process is gone");
    assert_eq!(pid_of(&status), new);
    assert_eq!(status["reloads"], 1);
    assert_eq!(status["loops"][0]["accepting"], true);
    assert_eq!(
        cli_support::listen_of(&status),
        addr,
        "the same listening socket"
    );
    let mut again = LineClient::connect(addr);
    assert_eq!(again.roundtrip("after"), "after");
    cli.ok(&["stop"]);
    assert!(!running(new));
}

#[test]
fn reload_g_keeps_a_connected_client_on_the_old_process_until_it_leaves() {
    let cli = Cli::example("heartbeat");
    let (old, addr) = cli.start_daemon(&[]);
    let mut stays = LineClient::connect(addr);
    assert_eq!(stays.roundtrip("one"), "one");

    let said = cli.ok(&["reload", "-g", "--drain-timeout", "120"]);
    assert!(said.contains("keeps its connections"), "{said}");
    let status = cli.status();
    let new = pid_of(&status);
    assert_ne!(new, old);
    assert_eq!(status["reloads"], 1);
    assert_eq!(loops_sum(&status, "connections"), 0, "{status}");

    // The old process still serves its client; new clients go to the new.
    assert!(running(old));
    assert_eq!(stays.roundtrip("two"), "two");
    let mut fresh = LineClient::connect(addr);
    assert_eq!(fresh.roundtrip("new"), "new");
    let rows = cli.connections();
    let remotes: Vec<&str> = rows.iter().filter_map(|r| r["remote"].as_str()).collect();
    assert_eq!(
        remotes,
        [fresh.stream.local_addr().unwrap().to_string()],
        "the new process has the new client only"
    );
    assert!(running(old), "the old process waits for its client");

    drop(stays);
    cli.wait_gone(old);
    assert_eq!(fresh.roundtrip("still"), "still");
    cli.ok(&["stop"]);
}

#[test]
fn a_failed_reload_leaves_the_server_serving_and_the_next_one_succeeds() {
    let cli = Cli::copied_example("heartbeat");
    let (old, addr) = cli.start_daemon(&[]);
    let mut client = LineClient::connect(addr);
    assert_eq!(client.roundtrip("a"), "a");

    // The binary on disk is now one that exits 3 at once.
    cli.swap_binary_for_exit(3);
    let err = cli.fails(&["reload"]);
    assert!(
        err.contains("reload failed") && err.contains("exit status: 3"),
        "{err}"
    );
    assert!(err.contains("goes on"), "{err}");
    assert_eq!(
        client.roundtrip("b"),
        "b",
        "the old process goes on serving"
    );
    let status = cli.status();
    assert_eq!(pid_of(&status), old);
    assert_eq!(status["reloads"], 0);
    assert_eq!(status["loops"][0]["accepting"], true);
    assert_eq!(LineClient::connect(addr).roundtrip("c"), "c");

    // A good binary again: the reload goes through.
    cli.swap_binary(&ws_support::example_binary("heartbeat"));
    let said = cli.ok(&["reload", "--spread", "0", "--wait"]);
    assert!(said.contains("reloaded"), "{said}");
    let status = cli.status();
    assert_ne!(pid_of(&status), old);
    assert_eq!(status["reloads"], 1);
    assert_eq!(client.line(), RESTART_LINE);
    assert_eq!(LineClient::connect(addr).roundtrip("d"), "d");
    cli.ok(&["stop"]);
}

/// Waits until `path` holds `needle`.
#[track_caller]
fn wait_for_in_file(path: &std::path::Path, needle: &str) -> String {
    let start = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            start.elapsed() < cli_support::WAIT,
            "{needle:?} not in {} within {:?}:\n{text}",
            path.display(),
            cli_support::WAIT
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn reload_logs_and_sigusr1_reopen_the_log_after_a_rotation() {
    let cli = Cli::example("heartbeat");
    let (pid, addr) = cli.start_daemon(&[]);
    let log = cli.file("log");
    wait_for_in_file(&log, "started (pid");

    // logrotate's move, then `reload-logs`.
    let first = log.with_extension("log.1");
    std::fs::rename(&log, &first).unwrap();
    let said = cli.ok(&["reload-logs"]);
    assert!(said.contains("log file reopened"), "{said}");
    wait_for_in_file(&log, "log file reopened");
    let mut client = LineClient::connect(addr);
    assert_eq!(client.roundtrip("x"), "x");
    let port = client.stream.local_addr().unwrap().to_string();
    let now = wait_for_in_file(&log, &port);
    assert!(now.contains("connection"), "{now}");
    let rotated = std::fs::read_to_string(&first).unwrap();
    assert!(rotated.contains("started (pid"), "{rotated}");
    assert!(!rotated.contains(&port), "new lines go to the new file");

    // And again with SIGUSR1.
    let second = log.with_extension("log.2");
    std::fs::rename(&log, &second).unwrap();
    // SAFETY: kill(2) on the daemon this test started (its pid file's).
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGUSR1) }, 0);
    wait_for_in_file(&log, "log file reopened");
    drop(client);
    let other = LineClient::connect(addr);
    let port = other.stream.local_addr().unwrap().to_string();
    wait_for_in_file(&log, &port);
    assert!(!std::fs::read_to_string(&second).unwrap().contains(&port));
    cli.ok(&["stop"]);
}

#[test]
fn sigterm_stops_cleanly_and_log_file_names_the_log_of_every_process() {
    let cli = Cli::example("heartbeat");
    let custom = cli.dir().join("custom.log");
    let (first, addr) = cli.start_daemon(&["--log-file", custom.to_str().unwrap()]);
    // A reload's process writes there too, what it prints included.
    cli.ok(&["reload", "--spread", "0", "--wait"]);
    let pid = cli.pid_file_pid().expect("the new pid");
    assert_ne!(pid, first);
    wait_for_in_file(&custom, &format!("heartbeat started (pid {pid}"));
    wait_for("both processes' banners in --log-file", || {
        let text = std::fs::read_to_string(&custom).unwrap_or_default();
        text.matches("heartbeat: text://").count() == 2
    });
    let mut client = LineClient::connect(addr);
    assert_eq!(client.roundtrip("x"), "x");
    // SAFETY: kill(2) on the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) }, 0);
    cli.wait_gone(pid);
    assert!(client.read_to_eof().is_empty(), "the client was closed");
    assert!(!cli.file("pid").exists(), "the pid file is removed");
    assert!(!cli.file("sock").exists(), "the control socket is removed");
    let text = wait_for_in_file(&custom, &format!("stopped (pid {pid})"));
    assert!(text.contains("signal 15 received: stopping"), "{text}");
    assert!(
        !cli.file("log").exists(),
        "--log-file replaces the default log"
    );
    assert!(
        TcpStream::connect(addr).is_err(),
        "nothing listens any more"
    );
}

#[test]
fn with_no_command_the_server_runs_in_the_foreground_and_answers_commands() {
    let cli = Cli::example("heartbeat");
    let server = ws_support::ChildGuard::spawn(
        "heartbeat in the foreground",
        &mut cli.command(&["--listen", "127.0.0.1:0"]),
    );
    cli.note_pid(server.pid());
    // `heartbeat: text://127.0.0.1:PORT: sweep every...`
    let banner = server.line();
    let addr: SocketAddr = banner
        .strip_prefix("heartbeat: text://")
        .and_then(|rest| rest.split(": ").next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("the banner: {banner:?}"));
    assert_eq!(LineClient::connect(addr).roundtrip("hi"), "hi");
    let status = cli.status();
    assert_eq!(pid_of(&status), server.pid());
    assert_eq!(cli_support::listen_of(&status), addr);
    cli.ok(&["stop"]);
    let mut server = server;
    assert!(server.wait_exit(cli_support::WAIT).success());
    assert!(!cli.file("pid").exists());
}

#[test]
fn ws_chat_runs_under_the_command_line_and_a_reload_closes_members_with_1012() {
    let cli = Cli::example("ws_chat");
    let (old, addr) = cli.start_daemon(&[]);
    let mut ann = ws_raw::RawClient::connect_to(addr, "/ws?name=ann", &[]);
    assert_eq!(ann.next_event(), ws_raw::Ev::text("* ann joined"));
    let status = cli.status();
    assert_eq!(status["loops"][0]["protocol"], "ws");
    assert_eq!(loops_sum(&status, "connections"), 1);

    let said = cli.ok(&["reload", "--spread", "0", "--wait"]);
    assert!(said.contains(&format!("pid {old} exited")), "{said}");
    match ann.next_event() {
        ws_raw::Ev::Close(Some(1012), _) => {}
        other => panic!("expected a close 1012 (service restart), got {other:?}"),
    }
    // The new process has the room, empty: ann may join again.
    let mut again = ws_raw::RawClient::connect_to(addr, "/ws?name=ann", &[]);
    assert_eq!(again.next_event(), ws_raw::Ev::text("* ann joined"));
    assert_eq!(cli.status()["reloads"], 1);
    cli.ok(&["stop"]);
}

#[test]
fn cluster_chat_runs_under_the_command_line_and_a_reload_tells_clients_to_reconnect() {
    let cli = Cli::example("cluster_chat");
    let (old, addr) = cli.start_daemon(&["--node", "n1"]);
    let mut ann = LineClient::connect(addr);
    assert_eq!(ann.roundtrip("name ann"), "ok");
    assert_eq!(cli.connections().len(), 1);

    cli.ok(&["reload", "--spread", "0", "--wait"]);
    assert!(!running(old));
    assert_eq!(ann.line(), "server restarting: reconnect\n");
    assert!(ann.read_to_eof().is_empty());
    let mut back = LineClient::connect(addr);
    assert_eq!(back.roundtrip("name ann"), "ok");
    assert_eq!(cli.status()["reloads"], 1);
    cli.ok(&["stop"]);
}
