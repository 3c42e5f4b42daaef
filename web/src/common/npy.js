// NumPy .npy files (format 1.0 written; 1.0–3.0 read) for 2-D float32/float64 C-order
// arrays: what the grid exchanges. The dashboard writes them for "generate random
// matrices" and reads them to show a result's shape; tests use them to check products.

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** Bytes per element for a grid dtype. */
export function dtypeSize(dtype) {
  if (dtype === "f32") return 4;
  if (dtype === "f64") return 8;
  throw new Error(`unknown dtype ${dtype}`);
}

/**
 * Encodes a row-major matrix as a .npy file (version 1.0, little-endian).
 * `data` is a Float32Array (f32) or Float64Array (f64) of rows*cols elements.
 */
export function encodeNpy(data, rows, cols) {
  let descr;
  if (data instanceof Float32Array) descr = "<f4";
  else if (data instanceof Float64Array) descr = "<f8";
  else throw new Error("encodeNpy needs a Float32Array or Float64Array");
  if (!Number.isInteger(rows) || !Number.isInteger(cols) || rows < 0 || cols < 0) {
    throw new Error(`bad shape ${rows}x${cols}`);
  }
  if (data.length !== rows * cols) {
    throw new Error(`${data.length} elements do not fill a ${rows}x${cols} matrix`);
  }
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': (${rows}, ${cols}), }`;
  // The spec pads the header with spaces and a newline so the data starts on a multiple of
  // 64 bytes (magic 6 + version 2 + length 2 + header).
  const unpadded = 10 + header.length + 1;
  header += " ".repeat((64 - (unpadded % 64)) % 64) + "\n";
  if (header.length > 0xffff) throw new Error("header too long for .npy 1.0");
  const out = new Uint8Array(10 + header.length + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  // Typed arrays use the platform's byte order; every engine the page targets is
  // little-endian, but write through a DataView when it is not.
  const body = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  if (littleEndian()) {
    out.set(body, 10 + header.length);
  } else {
    const view = new DataView(out.buffer, 10 + header.length);
    const size = data.BYTES_PER_ELEMENT;
    for (let i = 0; i < data.length; i++) {
      if (size === 4) view.setFloat32(i * 4, data[i], true);
      else view.setFloat64(i * 8, data[i], true);
    }
  }
  return out;
}

/**
 * Decodes a .npy file holding a 2-D float32/float64 C-order array.
 * Returns {dtype: "f32"|"f64", rows, cols, data: Float32Array|Float64Array}.
 */
export function decodeNpy(input) {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  for (let i = 0; i < MAGIC.length; i++) {
    if (bytes[i] !== MAGIC[i]) throw new Error("not a .npy file (missing the \\x93NUMPY magic)");
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const major = bytes[6];
  let headerLen;
  let start;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    headerLen = view.getUint32(8, true);
    start = 12;
  } else {
    throw new Error(`unsupported .npy version ${major}`);
  }
  if (start + headerLen > bytes.length) throw new Error("truncated .npy header");
  const header = new TextDecoder().decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr':\s*'([<>=|]?)([a-z]\d+)'/.exec(header);
  if (!descr) throw new Error("the .npy header has no descr");
  const bigEndian = descr[1] === ">";
  const dtype = { f4: "f32", f8: "f64" }[descr[2]];
  if (!dtype) throw new Error(`dtype ${descr[1]}${descr[2]} is not float32 or float64`);
  if (!/'fortran_order':\s*False/.test(header)) throw new Error("Fortran-order arrays are not supported");
  const shape = /'shape':\s*\(([^)]*)\)/.exec(header);
  if (!shape) throw new Error("the .npy header has no shape");
  const dims = shape[1].split(",").map((s) => s.trim()).filter(Boolean).map(Number);
  if (dims.length !== 2 || dims.some((d) => !Number.isInteger(d) || d < 0)) {
    throw new Error(`expected a 2-D array, got shape (${shape[1]})`);
  }
  const [rows, cols] = dims;
  const size = dtypeSize(dtype);
  const offset = start + headerLen;
  if (bytes.length - offset < rows * cols * size) throw new Error("truncated .npy data");
  const data = dtype === "f32" ? new Float32Array(rows * cols) : new Float64Array(rows * cols);
  const dataView = new DataView(bytes.buffer, bytes.byteOffset + offset, rows * cols * size);
  for (let i = 0; i < data.length; i++) {
    data[i] = size === 4 ? dataView.getFloat32(i * 4, !bigEndian) : dataView.getFloat64(i * 8, !bigEndian);
  }
  return { dtype, rows, cols, data };
}

function littleEndian() {
  return new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
}
