//! Regression test found by the WebSocket interop tests (tests/ws_interop.rs,
//! 1 MiB echoes): under `Backpressure::PauseRecv` (the default), one reply
//! that fills the send buffer to its limit pauses reading, and reading must
//! resume once the reply is written. Minimal form: the Text protocol, an
//! echo, a blocking client that reads the whole reply before sending again.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use lubdub::{Backpressure, Limits, Text, Worker};

/// Generous: the second echo comes back in milliseconds when it works.
const WAIT: Duration = Duration::from_secs(20);

/// Sends a line of `n` bytes (`\n` included), reads its echo, then sends
/// `second` and returns what came back for it.
fn second_echo_after_a_line_of(n: usize, send_buffer: usize, mode: Backpressure) -> String {
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.limits(
        Limits::default()
            .send_buffer_size(send_buffer)
            .backpressure(mode),
    );
    w.on_message(|c, m| {
        let _ = c.send(&m);
    });
    let server = w.start().unwrap();
    let mut s = TcpStream::connect(server.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut r = BufReader::new(s.try_clone().unwrap());
    let mut line = vec![b'a'; n - 1];
    line.push(b'\n');
    s.write_all(&line).unwrap();
    let mut got = String::new();
    r.read_line(&mut got).unwrap();
    assert_eq!(got.len(), n, "the first echo, whole");
    s.write_all(b"second\n").unwrap();
    got.clear();
    let second = match r.read_line(&mut got) {
        Ok(_) => got,
        Err(e) => format!("no echo within {WAIT:?}: {e}"),
    };
    server.stop_and_wait();
    second
}

#[test]
fn reading_resumes_after_a_reply_that_filled_the_send_buffer() {
    // One byte under the limit: never over it, works.
    assert_eq!(
        second_echo_after_a_line_of(99_999, 100_000, Backpressure::PauseRecv),
        "second\n"
    );
    // Without pausing, works at any size.
    assert_eq!(
        second_echo_after_a_line_of(200_000, 100_000, Backpressure::Drop),
        "second\n"
    );
    // At the limit and past it: the reply pauses reading; once it is
    // written, the next line must be read and echoed.
    assert_eq!(
        second_echo_after_a_line_of(100_000, 100_000, Backpressure::PauseRecv),
        "second\n",
        "a reply of exactly send_buffer_size bytes"
    );
    assert_eq!(
        second_echo_after_a_line_of(200_000, 100_000, Backpressure::PauseRecv),
        "second\n",
        "a reply of twice send_buffer_size bytes"
    );
}
