//! One reactor per event loop: edge-triggered readiness from the loop's own
//! poller (`crate::poller`: epoll through rustix on Linux, `polling`
//! elsewhere), waited on by the loop thread itself.
//!
//! async-io's reactor is shared by the whole process and, under load, run
//! by its helper thread, which hands every event to the loop thread with a
//! futex wake and re-arms one-shot registrations. Here each loop owns its
//! poller: a socket is registered once, edge-triggered, for reading and
//! writing; an event sets a readiness flag and wakes the task waiting on
//! it, on the same thread. A task clears a flag when the socket reports
//! `WouldBlock` (or, for reads, after a short read) and then waits for the
//! next edge. Events are only dispatched between task polls, so no wake-up
//! can be lost between a failed read and storing the waker.

use std::cell::{Cell, RefCell};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::poller::{Events, Poller};

/// Readiness of one registered source.
struct SourceState {
    readable: Cell<bool>,
    writable: Cell<bool>,
    /// An event said the peer closed: stays set (a FIN is not repeated).
    read_closed: Cell<bool>,
    read_waker: RefCell<Option<Waker>>,
    write_waker: RefCell<Option<Waker>>,
}

fn store(slot: &RefCell<Option<Waker>>, waker: &Waker) {
    let mut slot = slot.borrow_mut();
    if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
        *slot = Some(waker.clone());
    }
}

/// A loop's poller and its registered sources.
pub(crate) struct Reactor {
    pub poller: Arc<Poller>,
    events: RefCell<Events>,
    sources: RefCell<Vec<Option<Rc<SourceState>>>>,
    free: RefCell<Vec<usize>>,
    /// Reused buffer of the wakers an event batch releases.
    woken: Cell<Vec<Waker>>,
}

impl Reactor {
    pub fn new() -> io::Result<Reactor> {
        Ok(Reactor {
            poller: Arc::new(Poller::new()?),
            events: RefCell::new(Events::with_capacity(1024)),
            sources: RefCell::new(Vec::new()),
            free: RefCell::new(Vec::new()),
            woken: Cell::new(Vec::new()),
        })
    }

    /// Waits for events (at most `timeout`), calls `awake` once the wait has
    /// returned, then wakes the tasks the events concern.
    ///
    /// `awake` runs before any task is woken, so a caller can mark itself no
    /// longer waiting and the wakes below do not interrupt a wait that is
    /// already over (that would cost a notifier write and one empty wait).
    pub fn wait(&self, timeout: Option<Duration>, awake: impl FnOnce()) -> io::Result<usize> {
        let mut woken = self.woken.take();
        {
            let mut events = self.events.borrow_mut();
            let res = self.poller.wait(&mut events, timeout);
            awake();
            res?;
            let sources = self.sources.borrow();
            for ev in events.iter() {
                let Some(Some(src)) = sources.get(ev.key) else {
                    continue;
                };
                if ev.read_closed {
                    src.read_closed.set(true);
                }
                if ev.readable {
                    src.readable.set(true);
                    woken.extend(src.read_waker.borrow_mut().take());
                }
                if ev.writable {
                    src.writable.set(true);
                    woken.extend(src.write_waker.borrow_mut().take());
                }
            }
        }
        // Wake with no borrow held: whatever a wake drops may deregister.
        let n = woken.len();
        for w in woken.drain(..) {
            w.wake();
        }
        self.woken.set(woken);
        Ok(n)
    }

    /// Registers `fd`; `readable`/`writable` are the readiness assumed
    /// until the first event (an edge comes at once for what is already
    /// ready, so `false` is never wrong, only a wait longer).
    fn register(
        &self,
        fd: &impl AsFd,
        readable: bool,
        writable: bool,
    ) -> io::Result<(usize, Rc<SourceState>)> {
        let state = Rc::new(SourceState {
            readable: Cell::new(readable),
            writable: Cell::new(writable),
            read_closed: Cell::new(false),
            read_waker: RefCell::new(None),
            write_waker: RefCell::new(None),
        });
        let key = match self.free.borrow_mut().pop() {
            Some(k) => k,
            None => {
                let mut s = self.sources.borrow_mut();
                s.push(None);
                s.len() - 1
            }
        };
        let added = self.poller.add(fd.as_fd(), key);
        if let Err(e) = added {
            self.free.borrow_mut().push(key);
            return Err(e);
        }
        self.sources.borrow_mut()[key] = Some(state.clone());
        Ok((key, state))
    }

    /// Forgets a source whose descriptor is closed right after this.
    fn deregister(&self, fd: &impl AsFd, key: usize) {
        // On Linux closing the descriptor removes it from the epoll set
        // (our sockets are never duplicated, so the close releases the
        // file), which saves an `epoll_ctl(DEL)` per connection. Elsewhere
        // the registration is deleted explicitly.
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = self.poller.delete(fd.as_fd());
        #[cfg(any(target_os = "linux", target_os = "android"))]
        let _ = fd;
        if let Some(slot) = self.sources.borrow_mut().get_mut(key) {
            *slot = None;
        }
        self.free.borrow_mut().push(key);
    }
}

/// A non-blocking socket registered with the current loop's reactor.
pub(crate) struct Io<T: AsFd> {
    io: T,
    key: usize,
    state: Rc<SourceState>,
    reactor: Rc<Reactor>,
}

impl<T: AsFd> Io<T> {
    /// Registers `io` (already non-blocking) with `reactor`, assumed ready
    /// until an operation says otherwise.
    pub fn new(io: T, reactor: &Rc<Reactor>) -> io::Result<Io<T>> {
        Self::register(io, reactor, true)
    }

    fn register(io: T, reactor: &Rc<Reactor>, readable: bool) -> io::Result<Io<T>> {
        let (key, state) = reactor.register(&io, readable, true)?;
        Ok(Io {
            io,
            key,
            state,
            reactor: reactor.clone(),
        })
    }

    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Ready when the last read did not report `WouldBlock` or an edge came since.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.readable.get() {
            return Poll::Ready(Ok(()));
        }
        store(&self.state.read_waker, cx.waker());
        Poll::Pending
    }

    /// Marks the socket drained: the next read waits for a new edge.
    pub fn clear_readable(&self) {
        self.state.readable.set(false);
    }

    /// Marks the socket worth reading without a new edge (a transport holds
    /// bytes it decoded from an earlier read).
    pub fn mark_readable(&self) {
        self.state.readable.set(true);
    }

    /// Whether a short read may be taken to mean "drained, wait for the
    /// next edge". Not once the peer's FIN was reported: the FIN raised its
    /// edge already (perhaps with the last bytes), so only reading on until
    /// 0 sees it.
    pub fn short_read_drains(&self) -> bool {
        !self.state.read_closed.get()
    }

    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.state.writable.get() {
            return Poll::Ready(Ok(()));
        }
        store(&self.state.write_waker, cx.waker());
        Poll::Pending
    }
}

impl<T: AsFd> Io<T>
where
    for<'a> &'a T: Read + Write,
{
    /// Writes with one `send` (plain connections: `writev` would be the
    /// same work, but one buffer needs no vector).
    pub fn poll_write(&self, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io| io.write(buf))
    }

    /// [`poll_write`](Self::poll_write) of several buffers in one `writev`.
    pub fn poll_write_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_with(cx, |io| io.write_vectored(bufs))
    }

    fn poll_write_with(
        &self,
        cx: &mut Context<'_>,
        mut write: impl FnMut(&mut &T) -> io::Result<usize>,
    ) -> Poll<io::Result<usize>> {
        loop {
            if !self.state.writable.get() {
                store(&self.state.write_waker, cx.waker());
                return Poll::Pending;
            }
            match write(&mut &self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.state.writable.set(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                res => return Poll::Ready(res),
            }
        }
    }
}

impl Io<TcpListener> {
    /// Accepts one connection, registered with the same reactor.
    pub async fn accept(&self) -> io::Result<(Io<TcpStream>, SocketAddr)> {
        let (stream, peer) = futures_lite::future::poll_fn(|cx| loop {
            if !self.state.readable.get() {
                store(&self.state.read_waker, cx.waker());
                return Poll::Pending;
            }
            match accept_nonblocking(&self.io) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.clear_readable(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                res => return Poll::Ready(res),
            }
        })
        .await?;
        // Not assumed readable: a just-accepted socket rarely has bytes yet,
        // and if it has, registering it raises an edge at once. This saves
        // the read into EAGAIN most new connections would start with.
        Ok((Io::register(stream, &self.reactor, false)?, peer))
    }
}

/// `accept4(SOCK_NONBLOCK | SOCK_CLOEXEC)`: the new socket is non-blocking
/// from the start, with no `ioctl(FIONBIO)` per connection.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    use rustix::net::{acceptfrom_with, SocketFlags};
    let (fd, addr) = acceptfrom_with(listener, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC)?;
    let stream = TcpStream::from(fd);
    let peer = match addr.and_then(|a| SocketAddr::try_from(a).ok()) {
        Some(peer) => peer,
        None => stream.peer_addr()?,
    };
    Ok((stream, peer))
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn accept_nonblocking(listener: &TcpListener) -> io::Result<(TcpStream, SocketAddr)> {
    let (stream, peer) = listener.accept()?;
    stream.set_nonblocking(true)?;
    Ok((stream, peer))
}

impl Io<TcpStream> {
    /// Connects without blocking the loop: the socket is registered first and
    /// the connect completes on its first writable edge.
    pub async fn connect(addr: SocketAddr, reactor: &Rc<Reactor>) -> io::Result<Io<TcpStream>> {
        use socket2::{Domain, Protocol, SockRef, Socket, Type};
        let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        sock.set_nonblocking(true)?;
        let stream: TcpStream = sock.into();
        let (key, state) = reactor.register(&stream, false, false)?;
        let io = Io {
            io: stream,
            key,
            state,
            reactor: reactor.clone(),
        };
        match SockRef::from(&io.io).connect(&addr.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
        futures_lite::future::poll_fn(|cx| io.poll_writable(cx)).await?;
        if let Some(e) = io.io.take_error()? {
            return Err(e);
        }
        // Not connected yet can only mean refused or reset by now.
        io.io.peer_addr()?;
        Ok(io)
    }
}

impl<T: AsFd> Drop for Io<T> {
    fn drop(&mut self) {
        self.reactor.deregister(&self.io, self.key);
    }
}
