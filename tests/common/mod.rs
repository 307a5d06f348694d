//! Helpers shared by the loopback integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Generous bound for any event a test awaits (loaded 2-core CI machine).
pub const WAIT: Duration = Duration::from_secs(20);

/// Receives from a channel or fails the test after `WAIT`.
pub fn recv<T>(rx: &Receiver<T>) -> T {
    match rx.recv_timeout(WAIT) {
        Ok(v) => v,
        Err(RecvTimeoutError::Timeout) => panic!("event not seen within {WAIT:?}"),
        Err(RecvTimeoutError::Disconnected) => panic!("event channel closed"),
    }
}

/// Polls `cond` until it holds or `WAIT` passes (for state with no event).
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < WAIT, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Bytes written to `stream` that the peer's kernel has not acknowledged
/// yet (`SIOCOUTQ`); 0 means they sit in the peer socket's receive queue,
/// whether or not the peer accepted the connection. `None` where the
/// platform cannot tell.
pub fn unacked_bytes(stream: &TcpStream) -> Option<usize> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: SIOCOUTQ (= TIOCOUTQ) writes one int through the pointer.
        let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
        assert_eq!(rc, 0, "SIOCOUTQ: {}", std::io::Error::last_os_error());
        Some(usize::try_from(n).expect("a byte count"))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = stream;
        None
    }
}

/// A blocking line client with a read timeout.
pub struct LineClient {
    pub stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl LineClient {
    pub fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).expect("connect"))
    }

    /// A client over a stream connected already.
    pub fn from_stream(stream: TcpStream) -> Self {
        stream.set_read_timeout(Some(WAIT)).unwrap();
        stream.set_nodelay(true).unwrap();
        let reader = BufReader::new(stream.try_clone().unwrap());
        LineClient { stream, reader }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write");
    }

    pub fn line(&mut self) -> String {
        let mut s = String::new();
        let n = self.reader.read_line(&mut s).expect("read line");
        assert!(n > 0, "connection closed while a line was expected");
        s
    }

    /// Sends `text\n` and returns the reply line (without `\n`).
    pub fn roundtrip(&mut self, text: &str) -> String {
        self.send(format!("{text}\n").as_bytes());
        self.line().trim_end_matches('\n').to_string()
    }

    /// Reads until EOF; returns what arrived. Panics on timeout.
    pub fn read_to_eof(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        match self.reader.read_to_end(&mut out) {
            Ok(_) => out,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => out,
            Err(e) => panic!("read to EOF failed: {e}"),
        }
    }
}
