"""Test payloads shared by the interop scripts; tests/ws_support/mod.rs and
node/payloads.mjs generate the same bytes, so each side can check the other's
messages exactly."""

# 16 bytes of UTF-8: ASCII, a 3-byte and three 2-byte characters.
TEXT_UNIT = "lub ✓ ünïcø"
assert len(TEXT_UNIT.encode()) == 16

MIB = 1 << 20


def text_payload(n_bytes: int) -> str:
    """`n_bytes` (a multiple of 16) of UTF-8 text: TEXT_UNIT repeated."""
    assert n_bytes % 16 == 0
    return TEXT_UNIT * (n_bytes // 16)


def binary_payload(n: int, seed: int = 1) -> bytes:
    """`n` pseudo-random bytes: the C library LCG (mod 2**31), bits 16..23."""
    out = bytearray(n)
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out[i] = (x >> 16) & 0xFF
    return bytes(out)
