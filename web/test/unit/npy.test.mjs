import { test } from "node:test";
import assert from "node:assert/strict";
import { encodeNpy, decodeNpy } from "../../src/common/npy.js";
import { randomMatrix, mulberry32 } from "../../src/common/random.js";

test("encodeNpy writes a 64-byte aligned version 1.0 header numpy can read", () => {
  const data = new Float32Array([1, 2, 3, 4, 5, 6]);
  const bytes = encodeNpy(data, 2, 3);
  assert.deepEqual([...bytes.subarray(0, 8)], [0x93, 78, 85, 77, 80, 89, 1, 0]);
  const headerLen = bytes[8] | (bytes[9] << 8);
  assert.equal((10 + headerLen) % 64, 0);
  const header = new TextDecoder().decode(bytes.subarray(10, 10 + headerLen));
  assert.match(header, /^\{'descr': '<f4', 'fortran_order': False, 'shape': \(2, 3\), \} *\n$/);
  assert.equal(bytes.length, 10 + headerLen + 24);
  assert.deepEqual(new Float32Array(bytes.slice(10 + headerLen).buffer), data);
});

test("round trip f32 and f64 keeps shape, dtype and every value", () => {
  for (const dtype of ["f32", "f64"]) {
    const [rows, cols] = [17, 5];
    const data = randomMatrix(rows, cols, dtype, 42);
    const back = decodeNpy(encodeNpy(data, rows, cols));
    assert.equal(back.dtype, dtype);
    assert.equal(back.rows, rows);
    assert.equal(back.cols, cols);
    assert.deepEqual(back.data, data);
  }
});

test("the byte layout matches numpy's own file for a known array", () => {
  // np.save(f, np.array([[1.5, -2.0]], dtype='<f8')) — header text and data bytes.
  const bytes = encodeNpy(new Float64Array([1.5, -2]), 1, 2);
  const expectedHeader = "{'descr': '<f8', 'fortran_order': False, 'shape': (1, 2), }";
  const text = new TextDecoder().decode(bytes.subarray(10, 10 + expectedHeader.length));
  assert.equal(text, expectedHeader);
  assert.deepEqual([...bytes.subarray(bytes.length - 16)], [0, 0, 0, 0, 0, 0, 248, 63, 0, 0, 0, 0, 0, 0, 0, 192]);
});

test("encodeNpy refuses a wrong element count or a non-float array", () => {
  assert.throws(() => encodeNpy(new Float32Array(5), 2, 3), /do not fill/);
  assert.throws(() => encodeNpy(new Int32Array(6), 2, 3), /Float32Array/);
});

test("decodeNpy refuses what the grid cannot use", () => {
  assert.throws(() => decodeNpy(new Uint8Array([1, 2, 3])), /magic/);
  const good = encodeNpy(new Float32Array(6), 2, 3);
  const text = (s) => {
    const copy = good.slice();
    const headerLen = copy[8] | (copy[9] << 8);
    const h = new TextDecoder().decode(copy.subarray(10, 10 + headerLen)).replace(...s);
    copy.set(new TextEncoder().encode(h), 10);
    return copy;
  };
  assert.throws(() => decodeNpy(text(["<f4", "<i4"])), /not float32 or float64/);
  assert.throws(() => decodeNpy(text(["False", "True "])), /Fortran/);
  assert.throws(() => decodeNpy(text(["(2, 3)", "(6,)  "])), /2-D/);
  assert.throws(() => decodeNpy(good.subarray(0, good.length - 1)), /truncated/);
});

test("big-endian input is converted", () => {
  const le = encodeNpy(new Float32Array([1, 2]), 1, 2);
  const headerLen = le[8] | (le[9] << 8);
  const be = le.slice();
  be[10 + "{'descr': '".length] = ">".charCodeAt(0);
  const view = new DataView(be.buffer, 10 + headerLen);
  view.setFloat32(0, 1, false);
  view.setFloat32(4, 2, false);
  assert.deepEqual([...decodeNpy(be).data], [1, 2]);
});

test("the seeded generator is deterministic and in [0, 1)", () => {
  const a = mulberry32(7);
  const b = mulberry32(7);
  for (let i = 0; i < 1000; i++) {
    const x = a();
    assert.equal(x, b());
    assert.ok(x >= 0 && x < 1);
  }
  assert.notDeepEqual(randomMatrix(3, 3, "f32", 1), randomMatrix(3, 3, "f32", 2));
});
