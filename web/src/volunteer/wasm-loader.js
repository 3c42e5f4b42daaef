// Fetches the chosen worker-wasm build once, checks it against the SHA-256 recorded at build
// time, and compiles it once; every compute thread then instantiates its own copy of the
// compiled module. Two checks: the browser's Subresource Integrity on the fetch (works on
// plain http too), and our own digest with WebAssembly never seeing unchecked bytes.

/** base64 of raw bytes (for an SRI string). */
export function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
  return btoa(s);
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Throws unless `bytes` hash to `sha256` (hex). Needs crypto.subtle (secure contexts, Node). */
export async function verifySha256(bytes, sha256, subtle = globalThis.crypto?.subtle) {
  if (!subtle) return false; // not a secure context: the fetch's SRI check stands alone
  const digest = toHex(new Uint8Array(await subtle.digest("SHA-256", bytes)));
  if (digest !== sha256) {
    throw new Error(`worker-wasm failed its integrity check (sha256 ${digest}, expected ${sha256})`);
  }
  return true;
}

/**
 * Loads one variant from the build manifest entry {file, sha256, bytes} relative to `base`.
 * Returns {module, checkedBy} where checkedBy says which checks ran.
 */
export async function loadWasm(entry, base = globalThis.location?.href) {
  const url = new URL(entry.file, base);
  const sri = `sha256-${toBase64(hexToBytes(entry.sha256))}`;
  const response = await fetch(url, { integrity: sri, cache: "no-cache" });
  if (!response.ok) throw new Error(`cannot load ${url.pathname}: HTTP ${response.status}`);
  const bytes = await response.arrayBuffer();
  const digested = await verifySha256(bytes, entry.sha256);
  const module = await WebAssembly.compile(bytes);
  return { module, checkedBy: digested ? "SRI + SHA-256" : "SRI" };
}

function hexToBytes(hex) {
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}
