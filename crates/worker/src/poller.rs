//! The readiness poller under a loop's reactor: edge-triggered interest in
//! reading and writing, one wait, and a notifier other threads can ring.
//!
//! On Linux this is epoll used directly. A wait is one `epoll_wait`; a
//! wake from another thread is one `write` to an eventfd that stays
//! registered (edge-triggered) for the poller's whole life, and the loop
//! reads it only when it fired. The `polling` crate, used on other
//! systems, re-arms a timerfd (`timerfd_settime` + `epoll_ctl`) and its
//! notifier (`read` + `epoll_ctl`) around every wait: four syscalls a wait,
//! which a loop that often runs out of work (two loops sharing a core with
//! their clients) pays thousands of times a second.

use std::io;
use std::time::Duration;

/// One readiness event: the registration key and what became ready.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ready {
    pub key: usize,
    pub readable: bool,
    pub writable: bool,
    /// The peer closed its side (FIN, hang-up or error): a read will return
    /// 0 or an error once the queued bytes are consumed. `true` where the
    /// backend cannot tell.
    pub read_closed: bool,
}

pub(crate) use imp::{Events, Poller};

#[cfg(any(target_os = "linux", target_os = "android"))]
mod imp {
    use super::*;
    use rustix::buffer::spare_capacity;
    use rustix::event::epoll::{self, CreateFlags, EventData, EventFlags};
    use rustix::event::{eventfd, EventfdFlags, Timespec};
    use std::os::fd::{BorrowedFd, OwnedFd};

    /// Key of the notifier's registration; sources use slab indices.
    const NOTIFY_KEY: u64 = u64::MAX;

    /// A buffer of events filled by [`Poller::wait`].
    pub(crate) struct Events {
        list: Vec<epoll::Event>,
    }

    impl Events {
        /// Room for `capacity` events per wait.
        pub fn with_capacity(capacity: usize) -> Events {
            Events {
                list: Vec::with_capacity(capacity),
            }
        }

        /// The events of the last wait (the notifier's excluded).
        pub fn iter(&self) -> impl Iterator<Item = Ready> + '_ {
            self.list.iter().filter_map(|ev| {
                let key = ev.data.u64();
                if key == NOTIFY_KEY {
                    return None;
                }
                let f = ev.flags;
                Some(Ready {
                    key: key as usize,
                    readable: f.intersects(
                        EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR,
                    ),
                    writable: f.intersects(EventFlags::OUT | EventFlags::HUP | EventFlags::ERR),
                    read_closed: f
                        .intersects(EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR),
                })
            })
        }
    }

    /// An epoll instance plus its eventfd notifier.
    pub(crate) struct Poller {
        epoll: OwnedFd,
        notifier: OwnedFd,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            let epoll = epoll::create(CreateFlags::CLOEXEC)?;
            let notifier = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
            epoll::add(
                &epoll,
                &notifier,
                EventData::new_u64(NOTIFY_KEY),
                EventFlags::IN | EventFlags::ET,
            )?;
            Ok(Poller { epoll, notifier })
        }

        /// Registers `fd` for edge-triggered read and write readiness.
        ///
        /// Safe on Linux: a registration outliving its descriptor is no
        /// memory hazard, and closing a descriptor that was never duplicated
        /// removes it from the epoll set (the reactor relies on that).
        pub fn add(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
            epoll::add(
                &self.epoll,
                fd,
                EventData::new_u64(key as u64),
                EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET,
            )?;
            Ok(())
        }

        /// Removes `fd`'s registration. The reactor does not need it:
        /// closing a descriptor that was never duplicated removes it from
        /// the epoll set.
        #[cfg_attr(not(test), allow(dead_code))]
        pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
            epoll::delete(&self.epoll, fd)?;
            Ok(())
        }

        /// Waits for events, at most `timeout` (`None`: until one comes or
        /// [`notify`](Self::notify) is called).
        pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
            events.list.clear();
            let ts = timeout.map(|t| Timespec {
                tv_sec: t.as_secs().min(i64::MAX as u64) as i64,
                tv_nsec: t.subsec_nanos() as _,
            });
            loop {
                match epoll::wait(&self.epoll, spare_capacity(&mut events.list), ts.as_ref()) {
                    Ok(_) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if events.list.iter().any(|ev| ev.data.u64() == NOTIFY_KEY) {
                // Reset the counter; an edge per write wakes us either way.
                let mut buf = [0u8; 8];
                let _ = rustix::io::read(&self.notifier, &mut buf);
            }
            Ok(())
        }

        /// Interrupts a wait in progress, or makes the next one return at once.
        pub fn notify(&self) -> io::Result<()> {
            match rustix::io::write(&self.notifier, &1u64.to_ne_bytes()) {
                // The counter is full: a wake-up is already pending.
                Ok(_) | Err(rustix::io::Errno::AGAIN) => Ok(()),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
mod imp {
    use super::*;
    use polling::{Event, PollMode};
    use std::os::fd::{AsRawFd, BorrowedFd};

    /// A buffer of events filled by [`Poller::wait`].
    pub(crate) struct Events {
        inner: polling::Events,
    }

    impl Events {
        /// Room for `capacity` events per wait.
        pub fn with_capacity(capacity: usize) -> Events {
            Events {
                inner: polling::Events::with_capacity(
                    std::num::NonZeroUsize::new(capacity.max(1)).expect("capacity is at least 1"),
                ),
            }
        }

        /// The events of the last wait.
        pub fn iter(&self) -> impl Iterator<Item = Ready> + '_ {
            self.inner.iter().map(|ev| Ready {
                key: ev.key,
                readable: ev.readable,
                writable: ev.writable,
                read_closed: true,
            })
        }
    }

    /// `polling`'s portable poller (kqueue, event ports, ...).
    pub(crate) struct Poller {
        inner: polling::Poller,
    }

    impl Poller {
        pub fn new() -> io::Result<Poller> {
            Ok(Poller {
                inner: polling::Poller::new()?,
            })
        }

        /// Registers `fd` for edge-triggered read and write readiness. The
        /// registration must be [`delete`](Self::delete)d before `fd` is
        /// closed: the reactor deletes it in `Io::drop`, which runs before
        /// the socket it wraps is dropped.
        pub fn add(&self, fd: BorrowedFd<'_>, key: usize) -> io::Result<()> {
            // SAFETY: `polling` requires the descriptor to be deleted before
            // it is closed; every caller (the reactor) deletes it in
            // `Io::drop`, before the socket field is dropped and closed.
            unsafe {
                self.inner
                    .add_with_mode(fd.as_raw_fd(), Event::all(key), PollMode::Edge)
            }
        }

        /// Removes `fd`'s registration.
        pub fn delete(&self, fd: BorrowedFd<'_>) -> io::Result<()> {
            self.inner.delete(fd)
        }

        /// Waits for events, at most `timeout`.
        pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
            events.inner.clear();
            self.inner.wait(&mut events.inner, timeout).map(|_| ())
        }

        /// Interrupts a wait in progress, or makes the next one return at once.
        pub fn notify(&self) -> io::Result<()> {
            self.inner.notify()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsFd, AsRawFd};
    use std::sync::Arc;
    use std::time::Instant;

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn reports_edges_by_key() {
        let p = Poller::new().unwrap();
        let (a, mut b) = pair();
        p.add(a.as_fd(), 7).unwrap();
        let mut ev = Events::with_capacity(8);
        // A fresh connected socket is writable at once.
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        let got: Vec<Ready> = ev.iter().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].key, 7);
        assert!(got[0].writable && !got[0].readable && !got[0].read_closed);
        // Edge-triggered: nothing new, so nothing reported.
        p.wait(&mut ev, Some(Duration::ZERO)).unwrap();
        assert_eq!(ev.iter().count(), 0);
        // Data arriving is a new readable edge.
        b.write_all(b"x").unwrap();
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        assert!(ev.iter().any(|r| r.key == 7 && r.readable));
        // Deleted: the next edge is not reported.
        p.delete(a.as_fd()).unwrap();
        b.write_all(b"y").unwrap();
        p.wait(&mut ev, Some(Duration::from_millis(20))).unwrap();
        assert_eq!(ev.iter().count(), 0);
    }

    /// What the reactor relies on when it drops a socket without deleting
    /// it: the close removes the registration, so a new socket that gets
    /// the same descriptor number reports only under its own key.
    #[test]
    fn closing_a_registered_socket_unregisters_it() {
        let p = Poller::new().unwrap();
        let (a, b) = pair();
        let fd = a.as_raw_fd();
        p.add(a.as_fd(), 1).unwrap();
        let mut ev = Events::with_capacity(8);
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        drop(a);
        drop(b);
        // Register the side that got the old number, if either did.
        let (c, d) = pair();
        let (reg, mut other) = if d.as_raw_fd() == fd { (d, c) } else { (c, d) };
        p.add(reg.as_fd(), 2).unwrap();
        other.write_all(b"x").unwrap();
        let mut seen = Vec::new();
        let t = Instant::now();
        while !seen.iter().any(|r: &Ready| r.readable) && t.elapsed() < Duration::from_secs(5) {
            p.wait(&mut ev, Some(Duration::from_millis(100))).unwrap();
            seen.extend(ev.iter());
        }
        assert!(seen.iter().any(|r| r.key == 2 && r.readable), "{seen:?}");
        assert!(seen.iter().all(|r| r.key == 2), "{seen:?}");
    }

    #[test]
    fn peer_close_is_readable() {
        let p = Poller::new().unwrap();
        let (a, b) = pair();
        p.add(a.as_fd(), 1).unwrap();
        let mut ev = Events::with_capacity(8);
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        drop(b);
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        assert!(ev.iter().any(|r| r.key == 1 && r.readable && r.read_closed));
        p.delete(a.as_fd()).unwrap();
    }

    #[test]
    fn notify_interrupts_a_wait_and_is_consumed() {
        let p = Arc::new(Poller::new().unwrap());
        let mut ev = Events::with_capacity(8);
        // Before the wait: the wait returns at once, with no source event.
        p.notify().unwrap();
        p.notify().unwrap();
        p.wait(&mut ev, Some(Duration::from_secs(5))).unwrap();
        assert_eq!(ev.iter().count(), 0);
        // Consumed: the next wait times out.
        let t = Instant::now();
        p.wait(&mut ev, Some(Duration::from_millis(30))).unwrap();
        assert!(t.elapsed() >= Duration::from_millis(25));
        // During the wait, from another thread.
        let p2 = p.clone();
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let th = std::thread::spawn(move || {
            rx.recv().unwrap();
            p2.notify().unwrap();
        });
        tx.send(()).unwrap();
        let t = Instant::now();
        p.wait(&mut ev, None).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        th.join().unwrap();
    }
}
