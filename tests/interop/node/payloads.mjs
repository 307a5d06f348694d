// Test payloads: the same bytes as tests/interop/payloads.py and
// tests/ws_support/mod.rs, so each side can check the other's messages.

// 16 bytes of UTF-8: ASCII, a 3-byte and three 2-byte characters.
export const TEXT_UNIT = "lub ✓ ünïcø";
if (Buffer.byteLength(TEXT_UNIT) !== 16) throw new Error("TEXT_UNIT must be 16 bytes");

export const MIB = 1 << 20;

// `nBytes` (a multiple of 16) of UTF-8 text: TEXT_UNIT repeated.
export function textPayload(nBytes) {
  if (nBytes % 16 !== 0) throw new Error("a multiple of 16");
  return TEXT_UNIT.repeat(nBytes / 16);
}

// `n` pseudo-random bytes: the C library LCG (mod 2**31), bits 16..23.
export function binaryPayload(n, seed = 1) {
  const out = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) & 0x7fffffff;
    out[i] = (x >>> 16) & 0xff;
  }
  return out;
}
