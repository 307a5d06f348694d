//! Server-Sent Events in a real browser: headless Chromium loads a page
//! from lubdub's HTTP worker whose `EventSource` receives events; the
//! server ends the first stream after three events, the browser reconnects
//! by itself with `Last-Event-ID`, and the server resumes after it.
//!
//! Needs `chromium` and Python with `websockets` (the DevTools driver,
//! tests/interop/cdp.py), as tests/ws_browser.rs; `.ci/run` installs them.

mod common;
mod http_support;
mod ws_support;

use common::recv;
use ws_support::browser::{Browser, Page};

#[test]
fn event_source_receives_events_and_resumes_after_a_reconnect() {
    let s = http_support::serve_default();
    let base = s.url("/page");
    let browser = Browser::open(&base);
    let mut page = Page::attach(&browser, &base);
    let items = page.wait_items(&[
        "event 1 #1",
        "event 2 #2",
        "event 3 #3",
        "event 4 #4",
        "event 5 #5",
        "event 6 #6",
    ]);
    assert_eq!(items.len(), 6, "each event once, in order: {items:?}");
    assert_eq!(items[0], "event 1 #1");
    assert_eq!(items[5], "event 6 #6");
    // The first request had no Last-Event-ID; the reconnect sent the last
    // id the page received.
    assert_eq!(recv(&s.event_ids), None);
    assert_eq!(recv(&s.event_ids).as_deref(), Some("3"));
}
