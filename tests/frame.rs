//! Binary framing over loopback: echo, hostile headers, cuts and resets.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;

use common::{recv, WAIT};
use lubdub::{
    CloseReason, ConnError, Frame, Packet, PacketCodec, ProtocolError, Worker, WorkerHandle,
};

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = ((payload.len() + 4) as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

/// A frame echo server reporting `(error, close reason)` per bad connection.
fn frame_server() -> (WorkerHandle<Frame>, mpsc::Receiver<String>) {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<Frame>::new("frame://127.0.0.1:0").unwrap();
    w.on_message(|c, p| {
        let _ = c.send(&p);
    });
    let t = tx.clone();
    w.on_error(move |_, e| t.send(format!("error {e}")).unwrap());
    w.on_close(move |_, r| tx.send(format!("close {r:?}")).unwrap());
    (w.start().unwrap(), rx)
}

fn connect(h: &WorkerHandle<Frame>) -> TcpStream {
    let s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s
}

fn roundtrip(s: &mut TcpStream, payload: &[u8]) {
    s.write_all(&frame(payload)).unwrap();
    let mut got = vec![0u8; payload.len() + 4];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, frame(payload));
}

fn read_eof(s: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn frames_echo_byte_for_byte_including_empty_and_large() {
    let (h, _rx) = frame_server();
    let mut s = connect(&h);
    roundtrip(&mut s, b"");
    roundtrip(&mut s, b"hello");
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    roundtrip(&mut s, &big);
    // pipelined, split byte by byte
    let mut stream = Vec::new();
    for i in 0..20u8 {
        stream.extend(frame(&vec![i; i as usize]));
    }
    for b in &stream {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    let mut got = vec![0u8; stream.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, stream);
    h.stop_and_wait();
}

#[test]
fn hostile_lengths_close_only_that_connection_with_a_clear_error() {
    let (h, rx) = frame_server();
    let mut healthy = connect(&h);
    for bad in [
        vec![0, 0, 0, 0],
        vec![0, 0, 0, 1],
        vec![0, 0, 0, 3],
        vec![0xff, 0xff, 0xff, 0xff],
    ] {
        let mut s = connect(&h);
        s.write_all(&bad).unwrap();
        let err = recv(&rx);
        assert!(
            err.starts_with("error protocol error:"),
            "{bad:02x?} gave {err}"
        );
        assert_eq!(recv(&rx), "close Protocol");
        assert!(read_eof(&mut s).is_empty());
        drop(s);
        roundtrip(&mut healthy, b"still fine");
    }
    h.stop_and_wait();
}

#[test]
fn header_cut_then_eof_and_reset_mid_frame_close_cleanly() {
    let (h, rx) = frame_server();
    let mut healthy = connect(&h);
    // a header cut mid-way, then EOF
    let mut s = connect(&h);
    s.write_all(&[0, 0]).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_eq!(recv(&rx), "close PeerClosed");
    assert!(read_eof(&mut s).is_empty());
    // a reset (SO_LINGER 0) in the middle of a frame
    let s = connect(&h);
    let sock = socket2::Socket::from(s);
    sock.set_linger(Some(std::time::Duration::ZERO)).unwrap();
    let mut partial = frame(&[7u8; 100]);
    partial.truncate(50);
    (&sock).write_all(&partial).unwrap();
    roundtrip(&mut healthy, b"sync"); // the server has read the partial frame
    drop(sock);
    let mut evs = vec![recv(&rx), recv(&rx)];
    evs.sort();
    assert!(evs[0].starts_with("close Io(ConnectionReset)"), "{evs:?}");
    assert!(evs[1].starts_with("error I/O error"), "{evs:?}");
    roundtrip(&mut healthy, b"after reset");
    h.stop_and_wait();
}

#[test]
fn csharp_packet_over_the_wire() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::<PacketCodec>::new("packet://127.0.0.1:0").unwrap();
    w.on_connect(|c| {
        let _ = c.send(&Packet::start_heartbeat(5));
    });
    w.on_message(move |c, mut p| {
        let name = p.pop_string().unwrap_or_default();
        tx.send((p.id, name.clone())).unwrap();
        let mut reply = Packet::new(p.id);
        reply.push_str(&format!("hi {name}")).unwrap();
        let _ = c.send(&reply);
    });
    let h = w.start().unwrap();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut hb = [0u8; 7];
    s.read_exact(&mut hb).unwrap();
    assert_eq!(
        hb,
        [0x07, 0, 0, 0, 0xFE, 0xFF, 0x05],
        "SYS_START_HEARTBEAT(5)"
    );
    // id 10, string "bob": len 4+2+2+3 = 11
    s.write_all(&[11, 0, 0, 0, 10, 0, 3, 0, b'b', b'o', b'b'])
        .unwrap();
    assert_eq!(recv(&rx), (10, "bob".to_string()));
    let mut reply = [0u8; 14];
    s.read_exact(&mut reply).unwrap();
    assert_eq!(
        reply,
        [14, 0, 0, 0, 10, 0, 6, 0, b'h', b'i', b' ', b'b', b'o', b'b']
    );
    // a negative total length is an error and a close
    s.write_all(&(-5i32).to_le_bytes()).unwrap();
    assert!(read_eof(&mut s).is_empty());
    h.stop_and_wait();
}

#[test]
fn oversized_frame_is_refused_before_allocation() {
    let (tx, rx) = mpsc::channel();
    let mut w = Worker::with_protocol("frame://127.0.0.1:0", Frame::with_max_length(1024)).unwrap();
    w.on_error(move |_, e| {
        let is_too_large = matches!(e, ConnError::Protocol(ProtocolError::TooLarge { .. }));
        tx.send(is_too_large).unwrap()
    });
    w.on_close(|_, r| assert_eq!(*r, CloseReason::Protocol));
    let h = w.start().unwrap();
    let mut s = TcpStream::connect(h.local_addr()).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(&2000u32.to_be_bytes()).unwrap();
    assert!(recv(&rx));
    assert!(read_eof(&mut s).is_empty());
    h.stop_and_wait();
}
