//! The transport seam: what sits between a connection's socket and its
//! protocol. [`Plain`] passes bytes through unchanged; `crate::tls::Tls`
//! encrypts them.
//!
//! The connection shell (`crate::driver`) reads and writes only through a
//! [`Transport`], for servers and clients alike. A transport decides what
//! a read of the socket means for the protocol (bytes, nothing yet, the
//! end) and owns the readiness bookkeeping of its reads, since only it
//! knows whether a short read of the socket drained it.

use std::io::{self, Read};
use std::net::{Shutdown, TcpStream};
use std::task::{Context, Poll};

use crate::reactor::Io;

/// What one read through a transport produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Received {
    /// `n > 0` bytes for the protocol, at the front of the buffer.
    Data(usize),
    /// Bytes were read but none is for the protocol yet (a TLS handshake
    /// message, a record still incomplete).
    Nothing,
    /// The socket has nothing more for now; its readiness was cleared and
    /// the next read waits for an edge.
    WouldBlock,
    /// The peer closed its side: nothing more will come.
    Eof,
}

/// A layer between the socket and the protocol (plain TCP, TLS).
pub(crate) trait Transport: 'static {
    /// Reads bytes meant for the protocol into `buf`.
    fn read(&mut self, sock: &Io<TcpStream>, buf: &mut [u8]) -> io::Result<Received>;

    /// Writes `buf` (protocol bytes); returns how many were taken.
    fn write(
        &mut self,
        sock: &Io<TcpStream>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>>;

    /// Shuts down the writing side after everything was written (TLS
    /// sends its close_notify first).
    fn shutdown(&mut self, sock: &Io<TcpStream>) -> io::Result<()>;

    /// The connection is over and its socket is about to be dropped: a
    /// last word if the transport has one (TLS's close_notify, when the
    /// peer closed first and no shutdown sent it), best effort.
    fn close(&mut self, sock: &Io<TcpStream>) {
        let _ = sock;
    }

    /// Writes what the transport itself still holds (TLS records, handshake
    /// messages); `Ready(Ok)` once nothing is left.
    fn poll_flush(&mut self, sock: &Io<TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let _ = (sock, cx);
        Poll::Ready(Ok(()))
    }

    /// Whether the transport's own handshake (TLS) is still under way: the
    /// protocol starts only after it.
    fn is_handshaking(&self) -> bool {
        false
    }

    /// Bytes the transport holds for the peer, counted in the connection's
    /// send buffer.
    fn pending(&self) -> usize {
        0
    }

    /// Whether the stream ended without the transport's own close (a TLS
    /// truncation); asked once after [`Received::Eof`].
    fn take_truncation(&mut self) -> bool {
        false
    }
}

/// Plain TCP: the socket's bytes are the protocol's bytes. Costs nothing
/// over reading and writing the socket directly: every method is the
/// socket call itself, monomorphised into the shell.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Plain;

impl Transport for Plain {
    #[inline]
    fn read(&mut self, sock: &Io<TcpStream>, buf: &mut [u8]) -> io::Result<Received> {
        // (The socket call itself, monomorphised into the shell.)
        loop {
            match (&mut sock.get_ref()).read(buf) {
                Ok(0) => return Ok(Received::Eof),
                Ok(n) => {
                    // A short read drained the socket: wait for the next
                    // edge instead of reading again into an EAGAIN. Bytes
                    // (or a FIN) that arrive after this read raise a new
                    // edge (epoll signals every arrival); a FIN that came
                    // before it does not, so then read on to the 0.
                    if n < buf.len() && sock.short_read_drains() {
                        sock.clear_readable();
                    }
                    return Ok(Received::Data(n));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    sock.clear_readable();
                    return Ok(Received::WouldBlock);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    #[inline]
    fn write(
        &mut self,
        sock: &Io<TcpStream>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        sock.poll_write(cx, buf)
    }

    fn shutdown(&mut self, sock: &Io<TcpStream>) -> io::Result<()> {
        sock.get_ref().shutdown(Shutdown::Write)
    }
}
