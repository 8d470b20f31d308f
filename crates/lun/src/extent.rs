use std::os::fd::BorrowedFd;

use serde::Serialize;

use crate::source::check_range;
use crate::{LunError, ReadAt, Result, Source};

/// One piece of a file: `length` bytes at file offset `logical`, stored at byte offset
/// `physical` of the device, or a hole (`None`) that reads as zeros.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Extent {
    /// Offset in the file.
    #[serde(rename = "offset")]
    pub logical: u64,
    /// Length in bytes (never zero in a validated map).
    pub length: u64,
    /// Byte offset on the device, or `None` for a hole.
    pub physical: Option<u64>,
}

impl Extent {
    /// File offset just past this extent.
    pub fn end(&self) -> u64 {
        self.logical + self.length
    }
}

/// A validated map of a whole file: extents sorted by file offset, contiguous from 0 to the file
/// size (holes are explicit), non-overlapping, and every data extent inside the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ExtentMap {
    size: u64,
    extents: Vec<Extent>,
}

impl ExtentMap {
    /// Validates `extents` as the complete map of a file of `size` bytes on a device of
    /// `device_size` bytes. `name` names the file in errors.
    pub fn new(name: &str, size: u64, extents: Vec<Extent>, device_size: u64) -> Result<Self> {
        let bad = |detail: String| LunError::InvalidExtents {
            name: name.to_string(),
            detail,
        };
        let mut expected = 0u64;
        for (i, e) in extents.iter().enumerate() {
            if e.length == 0 {
                return Err(bad(format!("extent {i} has zero length")));
            }
            if e.logical != expected {
                return Err(bad(format!(
                    "extent {i} starts at {} but the previous one ends at {expected} ({})",
                    e.logical,
                    if e.logical < expected {
                        "overlap"
                    } else {
                        "gap"
                    }
                )));
            }
            expected = e
                .logical
                .checked_add(e.length)
                .ok_or_else(|| bad(format!("extent {i} overflows")))?;
            if let Some(p) = e.physical {
                let inside = p
                    .checked_add(e.length)
                    .is_some_and(|end| end <= device_size);
                if !inside {
                    return Err(bad(format!(
                        "extent {i} ({} bytes at device offset {p}) lies past the end of the \
                         device ({device_size} bytes)",
                        e.length
                    )));
                }
            }
        }
        if expected != size {
            return Err(bad(format!(
                "extents cover {expected} bytes but the file has {size}"
            )));
        }
        Ok(ExtentMap { size, extents })
    }

    /// File size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The extents, sorted and contiguous.
    pub fn extents(&self) -> &[Extent] {
        &self.extents
    }

    /// Bytes backed by data on the device (not holes).
    pub fn data_bytes(&self) -> u64 {
        self.extents
            .iter()
            .filter(|e| e.physical.is_some())
            .map(|e| e.length)
            .sum()
    }

    /// Index of the extent holding file offset `offset`, if `offset < size`.
    pub fn index_of(&self, offset: u64) -> Option<usize> {
        if offset >= self.size {
            return None;
        }
        let i = self.extents.partition_point(|e| e.end() <= offset);
        (i < self.extents.len()).then_some(i)
    }

    /// True when the device range `[physical, physical + len)` lies entirely inside the data
    /// extents of this map. Used by restore targets to refuse writes outside a file.
    pub fn covers_physical(&self, physical: u64, len: u64) -> bool {
        let Some(end) = physical.checked_add(len) else {
            return false;
        };
        let mut ranges: Vec<(u64, u64)> = self
            .extents
            .iter()
            .filter_map(|e| e.physical.map(|p| (p, p + e.length)))
            .collect();
        ranges.sort_unstable();
        let mut cursor = physical;
        for (s, e) in ranges {
            if cursor >= end {
                break;
            }
            if s <= cursor && cursor < e {
                cursor = e;
            }
        }
        cursor >= end || len == 0
    }

    /// Returns the map of a sub-range `[offset, offset + len)` rebased to start at 0. Used to map
    /// a disk extent stored at an offset inside a larger file.
    pub fn slice(&self, name: &str, offset: u64, len: u64, device_size: u64) -> Result<Self> {
        let end = offset
            .checked_add(len)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| LunError::InvalidExtents {
                name: name.to_string(),
                detail: format!("slice {offset}+{len} is past the file size {}", self.size),
            })?;
        let mut b = ExtentMapBuilder::new(len);
        for e in &self.extents {
            let s = e.logical.max(offset);
            let t = e.end().min(end);
            if s >= t {
                continue;
            }
            b.push(s - offset, t - s, e.physical.map(|p| p + (s - e.logical)));
        }
        b.finish(name, device_size)
    }
}

/// Builds an [`ExtentMap`] from pieces in file order: merges touching pieces, fills gaps with
/// holes and clips the last piece to the file size.
#[derive(Debug)]
pub struct ExtentMapBuilder {
    size: u64,
    extents: Vec<Extent>,
    error: Option<String>,
}

impl ExtentMapBuilder {
    /// A builder for a file of `size` bytes.
    pub fn new(size: u64) -> Self {
        ExtentMapBuilder {
            size,
            extents: Vec::new(),
            error: None,
        }
    }

    fn end(&self) -> u64 {
        self.extents.last().map_or(0, Extent::end)
    }

    /// Adds `length` bytes at file offset `logical`, stored at `physical` (`None` for a hole).
    /// Pieces must come in increasing file order; an overlapping piece is recorded as an error
    /// reported by [`ExtentMapBuilder::finish`]. Bytes past the file size are dropped.
    pub fn push(&mut self, logical: u64, length: u64, physical: Option<u64>) {
        if self.error.is_some() || length == 0 || logical >= self.size {
            return;
        }
        let end = self.end();
        if logical < end {
            self.error = Some(format!(
                "piece at file offset {logical} overlaps the previous piece ending at {end}"
            ));
            return;
        }
        if logical > end {
            self.append(end, logical - end, None);
        }
        let length = length.min(self.size - logical);
        self.append(logical, length, physical);
    }

    fn append(&mut self, logical: u64, length: u64, physical: Option<u64>) {
        if let Some(last) = self.extents.last_mut() {
            let joins = match (last.physical, physical) {
                (None, None) => true,
                (Some(a), Some(b)) => a.checked_add(last.length) == Some(b),
                _ => false,
            };
            if joins {
                last.length += length;
                return;
            }
        }
        self.extents.push(Extent {
            logical,
            length,
            physical,
        });
    }

    /// Finishes the map (a trailing hole up to the file size is added) and validates it against
    /// a device of `device_size` bytes.
    pub fn finish(mut self, name: &str, device_size: u64) -> Result<ExtentMap> {
        if let Some(detail) = self.error.take() {
            return Err(LunError::InvalidExtents {
                name: name.to_string(),
                detail,
            });
        }
        let end = self.end();
        if end < self.size {
            self.append(end, self.size - end, None);
        }
        ExtentMap::new(name, self.size, self.extents, device_size)
    }
}

/// A file inside a filesystem, readable as a source of its own: reads follow the extent map onto
/// the base source, and holes read as zeros.
pub struct MappedFile {
    base: Source,
    map: ExtentMap,
    name: String,
}

impl MappedFile {
    /// A readable view of the file described by `map` over `base`. The map is checked against
    /// the base size again, so a map built for another device is refused.
    pub fn new(base: Source, map: ExtentMap, name: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let map = ExtentMap::new(&name, map.size, map.extents, base.size())?;
        Ok(MappedFile { base, map, name })
    }

    /// The extent map.
    pub fn map(&self) -> &ExtentMap {
        &self.map
    }
}

impl MappedFile {
    /// The device ranges `(offset, length)` holding the file's data in `[offset, end)`; holes
    /// hold none. `end` is clamped to the file size.
    fn data_ranges(&self, offset: u64, end: u64) -> impl Iterator<Item = (u64, u64)> + '_ {
        let end = end.min(self.map.size);
        let first = self.map.index_of(offset).unwrap_or(self.map.extents.len());
        self.map.extents[first..]
            .iter()
            .take_while(move |e| e.logical < end)
            .filter_map(move |e| {
                let p = e.physical?;
                let from = offset.max(e.logical);
                let to = end.min(e.logical + e.length);
                Some((p + (from - e.logical), to - from))
            })
    }
}

impl ReadAt for MappedFile {
    fn is_cached(&self, offset: u64, len: usize) -> Option<bool> {
        check_range(&self.name, offset, len, self.map.size).ok()?;
        let mut cached = true;
        for (p, n) in self.data_ranges(offset, offset + len as u64) {
            cached &= self.base.is_cached(p, n as usize)?;
        }
        Some(cached)
    }
    fn will_need(&self, offset: u64, len: u64) {
        for (p, n) in self.data_ranges(offset, offset.saturating_add(len)) {
            self.base.will_need(p, n);
        }
    }
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, offset, buf.len(), self.map.size)?;
        if buf.is_empty() {
            return Ok(());
        }
        let mut i = self
            .map
            .index_of(offset)
            .expect("offset checked inside the file");
        let mut pos = offset;
        let mut done = 0usize;
        while done < buf.len() {
            let e = &self.map.extents[i];
            let within = pos - e.logical;
            let n = ((e.length - within) as usize).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match e.physical {
                Some(p) => self.base.read_exact_at(p + within, out)?,
                None => out.fill(0),
            }
            done += n;
            pos += n as u64;
            i += 1;
        }
        Ok(())
    }
    fn size(&self) -> u64 {
        self.map.size
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn is_hole(&self, offset: u64, len: usize) -> bool {
        if len == 0 || check_range(&self.name, offset, len, self.map.size).is_err() {
            return false;
        }
        self.map.index_of(offset).is_some_and(|i| {
            let e = &self.map.extents[i];
            e.physical.is_none() && e.end() >= offset + len as u64
        })
    }
    fn splice_to_pipe(&self, offset: u64, len: usize, pipe: BorrowedFd<'_>) -> usize {
        if len == 0 || check_range(&self.name, offset, len, self.map.size).is_err() {
            return 0;
        }
        let Some(mut i) = self.map.index_of(offset) else {
            return 0;
        };
        let mut pos = offset;
        let mut done = 0usize;
        // Stops at the first hole: the caller writes zeros for it through the read path.
        while done < len {
            let e = &self.map.extents[i];
            let Some(p) = e.physical else { break };
            let within = pos - e.logical;
            let n = ((e.length - within) as usize).min(len - done);
            let moved = self.base.splice_to_pipe(p + within, n, pipe);
            done += moved;
            pos += moved as u64;
            if moved < n {
                break;
            }
            i += 1;
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::MemSource;

    fn ext(logical: u64, length: u64, physical: Option<u64>) -> Extent {
        Extent {
            logical,
            length,
            physical,
        }
    }

    #[test]
    fn validation_rejects_overlap_gap_and_past_end() {
        let ok = ExtentMap::new("f", 30, vec![ext(0, 10, Some(0)), ext(10, 20, None)], 100);
        assert!(ok.is_ok());
        let overlap = ExtentMap::new("f", 30, vec![ext(0, 20, Some(0)), ext(10, 20, None)], 100);
        assert!(overlap.unwrap_err().to_string().contains("overlap"));
        let gap = ExtentMap::new("f", 30, vec![ext(0, 5, Some(0)), ext(10, 20, None)], 100);
        assert!(gap.unwrap_err().to_string().contains("gap"));
        let past = ExtentMap::new("f", 30, vec![ext(0, 30, Some(80))], 100);
        assert!(past.unwrap_err().to_string().contains("past the end"));
        let short = ExtentMap::new("f", 40, vec![ext(0, 30, Some(0))], 100);
        assert!(short.unwrap_err().to_string().contains("cover"));
        let zero = ExtentMap::new("f", 0, vec![ext(0, 0, Some(0))], 100);
        assert!(zero.is_err());
        // A hole may be far longer than the device: sparse files are.
        assert!(ExtentMap::new("f", 1 << 40, vec![ext(0, 1 << 40, None)], 100).is_ok());
        let wrap = ExtentMap::new("f", 10, vec![ext(0, 10, Some(u64::MAX - 3))], u64::MAX);
        assert!(wrap.is_err());
    }

    #[test]
    fn builder_merges_fills_and_clips() {
        let mut b = ExtentMapBuilder::new(100);
        b.push(0, 10, Some(50));
        b.push(10, 10, Some(60));
        b.push(40, 100, Some(0));
        let m = b.finish("f", 1000).unwrap();
        assert_eq!(
            m.extents(),
            &[
                ext(0, 20, Some(50)),
                ext(20, 20, None),
                ext(40, 60, Some(0))
            ]
        );
        assert_eq!(m.data_bytes(), 80);
        let mut b = ExtentMapBuilder::new(100);
        b.push(10, 10, Some(0));
        b.push(5, 10, Some(0));
        assert!(b.finish("f", 1000).is_err());
        let m = ExtentMapBuilder::new(7).finish("f", 0).unwrap();
        assert_eq!(m.extents(), &[ext(0, 7, None)]);
    }

    #[test]
    fn mapped_file_reads_data_and_holes() {
        let base: Source = Arc::new(MemSource::new("lun", (0u8..100).collect()));
        let map = ExtentMap::new(
            "f",
            12,
            vec![ext(0, 4, Some(90)), ext(4, 4, None), ext(8, 4, Some(10))],
            100,
        )
        .unwrap();
        let f = MappedFile::new(base, map, "f").unwrap();
        let mut buf = [0xffu8; 12];
        f.read_exact_at(0, &mut buf).unwrap();
        assert_eq!(buf, [90, 91, 92, 93, 0, 0, 0, 0, 10, 11, 12, 13]);
        let mut two = [0u8; 2];
        f.read_exact_at(3, &mut two).unwrap();
        assert_eq!(two, [93, 0]);
        assert!(f.read_exact_at(11, &mut two).is_err());
    }

    #[test]
    fn covers_physical_and_slice() {
        let map = ExtentMap::new(
            "f",
            30,
            vec![
                ext(0, 10, Some(100)),
                ext(10, 10, None),
                ext(20, 10, Some(110)),
            ],
            1000,
        )
        .unwrap();
        assert!(map.covers_physical(100, 20));
        assert!(map.covers_physical(105, 10));
        assert!(!map.covers_physical(95, 10));
        assert!(!map.covers_physical(115, 10));
        assert!(!map.covers_physical(u64::MAX, 2));
        let s = map.slice("s", 5, 20, 1000).unwrap();
        assert_eq!(
            s.extents(),
            &[
                ext(0, 5, Some(105)),
                ext(5, 10, None),
                ext(15, 5, Some(110))
            ]
        );
        assert!(map.slice("s", 25, 10, 1000).is_err());
    }

    proptest! {
        #[test]
        fn mapped_file_matches_reference(
            pieces in proptest::collection::vec((1u64..50, proptest::option::of(0u64..400)), 0..20),
            off in 0u64..1000, len in 0usize..200,
        ) {
            let base_bytes: Vec<u8> = (0..500u32).map(|i| (i * 7 % 251) as u8).collect();
            let base: Source = Arc::new(MemSource::new("lun", base_bytes.clone()));
            let mut logical = 0;
            let mut b = ExtentMapBuilder::new(pieces.iter().map(|p| p.0).sum());
            let mut reference = Vec::new();
            for (len, phys) in &pieces {
                b.push(logical, *len, *phys);
                match phys {
                    Some(p) => reference.extend_from_slice(&base_bytes[*p as usize..(*p + *len) as usize]),
                    None => reference.extend(std::iter::repeat_n(0, *len as usize)),
                }
                logical += len;
            }
            let map = b.finish("f", 500).unwrap();
            let f = MappedFile::new(base, map, "f").unwrap();
            let mut buf = vec![0u8; len];
            let r = f.read_exact_at(off, &mut buf);
            if off as usize + len <= reference.len() {
                r.unwrap();
                prop_assert_eq!(&buf[..], &reference[off as usize..off as usize + len]);
            } else {
                prop_assert!(r.is_err());
            }
        }
    }

    /// Records the read-ahead hints it is given.
    struct Hints(std::sync::Mutex<Vec<(u64, u64)>>, u64);
    impl ReadAt for Hints {
        fn read_exact_at(&self, _: u64, _: &mut [u8]) -> Result<()> {
            Ok(())
        }
        fn size(&self) -> u64 {
            self.1
        }
        fn name(&self) -> &str {
            "hints"
        }
        fn will_need(&self, offset: u64, len: u64) {
            self.0.lock().unwrap().push((offset, len));
        }
        /// Bytes from 13,000 on are "cached".
        fn is_cached(&self, offset: u64, _: usize) -> Option<bool> {
            Some(offset >= 13_000)
        }
    }

    #[test]
    fn will_need_reaches_the_device_ranges_of_data_only() {
        let dev = Arc::new(Hints(Default::default(), 1 << 20));
        let map = ExtentMap::new(
            "f",
            300,
            vec![
                ext(0, 100, Some(5000)),
                ext(100, 100, None),
                ext(200, 100, Some(9000)),
            ],
            1 << 20,
        )
        .unwrap();
        // Through a partition window at 4096 as well: offsets add up.
        let part: Source = Arc::new(crate::Window::new(dev.clone(), 4096, 1 << 19, "p").unwrap());
        let f = MappedFile::new(part, map, "f").unwrap();
        f.will_need(50, 200);
        assert_eq!(
            *dev.0.lock().unwrap(),
            [(4096 + 5050, 50), (4096 + 9000, 50)]
        );
        dev.0.lock().unwrap().clear();
        f.will_need(400, 10);
        f.will_need(290, u64::MAX);
        assert_eq!(*dev.0.lock().unwrap(), [(4096 + 9090, 10)]);
        // The first extent sits below 13,000 on the device, the last above; holes are free.
        assert_eq!(f.is_cached(0, 10), Some(false));
        assert_eq!(f.is_cached(100, 100), Some(true));
        assert_eq!(f.is_cached(150, 150), Some(true));
        assert_eq!(f.is_cached(50, 200), Some(false));
        assert_eq!(f.is_cached(250, 100), None, "past the end");
    }
}
