//! LZNT1 decompression of one NTFS compression unit.
//!
//! A compression unit is a sequence of chunks, each decompressing to at most 4096 bytes. A
//! chunk starts with a 16-bit header: bits 0-11 hold the stored size minus 1 (not counting the
//! header), bit 15 says whether the chunk is compressed. A zero header ends the unit. A
//! compressed chunk is a sequence of groups: one flag byte, then eight tokens, each a literal
//! byte (flag bit 0) or a 16-bit back-reference (flag bit 1) whose split between displacement
//! and length bits depends on how much of the chunk has been produced so far.

/// Uncompressed size of a chunk.
pub const CHUNK_SIZE: usize = 4096;

/// Decompresses `src` into `dst`, filling it completely: output past the end of the compressed
/// data reads as zeros (NTFS leaves trailing zero chunks out). Returns a description of the
/// first malformed token.
pub fn decompress(src: &[u8], dst: &mut [u8]) -> Result<(), String> {
    let mut s = 0usize;
    let mut d = 0usize;
    while d < dst.len() && s + 2 <= src.len() {
        let header = u16::from_le_bytes([src[s], src[s + 1]]);
        if header == 0 {
            break;
        }
        let stored = usize::from(header & 0x0FFF) + 1;
        let chunk_start = s + 2;
        let chunk_end = chunk_start + stored;
        if chunk_end > src.len() {
            return Err(format!(
                "chunk at {s} claims {stored} bytes but only {} remain",
                src.len() - chunk_start
            ));
        }
        let out_end = (d + CHUNK_SIZE).min(dst.len());
        let out = &mut dst[d..out_end];
        if header & 0x8000 == 0 {
            let n = stored.min(out.len());
            out[..n].copy_from_slice(&src[chunk_start..chunk_start + n]);
            out[n..].fill(0);
        } else {
            let produced = decompress_chunk(&src[chunk_start..chunk_end], out)
                .map_err(|e| format!("chunk at {s}: {e}"))?;
            out[produced..].fill(0);
        }
        d = out_end;
        s = chunk_end;
    }
    dst[d..].fill(0);
    Ok(())
}

/// Decompresses one compressed chunk into `out` (at most 4096 bytes) and returns how many bytes
/// it produced.
fn decompress_chunk(src: &[u8], out: &mut [u8]) -> Result<usize, String> {
    let mut s = 0usize;
    let mut d = 0usize;
    while s < src.len() && d < out.len() {
        let flags = src[s];
        s += 1;
        for bit in 0..8 {
            if s >= src.len() || d >= out.len() {
                break;
            }
            if flags & (1 << bit) == 0 {
                out[d] = src[s];
                d += 1;
                s += 1;
                continue;
            }
            let Some(tok) = src.get(s..s + 2) else {
                return Err(format!("back-reference truncated at {s}"));
            };
            let token = u16::from_le_bytes([tok[0], tok[1]]);
            s += 2;
            // The displacement field grows from 4 bits as the produced output grows, so
            // that it can always reach the chunk start.
            let mut disp_bits = 4u32;
            while (1usize << disp_bits) < d {
                disp_bits += 1;
            }
            let len_bits = 16 - disp_bits;
            let length = usize::from(token & ((1u16 << len_bits) - 1)) + 3;
            let disp = usize::from(token >> len_bits) + 1;
            if disp > d {
                return Err(format!(
                    "back-reference of displacement {disp} at output position {d}"
                ));
            }
            // Copies byte by byte: a reference may overlap the bytes it produces.
            let n = length.min(out.len() - d);
            for _ in 0..n {
                out[d] = out[d - disp];
                d += 1;
            }
        }
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of [MS-XCA] section 3.3 (142 bytes, compressed to 59).
    #[test]
    fn decompresses_the_ms_xca_example() {
        let src: [u8; 59] = [
            0x38, 0xb0, 0x88, 0x46, 0x23, 0x20, 0x00, 0x20, 0x47, 0x20, 0x41, 0x00, 0x10, 0xa2,
            0x47, 0x01, 0xa0, 0x45, 0x20, 0x44, 0x00, 0x08, 0x45, 0x01, 0x50, 0x79, 0x00, 0xc0,
            0x45, 0x20, 0x05, 0x24, 0x13, 0x88, 0x05, 0xb4, 0x02, 0x4a, 0x44, 0xef, 0x03, 0x58,
            0x02, 0x8c, 0x09, 0x16, 0x01, 0x48, 0x45, 0x00, 0xbe, 0x00, 0x9e, 0x00, 0x04, 0x01,
            0x18, 0x90, 0x00,
        ];
        let expected = b"F# F# G A A G F# E D D E F# F# E E F# F# G A A G F# E D D E F# E D D E E F# D E F# G F# D E F# G F# E D E A F# F# G A A G F# E D D E F# E D D\0";
        let mut out = vec![0xAAu8; 4096];
        decompress(&src, &mut out).unwrap();
        assert_eq!(&out[..142], &expected[..]);
        assert!(out[142..].iter().all(|&b| b == 0));
    }

    #[test]
    fn uncompressed_chunks_and_errors() {
        let mut src = vec![0xFF, 0x3F]; // stored 4096, uncompressed
        src.extend(std::iter::repeat_n(7u8, 4096));
        let mut out = vec![1u8; 8192];
        decompress(&src, &mut out).unwrap();
        assert!(out[..4096].iter().all(|&b| b == 7));
        assert!(out[4096..].iter().all(|&b| b == 0));
        // A back-reference before anything was produced.
        let bad = [0x02, 0xB0, 0x01, 0x00, 0x00];
        assert!(decompress(&bad, &mut out).is_err());
        // A chunk longer than the input.
        assert!(decompress(&[0x10, 0xB0, 0x00], &mut out).is_err());
    }
}

#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn never_panics_and_fills_the_unit(src in proptest::collection::vec(any::<u8>(), 0..9000)) {
            let mut out = vec![0xAAu8; 16384];
            let _ = decompress(&src, &mut out);
        }
    }
}
