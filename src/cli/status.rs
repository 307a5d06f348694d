//! What `status` and `connections` report, and how they print it: the
//! figures Workerman's `status` shows, per event loop.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A running server, as `status` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// The instance (the binary's name, or `--instance`).
    pub instance: String,
    pub pid: u32,
    /// When the process started, RFC 3339.
    pub started: String,
    pub uptime_secs: u64,
    /// `/proc/loadavg`'s three load averages.
    pub load: [f64; 3],
    /// The process's resident memory in bytes.
    pub rss_bytes: u64,
    /// Reloads this instance went through (the count is handed on).
    pub reloads: u64,
    /// The seconds over which `messages_per_sec` were measured.
    pub sample_secs: f64,
    pub loops: Vec<LoopRow>,
}

/// One event loop of one worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoopRow {
    pub worker: String,
    pub protocol: String,
    pub listen: String,
    /// Whether the worker still accepts (false while a reload drains it).
    pub accepting: bool,
    #[serde(rename = "loop")]
    pub loop_index: usize,
    /// Bytes this loop's connections hold: queued output and buffered input.
    pub memory_bytes: u64,
    pub connections: usize,
    /// Sockets open, handshaking and lingering ones included.
    pub sockets: usize,
    pub accepted: u64,
    pub closed: u64,
    /// Buffer-full episodes: sends refused or delayed because a peer did
    /// not read (Workerman's `send_fail`).
    pub send_fail: u64,
    pub handshake_failures: u64,
    pub timers: usize,
    pub messages_in: u64,
    pub messages_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Messages in and out per second over the sample.
    pub messages_per_sec: f64,
}

/// One connection, as `connections` lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnRow {
    pub id: u64,
    pub worker: String,
    #[serde(rename = "loop")]
    pub loop_index: usize,
    pub protocol: String,
    pub remote: String,
    pub local: String,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub messages_in: u64,
    pub messages_out: u64,
    pub send_queue: usize,
    pub state: String,
    pub age_secs: f64,
    pub idle_secs: f64,
}

/// A byte count for people: `512 B`, `1.5 MiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// A duration for people: `3d 4h`, `2h 5m`, `42s`.
fn span(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// Lays rows out in columns, each as wide as its widest cell.
fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (cell, w) in cells.zip(&widths) {
            let _ = write!(l, "{cell:<w$}  ");
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut head.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

impl Status {
    /// The text `status` prints.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "---------------------------------------- GLOBAL STATUS ----------------------------------------"
        );
        let _ = writeln!(
            out,
            "lubdub {}   instance {}   pid {}",
            env!("CARGO_PKG_VERSION"),
            self.instance,
            self.pid
        );
        let _ = writeln!(
            out,
            "started {}   up {}   reloads {}",
            self.started,
            span(self.uptime_secs),
            self.reloads
        );
        let _ = writeln!(
            out,
            "load average {:.2}, {:.2}, {:.2}   memory {}",
            self.load[0],
            self.load[1],
            self.load[2],
            bytes(self.rss_bytes)
        );
        let total_conns: usize = self.loops.iter().map(|l| l.connections).sum();
        let total_msgs: u64 = self.loops.iter().map(|l| l.messages_in).sum();
        let total_rate: f64 = self.loops.iter().map(|l| l.messages_per_sec).sum();
        let _ = writeln!(
            out,
            "{} loop(s)   {total_conns} connection(s)   {total_msgs} message(s) in   {total_rate:.0} msg/s (over {:.1} s)",
            self.loops.len(),
            self.sample_secs
        );
        let _ = writeln!(
            out,
            "---------------------------------------- LOOP STATUS ------------------------------------------"
        );
        let rows: Vec<Vec<String>> = self
            .loops
            .iter()
            .map(|l| {
                vec![
                    l.worker.clone(),
                    l.loop_index.to_string(),
                    bytes(l.memory_bytes),
                    format!(
                        "{}://{}{}",
                        l.protocol,
                        l.listen,
                        if l.accepting { "" } else { " (draining)" }
                    ),
                    l.connections.to_string(),
                    l.send_fail.to_string(),
                    l.timers.to_string(),
                    l.messages_in.to_string(),
                    format!("{:.0}", l.messages_per_sec),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "worker",
                "loop",
                "memory",
                "listening",
                "connections",
                "send_fail",
                "timers",
                "total_messages",
                "msg/s",
            ],
            &rows,
        ));
        out
    }
}

/// The text `connections` prints.
pub fn render_connections(rows: &[ConnRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|c| {
            vec![
                c.id.to_string(),
                c.worker.clone(),
                c.loop_index.to_string(),
                c.protocol.clone(),
                c.remote.clone(),
                bytes(c.bytes_in),
                bytes(c.bytes_out),
                c.send_queue.to_string(),
                c.state.clone(),
                span(c.age_secs as u64),
                span(c.idle_secs as u64),
            ]
        })
        .collect();
    let mut out = table(
        &[
            "id", "worker", "loop", "protocol", "remote", "in", "out", "send_q", "state", "age",
            "idle",
        ],
        &cells,
    );
    let _ = writeln!(out, "{} connection(s)", rows.len());
    out
}

/// Seconds with a fraction, for the JSON rows.
pub fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_like_workermans() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(span(42), "42s");
        assert_eq!(span(3725), "1h 2m");
        assert_eq!(span(90_061), "1d 1h");
        let t = table(&["a", "bb"], &[vec!["long".into(), "x".into()]]);
        assert_eq!(t, "a     bb\nlong  x\n");
    }
}
