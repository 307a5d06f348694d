// A Node `ws` (npm) client of a lubdub WebSocket echo server, driven by
// tests/ws_interop.rs: the same cases and JSON lines as ../ws_client.py.
//
//     node ws_client.mjs BASE_URL CASE...
//
// Each case opens its own connection to BASE_URL/CASE and prints one JSON
// line; the last line is {"done": true}. On any failure it prints
// {"error": ...} and exits non-zero; the whole run is bounded by
// HARD_TIMEOUT_MS.

import WebSocket from "ws";
import { MIB, binaryPayload, textPayload } from "./payloads.mjs";

const HARD_TIMEOUT_MS = 60_000;
const STEP_TIMEOUT_MS = 20_000;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function fail(e) {
  emit({ error: String(e && e.stack ? e.stack : e) });
  process.exit(1);
}

setTimeout(() => fail(new Error(`hard timeout ${HARD_TIMEOUT_MS} ms`)), HARD_TIMEOUT_MS);

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timeout: ${what}`)), STEP_TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// A connection with its events queued, so a test step awaits the next one.
class Peer {
  constructor(url, options) {
    this.ws = new WebSocket(url, options);
    this.messages = [];
    this.waiters = [];
    this.closed = null;
    this.closeWaiters = [];
    this.upgradeHeaders = null;
    this.ws.on("upgrade", (res) => (this.upgradeHeaders = res.headers));
    this.ws.on("message", (data, isBinary) => {
      const msg = isBinary ? Buffer.from(data) : data.toString("utf8");
      const w = this.waiters.shift();
      if (w) w(msg);
      else this.messages.push(msg);
    });
    this.ws.on("close", (code, reason) => {
      this.closed = { code, reason: reason.toString("utf8") };
      for (const w of this.closeWaiters.splice(0)) w(this.closed);
      for (const w of this.waiters.splice(0)) w(null);
    });
    this.ws.on("error", (e) => (this.error = e));
  }

  open() {
    return withTimeout(
      new Promise((resolve, reject) => {
        this.ws.once("open", resolve);
        this.ws.once("error", reject);
      }),
      "open",
    );
  }

  recv() {
    if (this.messages.length) return Promise.resolve(this.messages.shift());
    if (this.closed) return Promise.resolve(null);
    return withTimeout(new Promise((resolve) => this.waiters.push(resolve)), "message");
  }

  whenClosed() {
    if (this.closed) return Promise.resolve(this.closed);
    return withTimeout(new Promise((resolve) => this.closeWaiters.push(resolve)), "close");
  }

  send(data, options = {}) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, options, (err) => (err ? reject(err) : resolve())),
    );
  }

  // Sends `message` whole, or as `fragments` (Buffers) with fin only on the
  // last, and checks the echo.
  async echo(message, fragments) {
    const binary = Buffer.isBuffer(message);
    if (fragments) {
      for (let i = 0; i < fragments.length; i++) {
        await this.send(fragments[i], { binary, fin: i === fragments.length - 1 });
      }
    } else {
      await this.send(message, { binary });
    }
    const size = binary ? message.length : Buffer.byteLength(message);
    const back = await this.recv().catch((e) => {
      throw new Error(`no echo of a ${binary ? "binary" : "text"} message of ${size} bytes: ${e.message}`);
    });
    const backBinary = Buffer.isBuffer(back);
    return {
      type: back === null ? "none" : backBinary ? "binary" : "text",
      sent_type: binary ? "binary" : "text",
      len: size,
      equal: binary ? backBinary && back.equals(message) : back === message,
    };
  }
}

function split(buf, parts) {
  const step = Math.max(1, Math.floor(buf.length / parts));
  const out = [];
  for (let i = 0; i < buf.length; i += step) out.push(buf.subarray(i, i + step));
  return out;
}

async function runCase(base, name) {
  const p = new Peer(`${base}/${name}`, {
    perMessageDeflate: name === "deflate",
    maxPayload: 16 * MIB,
  });
  await p.open();
  const out = { case: name };
  switch (name) {
    case "text":
      out.echoes = [await p.echo("hello ✓"), await p.echo("")];
      break;
    case "binary":
      out.echoes = [
        await p.echo(Buffer.from(Array.from({ length: 256 }, (_, i) => i))),
        await p.echo(Buffer.alloc(0)),
      ];
      break;
    case "big":
      out.echoes = [await p.echo(textPayload(MIB)), await p.echo(binaryPayload(MIB))];
      break;
    case "fragmented": {
      // Text fragments cut inside characters: "✓" (bytes 7..10) and "ü"
      // (18..20) each straddle two frames; only the whole message is UTF-8.
      const text = "frag-1 ✓ frag-2 ünï frag-3";
      const bytes = Buffer.from(text);
      const big = binaryPayload(MIB);
      out.echoes = [
        await p.echo(text, [bytes.subarray(0, 8), bytes.subarray(8, 19), bytes.subarray(19)]),
        await p.echo(Buffer.from([0, 1, 2, 3]), [
          Buffer.from([0]),
          Buffer.from([1, 2]),
          Buffer.alloc(0),
          Buffer.from([3]),
        ]),
        await p.echo(big, split(big, 16)),
      ];
      out.fragments = [3, 4, 16];
      break;
    }
    case "ping": {
      const started = process.hrtime.bigint();
      const pong = withTimeout(new Promise((resolve) => p.ws.once("pong", resolve)), "pong");
      p.ws.ping(Buffer.from("node-ping"));
      const data = await pong;
      if (data.toString() !== "node-ping") throw new Error(`pong payload ${data}`);
      out.pong_latency = Number(process.hrtime.bigint() - started) / 1e9;
      // The server pings us, then says "pinged"; ws answers the ping with a
      // pong by itself (autoPong) before it hands us "pinged".
      await p.send("please ping");
      out.after_ping = await p.recv();
      out.echoes = [await p.echo("after ping")];
      break;
    }
    case "close": {
      p.ws.close(4001, "bye");
      const closed = await p.whenClosed();
      out.close_code = closed.code;
      out.close_reason = closed.reason;
      break;
    }
    case "server-close": {
      await p.send("please close");
      const extra = await p.recv();
      if (extra !== null) out.unexpected = String(extra).slice(0, 100);
      const closed = await p.whenClosed();
      out.rcvd_code = closed.code;
      out.rcvd_reason = closed.reason;
      out.close_code = closed.code;
      out.close_reason = closed.reason;
      break;
    }
    case "deflate": {
      out.extensions_header = p.upgradeHeaders?.["sec-websocket-extensions"] ?? null;
      // What ws itself negotiated: "permessage-deflate; ..." per extension.
      out.extensions = p.ws.extensions
        ? p.ws.extensions.split(",").map((e) => e.split(";")[0].trim())
        : [];
      const text = Buffer.from(textPayload(64 * 1024));
      out.echoes = [
        await p.echo("small ✓"),
        await p.echo(textPayload(MIB)),
        await p.echo(binaryPayload(64 * 1024)),
        await p.echo(text.toString("utf8"), split(text, 8)),
      ];
      break;
    }
    default:
      throw new Error(`unknown case ${name}`);
  }
  if (!p.closed) {
    p.ws.close(1000);
    await p.whenClosed();
  }
  return out;
}

async function main() {
  const [base, ...cases] = process.argv.slice(2);
  for (const name of cases) emit(await runCase(base, name));
  const { createRequire } = await import("node:module");
  const version = createRequire(import.meta.url)("ws/package.json").version;
  emit({ done: true, ws: version, node: process.version });
  process.exit(0);
}

main().catch(fail);
