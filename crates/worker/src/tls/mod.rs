//! TLS in the transport seam, on rustls (ring provider): the server's
//! [`TlsConfig`], the client's [`TlsClientConfig`], and the `Tls` transport
//! that drives rustls' sans-IO connection inside the event loop (no extra
//! thread, no stream wrapper).
//!
//! Reads take up to 64 KiB of ciphertext from the socket in one call into a
//! buffer the loop shares, and feed it to rustls from memory: rustls reads
//! at most 4 KiB per `read_tls` from a socket, which would be 16 syscalls
//! where plain TCP makes one. Decrypted bytes go straight into the shell's
//! read buffer. Writes hand plaintext to rustls, which encrypts into its
//! own queue (bounded: [`SEND_LIMIT`]), written with `writev`.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::pki_types::ServerName;
use rustls::ServerConfig;

use crate::reactor::Io;
use crate::transport::{Received, Transport};

mod config;

pub use config::{TlsClientConfig, TlsConfig};

/// Most ciphertext rustls queues for one connection before writes report
/// the socket full; it is counted in the connection's send buffer.
pub(crate) const SEND_LIMIT: usize = 64 * 1024;
/// Ciphertext read from the socket per call.
const READ_CHUNK: usize = 64 * 1024;
/// Room left in the plaintext buffer for a record rustls may still hold
/// partly from the previous read (a TLS record is at most 16 KiB of
/// plaintext): what one read decrypts then always fits the buffer.
const PARTIAL_RECORD: usize = 17 * 1024;
/// TLS record overhead per 16 KiB of plaintext, for the send accounting.
const RECORD_OVERHEAD: usize = 29;

thread_local! {
    /// Ciphertext read from a socket, shared by the loop's TLS connections.
    static CIPHERTEXT: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A connection's TLS session: rustls' sans-IO connection, driven by the
/// connection's shell.
pub(crate) struct Tls {
    conn: rustls::Connection,
    /// Ciphertext queued in rustls, estimated (for the send buffer limit).
    queued: usize,
    /// The peer's TCP EOF came without a close_notify.
    truncated: bool,
    close_notify_sent: bool,
}

impl Tls {
    pub fn server(config: &Arc<ServerConfig>) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(Self::new(conn.into()))
    }

    pub fn client(config: &TlsClientConfig, name: ServerName<'static>) -> io::Result<Self> {
        let conn = rustls::ClientConnection::new(config.rustls().clone(), name)
            .map_err(io::Error::other)?;
        Ok(Self::new(conn.into()))
    }

    fn new(mut conn: rustls::Connection) -> Self {
        conn.set_buffer_limit(Some(SEND_LIMIT));
        Tls {
            conn,
            queued: 0,
            truncated: false,
            close_notify_sent: false,
        }
    }

    /// Moves decrypted bytes into `buf[*filled..]`; `Some` when the stream
    /// ended (cleanly or truncated).
    fn take_plaintext(&mut self, buf: &mut [u8], filled: &mut usize) -> io::Result<Option<()>> {
        while *filled < buf.len() {
            match self.conn.reader().read(&mut buf[*filled..]) {
                Ok(0) => return Ok(Some(())),
                Ok(n) => *filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                    self.truncated = true;
                    return Ok(Some(()));
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Writes queued ciphertext until done or the socket is full.
    fn flush_tls(
        &mut self,
        sock: &Io<TcpStream>,
        cx: Option<&mut Context<'_>>,
    ) -> io::Result<bool> {
        let mut writer = SockWriter { sock, cx };
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut writer) {
                Ok(n) => self.queued = self.queued.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.queued = 0;
        Ok(true)
    }

    fn fail(&mut self, sock: &Io<TcpStream>, e: rustls::Error) -> io::Error {
        // Send the alert rustls queued for the peer, if the socket takes it.
        let _ = self.flush_tls(sock, None);
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// The socket as rustls' writer; with a context, a full socket registers
/// for writability.
struct SockWriter<'a, 'b> {
    sock: &'a Io<TcpStream>,
    cx: Option<&'a mut Context<'b>>,
}

impl Write for SockWriter<'_, '_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match &mut self.cx {
            Some(cx) => match self.sock.poll_write_vectored(cx, bufs) {
                Poll::Ready(r) => r,
                Poll::Pending => Err(io::ErrorKind::WouldBlock.into()),
            },
            None => self.sock.get_ref().write_vectored(bufs),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Tls {
    fn read(&mut self, sock: &Io<TcpStream>, buf: &mut [u8]) -> io::Result<Received> {
        let mut filled = 0;
        if self.take_plaintext(buf, &mut filled)?.is_some() && filled == 0 {
            return Ok(Received::Eof);
        }
        if filled > 0 {
            return Ok(Received::Data(filled));
        }
        CIPHERTEXT.with(|cell| {
            let mut input = cell.borrow_mut();
            if input.len() < READ_CHUNK {
                input.resize(READ_CHUNK, 0);
            }
            let room = buf.len().saturating_sub(PARTIAL_RECORD).max(4096);
            let want = room.min(input.len());
            let n = loop {
                match sock.get_ref().read(&mut input[..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        sock.clear_readable();
                        return Ok(Received::WouldBlock);
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            };
            if n < want && sock.short_read_drains() {
                sock.clear_readable();
            }
            let mut ciphertext: &[u8] = &input[..n];
            let mut ended;
            loop {
                // At TCP EOF this tells rustls the stream ended (read_tls of
                // an empty slice), so the reader reports close_notify or
                // truncation.
                self.conn.read_tls(&mut ciphertext)?;
                if let Err(e) = self.conn.process_new_packets() {
                    return Err(self.fail(sock, e));
                }
                ended = self.take_plaintext(buf, &mut filled)?.is_some();
                if ended && filled == 0 {
                    return Ok(Received::Eof);
                }
                if ciphertext.is_empty() || ended {
                    break;
                }
            }
            // Handshake messages, alerts or key updates may want an answer.
            let _ = self.flush_tls(sock, None);
            if filled > 0 && (ended || filled == buf.len()) {
                // The end of the stream came with data, or more plaintext
                // may wait in rustls: the next read must come even if the
                // socket has nothing new, so it is marked readable again.
                sock.mark_readable();
            }
            Ok(if filled > 0 {
                Received::Data(filled)
            } else if n == 0 {
                Received::Eof
            } else {
                Received::Nothing
            })
        })
    }

    fn write(
        &mut self,
        sock: &Io<TcpStream>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(e) = self.flush_tls(sock, Some(cx)) {
            return Poll::Ready(Err(e));
        }
        let n = match self.conn.writer().write(buf) {
            Ok(n) => n,
            Err(e) => return Poll::Ready(Err(e)),
        };
        self.queued += n + n.div_ceil(16 * 1024) * RECORD_OVERHEAD;
        if let Err(e) = self.flush_tls(sock, Some(cx)) {
            return Poll::Ready(Err(e));
        }
        if n == 0 {
            // rustls' queue is at its limit and the socket is full: the
            // flush above registered for writability.
            return Poll::Pending;
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(&mut self, sock: &Io<TcpStream>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.flush_tls(sock, Some(cx)) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    fn shutdown(&mut self, sock: &Io<TcpStream>) -> io::Result<()> {
        self.close(sock);
        sock.get_ref().shutdown(Shutdown::Write)
    }

    fn close(&mut self, sock: &Io<TcpStream>) {
        // Once: a shutdown already sent it.
        if !self.close_notify_sent {
            self.close_notify_sent = true;
            self.conn.send_close_notify();
            let _ = self.flush_tls(sock, None);
        }
    }

    fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    fn pending(&self) -> usize {
        self.queued
    }

    fn take_truncation(&mut self) -> bool {
        std::mem::take(&mut self.truncated)
    }
}
