#!/usr/bin/env python3
"""A `websockets` (PyPI) server for lubdub's `Client<Ws>`, driven by
tests/ws_interop.rs.

    ws_server.py [--deflate]

Listens on a free loopback port and prints {"event": "listening", "port": P}.
Each connection echoes text and binary messages, except these texts:

* "please fragment": sends a text message as 3 fragments and a 1 MiB binary
  message (payloads.binary_payload(MIB, 2)) as 16 fragments;
* "please ping": pings the client (payload "py-ping"), waits for its pong
  and sends the text "pong ok" (or "no pong: ...");
* "please close": closes with 4001 "bye".

When a connection ends it prints {"event": "closed", ...} with the close
code and reason received and the negotiated extensions. permessage-deflate
is offered only with --deflate. The process exits when stdin closes, or
after HARD_TIMEOUT seconds.
"""

import asyncio
import json
import sys
import threading

import websockets
from websockets.asyncio.server import serve

from payloads import MIB, binary_payload

HARD_TIMEOUT = 120.0
STEP_TIMEOUT = 20.0


def emit(obj):
    print(json.dumps(obj), flush=True)


def split(message, parts):
    step = max(1, len(message) // parts)
    return [message[i : i + step] for i in range(0, len(message), step)]


async def handler(ws):
    received = []
    try:
        async for msg in ws:
            received.append("text" if isinstance(msg, str) else "binary")
            if msg == "please fragment":
                await ws.send(["frag-1 ✓ ", "frag-2 ünï ", "frag-3"])
                await ws.send(split(binary_payload(MIB, 2), 16))
            elif msg == "please ping":
                try:
                    waiter = await ws.ping(b"py-ping")
                    await asyncio.wait_for(waiter, STEP_TIMEOUT)
                    await ws.send("pong ok")
                except Exception as e:  # reported to the client, then the test
                    await ws.send(f"no pong: {type(e).__name__}: {e}")
            elif msg == "please close":
                await ws.close(4001, "bye")
            else:
                await ws.send(msg)
    except websockets.exceptions.ConnectionClosedError:
        pass  # reported below with the codes
    finally:
        emit(
            {
                "event": "closed",
                "path": ws.request.path,
                "code": ws.close_code,
                "reason": ws.close_reason,
                "rcvd_code": ws.protocol.close_rcvd.code if ws.protocol.close_rcvd else None,
                "rcvd_reason": ws.protocol.close_rcvd.reason if ws.protocol.close_rcvd else None,
                "request_extensions": ws.request.headers.get("Sec-WebSocket-Extensions"),
                "extensions": [ext.name for ext in ws.protocol.extensions],
                "received": received,
            }
        )


async def stdin_closed():
    """Completes when stdin reaches EOF (the test ended or died). A daemon
    thread reads it, so it never holds the process up at exit."""
    loop = asyncio.get_running_loop()
    eof = asyncio.Event()

    def read():
        sys.stdin.read()
        loop.call_soon_threadsafe(eof.set)

    threading.Thread(target=read, daemon=True).start()
    await eof.wait()


async def main(deflate):
    async with serve(
        handler,
        "127.0.0.1",
        0,
        compression="deflate" if deflate else None,
        max_size=16 * MIB,
        ping_interval=None,  # the test counts pings
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
    ) as server:
        port = server.sockets[0].getsockname()[1]
        emit({"event": "listening", "port": port, "websockets": websockets.__version__})
        await stdin_closed()


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main("--deflate" in sys.argv[1:]), HARD_TIMEOUT))
    except BaseException as e:  # report anything, timeouts included
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
