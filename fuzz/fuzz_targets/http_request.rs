//! HTTP/1.1 requests (`lubdub-http`): arbitrary bytes as what a server
//! reads, in arbitrary chunks and whole. Both ways give the same requests
//! (method, target, version, headers, body) and the same refusal status;
//! every request can be answered; the only bytes the decoder writes itself
//! are `100 Continue` answers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lubdub_fuzz::{feed, split_input, Fed};
use lubdub_http::{Http, HttpConfig, HttpError, Request};
use lubdub_protocol::{Closing, Session};

/// What a request is, comparably.
fn view(req: &Request) -> String {
    format!(
        "{} {} {:?} {:?} {:?} {:?}",
        req.method(),
        req.uri(),
        req.version(),
        req.headers(),
        req.body(),
        req.exchange()
    )
}

fn outcome(fed: &Fed<Request>) -> (Vec<String>, Option<u16>) {
    let status = fed
        .error
        .as_ref()
        .map(|e| HttpError::of(e).map_or(0, |h| h.status));
    (fed.msgs.iter().map(|(r, _)| view(r)).collect(), status)
}

fuzz_target!(|data: &[u8]| {
    let Some((&m, rest)) = data.split_first() else {
        return;
    };
    let http = match m % 3 {
        0 => Http::default(),
        1 => Http::new(HttpConfig::default().max_head_size(256).max_headers(4).max_body_size(64)),
        _ => Http::new(HttpConfig::default().max_headers(100)),
    };
    let (cuts, stream) = split_input(rest);
    let chunked = feed(&http, stream, &cuts);
    let whole = feed(&http, stream, &[usize::MAX]);
    assert_eq!(outcome(&chunked), outcome(&whole));
    for fed in [&chunked, &whole] {
        assert!(fed.close.is_none(), "HTTP closes through errors and responses");
        let continues = fed.wire_out.chunks(25).all(|c| c == b"HTTP/1.1 100 Continue\r\n\r\n");
        assert!(fed.wire_out.len() % 25 == 0 && continues, "{:?}", fed.wire_out);
    }
    let mut session = Session::new(http.clone());
    for (req, _) in &whole.msgs {
        let response = lubdub_http::http::Response::new(req.body().clone());
        session.encode(&req.respond(response)).expect("a response to any request");
    }
    if let Some(err) = &whole.error {
        let answer = session.encode_close(&Closing::Violation(err));
        assert!(answer.starts_with(b"HTTP/1.1 4") || answer.starts_with(b"HTTP/1.1 5"));
    }
});
