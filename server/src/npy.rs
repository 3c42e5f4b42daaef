//! NumPy `.npy` files (format versions 1–3): reading 2-D float32/float64 arrays and writing
//! results. Only what the grid exchanges is supported; anything else is refused with a
//! message a researcher can act on.

use crate::error::Error;
use crate::jobs::{Dtype, Matrix, Shape};
use bytes::Bytes;

const MAGIC: &[u8] = b"\x93NUMPY";

/// Longest header accepted, magic and length included. NumPy writes about 128 bytes for a 2-D
/// float array (and itself refuses to read headers over 10,000 bytes); the bound keeps what a
/// client can make the server hold before its data starts small.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// What a `.npy` file's header says of its array: enough to check it and to place its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub dtype: Dtype,
    pub rows: usize,
    pub cols: usize,
    /// Big-endian data is swapped as it is read.
    pub big_endian: bool,
    /// Bytes before the data: magic, version, length and the header itself.
    pub len: usize,
}

impl Header {
    /// Reads the header at the start of a file of which `start` has arrived so far: `None`
    /// while more bytes are needed. A file is refused at the first byte that shows it cannot
    /// be used, so that an upload is answered before its data comes: a wrong magic, an
    /// unsupported version, a header over [`MAX_HEADER_BYTES`], and once the header is whole
    /// a dtype, order or shape the grid does not take, or more than `max_elements`
    /// (`MAX_JOB_ELEMENTS`) elements.
    pub fn parse(name: &str, start: &[u8], max_elements: usize) -> Result<Option<Header>, Error> {
        let bad = |why: &str| Error::BadRequest(format!("{name}: not a valid .npy file: {why}"));
        let seen = start.len().min(MAGIC.len());
        if start[..seen] != MAGIC[..seen] {
            return Err(bad("missing the \\x93NUMPY magic"));
        }
        let Some(&version) = start.get(6) else {
            return Ok(None);
        };
        let prefix = match version {
            1 => 10,
            2 | 3 => 12,
            v => return Err(bad(&format!("unsupported format version {v}"))),
        };
        if start.len() < prefix {
            return Ok(None);
        }
        let dict_len = if version == 1 {
            u16::from_le_bytes([start[8], start[9]]) as usize
        } else {
            u32::from_le_bytes([start[8], start[9], start[10], start[11]]) as usize
        };
        let len = prefix + dict_len;
        if len > MAX_HEADER_BYTES {
            return Err(bad(&format!(
                "a header of {len} bytes is longer than the {MAX_HEADER_BYTES} accepted"
            )));
        }
        let Some(dict) = start.get(prefix..len) else {
            return Ok(None);
        };
        let dict = std::str::from_utf8(dict).map_err(|_| bad("header is not text"))?;
        let descr = dict_value(dict, "descr").ok_or_else(|| bad("header has no 'descr'"))?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        let (dtype, big_endian) = match descr {
            "<f4" | "=f4" => (Dtype::F32, false),
            ">f4" => (Dtype::F32, true),
            "<f8" | "=f8" => (Dtype::F64, false),
            ">f8" => (Dtype::F64, true),
            other => {
                return Err(Error::BadRequest(format!(
                    "{name}: dtype {other} is not supported; save float32 or float64 (e.g. a.astype(np.float32))"
                )))
            }
        };
        let fortran = dict_value(dict, "fortran_order").ok_or_else(|| bad("no 'fortran_order'"))?;
        if fortran.trim() != "False" {
            return Err(Error::BadRequest(format!(
                "{name}: Fortran-order arrays are not supported; save np.ascontiguousarray(x)"
            )));
        }
        let shape = dict_value(dict, "shape").ok_or_else(|| bad("header has no 'shape'"))?;
        let dims: Vec<usize> = shape
            .trim_matches(|c| c == '(' || c == ')')
            .split(',')
            .map(str::trim)
            .filter(|d| !d.is_empty())
            .map(|d| d.trim_end_matches('L').parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad("shape is not a tuple of integers"))?;
        let [rows, cols] = dims[..] else {
            return Err(Error::BadRequest(format!(
                "{name}: expected a 2-D array, got {} dimension(s) {shape}",
                dims.len()
            )));
        };
        if rows == 0 || cols == 0 {
            return Err(Error::BadRequest(format!(
                "{name} is empty ({rows}×{cols})"
            )));
        }
        if rows.checked_mul(cols).is_none_or(|e| e > max_elements) {
            return Err(Error::PayloadTooLarge(format!(
                "{name}: shape ({rows}, {cols}) holds more than {max_elements} elements, the \
                 limit (MAX_JOB_ELEMENTS)"
            )));
        }
        Ok(Some(Header {
            dtype,
            rows,
            cols,
            big_endian,
            len,
        }))
    }

    /// Bytes of data that follow the header (the element count is within `MAX_JOB_ELEMENTS`,
    /// so this cannot overflow).
    pub fn data_bytes(&self) -> u64 {
        self.rows as u64 * self.cols as u64 * self.dtype.size() as u64
    }

    pub fn shape(&self) -> Shape {
        Shape {
            dtype: self.dtype,
            rows: self.rows,
            cols: self.cols,
        }
    }
}

/// Parses a `.npy` file held whole: a 2-D C-order float32/float64 array. Big-endian data is
/// converted; the matrix is kept as little-endian bytes, the grid's wire layout.
///
/// The header is [`Header::parse`]'s, so it is checked against `max_elements` and against
/// the data before anything is copied: a header may claim any shape. Little-endian data is
/// not copied at all: the matrix is a slice of the file. Uploads do not come this way (they
/// are streamed to the store); files read back do.
pub fn parse(name: &str, file: &Bytes, max_elements: usize) -> Result<Matrix, Error> {
    let bad = |why: &str| Error::BadRequest(format!("{name}: not a valid .npy file: {why}"));
    let header = Header::parse(name, file, max_elements)?.ok_or_else(|| {
        if file.len() < MAGIC.len() {
            bad("missing the \\x93NUMPY magic")
        } else {
            bad("truncated header")
        }
    })?;
    let Header {
        dtype,
        rows,
        cols,
        big_endian,
        len: end,
    } = header;
    let data = &file[end..];
    let expected = header.data_bytes();
    if data.len() as u64 != expected {
        return Err(bad(&format!(
            "shape ({rows}, {cols}) {} needs {expected} data bytes, the file has {}",
            dtype.name(),
            data.len()
        )));
    }
    let bytes = if big_endian {
        let mut swapped = data.to_vec();
        for element in swapped.chunks_exact_mut(dtype.size()) {
            element.reverse();
        }
        Bytes::from(swapped)
    } else {
        file.slice(end..)
    };
    Matrix::new(name, dtype, rows, cols, bytes).map_err(Error::BadRequest)
}

/// Finds `'key': value` in the header's Python dict literal; values we read hold no commas
/// except inside the shape tuple, which is matched up to its closing parenthesis.
fn dict_value<'h>(header: &'h str, key: &str) -> Option<&'h str> {
    let at = header
        .find(&format!("'{key}'"))
        .or_else(|| header.find(&format!("\"{key}\"")))?;
    let rest = header[at + key.len() + 2..]
        .trim_start()
        .strip_prefix(':')?;
    let rest = rest.trim_start();
    let end = if rest.starts_with('(') {
        rest.find(')')? + 1
    } else {
        rest.find([',', '}']).unwrap_or(rest.len())
    };
    Some(rest[..end].trim())
}

/// Encodes a row-major little-endian matrix as a version 1.0 `.npy` file.
pub fn encode(dtype: Dtype, rows: usize, cols: usize, data: &[u8]) -> Vec<u8> {
    let descr = match dtype {
        Dtype::F32 => "<f4",
        Dtype::F64 => "<f8",
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': ({rows}, {cols}), }}");
    // The data must start on a 64-byte boundary; the header ends with a newline.
    let unpadded = MAGIC.len() + 4 + header.len() + 1;
    header.push_str(&" ".repeat((64 - unpadded % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(MAGIC.len() + 4 + header.len() + data.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    /// A file with `dict` as its header (version `version`) and `data` after it.
    fn file_with(version: u8, dict: &str, data: &[u8]) -> Vec<u8> {
        let mut f = MAGIC.to_vec();
        f.extend_from_slice(&[version, 0]);
        if version == 1 {
            f.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        } else {
            f.extend_from_slice(&(dict.len() as u32).to_le_bytes());
        }
        f.extend_from_slice(dict.as_bytes());
        f.extend_from_slice(data);
        f
    }

    /// Feeds `file` as an upload does, in pieces of `chunk` bytes, until the header is known
    /// or refused; returns the outcome and the bytes it took.
    fn streamed(file: &[u8], chunk: usize) -> (Result<Option<Header>, String>, usize) {
        let mut seen = Vec::new();
        for piece in file.chunks(chunk) {
            seen.extend_from_slice(piece);
            match Header::parse("a", &seen, 100) {
                Ok(None) => {}
                done => return (done.map_err(|e| e.to_string()), seen.len()),
            }
        }
        (Ok(None), seen.len())
    }

    #[test]
    fn a_header_is_read_whatever_the_chunks() {
        let good = [
            file_with(
                1,
                "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }  \n",
                &[0; 24],
            ),
            file_with(
                2,
                "{'descr': '>f8', 'fortran_order': False, 'shape': (3, 1), }\n",
                &[0; 24],
            ),
            encode(Dtype::F32, 1, 1, &[0; 4]),
        ];
        for file in &good {
            let whole = Header::parse("a", file, 100)
                .expect("valid")
                .expect("whole");
            assert_eq!(whole.len as u64 + whole.data_bytes(), file.len() as u64);
            // Every prefix shorter than the header asks for more; every longer one has it.
            for cut in 0..=file.len() {
                let got = Header::parse("a", &file[..cut], 100).expect("never refused");
                assert_eq!(got, (cut >= whole.len).then_some(whole), "cut at {cut}");
            }
            for chunk in 1..=file.len() {
                assert_eq!(
                    streamed(file, chunk).0,
                    Ok(Some(whole)),
                    "chunks of {chunk}"
                );
            }
        }
        // A header's dict is judged once it is whole: at its last byte.
        let dict = |d: &str| (file_with(1, d, &[]), 10 + d.len());
        let bad = [
            ((b"not numpy".to_vec(), 1), "magic"),
            ((file_with(4, "{}", &[]), 7), "version 4"),
            (
                (file_with(2, &" ".repeat(MAX_HEADER_BYTES), &[]), 12),
                "longer than the 16384 accepted",
            ),
            (
                dict("{'descr': '<i4', 'fortran_order': False, 'shape': (9, 9), }"),
                "dtype <i4",
            ),
            (
                dict("{'descr': '<f4', 'fortran_order': True, 'shape': (9, 9), }"),
                "Fortran",
            ),
            (
                dict("{'descr': '<f4', 'fortran_order': False, 'shape': (9, 9, 9), }"),
                "2-D",
            ),
            (
                dict("{'descr': '<f4', 'fortran_order': False, 'shape': (11, 10), }"),
                "more than 100 elements",
            ),
        ];
        for ((file, at), expected) in &bad {
            // Refused at the first byte that shows it, and never before.
            for cut in 0..*at {
                let early = Header::parse("a", &file[..cut], 100);
                assert!(matches!(early, Ok(None)), "{expected}: {early:?} at {cut}");
            }
            for chunk in 1..=file.len() {
                let (outcome, taken) = streamed(file, chunk);
                let text = outcome.expect_err(expected);
                assert!(
                    text.contains(expected),
                    "{text:?} should mention {expected:?}"
                );
                assert!(
                    taken < at + chunk,
                    "{expected}: refused after {taken} bytes"
                );
            }
        }
    }

    #[test]
    fn round_trips_what_it_writes() {
        let data = f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let file = encode(Dtype::F32, 2, 3, &data);
        assert_eq!((file.len() - data.len()) % 64, 0, "data is 64-byte aligned");
        let m = parse("a", &Bytes::from(file), 6).expect("valid file");
        assert_eq!((m.dtype, m.rows, m.cols), (Dtype::F32, 2, 3));
        assert_eq!(&m.data[..], &data[..]);
    }

    #[test]
    fn a_claimed_shape_past_the_limit_is_413_and_little_endian_data_is_not_copied() {
        let header =
            "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000), }";
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&[1, 0]);
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&[0; 4]);
        let error = parse("a", &Bytes::from(file), 200_000_000).expect_err("too large");
        assert!(matches!(error, Error::PayloadTooLarge(_)), "{error:?}");
        let file = Bytes::from(encode(Dtype::F32, 1, 2, &f32_bytes(&[1.0, 2.0])));
        let m = parse("a", &file, 2).expect("valid");
        assert_eq!(
            m.data.as_ptr(),
            file[file.len() - 8..].as_ptr(),
            "a slice of the file"
        );
    }

    #[test]
    fn reads_numpy_headers_including_big_endian() {
        let header = "{'descr': '>f8', 'fortran_order': False, 'shape': (1, 2), }";
        let mut file = MAGIC.to_vec();
        file.extend_from_slice(&[1, 0]);
        file.extend_from_slice(&(header.len() as u16).to_le_bytes());
        file.extend_from_slice(header.as_bytes());
        file.extend_from_slice(&1.5f64.to_be_bytes());
        file.extend_from_slice(&(-2.0f64).to_be_bytes());
        let m = parse("b", &Bytes::from(file), 2).expect("valid file");
        assert_eq!(m.dtype, Dtype::F64);
        assert_eq!(m.to_f64(), vec![1.5, -2.0]);
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let with_header = |h: &str, data: &[u8]| {
            let mut f = MAGIC.to_vec();
            f.extend_from_slice(&[1, 0]);
            f.extend_from_slice(&(h.len() as u16).to_le_bytes());
            f.extend_from_slice(h.as_bytes());
            f.extend_from_slice(data);
            f
        };
        let cases = [
            (b"not numpy at all".to_vec(), "magic"),
            (
                with_header(
                    "{'descr': '<i4', 'fortran_order': False, 'shape': (1, 1), }",
                    &[0; 4],
                ),
                "float32 or float64",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': True, 'shape': (1, 1), }",
                    &[0; 4],
                ),
                "Fortran",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }",
                    &[0; 16],
                ),
                "2-D",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }",
                    &[0; 12],
                ),
                "needs 16 data bytes",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (1, 1), }",
                    &f32::NAN.to_le_bytes(),
                ),
                "not finite",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (4000000000, 4000000000), }",
                    &[0; 4],
                ),
                "more than 100 elements",
            ),
            (
                with_header(
                    "{'descr': '<f4', 'fortran_order': False, 'shape': (11, 10), }",
                    &[0; 440],
                ),
                "more than 100 elements",
            ),
        ];
        for (file, expected) in cases {
            let err = parse("a", &Bytes::from(file), 100)
                .expect_err(expected)
                .to_string();
            assert!(
                err.contains(expected),
                "{err:?} should mention {expected:?}"
            );
        }
    }
}
