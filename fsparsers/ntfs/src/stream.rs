//! Assembling an attribute's value from its extents, and reading it: extent maps for plain
//! non-resident data, and a decompressing source for LZNT1-compressed data.

use std::sync::{Arc, Mutex};

use lun::{ExtentMap, ExtentMapBuilder, LunError, ReadAt, Source};

use crate::lznt1;
use crate::record::Run;

/// The complete value of a non-resident attribute, merged from all its extents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonResidentStream {
    /// Runs covering VCN 0 up to the end of the allocation, in VCN order.
    pub runs: Vec<Run>,
    /// Logical size.
    pub data_size: u64,
    /// Bytes holding valid data; past it the stream reads as zeros.
    pub initialized_size: u64,
    /// Compression unit in clusters (0: not compressed).
    pub compression_unit_clusters: u64,
    /// Attribute flags of the first extent.
    pub flags: u16,
}

impl NonResidentStream {
    /// Bytes of the device the stream occupies (sparse runs excluded).
    pub fn allocated_bytes(&self, cluster_size: u64) -> u64 {
        self.runs
            .iter()
            .filter(|r| r.lcn.is_some())
            .map(|r| r.len.saturating_mul(cluster_size))
            .fold(0u64, u64::saturating_add)
    }

    /// The extent map of the (uncompressed) stream: runs as device byte ranges, sparse runs and
    /// bytes past the initialized size as holes. `name` names the stream in errors.
    pub fn extent_map(
        &self,
        name: &str,
        cluster_size: u64,
        device_size: u64,
    ) -> Result<ExtentMap, LunError> {
        let bad = |detail: String| LunError::InvalidExtents {
            name: name.to_string(),
            detail,
        };
        let mut b = ExtentMapBuilder::new(self.data_size);
        let init = self.initialized_size;
        for r in &self.runs {
            let start = r
                .vcn
                .checked_mul(cluster_size)
                .ok_or_else(|| bad(format!("VCN {} overflows", r.vcn)))?;
            if start >= self.data_size {
                break;
            }
            let len = r
                .len
                .checked_mul(cluster_size)
                .ok_or_else(|| bad(format!("run of {} clusters overflows", r.len)))?;
            let end = start.saturating_add(len);
            match r.lcn {
                None => b.push(start, len, None),
                Some(lcn) => {
                    let p = lcn * cluster_size;
                    if end <= init {
                        b.push(start, len, Some(p));
                    } else if start >= init {
                        b.push(start, len, None);
                    } else {
                        b.push(start, init - start, Some(p));
                        b.push(init, end - init, None);
                    }
                }
            }
        }
        b.finish(name, device_size)
    }
}

/// A compressed stream, decompressed one compression unit at a time. Memory stays at one unit
/// (typically 64 KiB) plus its compressed bytes, whatever the file size.
pub struct CompressedStream {
    device: Source,
    name: String,
    runs: Arc<Vec<Run>>,
    cluster_size: u64,
    unit_clusters: u64,
    size: u64,
    initialized_size: u64,
    last: Mutex<Option<(u64, Arc<Vec<u8>>)>>,
}

impl CompressedStream {
    /// A decompressing view of `stream` on `device`.
    pub fn new(
        device: Source,
        name: String,
        stream: &NonResidentStream,
        cluster_size: u64,
    ) -> Self {
        CompressedStream {
            device,
            name,
            runs: Arc::new(stream.runs.clone()),
            cluster_size,
            unit_clusters: stream.compression_unit_clusters,
            size: stream.data_size,
            initialized_size: stream.initialized_size,
            last: Mutex::new(None),
        }
    }

    fn unit_bytes(&self) -> u64 {
        self.unit_clusters * self.cluster_size
    }

    /// Decompressed bytes of compression unit `unit`.
    fn unit(&self, unit: u64) -> lun::Result<Arc<Vec<u8>>> {
        if let Some((u, data)) = self.last.lock().expect("cache lock").as_ref()
            && *u == unit
        {
            return Ok(data.clone());
        }
        let data = Arc::new(self.decode_unit(unit)?);
        *self.last.lock().expect("cache lock") = Some((unit, data.clone()));
        Ok(data)
    }

    fn decode_unit(&self, unit: u64) -> lun::Result<Vec<u8>> {
        let ub = self.unit_bytes() as usize;
        let first = unit * self.unit_clusters;
        let last = first + self.unit_clusters;
        // The clusters of the unit: stored ones (device byte offset, length), and how many of
        // the unit's clusters are sparse (or not described at all).
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        let mut stored = 0u64;
        let i = self.runs.partition_point(|r| r.vcn + r.len <= first);
        for r in &self.runs[i..] {
            if r.vcn >= last {
                break;
            }
            let s = r.vcn.max(first);
            let e = (r.vcn + r.len).min(last);
            if let Some(lcn) = r.lcn {
                pieces.push((
                    (lcn + (s - r.vcn)) * self.cluster_size,
                    (e - s) * self.cluster_size,
                ));
                stored += e - s;
            }
        }
        let mut raw = vec![0u8; (stored * self.cluster_size) as usize];
        let mut at = 0usize;
        for (p, len) in pieces {
            self.device
                .read_exact_at(p, &mut raw[at..at + len as usize])?;
            at += len as usize;
        }
        if stored == self.unit_clusters {
            // A unit that did not compress is stored as is.
            return Ok(raw);
        }
        let mut out = vec![0u8; ub];
        if stored > 0 {
            lznt1::decompress(&raw, &mut out).map_err(|detail| LunError::Decode {
                name: self.name.clone(),
                offset: unit * self.unit_bytes(),
                detail: format!("LZNT1 compression unit {unit}: {detail}"),
            })?;
        }
        Ok(out)
    }
}

impl ReadAt for CompressedStream {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> lun::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.size) {
            return Err(LunError::OutOfRange {
                name: self.name.clone(),
                offset,
                len: buf.len() as u64,
                size: self.size,
            });
        }
        let ub = self.unit_bytes();
        let mut pos = offset;
        let mut done = 0usize;
        while done < buf.len() {
            let unit = pos / ub;
            let within = (pos % ub) as usize;
            let n = (ub as usize - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            if pos >= self.initialized_size {
                out.fill(0);
            } else {
                let data = self.unit(unit)?;
                out.copy_from_slice(&data[within..within + n]);
                let valid = (self.initialized_size - pos).min(n as u64) as usize;
                out[valid..].fill(0);
            }
            done += n;
            pos += n as u64;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.size
    }
    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use lun::MemSource;

    use super::*;

    #[test]
    fn extent_map_with_holes_and_initialized_size() {
        let s = NonResidentStream {
            runs: vec![
                Run {
                    vcn: 0,
                    lcn: Some(10),
                    len: 2,
                },
                Run {
                    vcn: 2,
                    lcn: None,
                    len: 2,
                },
                Run {
                    vcn: 4,
                    lcn: Some(20),
                    len: 2,
                },
            ],
            data_size: 6 * 512 - 100,
            initialized_size: 5 * 512,
            compression_unit_clusters: 0,
            flags: 0,
        };
        let m = s.extent_map("f", 512, 1 << 20).unwrap();
        let e: Vec<_> = m
            .extents()
            .iter()
            .map(|e| (e.logical, e.length, e.physical))
            .collect();
        assert_eq!(
            e,
            vec![
                (0, 1024, Some(5120)),
                (1024, 1024, None),
                (2048, 512, Some(10240)),
                (2560, 412, None)
            ]
        );
        assert_eq!(s.allocated_bytes(512), 2048);
    }

    #[test]
    fn compressed_units_sparse_raw_and_compressed() {
        // Cluster 512 B, unit of 8 clusters (4 KiB). Unit 0: stored raw (8 clusters at LCN 0).
        // Unit 1: compressed into 1 cluster at LCN 8 + 7 sparse. Unit 2: all sparse.
        let mut dev = vec![0u8; 16 * 512];
        for (i, b) in dev[..4096].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // One compressed chunk: literal 'A' then a back-reference (displacement 1, length 18).
        let chunk = [0x03, 0xB0, 0x02, b'A', 0x0F, 0x00];
        dev[4096..4096 + chunk.len()].copy_from_slice(&chunk);
        let device: Source = Arc::new(MemSource::new("d", dev));
        let stream = NonResidentStream {
            runs: vec![
                Run {
                    vcn: 0,
                    lcn: Some(0),
                    len: 9,
                },
                Run {
                    vcn: 9,
                    lcn: None,
                    len: 15,
                },
            ],
            data_size: 3 * 4096,
            initialized_size: 3 * 4096,
            compression_unit_clusters: 8,
            flags: 1,
        };
        let c = CompressedStream::new(device, "f".into(), &stream, 512);
        let mut buf = vec![0xEEu8; 3 * 4096];
        c.read_exact_at(0, &mut buf).unwrap();
        assert!(
            buf[..4096]
                .iter()
                .enumerate()
                .all(|(i, &b)| b == (i % 251) as u8)
        );
        assert!(buf[4096..4096 + 19].iter().all(|&b| b == b'A'));
        assert!(buf[4096 + 19..].iter().all(|&b| b == 0));
        assert!(c.read_exact_at(3 * 4096 - 1, &mut [0u8; 2]).is_err());
    }
}
