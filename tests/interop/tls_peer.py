#!/usr/bin/env python3
"""A TLS peer on Python's standard `ssl` module (OpenSSL underneath), driven
by tests/tls.rs. Prints one JSON line per event; on any failure it prints
{"error": ...} and exits non-zero. The whole run is bounded by HARD_TIMEOUT.

    tls_peer.py client PORT CAFILE SERVER_NAME STEP...

Connects to 127.0.0.1:PORT trusting only CAFILE, checks the certificate
against SERVER_NAME (also sent as SNI), prints {"version", "cipher"}, then
runs the steps in order:

    echo:TEXT   sends TEXT + "\\n", expects the same line back: {"echo": TEXT}
    close:TEXT  sends TEXT + "\\n" (the server closes on it) and reads to the
                end: {"eof": "clean"} when the end came with a close_notify,
                {"eof": "unexpected", "detail": ...} when TCP ended without
                one (ragged EOFs are not suppressed here)

and finally closes with its own close_notify: {"done": true}.

    tls_peer.py server CERT_CHAIN KEY CONNECTIONS

Listens on 127.0.0.1 (a free port), prints {"port": N}, then serves
CONNECTIONS connections one after the other. For each it prints
{"conn": i, "session_reused": bool, "version": ...} once the handshake is
done, echoes one line ({"conn": i, "echo": line}), and then closes with a
close_notify, except the last connection, which echoes lines until the
client leaves. (The first connections' close is one-way: close_notify
and FIN without waiting for the client's close_notify.) One SSLContext serves them all, so its session tickets
resume sessions across connections.
"""

import json
import signal
import socket
import ssl
import sys

HARD_TIMEOUT = 60
STEP_TIMEOUT = 20.0


def emit(obj):
    print(json.dumps(obj), flush=True)


def read_line(sock, pending):
    """One line (without the newline) from `sock`; None at the end."""
    while b"\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        pending.extend(chunk)
    i = pending.index(b"\n")
    line = bytes(pending[:i]).decode()
    del pending[: i + 1]
    return line


def client(port, cafile, server_name, steps):
    ctx = ssl.create_default_context(cafile=cafile)
    raw = socket.create_connection(("127.0.0.1", port), timeout=STEP_TIMEOUT)
    sock = ctx.wrap_socket(raw, server_hostname=server_name, suppress_ragged_eofs=False)
    emit({"version": sock.version(), "cipher": sock.cipher()[0]})
    pending = bytearray()
    for step in steps:
        kind, _, text = step.partition(":")
        sock.sendall(text.encode() + b"\n")
        if kind == "echo":
            line = read_line(sock, pending)
            if line != text:
                raise RuntimeError(f"sent {text!r}, got {line!r}")
            emit({"echo": line})
        elif kind == "close":
            try:
                while read_line(sock, pending) is not None:
                    pass
                emit({"eof": "clean"})
            except ssl.SSLEOFError as e:
                emit({"eof": "unexpected", "detail": str(e)})
                return
        else:
            raise RuntimeError(f"unknown step {step!r}")
    try:
        sock.unwrap()
    except (ssl.SSLError, OSError):
        pass  # the server may be gone already
    sock.close()
    emit({"done": True})


def server(cert_chain, key, connections):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert_chain, key)
    listener = socket.create_server(("127.0.0.1", 0))
    emit({"port": listener.getsockname()[1]})
    for i in range(connections):
        listener.settimeout(STEP_TIMEOUT)
        raw, _ = listener.accept()
        raw.settimeout(STEP_TIMEOUT)
        sock = ctx.wrap_socket(raw, server_side=True, suppress_ragged_eofs=False)
        emit({"conn": i, "session_reused": sock.session_reused, "version": sock.version()})
        pending = bytearray()
        last = i == connections - 1
        while True:
            line = read_line(sock, pending)
            if line is None:
                break
            sock.sendall(line.encode() + b"\n")
            emit({"conn": i, "echo": line})
            if not last:
                break
        if not last:
            # Our close_notify, then TCP's FIN, without waiting for the
            # client's close_notify (a one-way close, as most servers do).
            sock.setblocking(False)
        try:
            sock.unwrap()
        except (ssl.SSLError, OSError):
            pass
        sock.close()
    emit({"done": True})


def on_alarm(_signum, _frame):
    raise TimeoutError(f"still running after {HARD_TIMEOUT} s")


def main():
    signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(HARD_TIMEOUT)
    mode = sys.argv[1]
    if mode == "client":
        client(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5:])
    elif mode == "server":
        server(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise RuntimeError(f"unknown mode {mode!r}")


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # report anything, as a JSON line
        emit({"error": f"{type(e).__name__}: {e}"})
        sys.exit(1)
