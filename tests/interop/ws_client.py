#!/usr/bin/env python3
"""A `websockets` (PyPI) client of a lubdub WebSocket echo server, driven by
tests/ws_interop.rs.

    ws_client.py BASE_URL CASE...

Each case opens its own connection to BASE_URL/CASE and prints one JSON
line with what it saw; the last line is {"done": true}. The Rust test
checks these lines and what the lubdub server received. The whole run is
bounded by HARD_TIMEOUT; on any failure the script prints
{"error": ...} and exits non-zero.

The server side (tests/ws_interop.rs) echoes text and binary messages, and
on the text "please ping" sends a ping with payload "lubdub-ping" and then
the text "pinged", on
"please close" closes with 4002 "done".
"""

import asyncio
import json
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from payloads import MIB, binary_payload, text_payload

HARD_TIMEOUT = 60.0
STEP_TIMEOUT = 20.0


def emit(obj):
    print(json.dumps(obj), flush=True)


def kind(message):
    return "text" if isinstance(message, str) else "binary"


async def echo(ws, message, fragments=None):
    """Sends `message` (whole, or as the given fragments) and checks the echo."""
    await ws.send(fragments if fragments is not None else message)
    size = len(message.encode()) if isinstance(message, str) else len(message)
    try:
        back = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    except asyncio.TimeoutError:
        raise TimeoutError(
            f"no echo of a {kind(message)} message of {size} bytes within {STEP_TIMEOUT} s"
        ) from None
    return {
        "type": kind(back),
        "sent_type": kind(message),
        "len": size,
        "equal": back == message,
    }


def split(message, parts):
    step = max(1, len(message) // parts)
    return [message[i : i + step] for i in range(0, len(message), step)]


async def run_case(base, case):
    options = dict(
        open_timeout=STEP_TIMEOUT,
        close_timeout=STEP_TIMEOUT,
        ping_interval=None,  # no keepalive pings of its own: the test counts pings
        max_size=16 * MIB,
    )
    if case != "deflate":
        # websockets offers permessage-deflate by default; only the deflate
        # case wants it (the plain server declines it anyway).
        options["compression"] = None
    async with connect(f"{base}/{case}", **options) as ws:
        out = {"case": case}
        if case == "text":
            out["echoes"] = [await echo(ws, "hello ✓"), await echo(ws, "")]
        elif case == "binary":
            out["echoes"] = [
                await echo(ws, bytes(range(256))),
                await echo(ws, b""),
            ]
        elif case == "big":
            out["echoes"] = [
                await echo(ws, text_payload(MIB)),
                await echo(ws, binary_payload(MIB)),
            ]
        elif case == "fragmented":
            text = "frag-1 ✓ frag-2 ünï frag-3"
            big = binary_payload(MIB)
            out["echoes"] = [
                await echo(ws, text, ["frag-1 ✓ ", "frag-2 ünï ", "frag-3"]),
                await echo(ws, b"\x00\x01\x02\x03", [b"\x00", b"\x01\x02", b"", b"\x03"]),
                await echo(ws, big, split(big, 16)),
            ]
            out["fragments"] = [3, 4, 16]
        elif case == "ping":
            waiter = await ws.ping(b"py-ping")
            latency = await asyncio.wait_for(waiter, STEP_TIMEOUT)
            out["pong_latency"] = latency
            # The server pings us, then says "pinged"; websockets answers
            # the ping with a pong by itself, before it hands us "pinged".
            await ws.send("please ping")
            out["after_ping"] = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
            out["echoes"] = [await echo(ws, "after ping")]
        elif case == "close":
            await ws.close(4001, "bye")
            out["close_code"] = ws.close_code
            out["close_reason"] = ws.close_reason
        elif case == "server-close":
            await ws.send("please close")
            try:
                extra = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
                out["unexpected"] = repr(extra)[:100]
            except ConnectionClosed as closed:
                out["rcvd_code"] = closed.rcvd.code if closed.rcvd else None
                out["rcvd_reason"] = closed.rcvd.reason if closed.rcvd else None
                out["clean"] = closed.rcvd_then_sent is not None
            out["close_code"] = ws.close_code
            out["close_reason"] = ws.close_reason
        elif case == "deflate":
            out["extensions_header"] = ws.response.headers.get("Sec-WebSocket-Extensions")
            out["extensions"] = [ext.name for ext in ws.protocol.extensions]
            text = text_payload(64 * 1024)
            out["echoes"] = [
                await echo(ws, "small ✓"),
                await echo(ws, text_payload(MIB)),
                await echo(ws, binary_payload(64 * 1024)),
                await echo(ws, text, split(text, 8)),
            ]
        else:
            raise ValueError(f"unknown case {case}")
        return out


async def main(base, cases):
    for case in cases:
        emit(await run_case(base, case))
    emit({"done": True, "websockets": websockets.__version__})


if __name__ == "__main__":
    try:
        asyncio.run(asyncio.wait_for(main(sys.argv[1], sys.argv[2:]), HARD_TIMEOUT))
    except BaseException as e:  # report anything, timeouts included
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
