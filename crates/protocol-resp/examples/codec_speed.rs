//! Rough per-item costs of the RESP codec, for the crate's figures:
//! `cargo run --release -p lubdub-resp --example codec_speed`
//!
//! Decodes small replies with `Resp` and with `redis-protocol` alone (the
//! scanner's overhead), encodes commands, and compares the hand-written
//! length prefix with `write!`. A few million iterations each; a rough
//! guide, not a benchmark suite (best of five rounds).

use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

use lubdub_protocol::{Decoded, Session};
use lubdub_resp::{Cmd, Resp};

const N: u32 = 2_000_000;

fn per_item(label: &str, mut f: impl FnMut()) {
    for _ in 0..N / 10 {
        f();
    }
    // The best of five rounds: the machine is shared.
    let mut ns = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for _ in 0..N / 5 {
            f();
        }
        ns = ns.min(start.elapsed().as_nanos() as f64 / f64::from(N / 5));
    }
    println!("{label:<48} {ns:>7.1} ns");
}

fn main() {
    let replies: [(&str, &[u8]); 5] = [
        ("+OK", b"+OK\r\n"),
        (":1000", b":1000\r\n"),
        ("$5 hello", b"$5\r\nhello\r\n"),
        ("$-1 (nil)", b"$-1\r\n"),
        (
            "pub/sub message (3-element array)",
            b"*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n",
        ),
    ];
    let mut resp = Session::new(Resp::new());
    for (label, bytes) in replies {
        per_item(&format!("decode {label}"), || {
            match resp.decode(black_box(bytes)) {
                Ok(Decoded::Message { msg, .. }) => {
                    black_box(msg);
                }
                other => panic!("{other:?}"),
            }
        });
        per_item(&format!("  redis-protocol alone: {label}"), || {
            black_box(redis_protocol::resp2::decode::decode(black_box(bytes)).unwrap());
        });
    }

    let mut out = Vec::with_capacity(1 << 16);
    per_item("build Cmd SET key value", || {
        black_box(
            Cmd::new("SET")
                .arg(black_box("key"))
                .arg(black_box("value")),
        );
    });
    let cmd = Cmd::new("SET").arg("key").arg("value");
    per_item("encode a built Cmd SET key value", || {
        out.clear();
        resp.encode_into(black_box(&cmd), &mut out).unwrap();
        black_box(&out);
    });
    per_item("build + encode Cmd PUBLISH news <64 B>", || {
        out.clear();
        let cmd = Cmd::new("PUBLISH")
            .arg("news")
            .arg(black_box(&[7u8; 64][..]));
        resp.encode_into(&cmd, &mut out).unwrap();
        black_box(&out);
    });

    // The length prefix, hand-written (as Cmd does) or with write!.
    // Both build a fresh 64-byte buffer, as Cmd::new does.
    per_item("3 args with write! length prefixes", || {
        let mut body = Vec::with_capacity(64);
        for arg in [&b"SET"[..], b"key", b"value"] {
            let arg = black_box(arg);
            write!(body, "${}\r\n", arg.len()).unwrap();
            body.extend_from_slice(arg);
            body.extend_from_slice(b"\r\n");
        }
        black_box(body);
    });
    per_item("3 args with Cmd's length prefixes", || {
        black_box(
            Cmd::new(black_box("SET"))
                .arg(black_box("key"))
                .arg(black_box("value")),
        );
    });
}
