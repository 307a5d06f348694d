//! Workerman's command line for any lubdub server binary: `start [-d]`,
//! `stop [-g]`, `restart`, `reload [-g]`, `status [-d] [--json]`,
//! `connections [--json]` and `reload-logs`, from one call in `main`
//! (Workerman's `Worker::runAll()`).
//!
//! ```no_run
//! use lubdub::{cli, Text, Worker};
//!
//! /// An echo server.
//! #[derive(clap::Args)]
//! struct Args {
//!     /// The address to listen on
//!     #[arg(long, default_value = "127.0.0.1:1234")]
//!     listen: String,
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     cli::run("An echo server", |args: &Args, server| {
//!         let mut worker = Worker::<Text>::new(format!("text://{}", args.listen))?;
//!         worker.on_message(|c, line| {
//!             let _ = c.send(&line);
//!         });
//!         server.serve(&mut worker)?;
//!         Ok(())
//!     })
//! }
//! ```
//!
//! `app` (no command) and `app start` run the server in the foreground;
//! `app start -d` in the background, logging to a file. The other commands
//! find the running server through its control socket, a unix socket in
//! the run directory (`--run-dir`, default `$XDG_RUNTIME_DIR/lubdub`, else
//! `/tmp/lubdub-UID`) beside its pid file; the directory is the user's
//! alone and the server answers only its own user. SIGTERM and SIGINT stop
//! the server as `stop` does; SIGUSR1 reopens the log file.
//!
//! `reload` starts the binary anew (the file on disk now: a new build) with
//! the same arguments, hands it the listening sockets over the control
//! socket, waits until it serves them, then the old process stops accepting
//! and drains: each connection gets the protocol's goodbye (WebSocket close
//! 1012, a Text protocol's restart line), spread over `--spread`, so that
//! clients reconnect to the new process; with `-g` the old process keeps its
//! connections until they close by themselves or `--drain-timeout` passes.
//! No connect is refused meanwhile: the same sockets accept throughout.
//! docs/operations.md has the whole sequence.
//!
//! The flags `-d`, `--log-file`, `--log-level`, `--run-dir` and `--instance`
//! are the command line's: an application's own flags must use other names.

mod control;
mod logging;
mod rundir;
mod server;
mod status;

use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Child, Command as Process, ExitCode, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use clap::{CommandFactory, FromArgMatches, Parser};

use control::{Answer, Channel, Done, Handed, Request};
use logging::LogFile;
pub use rundir::default_run_dir;
use rundir::{process_alive, RunDir};
use server::Inherited;
pub use server::Server;
pub use status::{ConnRow, LoopRow, Status};

use lubdub_worker::Drain;

/// The environment variable that tells a process started by `start -d`
/// that it is the daemon.
const ENV_DAEMON: &str = "LUBDUB_DAEMON_CHILD";
/// The environment variable that gives a process started by `reload` the
/// token to ask the old process for its sockets with.
const ENV_HANDOVER: &str = "LUBDUB_HANDOVER";
/// How many reloads came before this process.
const ENV_RELOADS: &str = "LUBDUB_RELOADS";

/// How long a new process (a daemon, a reload's) may take to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a command waits for an answer on the control socket.
const ASK_TIMEOUT: Duration = Duration::from_secs(30);

/// What every command shares: where the running server is found.
#[derive(clap::Args, Debug, Clone)]
pub struct Place {
    /// Directory of the pid file, the control socket and a daemon's log [default: $XDG_RUNTIME_DIR/lubdub, else /tmp/lubdub-UID]
    #[arg(long, global = true, value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// This server's name in the run directory, to run several of one binary [default: the binary's name]
    #[arg(long, global = true, value_name = "NAME")]
    pub instance: Option<String>,
}

/// `start`'s flags, then the application's.
#[derive(clap::Args, Debug, Clone)]
pub struct StartArgs<A: clap::Args> {
    /// Run in the background as a daemon, logging to --log-file
    #[arg(short = 'd', long)]
    pub daemon: bool,
    /// Write the log to FILE (reopened on SIGUSR1 and `reload-logs`) [default for -d: RUN_DIR/INSTANCE.log]
    #[arg(long, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
    /// The least severe log level written
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    pub log_level: log::LevelFilter,
    /// Serve Prometheus metrics on http://ADDR/metrics (a private address: no authentication)
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub app: A,
}

/// `stop`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StopArgs {
    /// Graceful: stop accepting, let connections close by themselves (at most --timeout), then stop
    #[arg(short = 'g', long)]
    pub graceful: bool,
    /// How long a graceful stop waits for connections, in seconds
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,
}

/// `reload`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ReloadArgs {
    /// Graceful: the old process keeps its connections until they close by themselves (at most --drain-timeout)
    #[arg(short = 'g', long)]
    pub graceful: bool,
    /// How long the old process may drain, in seconds; then it closes what is left
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub drain_timeout: u64,
    /// Without -g: the goodbyes are spread over this many seconds, so clients do not all come back at once
    #[arg(long, value_name = "SECS", default_value_t = 1.0)]
    pub spread: f64,
    /// Return only once the old process has exited
    #[arg(long)]
    pub wait: bool,
}

/// `status`'s flags.
#[derive(clap::Args, Debug, Clone)]
pub struct StatusArgs {
    /// Refresh every second until interrupted
    #[arg(short = 'd', long)]
    pub live: bool,
    /// Print JSON instead of tables
    #[arg(long)]
    pub json: bool,
}

/// `connections`' flags.
#[derive(clap::Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Print JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// The commands.
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command<A: clap::Args> {
    /// Start the server, in the foreground (-d: in the background)
    Start(StartArgs<A>),
    /// Stop the running server
    Stop(StopArgs),
    /// Stop the running server, then start it with these arguments
    Restart(StartArgs<A>),
    /// Replace the running server by a new process of this binary without refusing a connect
    Reload(ReloadArgs),
    /// The running server's figures, per event loop
    Status(StatusArgs),
    /// The running server's connections, one per line
    Connections(ConnectionsArgs),
    /// Make the running server reopen its log file (after logrotate moved it)
    ReloadLogs,
}

/// The whole command line: a command, or none and `start`'s flags (the
/// server in the foreground).
#[derive(Parser, Debug)]
#[command(subcommand_negates_reqs = true)]
pub struct Cli<A: clap::Args> {
    #[command(subcommand)]
    pub command: Option<Command<A>>,
    #[command(flatten)]
    pub start: StartArgs<A>,
    #[command(flatten)]
    pub place: Place,
}

/// What `build` may fail with.
pub type BuildError = Box<dyn std::error::Error + Send + Sync>;

/// Parses the command line and runs its command; `build` starts the
/// server's workers (with [`Server::serve`]) from the application's flags
/// `A` when the command starts a server. Returns the process's exit code.
/// `about` is the first line of `--help`.
pub fn run<A, F>(about: &str, build: F) -> ExitCode
where
    A: clap::Args,
    F: FnOnce(&A, &mut Server) -> Result<(), BuildError>,
{
    parse::<A>(about).run(build)
}

/// Parses the command line (exits with clap's message on an error), for
/// an application that looks at its flags before [`Cli::run`].
pub fn parse<A: clap::Args>(about: &str) -> Cli<A> {
    let command = Cli::<A>::command()
        .name(binary_name())
        .about(about.to_owned());
    let matches = command.get_matches();
    Cli::<A>::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

impl<A: clap::Args> Cli<A> {
    /// The application's flags, when the command starts a server (none,
    /// `start`, `restart`).
    pub fn app(&self) -> Option<&A> {
        match &self.command {
            None => Some(&self.start.app),
            Some(Command::Start(s) | Command::Restart(s)) => Some(&s.app),
            Some(_) => None,
        }
    }

    /// Runs the command, as [`run`] does.
    pub fn run<F>(self, build: F) -> ExitCode
    where
        F: FnOnce(&A, &mut Server) -> Result<(), BuildError>,
    {
        let bin = binary_name();
        let run = RunDir::new(
            self.place.run_dir.clone().unwrap_or_else(default_run_dir),
            self.place.instance.as_deref().unwrap_or(&bin),
        );
        let started_by_us =
            std::env::var_os(ENV_DAEMON).is_some() || std::env::var_os(ENV_HANDOVER).is_some();
        let result = match self.command {
            None => start(&run, self.start, build),
            Some(Command::Start(s)) => start(&run, s, build),
            // A daemon or a reload's process started as `restart` starts.
            Some(Command::Restart(s)) if started_by_us => start(&run, s, build),
            Some(Command::Restart(s)) => restart(&run, s, build),
            Some(Command::Stop(a)) => stop(&run, &a),
            Some(Command::Reload(a)) => reload(&run, &a),
            Some(Command::Status(a)) => status(&run, &a),
            Some(Command::Connections(a)) => connections(&run, &a),
            Some(Command::ReloadLogs) => reload_logs(&run),
        };
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(msg) => {
                log::error!("{msg}");
                eprintln!("{}: {msg}", run.instance());
                ExitCode::FAILURE
            }
        }
    }
}

fn binary_name() -> String {
    std::env::args_os()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "lubdub".to_owned())
}

/// The pid of the server that answers on the control socket, if one does.
/// A pid file no live process answers for is stale: removed.
fn running(run: &RunDir) -> Option<u32> {
    let pid = run.read_pid()?;
    if let Ok(mut ch) = Channel::connect(&run.socket(), Duration::from_secs(5)) {
        if let Ok(Answer::Pong(p)) = ch.ask(&Request::Ping) {
            return Some(p.pid);
        }
    }
    if process_alive(pid) {
        // Alive but silent: starting, or hung; not ours to remove.
        return Some(pid);
    }
    run.remove_stale();
    None
}

/// A control connection to the running server, or why there is none.
fn connect(run: &RunDir) -> Result<Channel, String> {
    let socket = run.socket();
    match Channel::connect(&socket, ASK_TIMEOUT) {
        Ok(ch) => Ok(ch),
        Err(e) => match run.read_pid() {
            None => Err(format!(
                "not running (no pid file in {})",
                socket
                    .parent()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )),
            Some(pid) if process_alive(pid) => Err(format!(
                "pid {pid} is alive but does not answer on {}: {e}",
                socket.display()
            )),
            Some(pid) => {
                run.remove_stale();
                Err(format!(
                    "not running (pid {pid} is gone; its stale pid file was removed)"
                ))
            }
        },
    }
}

fn ask(run: &RunDir, request: &Request) -> Result<Answer, String> {
    connect(run)?
        .ask(request)
        .map_err(|e| format!("control socket: {e}"))
}

fn expect_done(answer: Answer) -> Result<String, String> {
    match answer {
        Answer::Done(d) if d.ok => Ok(d.message),
        Answer::Done(d) => Err(d.message),
        other => Err(format!("unexpected answer: {other:?}")),
    }
}

/// Waits until process `pid` is gone, at most `timeout`.
fn wait_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while process_alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    true
}

fn stop(run: &RunDir, args: &StopArgs) -> Result<(), String> {
    let pid = running(run).ok_or("not running")?;
    let timeout = Duration::from_secs(args.timeout);
    expect_done(ask(
        run,
        &Request::Stop {
            graceful: args.graceful,
            timeout_ms: timeout.as_millis() as u64,
        },
    )?)?;
    // Beyond the drain: the worker's own stop timeout, and some slack.
    if !wait_gone(pid, timeout + Duration::from_secs(30)) {
        return Err(format!("pid {pid} asked to stop is still running"));
    }
    println!("{} stopped (pid {pid})", run.instance());
    Ok(())
}

fn restart<A, F>(run: &RunDir, s: StartArgs<A>, build: F) -> Result<(), String>
where
    A: clap::Args,
    F: FnOnce(&A, &mut Server) -> Result<(), BuildError>,
{
    if running(run).is_some() {
        stop(
            run,
            &StopArgs {
                graceful: false,
                timeout: 60,
            },
        )?;
    }
    start(run, s, build)
}

fn reload(run: &RunDir, args: &ReloadArgs) -> Result<(), String> {
    let old = running(run).ok_or("not running")?;
    let mut ch = connect(run)?;
    // The new process may take a while to build its workers.
    let _ = ch
        .stream()
        .set_read_timeout(Some(READY_TIMEOUT + ASK_TIMEOUT));
    let message = expect_done(
        ch.ask(&Request::Reload {
            graceful: args.graceful,
            drain_ms: (args.drain_timeout * 1000),
            spread_ms: (args.spread.max(0.0) * 1000.0) as u64,
        })
        .map_err(|e| format!("control socket: {e}"))?,
    )?;
    println!("{message}");
    if args.wait {
        let limit = Duration::from_secs(args.drain_timeout) + Duration::from_secs(30);
        if !wait_gone(old, limit) {
            return Err(format!("the old process {old} is still running"));
        }
        println!("pid {old} exited");
    }
    Ok(())
}

fn status(run: &RunDir, args: &StatusArgs) -> Result<(), String> {
    let mut ch = connect(run)?;
    loop {
        let answer = ch
            .ask(&Request::Status { sample_ms: 1000 })
            .map_err(|e| format!("control socket: {e}"))?;
        let Answer::Status(s) = answer else {
            return Err(format!("unexpected answer: {answer:?}"));
        };
        let text = if args.json {
            serde_json::to_string_pretty(&s).map_err(|e| e.to_string())? + "\n"
        } else {
            s.render()
        };
        let mut out = std::io::stdout().lock();
        if args.live {
            // Clear the screen and print at the top, as `top` does.
            let _ = write!(out, "\x1b[2J\x1b[H");
        }
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        if !args.live {
            return Ok(());
        }
    }
}

fn connections(run: &RunDir, args: &ConnectionsArgs) -> Result<(), String> {
    let answer = ask(run, &Request::Connections)?;
    let Answer::Connections(c) = answer else {
        return Err(format!("unexpected answer: {answer:?}"));
    };
    let text = if args.json {
        serde_json::to_string_pretty(&c.rows).map_err(|e| e.to_string())? + "\n"
    } else {
        status::render_connections(&c.rows)
    };
    let _ = std::io::stdout().write_all(text.as_bytes());
    Ok(())
}

fn reload_logs(run: &RunDir) -> Result<(), String> {
    let message = expect_done(ask(run, &Request::ReloadLogs)?)?;
    println!("{message}");
    Ok(())
}

/// What the main thread of a running server waits for.
enum Event {
    /// Stop: `graceful` lets connections close by themselves until
    /// `deadline`.
    Stop { graceful: bool, deadline: Instant },
    /// A new process serves the sockets now: drain as said, then exit.
    HandedOver { how: Drain, deadline: Instant },
}

/// A reload this process started, waiting for its new process.
struct PendingReload {
    token: String,
    ready: Sender<u32>,
}

/// What the control socket's threads share with the main thread.
struct Running {
    run: RunDir,
    server: Server,
    started: SystemTime,
    started_at: Instant,
    reloads: u64,
    daemon: bool,
    log: Option<LogFile>,
    exe: PathBuf,
    args: Vec<OsString>,
    events: Mutex<Sender<Event>>,
    pending: Mutex<Option<PendingReload>>,
}

fn start<A, F>(run: &RunDir, s: StartArgs<A>, build: F) -> Result<(), String>
where
    A: clap::Args,
    F: FnOnce(&A, &mut Server) -> Result<(), BuildError>,
{
    run.prepare().map_err(|e| e.to_string())?;
    let daemon_child = std::env::var_os(ENV_DAEMON).is_some();
    let token = std::env::var(ENV_HANDOVER).ok();
    let reloads: u64 = std::env::var(ENV_RELOADS)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    // Not for the processes this one starts (the app's or a reload's,
    // which get theirs explicitly).
    for var in [ENV_DAEMON, ENV_HANDOVER, ENV_RELOADS] {
        std::env::remove_var(var);
    }
    if token.is_none() {
        if let Some(pid) = running(run) {
            return Err(format!("already running (pid {pid})"));
        }
        if s.daemon && !daemon_child {
            return spawn_daemon(run, &s);
        }
    }
    if daemon_child {
        // Out of the terminal's session: closing it does not stop us.
        let _ = rustix::process::setsid();
    }
    let log_path = s
        .log_file
        .clone()
        .or_else(|| daemon_child.then(|| run.log_file()));
    let log = match &log_path {
        Some(p) => Some(LogFile::open(p).map_err(|e| format!("log file: {e}"))?),
        None => None,
    };
    logging::init(s.log_level, log.clone());

    let mut handover = None;
    let inherited = match &token {
        Some(token) => {
            let (ch, inherited) = take_sockets(run, token)?;
            handover = Some(ch);
            inherited
        }
        None => Inherited::default(),
    };
    let mut server = Server::new(inherited);
    if let Err(e) = build(&s.app, &mut server) {
        for w in &server.served {
            w.stop();
            w.wait();
        }
        return Err(format!("could not start: {e}"));
    }
    if let Some(addr) = s.metrics {
        if let Err(e) = server.serve_metrics(addr) {
            for w in &server.served {
                w.stop();
                w.wait();
            }
            return Err(e);
        }
    }
    for d in server.inherited.unclaimed() {
        log::warn!(
            "a listening socket of the previous process's worker {} (#{}) has no worker here: \
             connects waiting in it are lost when it closes",
            d.name,
            d.index
        );
    }
    if server.served.is_empty() {
        return Err("the application started no worker (Server::serve)".into());
    }

    // The control socket under a name of its own, renamed over the
    // instance's: a command finds either the old process or this one.
    let next = run.next_socket();
    let _ = std::fs::remove_file(&next);
    let listener = std::os::unix::net::UnixListener::bind(&next)
        .map_err(|e| format!("control socket {}: {e}", next.display()))?;
    // The directory keeps others out already; the socket too.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&next, std::fs::Permissions::from_mode(0o600));
    }
    std::fs::rename(&next, run.socket()).map_err(|e| format!("control socket: {e}"))?;
    run.write_pid().map_err(|e| format!("pid file: {e}"))?;

    let (tx, rx) = mpsc::channel();
    let running = Arc::new(Running {
        run: run.clone(),
        server,
        started: SystemTime::now(),
        started_at: Instant::now(),
        reloads,
        daemon: daemon_child,
        log,
        exe: std::env::current_exe().map_err(|e| format!("the binary's path: {e}"))?,
        args: std::env::args_os().skip(1).collect(),
        events: Mutex::new(tx.clone()),
        pending: Mutex::new(None),
    });
    {
        let running = running.clone();
        std::thread::Builder::new()
            .name("lubdub-control".into())
            .spawn(move || serve_control(&running, listener))
            .map_err(|e| e.to_string())?;
    }
    watch_signals(&running, tx)?;
    if let Some(mut ch) = handover {
        let _ = ch.send(&Request::Ready {
            pid: std::process::id(),
        });
        match ch.recv::<Answer>() {
            Ok(Some(Answer::Done(d))) if d.ok => {}
            other => log::warn!("the previous process did not confirm the handover: {other:?}"),
        }
    }
    log::info!(
        "{} started (pid {}, run directory {})",
        run.instance(),
        std::process::id(),
        run.socket()
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    );
    let code = main_loop(&running, &rx);
    running.run.remove_if_mine();
    code
}

/// Asks the process a reload came from for its listening sockets.
fn take_sockets(run: &RunDir, token: &str) -> Result<(Channel, Inherited), String> {
    let mut ch = Channel::connect(&run.socket(), READY_TIMEOUT)
        .map_err(|e| format!("reload: the previous process's control socket: {e}"))?;
    ch.send(&Request::Handover {
        token: token.to_owned(),
    })
    .map_err(|e| format!("reload: {e}"))?;
    let (handed, fds): (Handed, _) = ch
        .recv_with_fds()
        .map_err(|e| format!("reload: receiving the listening sockets: {e}"))?;
    if handed.sockets.len() != fds.len() {
        return Err(format!(
            "reload: {} sockets described, {} received",
            handed.sockets.len(),
            fds.len()
        ));
    }
    log::info!(
        "reload: {} listening socket(s) received from the previous process",
        fds.len()
    );
    Ok((ch, Inherited::new(handed.sockets, fds)))
}

/// Starts this binary again as a daemon and waits until it answers.
fn spawn_daemon<A: clap::Args>(run: &RunDir, s: &StartArgs<A>) -> Result<(), String> {
    let log_path = s.log_file.clone().unwrap_or_else(|| run.log_file());
    let out = logging::open_append(&log_path).map_err(|e| format!("log file: {e}"))?;
    let err = out.try_clone().map_err(|e| e.to_string())?;
    let exe = std::env::current_exe().map_err(|e| format!("the binary's path: {e}"))?;
    let mut child = Process::new(exe)
        .args(std::env::args_os().skip(1))
        .env(ENV_DAEMON, "1")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .map_err(|e| format!("starting the daemon: {e}"))?;
    match wait_ready(run, &mut child) {
        Ok(pid) => {
            println!(
                "{} started in the background (pid {pid}); log: {}",
                run.instance(),
                log_path.display()
            );
            Ok(())
        }
        Err(why) => Err(format!("{why}; see {}", log_path.display())),
    }
}

/// Waits until `child` answers on the instance's control socket.
fn wait_ready(run: &RunDir, child: &mut Child) -> Result<u32, String> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited at start ({status})"));
        }
        if let Ok(mut ch) = Channel::connect(&run.socket(), Duration::from_secs(5)) {
            if let Ok(Answer::Pong(p)) = ch.ask(&Request::Ping) {
                if p.pid == child.id() {
                    return Ok(p.pid);
                }
            }
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the server was not ready within {READY_TIMEOUT:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn watch_signals(running: &Arc<Running>, tx: Sender<Event>) -> Result<(), String> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGUSR1])
        .map_err(|e| format!("signals: {e}"))?;
    let running = running.clone();
    std::thread::Builder::new()
        .name("lubdub-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if sig == SIGUSR1 {
                    reopen_log(&running);
                    continue;
                }
                log::info!("signal {sig} received: stopping");
                let _ = tx.send(Event::Stop {
                    graceful: false,
                    deadline: Instant::now(),
                });
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(())
}

fn reopen_log(running: &Running) -> Done {
    match &running.log {
        Some(log) => match log.reopen() {
            Ok(()) => {
                log::info!("log file reopened");
                Done::ok("log file reopened")
            }
            Err(e) => Done::failed(format!("reopening the log file: {e}")),
        },
        None => Done::failed("the server logs to stderr, not to a file"),
    }
}

/// Waits for a stop or a handover and carries it out; the exit code.
fn main_loop(running: &Running, rx: &Receiver<Event>) -> Result<(), String> {
    let served = &running.server.served;
    let (how, deadline) = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(Event::Stop { graceful, deadline }) => {
                break (graceful.then_some(Drain::Graceful), deadline);
            }
            Ok(Event::HandedOver { how, deadline }) => break (Some(how), deadline),
            Err(RecvTimeoutError::Timeout) => {
                if served.iter().any(|w| w.stopping()) {
                    log::error!("a worker stopped by itself: stopping the server");
                    break (None, Instant::now());
                }
            }
            Err(RecvTimeoutError::Disconnected) => break (None, Instant::now()),
        }
    };
    if let Some(how) = how {
        // Drain the workers side by side, each until the same deadline.
        std::thread::scope(|scope| {
            for w in served {
                scope.spawn(move || {
                    if !w.drain(how, deadline) {
                        log::info!(
                            "worker {}: drain deadline reached with connections left; closing them",
                            w.name()
                        );
                    }
                });
            }
        });
    }
    for w in served {
        w.stop();
    }
    for w in served {
        w.wait();
    }
    log::info!(
        "{} stopped (pid {})",
        running.run.instance(),
        std::process::id()
    );
    Ok(())
}

fn serve_control(running: &Arc<Running>, listener: std::os::unix::net::UnixListener) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        if !control::peer_is_me(&stream) {
            log::warn!("control socket: a connection from another user refused");
            continue;
        }
        let running = running.clone();
        let _ = std::thread::Builder::new()
            .name("lubdub-control-conn".into())
            .spawn(move || {
                let _ = stream.set_read_timeout(Some(READY_TIMEOUT));
                if let Ok(mut ch) = Channel::new(stream) {
                    while let Ok(Some(request)) = ch.recv::<Request>() {
                        if !answer(&running, &mut ch, request) {
                            break;
                        }
                    }
                }
            });
    }
}

/// Answers one request; whether the connection may carry another.
fn answer(running: &Arc<Running>, ch: &mut Channel, request: Request) -> bool {
    let server = &running.server;
    let sent = match request {
        Request::Ping => ch.send(&control::Pong {
            pid: std::process::id(),
            instance: running.run.instance().to_owned(),
        }),
        Request::Status { sample_ms } => {
            let sample = Duration::from_millis(sample_ms.min(10_000));
            let (loops, sample_secs) = server.loop_rows(sample);
            ch.send(&Status {
                instance: running.run.instance().to_owned(),
                pid: std::process::id(),
                started: humantime::format_rfc3339_seconds(running.started).to_string(),
                uptime_secs: running.started_at.elapsed().as_secs(),
                load: load_average(),
                rss_bytes: resident_bytes(),
                reloads: running.reloads,
                sample_secs,
                loops,
            })
        }
        Request::Connections => ch.send(&control::Connections {
            rows: server.connection_rows(),
        }),
        Request::Stop {
            graceful,
            timeout_ms,
        } => {
            let deadline = Instant::now() + Duration::from_millis(timeout_ms);
            let event = Event::Stop { graceful, deadline };
            let _ = lock(&running.events).send(event);
            ch.send(&Done::ok("stopping"))
        }
        Request::ReloadLogs => ch.send(&reopen_log(running)),
        Request::Reload {
            graceful,
            drain_ms,
            spread_ms,
        } => {
            let how = if graceful {
                Drain::Graceful
            } else {
                Drain::Restart {
                    spread: Duration::from_millis(spread_ms),
                }
            };
            let deadline = Duration::from_millis(drain_ms);
            ch.send(&start_reload(running, how, deadline))
        }
        Request::Handover { token } => return hand_over(running, ch, &token),
        Request::Ready { .. } => ch.send(&Done::failed("no handover under way")),
    };
    sent.is_ok()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts the new process, waits until it serves the handed sockets, and
/// tells the main thread to drain.
fn start_reload(running: &Arc<Running>, how: Drain, drain: Duration) -> Done {
    let mut bytes = [0u8; 16];
    if let Err(e) = getrandom::getrandom(&mut bytes) {
        return Done::failed(format!("reload: no randomness for the token: {e}"));
    }
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let (ready_tx, ready_rx) = mpsc::channel();
    {
        let mut pending = lock(&running.pending);
        if pending.is_some() {
            return Done::failed("a reload is already under way");
        }
        *pending = Some(PendingReload {
            token: token.clone(),
            ready: ready_tx,
        });
    }
    let outcome = run_new_process(running, &token, &ready_rx);
    *lock(&running.pending) = None;
    match outcome {
        Ok(new_pid) => {
            let deadline = Instant::now() + drain;
            let _ = lock(&running.events).send(Event::HandedOver { how, deadline });
            let mode = match how {
                Drain::Graceful => "keeps its connections until they close".to_owned(),
                _ => "tells its clients to reconnect".to_owned(),
            };
            log::info!(
                "reload: pid {new_pid} serves the listening sockets now; this process {mode}"
            );
            Done::ok(format!(
                "reloaded: pid {} handed its listening sockets to pid {new_pid} and {mode} (at most {}s)",
                std::process::id(),
                drain.as_secs()
            ))
        }
        Err(why) => {
            log::error!("reload failed: {why}; this process goes on serving");
            Done::failed(format!("reload failed: {why}; the running server goes on"))
        }
    }
}

fn run_new_process(running: &Running, token: &str, ready: &Receiver<u32>) -> Result<u32, String> {
    let mut cmd = Process::new(&running.exe);
    cmd.args(&running.args)
        .env(ENV_HANDOVER, token)
        .env(ENV_RELOADS, (running.reloads + 1).to_string())
        .stdin(Stdio::null());
    if running.daemon {
        cmd.env(ENV_DAEMON, "1");
        let log_path = running.run.log_file();
        if let Ok(out) = logging::open_append(&log_path) {
            if let Ok(err) = out.try_clone() {
                cmd.stdout(out).stderr(err);
            }
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", running.exe.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let result = loop {
        match ready.recv_timeout(Duration::from_millis(50)) {
            Ok(pid) => break Ok(pid),
            Err(RecvTimeoutError::Disconnected) => break Err("the handover was abandoned".into()),
            Err(RecvTimeoutError::Timeout) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            break Err(format!(
                "the new process exited before it was ready ({status})"
            ));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            break Err(format!(
                "the new process was not ready within {READY_TIMEOUT:?}"
            ));
        }
    };
    // Reap the child whenever it exits, while this process lives.
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    result
}

/// Hands the listening sockets to the process a reload started, then
/// waits for it to say it serves them and stops accepting.
fn hand_over(running: &Running, ch: &mut Channel, token: &str) -> bool {
    let ready = {
        let pending = lock(&running.pending);
        match pending.as_ref() {
            Some(p) if p.token == token => p.ready.clone(),
            _ => {
                let _ = ch.send(&Done::failed("no reload expects this process"));
                return false;
            }
        }
    };
    let sockets = match running.server.handover() {
        Ok(s) => s,
        Err(e) => {
            let _ = ch.send(&Done::failed(format!("copying the listening sockets: {e}")));
            return false;
        }
    };
    let (described, fds): (Vec<_>, Vec<std::os::fd::OwnedFd>) = sockets
        .into_iter()
        .map(|(d, l)| (d, std::os::fd::OwnedFd::from(l)))
        .unzip();
    if let Err(e) = ch.send_with_fds(&Handed { sockets: described }, &fds) {
        log::error!("reload: handing over the listening sockets: {e}");
        return false;
    }
    drop(fds);
    match ch.recv::<Request>() {
        Ok(Some(Request::Ready { pid })) => {
            for w in &running.server.served {
                w.stop_accepting();
            }
            if let Some(m) = &running.server.metrics_server {
                m.stop_accepting();
            }
            let _ = ch.send(&Done::ok("handed over"));
            let _ = ready.send(pid);
        }
        other => log::error!("reload: the new process did not get ready: {other:?}"),
    }
    false
}

/// `/proc/loadavg`'s three figures (zeros where there is none).
fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut out = [0.0; 3];
    for (slot, v) in out.iter_mut().zip(text.split_whitespace()) {
        *slot = v.parse().unwrap_or(0.0);
    }
    out
}

/// The process's resident memory (`/proc/self/statm`), 0 where unknown.
fn resident_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = text
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * rustix::param::page_size() as u64
}
