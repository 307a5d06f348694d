//! What the hub's own tests share: a line client of a test server.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// Generous bound for any line a test awaits.
pub const WAIT: Duration = Duration::from_secs(20);

/// A line client: reads block up to [`WAIT`].
pub struct Peer {
    pub w: TcpStream,
    r: BufReader<TcpStream>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        let w = TcpStream::connect(addr).unwrap();
        w.set_read_timeout(Some(WAIT)).unwrap();
        let r = BufReader::new(w.try_clone().unwrap());
        Peer { w, r }
    }

    /// Sends `line` and a newline.
    pub fn send(&mut self, line: &str) {
        self.w.write_all(format!("{line}\n").as_bytes()).unwrap();
    }

    /// The next line (panics when none comes in time or the server
    /// closed).
    pub fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.r.read_line(&mut s).expect("a line in time");
        assert!(n > 0, "closed while a line was expected");
        s.trim_end().to_owned()
    }

    /// Sends `line`; the reply.
    pub fn ask(&mut self, line: &str) -> String {
        self.send(line);
        self.line()
    }

    /// Sends a command whose reply is `ok`.
    pub fn cmd(&mut self, line: &str) {
        assert_eq!(self.ask(line), "ok", "{line}");
    }
}
