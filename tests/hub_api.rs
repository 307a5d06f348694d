//! The publish API's logic (`lubdub::hub::api`) against a running text
//! worker and its hub, clients over real loopback sockets: every kind of
//! target, batches, presence, the API key and each refusal.

mod common;

use std::sync::mpsc;

use common::{recv, LineClient};
use futures_lite::future::block_on;
use lubdub::hub::api::{ApiRequest, ApiResponse, PublishApi, MAX_BATCH};
use lubdub::hub::Hub;
use lubdub::{Text, Worker, WorkerHandle};

const KEY: &str = "0123456789abcdef-secret";

/// A text worker whose clients say `name UID` and `join GROUP` (answered
/// `ok`), and the API of its hub.
fn served() -> (WorkerHandle<Text>, Hub<Text>, mpsc::Receiver<String>) {
    let hub = Hub::<Text>::local();
    let mut w = Worker::<Text>::new("text://127.0.0.1:0").unwrap();
    w.plugin(hub.plugin());
    let h = hub.clone();
    let (tx, rx) = mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    w.on_message(move |c, line: String| {
        let r = match line.split_once(' ') {
            Some(("name", uid)) => h.bind_uid(c, uid),
            Some(("join", g)) => h.join(c, g),
            _ => return,
        };
        r.unwrap();
        let _ = tx.lock().unwrap().send(h.global_id(c).to_string());
        let _ = c.send("ok");
    });
    (w.start().unwrap(), hub, rx)
}

fn post(api: &PublishApi<Text>, key: Option<&str>, body: &str) -> ApiResponse {
    block_on(api.handle(ApiRequest {
        method: "POST",
        path: "/api/publish",
        query: None,
        key: key.map(str::as_bytes),
        body: body.as_bytes(),
    }))
}

fn get(api: &PublishApi<Text>, path: &str, query: &str) -> ApiResponse {
    block_on(api.handle(ApiRequest {
        method: "GET",
        path,
        query: Some(query),
        key: Some(KEY.as_bytes()),
        body: b"",
    }))
}

fn json(r: &ApiResponse) -> serde_json::Value {
    serde_json::from_str(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.body))
}

#[test]
fn backends_reach_users_groups_everyone_and_one_connection() {
    let (worker, hub, ids) = served();
    let api = PublishApi::new(hub, KEY).unwrap();
    let mut alice = LineClient::connect(worker.local_addr());
    assert_eq!(alice.roundtrip("name alice"), "ok");
    let alice_id = recv(&ids);
    assert_eq!(alice.roundtrip("join room"), "ok");
    recv(&ids);
    let mut bob = LineClient::connect(worker.local_addr());
    assert_eq!(bob.roundtrip("name bob"), "ok");
    let bob_id = recv(&ids);
    assert_eq!(bob.roundtrip("join room"), "ok");
    recv(&ids);

    let r = post(
        &api,
        Some(KEY),
        r#"{"to":"uid","target":"alice","data":"to alice"}"#,
    );
    assert_eq!(
        (r.status, json(&r)["local"].as_u64()),
        (200, Some(1)),
        "{r:?}"
    );
    assert_eq!(alice.line(), "to alice\n");

    let r = post(
        &api,
        Some(KEY),
        r#"{"to":"group","target":"room","data":"to room"}"#,
    );
    assert_eq!(json(&r)["local"], 2);
    assert_eq!(alice.line(), "to room\n");
    assert_eq!(bob.line(), "to room\n");

    let body =
        format!(r#"{{"to":"group","target":"room","data":"not bob","except":["{bob_id}"]}}"#);
    assert_eq!(json(&post(&api, Some(KEY), &body))["local"], 1);
    assert_eq!(alice.line(), "not bob\n");

    let r = post(&api, Some(KEY), r#"{"to":"all","data":"everyone"}"#);
    assert_eq!(json(&r)["local"], 2);
    assert_eq!(alice.line(), "everyone\n");
    assert_eq!(bob.line(), "everyone\n");

    let body = format!(r#"{{"to":"conn","target":"{alice_id}","data":"just you"}}"#);
    assert_eq!(json(&post(&api, Some(KEY), &body))["local"], 1);
    assert_eq!(alice.line(), "just you\n");

    // a batch: each message answered in order, a bad one does not stop
    // the others
    let r = post(
        &api,
        Some(KEY),
        r#"[{"to":"uid","target":"bob","data":"b1"},{"to":"nowhere","data":"x"},{"to":"uid","target":"bob","data":"b2"}]"#,
    );
    let v = json(&r);
    assert_eq!(v["results"][0]["local"], 1);
    assert!(v["results"][1]["error"]
        .as_str()
        .unwrap()
        .contains("uid, group, all or conn"));
    assert_eq!(v["results"][2]["local"], 1);
    assert_eq!(bob.line(), "b1\n");
    assert_eq!(bob.line(), "b2\n");

    // presence and online status
    let v = json(&get(&api, "/api/presence", "group=room"));
    let mut uids: Vec<String> = serde_json::from_value(v["uids"].clone()).unwrap();
    uids.sort();
    assert_eq!(
        (uids, v["members"].as_u64()),
        (vec!["alice".to_owned(), "bob".to_owned()], Some(2))
    );
    assert_eq!(json(&get(&api, "/api/presence", ""))["uids"], 2);
    assert_eq!(json(&get(&api, "/api/online", "uid=alice"))["online"], true);
    assert_eq!(
        json(&get(&api, "/api/online", "uid=carol"))["online"],
        false
    );

    // nothing else reached them
    alice
        .stream
        .set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut extra = String::new();
    assert!(
        std::io::BufRead::read_line(&mut std::io::BufReader::new(&alice.stream), &mut extra)
            .is_err(),
        "{extra:?}"
    );
    worker.stop_and_wait();
}

#[test]
fn the_key_is_required_and_refusals_say_why() {
    let (worker, hub, _ids) = served();
    assert!(PublishApi::new(hub.clone(), "short").is_err());
    let api = PublishApi::new(hub.clone(), KEY).unwrap();
    let one = r#"{"to":"all","data":"x"}"#;
    for key in [
        None,
        Some("0123456789abcdef-secreT"),
        Some(""),
        Some("0123456789abcdef-secret-"),
    ] {
        let r = post(&api, key, one);
        assert_eq!(r.status, 401, "{key:?}");
        assert!(r.wants_key());
        assert!(!r.body.contains(KEY));
    }
    assert!(!format!("{api:?}").contains(KEY), "Debug shows no key");
    for (body, why) in [
        ("{", "invalid JSON"),
        (r#"{"to":"uid","data":"x"}"#, "needs a target"),
        (r#"{"to":"all","target":"t","data":"x"}"#, "takes no target"),
        (
            r#"{"to":"uid","target":"a","data":"two\nlines"}"#,
            "newline",
        ),
        (
            r#"{"to":"conn","target":"nonsense","data":"x"}"#,
            "connection id",
        ),
        (
            r#"{"to":"uid","target":"a","data":"x","except":["n:1"]}"#,
            "group publish only",
        ),
        (
            r#"{"to":"uid","target":"a","data":"x","extra":1}"#,
            "unknown field",
        ),
    ] {
        let r = post(&api, Some(KEY), body);
        assert_eq!(r.status, 400, "{body}: {r:?}");
        assert!(
            json(&r)["error"].as_str().unwrap().contains(why),
            "{body}: {r:?}"
        );
    }
    let long = format!(
        r#"{{"to":"uid","target":"{}","data":"x"}}"#,
        "u".repeat(hub.limits().max_name_len + 1)
    );
    assert_eq!(post(&api, Some(KEY), &long).status, 400);
    let big = format!(
        r#"{{"to":"all","data":"{}"}}"#,
        "d".repeat(hub.limits().max_message_size + 1)
    );
    assert!(json(&post(&api, Some(KEY), &big))["error"]
        .as_str()
        .unwrap()
        .contains("message limit"));
    let batch = format!("[{}]", vec![one; MAX_BATCH + 1].join(","));
    assert_eq!(post(&api, Some(KEY), &batch).status, 400);

    let r = block_on(api.handle(ApiRequest {
        method: "GET",
        path: "/api/publish",
        query: None,
        key: Some(KEY.as_bytes()),
        body: b"",
    }));
    assert_eq!(r.status, 405);
    let r = block_on(api.handle(ApiRequest {
        method: "GET",
        path: "/elsewhere",
        query: None,
        key: Some(KEY.as_bytes()),
        body: b"",
    }));
    assert_eq!(r.status, 404);
    assert_eq!(get(&api, "/api/online", "").status, 400);

    // an API opened on purpose needs no key
    let open = PublishApi::without_key(hub);
    assert_eq!(post(&open, None, one).status, 200);
    worker.stop_and_wait();
}

/// `curl ARGS`, its stdout (the answer's head with `-i`).
fn curl(args: &[&str]) -> String {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("curl is needed for this test (Debian: curl): {e}"));
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn curl_and_php_publish_over_http() {
    let (worker, hub, ids) = served();
    let api = PublishApi::new(hub, KEY).unwrap();
    let http = api.worker("http://127.0.0.1:0").unwrap().start().unwrap();
    let base = format!("http://{}", http.local_addr());
    let mut alice = LineClient::connect(worker.local_addr());
    assert_eq!(alice.roundtrip("name alice"), "ok");
    recv(&ids);

    // curl, with the key in X-API-Key
    let key = format!("X-API-Key: {KEY}");
    let out = curl(&[
        "-H",
        &key,
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"to":"uid","target":"alice","data":"via curl"}"#,
        &format!("{base}/api/publish"),
    ]);
    assert_eq!(out, r#"{"ok":true,"local":1}"#);
    assert_eq!(alice.line(), "via curl\n");

    // Authorization: apikey, and a GET; then no key: 401 with its header
    let auth = format!("Authorization: apikey {KEY}");
    let out = curl(&["-H", &auth, &format!("{base}/api/online?uid=alice")]);
    assert_eq!(out, r#"{"uid":"alice","online":true}"#);
    let out = curl(&["-i", "-d", "{}", &format!("{base}/api/publish")]);
    assert!(out.starts_with("HTTP/1.1 401"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("www-authenticate: apikey"),
        "{out}"
    );
    assert!(
        out.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{out}"
    );

    // PHP's file_get_contents, as a PHP backend posts without extensions
    let php = format!(
        r#"$ctx = stream_context_create(['http' => [
            'method' => 'POST',
            'header' => "X-API-Key: {KEY}\r\nContent-Type: application/json\r\n",
            'content' => json_encode(['to' => 'uid', 'target' => 'alice', 'data' => 'via php']),
        ]]);
        echo file_get_contents('{base}/api/publish', false, $ctx);"#
    );
    let out = std::process::Command::new("php")
        .args(["-r", &php])
        .output()
        .unwrap_or_else(|e| panic!("php is needed for this test (Debian: php-cli): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"ok":true,"local":1}"#
    );
    assert_eq!(alice.line(), "via php\n");

    http.stop_and_wait();
    worker.stop_and_wait();
}
