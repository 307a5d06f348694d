//! The control socket: one JSON line per request and per answer over a
//! unix socket in the run directory, and the listening sockets of a reload
//! handed over beside an answer (`SCM_RIGHTS`).

use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

use super::status::{ConnRow, Status};

/// The most listening sockets one handover carries.
pub const MAX_HANDED_FDS: usize = 64;

/// The longest request or answer line read (a `connections` answer for a
/// million connections is far below it).
const MAX_LINE: u64 = 1 << 30;

/// What a command asks the running server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// Are you there, and who are you.
    Ping,
    /// Totals and per-loop figures; message rates over `sample_ms`.
    Status { sample_ms: u64 },
    /// One row per connection.
    Connections,
    /// Stop; `graceful`: let connections close by themselves first, for at
    /// most `timeout_ms`.
    Stop { graceful: bool, timeout_ms: u64 },
    /// Start the binary anew, hand it the listening sockets, drain.
    Reload {
        graceful: bool,
        drain_ms: u64,
        spread_ms: u64,
    },
    /// Reopen the log file (after logrotate moved it).
    ReloadLogs,
    /// From the process a reload started: the listening sockets, please.
    Handover { token: String },
    /// From the process a reload started, on the same connection: it
    /// serves the sockets now.
    Ready { pid: u32 },
}

/// The answer to [`Request::Ping`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Pong {
    pub pid: u32,
    pub instance: String,
}

/// The answer to every request that only succeeds or fails.
#[derive(Debug, Serialize, Deserialize)]
pub struct Done {
    pub ok: bool,
    #[serde(default)]
    pub message: String,
}

impl Done {
    pub fn ok(message: impl Into<String>) -> Self {
        Done {
            ok: true,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Done {
            ok: false,
            message: message.into(),
        }
    }
}

/// The answer to [`Request::Connections`].
#[derive(Debug, Serialize, Deserialize)]
pub struct Connections {
    pub rows: Vec<ConnRow>,
}

/// What travels with the sockets of a handover: which listener is whose.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Handed {
    /// One entry per socket, in the order of the descriptors.
    pub sockets: Vec<HandedSocket>,
}

/// One handed-over listening socket.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandedSocket {
    /// `worker` for a worker's listener, `metrics` for the admin listener.
    pub role: String,
    /// The index of the worker among those the server started, in order.
    pub index: usize,
    /// The worker's name.
    pub name: String,
}

/// Every answer, as one enum for the reading side.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Answer {
    Status(Box<Status>),
    Connections(Connections),
    Pong(Pong),
    Handed(Handed),
    Done(Done),
}

/// One side of a control connection.
pub struct Channel {
    reader: BufReader<UnixStream>,
    stream: UnixStream,
}

impl Channel {
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        Ok(Channel {
            reader: BufReader::new(stream.try_clone()?),
            stream,
        })
    }

    /// Connects to a server's control socket.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Self> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        Self::new(stream)
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends one value as a JSON line.
    pub fn send<T: Serialize>(&mut self, value: &T) -> io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        self.stream.write_all(&line)
    }

    /// Reads one JSON line; `Ok(None)` at the end of the stream.
    pub fn recv<T: for<'de> Deserialize<'de>>(&mut self) -> io::Result<Option<T>> {
        let mut line = Vec::new();
        let n = (&mut self.reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(None);
        }
        serde_json::from_slice(&line)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// One request, one answer.
    pub fn ask(&mut self, request: &Request) -> io::Result<Answer> {
        self.send(request)?;
        self.recv()?.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the control connection without an answer",
            )
        })
    }

    /// Sends `value` as a JSON line with `fds` beside it.
    pub fn send_with_fds<T: Serialize>(&mut self, value: &T, fds: &[OwnedFd]) -> io::Result<()> {
        if fds.len() > MAX_HANDED_FDS {
            return Err(io::Error::other(format!(
                "{} sockets to hand over, at most {MAX_HANDED_FDS}",
                fds.len()
            )));
        }
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        let borrowed: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDED_FDS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(&borrowed)) {
            return Err(io::Error::other(
                "the descriptors do not fit the control buffer",
            ));
        }
        // The descriptors go with the first byte; the rest of the line
        // follows as plain data.
        let sent = rustix::net::sendmsg(
            &self.stream,
            &[IoSlice::new(&line)],
            &mut control,
            SendFlags::empty(),
        )?;
        self.stream.write_all(&line[sent..])
    }

    /// Reads a JSON line sent by [`send_with_fds`](Self::send_with_fds)
    /// and the descriptors beside it. Must be the first read of what the
    /// peer sent after the request (nothing buffered yet).
    pub fn recv_with_fds<T: for<'de> Deserialize<'de>>(&mut self) -> io::Result<(T, Vec<OwnedFd>)> {
        let mut space =
            [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(MAX_HANDED_FDS))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut first = [0u8; 1];
        let got = rustix::net::recvmsg(
            &self.stream,
            &mut [IoSliceMut::new(&mut first)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )?;
        if got.bytes == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the server closed the handover connection",
            ));
        }
        let mut fds = Vec::new();
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(rights) = msg {
                fds.extend(rights);
            }
        }
        let mut line = vec![first[0]];
        if first[0] != b'\n' {
            (&mut self.reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)?;
        }
        let value = serde_json::from_slice(&line)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        Ok((value, fds))
    }
}

/// Whether the peer of a control connection runs as this process's user
/// (the socket's directory already keeps others out; this is the second
/// lock).
pub fn peer_is_me(stream: &UnixStream) -> bool {
    match rustix::net::sockopt::socket_peercred(stream) {
        Ok(cred) => cred.uid == rustix::process::getuid(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    #[test]
    fn requests_round_trip_as_json_lines() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        a.send(&Request::Stop {
            graceful: true,
            timeout_ms: 5,
        })
        .unwrap();
        a.send(&Request::ReloadLogs).unwrap();
        match b.recv::<Request>().unwrap() {
            Some(Request::Stop {
                graceful: true,
                timeout_ms: 5,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert!(matches!(b.recv().unwrap(), Some(Request::ReloadLogs)));
        b.send(&Done::failed("no")).unwrap();
        match a.recv::<Answer>().unwrap() {
            Some(Answer::Done(d)) => assert!(!d.ok && d.message == "no"),
            other => panic!("{other:?}"),
        }
        drop(b);
        assert!(a.recv::<Answer>().unwrap().is_none());
        assert!(peer_is_me(a.stream()));
    }

    #[test]
    fn listening_sockets_travel_beside_their_description() {
        let (a, b) = UnixStream::pair().unwrap();
        let (mut a, mut b) = (Channel::new(a).unwrap(), Channel::new(b).unwrap());
        let listeners: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
            .collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let fds: Vec<OwnedFd> = listeners.into_iter().map(OwnedFd::from).collect();
        let handed = Handed {
            sockets: (0..3)
                .map(|i| HandedSocket {
                    role: "worker".into(),
                    index: i,
                    name: format!("w{i}"),
                })
                .collect(),
        };
        a.send_with_fds(&handed, &fds).unwrap();
        drop(fds);
        let (got, fds): (Handed, _) = b.recv_with_fds().unwrap();
        assert_eq!(got.sockets.len(), 3);
        assert_eq!(got.sockets[2].name, "w2");
        let back: Vec<_> = fds
            .into_iter()
            .map(|f| TcpListener::from(f).local_addr().unwrap())
            .collect();
        assert_eq!(back, addrs, "the same sockets, in order");
    }
}
