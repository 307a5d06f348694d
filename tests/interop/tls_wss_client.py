#!/usr/bin/env python3
"""A Python `websockets` client of a lubdub wss:// echo server, driven by
tests/tls.rs. The server's CA is trusted through an ssl context (nothing
else is); prints one JSON line per check, {"done": true} at the end, and
{"error": ...} with a non-zero exit on any failure.

    tls_wss_client.py BASE_URL CAFILE

BASE_URL is wss://127.0.0.1:PORT. Connections, one after the other:

    /echo         a text and a binary message echoed:
                  {"tls": version}, {"text": ...}, {"binary_ok": bool, "len": n}
    /server-close "please close" makes the server close with 4002 "done":
                  {"close_code": 4002, "close_reason": "done"}
    /client-close the client closes with 4001 "bye":
                  {"client_closed": 4001, "echo_code": code the server sent back}
"""

import asyncio
import json
import ssl
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

HARD_TIMEOUT = 60.0
STEP_TIMEOUT = 20.0


def emit(obj):
    print(json.dumps(obj), flush=True)


async def run(base, cafile):
    ctx = ssl.create_default_context(cafile=cafile)

    async with connect(base + "/echo", ssl=ctx, open_timeout=STEP_TIMEOUT) as ws:
        emit({"tls": ws.transport.get_extra_info("ssl_object").version()})
        await ws.send("hello over wss")
        emit({"text": await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)})
        payload = bytes((i * 7 + 3) & 0xFF for i in range(100_000))
        await ws.send(payload)
        got = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        emit({"binary_ok": got == payload, "len": len(got)})

    async with connect(base + "/server-close", ssl=ctx, open_timeout=STEP_TIMEOUT) as ws:
        await ws.send("please close")
        try:
            while True:
                await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
        except ConnectionClosed as e:
            emit({"close_code": e.rcvd.code, "close_reason": e.rcvd.reason})

    async with connect(base + "/client-close", ssl=ctx, open_timeout=STEP_TIMEOUT) as ws:
        await ws.close(4001, "bye")
        emit({"client_closed": 4001, "echo_code": ws.close_code})

    emit({"done": True})


def main():
    base, cafile = sys.argv[1], sys.argv[2]
    asyncio.run(asyncio.wait_for(run(base, cafile), HARD_TIMEOUT))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report anything, as a JSON line
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
