// Which worker-wasm build this engine can run. Each build is only as fast as the engine
// lets it be, so the page asks the engine with `WebAssembly.validate` on tiny probe modules
// (the technique of wasm-feature-detect) and picks the fastest one that validates.

// (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt)
const SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11,
]);

// (func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)
const RELAXED_SIMD_PROBE = new Uint8Array([
  0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15,
  253, 128, 2, 11,
]);

/** Fastest first. */
export const VARIANTS = ["relaxed", "simd", "scalar"];

export const VARIANT_LABELS = {
  relaxed: "relaxed SIMD",
  simd: "SIMD (simd128)",
  scalar: "scalar",
};

/** What the engine supports: {simd, relaxed}. */
export function detectFeatures(wasm = globalThis.WebAssembly) {
  const validate = (bytes) => {
    try {
      return Boolean(wasm?.validate(bytes));
    } catch {
      return false;
    }
  };
  const simd = validate(SIMD_PROBE);
  return { simd, relaxed: simd && validate(RELAXED_SIMD_PROBE) };
}

/**
 * The fastest variant the engine supports among those the build shipped, or null when
 * WebAssembly itself is missing or nothing fits.
 */
export function pickVariant(features, available) {
  const supported = { relaxed: features.relaxed, simd: features.simd, scalar: true };
  return VARIANTS.find((v) => supported[v] && available.includes(v)) ?? null;
}
