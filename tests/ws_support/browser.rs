//! Headless Chromium driven over its DevTools protocol (tests/interop/cdp.py),
//! for the browser tests (tests/ws_browser.rs, tests/http_browser.rs): a
//! page opened on a free DevTools port, commands and `#log` lines awaited
//! without polling.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{ChildGuard, TempDir, WAIT};

/// Headless Chromium opening `url`, with its DevTools on a free port.
pub struct Browser {
    pub child: ChildGuard,
    pub devtools_port: u16,
    _profile: TempDir,
}

impl Browser {
    pub fn open(url: &str) -> Self {
        Self::open_with(url, &[])
    }

    pub fn open_with(url: &str, extra: &[&str]) -> Self {
        let profile = TempDir::new("chromium");
        let mut cmd = Command::new(super::chromium());
        // As this machine's notes say: no sandbox (root), no GPU, and no
        // background traffic (the network is closed but for loopback).
        cmd.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            "--window-size=900,700",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(url);
        let child = ChildGuard::spawn("chromium", &mut cmd);
        // Chromium writes the port it got to DevToolsActivePort (port, then
        // the browser's path). Nothing signals the file: poll, bounded.
        let file = profile.path().join("DevToolsActivePort");
        let start = Instant::now();
        let devtools_port = loop {
            let port = std::fs::read_to_string(&file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()));
            if let Some(port) = port {
                break port;
            }
            assert!(
                start.elapsed() < WAIT,
                "chromium wrote no DevToolsActivePort within {WAIT:?}; stderr:\n{}",
                child.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        Browser {
            child,
            devtools_port,
            _profile: profile,
        }
    }
}

/// tests/interop/cdp.py attached to the page.
pub struct Page {
    pub driver: ChildGuard,
}

impl Page {
    pub fn attach(browser: &Browser, url_prefix: &str) -> Self {
        let mut cmd = super::python_script("cdp.py");
        cmd.arg(browser.devtools_port.to_string()).arg(url_prefix);
        let driver = ChildGuard::spawn("CDP driver", &mut cmd);
        let ready = driver.json();
        assert_eq!(ready["ready"], true, "{ready}");
        Page { driver }
    }

    pub fn command(&mut self, cmd: Value) -> Value {
        self.driver.send_line(&cmd.to_string());
        self.driver.json()
    }

    /// Waits until every one of `texts` is a line of the chat log; returns
    /// all lines.
    pub fn wait_items(&mut self, texts: &[&str]) -> Vec<String> {
        let answer = self.command(json!({
            "cmd": "wait_items", "texts": texts, "timeout": WAIT.as_secs()
        }));
        serde_json::from_value(answer["items"].clone())
            .unwrap_or_else(|e| panic!("wait_items answer {answer}: {e}"))
    }

    /// Evaluates `expr` in the page (awaiting a promise); its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        self.command(json!({"cmd": "eval", "expr": expr}))["value"].clone()
    }
}
