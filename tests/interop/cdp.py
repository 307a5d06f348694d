#!/usr/bin/env python3
"""A small Chrome DevTools Protocol driver for tests/ws_browser.rs, over the
`websockets` package the other interop scripts use.

    cdp.py DEVTOOLS_PORT PAGE_URL_PREFIX

Attaches to the page target whose URL starts with PAGE_URL_PREFIX in a
Chromium started with --remote-debugging-port, prints {"ready": true}, then
answers one JSON line per command read from stdin:

* {"cmd": "wait_items", "texts": [...], "timeout": S}: waits until every
  text is one of the <li> lines of <ul id="log"> (a MutationObserver in the
  page resolves the wait: no polling); answers {"items": [...]}, the lines
  at that moment, or {"error": ...} with them on timeout;
* {"cmd": "eval", "expr": JS}: evaluates JS (awaiting a promise) and
  answers {"value": ...};
* {"cmd": "eval_network", "expr": JS}: the same with the Network domain
  enabled, and answers {"value": ..., "websockets": [...]}: each WebSocket
  handshake the page made meanwhile, {"url", "origin" (the request's Origin
  header), "status" (the response's, or null if none came: Chromium
  reports only a 101), and "log": the texts of the browser's log entries
  meanwhile (a refused handshake's "Unexpected response code: 403");
* {"cmd": "screenshot", "path": P}: captures the page as PNG into P and
  answers {"bytes": N};
* {"cmd": "close_browser"}: Browser.close, answers {"closed": true}.

Exits at stdin EOF, or after HARD_TIMEOUT seconds.
"""

import asyncio
import base64
import itertools
import json
import sys
import threading
import urllib.request

from websockets.asyncio.client import connect

HARD_TIMEOUT = 120.0
STEP_TIMEOUT = 30.0

WAIT_ITEMS_JS = r"""
(texts, timeoutMs) => new Promise((resolve) => {
  const lines = () => [...document.querySelectorAll("#log li")].map((li) => li.textContent);
  let observer = null;
  const check = () => {
    const now = lines();
    if (texts.every((t) => now.includes(t))) {
      if (observer) observer.disconnect();
      clearTimeout(timer);
      resolve({ items: now });
      return true;
    }
    return false;
  };
  const timer = setTimeout(() => {
    if (observer) observer.disconnect();
    resolve({ error: `not all of ${JSON.stringify(texts)} within ${timeoutMs} ms; lines: ${JSON.stringify(lines())}` });
  }, timeoutMs);
  if (!check()) {
    observer = new MutationObserver(check);
    observer.observe(document.getElementById("log"), { childList: true, subtree: true, characterData: true });
  }
})
"""


def emit(obj):
    print(json.dumps(obj), flush=True)


def http_json(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


class Cdp:
    """One DevTools WebSocket: commands with ids, answers matched by id."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = itertools.count(1)
        # Events that arrived while waiting for answers.
        self.events = []

    async def call(self, method, timeout=STEP_TIMEOUT, **params):
        msg_id = next(self.ids)
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))

        async def answer():
            while True:
                msg = json.loads(await self.ws.recv())
                if msg.get("id") == msg_id:
                    return msg
                if "method" in msg:
                    self.events.append(msg)

        msg = await asyncio.wait_for(answer(), timeout)
        if "error" in msg:
            raise RuntimeError(f"{method}: {msg['error']}")
        return msg["result"]

    async def evaluate(self, expr, timeout=STEP_TIMEOUT):
        result = await self.call(
            "Runtime.evaluate",
            timeout=timeout,
            expression=expr,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"page exception: {result['exceptionDetails']}")
        return result["result"].get("value")


def websocket_handshakes(events):
    """The WebSocket handshakes among DevTools Network events, in order."""
    shakes = {}
    for e in events:
        params = e.get("params", {})
        rid = params.get("requestId")
        if e["method"] == "Network.webSocketCreated":
            shakes[rid] = {"url": params.get("url"), "origin": None, "status": None}
        elif e["method"] == "Network.webSocketWillSendHandshakeRequest" and rid in shakes:
            headers = params.get("request", {}).get("headers", {})
            shakes[rid]["origin"] = next(
                (v for k, v in headers.items() if k.lower() == "origin"), None
            )
        elif e["method"] == "Network.webSocketHandshakeResponseReceived" and rid in shakes:
            shakes[rid]["status"] = params.get("response", {}).get("status")
    return list(shakes.values())


async def page_target(port, prefix):
    """The page's DevTools URL. The page shows up in the target list soon
    after the browser starts; nothing signals it, so the list is polled
    (bounded)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP_TIMEOUT
    while loop.time() < deadline:
        targets = await asyncio.to_thread(http_json, port, "/json/list")
        for t in targets:
            if t.get("type") == "page" and t.get("url", "").startswith(prefix):
                return t["webSocketDebuggerUrl"]
        await asyncio.sleep(0.05)
    raise TimeoutError(f"no page target starting with {prefix}")


async def commands():
    """Lines of stdin, read on a daemon thread (never holds up the exit)."""
    loop = asyncio.get_running_loop()
    queue = asyncio.Queue()

    def read():
        for line in sys.stdin:
            loop.call_soon_threadsafe(queue.put_nowait, line)
        loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=read, daemon=True).start()
    while (line := await queue.get()) is not None:
        if line.strip():
            yield json.loads(line)


async def main(port, prefix):
    url = await page_target(port, prefix)
    async with connect(url, max_size=None, compression=None, ping_interval=None) as ws:
        page = Cdp(ws)
        emit({"ready": True})
        async for cmd in commands():
            try:
                if cmd["cmd"] == "wait_items":
                    timeout = float(cmd.get("timeout", STEP_TIMEOUT))
                    expr = f"({WAIT_ITEMS_JS})({json.dumps(cmd['texts'])}, {int(timeout * 1000)})"
                    emit(await page.evaluate(expr, timeout=timeout + 10))
                elif cmd["cmd"] == "eval":
                    emit({"value": await page.evaluate(cmd["expr"])})
                elif cmd["cmd"] == "eval_network":
                    await page.call("Network.enable")
                    await page.call("Log.enable")
                    page.events.clear()
                    value = await page.evaluate(cmd["expr"])
                    log = [
                        e["params"]["entry"].get("text", "")
                        for e in page.events
                        if e["method"] == "Log.entryAdded"
                    ]
                    emit(
                        {
                            "value": value,
                            "websockets": websocket_handshakes(page.events),
                            "log": log,
                        }
                    )
                elif cmd["cmd"] == "screenshot":
                    shot = await page.call("Page.captureScreenshot", format="png")
                    data = base64.b64decode(shot["data"])
                    with open(cmd["path"], "wb") as f:
                        f.write(data)
                    emit({"bytes": len(data)})
                elif cmd["cmd"] == "close_browser":
                    browser_url = (await asyncio.to_thread(http_json, port, "/json/version"))[
                        "webSocketDebuggerUrl"
                    ]
                    async with connect(browser_url, max_size=None, compression=None) as b:
                        try:
                            await Cdp(b).call("Browser.close", timeout=10)
                        except Exception:
                            pass  # the browser may drop the link while closing
                    emit({"closed": True})
                else:
                    emit({"error": f"unknown command {cmd}"})
            except Exception as e:
                emit({"error": f"{cmd['cmd']}: {type(e).__name__}: {e}"})


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(int(sys.argv[1]), sys.argv[2]), HARD_TIMEOUT))
    except BaseException as e:
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
