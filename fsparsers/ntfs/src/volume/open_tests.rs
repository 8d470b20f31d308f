//! `open()` and `metadata()` copy out of a record only the attributes they read
//! ([`Ntfs::load_file_where`]). For every MFT record of the Windows-written volume and of
//! mkntfs + ntfs-3g volumes (named streams, sparse, compressed, attribute-listed files, a
//! fragmented $MFT) they must answer exactly as the whole-file path ([`Ntfs::load_file`])
//! does: the same source name, size and bytes, the same metadata, the same errors.

use std::path::Path;
use std::sync::Arc;

use fscore::FileId;
use lun::{DevicePath, ReadAt, Source};
use testkit::ntfs::{Layout, Spec, image_path};

use super::*;

fn open_image(path: &Path) -> Ntfs {
    let dev: Source = Arc::new(DevicePath::open(path).expect("open image"));
    Ntfs::open(dev).expect("open NTFS")
}

/// What a source reads as: its name, its size and (up to 64 MiB of) its bytes.
type Read = std::result::Result<(String, u64, Vec<u8>), String>;

fn read(src: Result<Source>) -> Read {
    let src = src.map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; src.size().min(64 << 20) as usize];
    src.read_exact_at(0, &mut buf).map_err(|e| e.to_string())?;
    Ok((src.name().to_string(), src.size(), buf))
}

/// What the files of a volume hold, to check the fixtures cover what the fast path skips.
#[derive(Default, Debug)]
struct Seen {
    files: usize,
    named_streams: usize,
    attribute_lists: usize,
    resident: usize,
    sparse: usize,
    compressed: usize,
    errors: usize,
}

impl Seen {
    fn add(&mut self, other: &Seen) {
        self.files += other.files;
        self.named_streams += other.named_streams;
        self.attribute_lists += other.attribute_lists;
        self.resident += other.resident;
        self.sparse += other.sparse;
        self.compressed += other.compressed;
        self.errors += other.errors;
    }

    fn note(&mut self, f: &File) {
        self.files += 1;
        for a in &f.attrs {
            match (a.type_code, &a.body) {
                (AT_ATTRIBUTE_LIST, _) => self.attribute_lists += 1,
                (AT_DATA, body) => {
                    self.named_streams += usize::from(!a.name.is_empty());
                    self.compressed += usize::from(a.flags & ATTR_COMPRESSION_MASK != 0);
                    match body {
                        AttrBody::Resident(_) => self.resident += 1,
                        AttrBody::NonResident(nr) => {
                            self.sparse += usize::from(nr.runs.iter().any(|r| r.lcn.is_none()));
                        }
                    }
                }
                _ => {}
            }
        }
    }
}

/// The streams of record `ino` worth opening: the default one, every named $DATA stream as
/// stored and upper-cased (found case-insensitively), and one that does not exist.
fn stream_ids(ino: u64, f: Option<&File>) -> Vec<FileId> {
    let mut ids = vec![FileId::new(ino)];
    let named = f.into_iter().flat_map(|f| {
        f.attrs
            .iter()
            .filter(|a| a.type_code == AT_DATA && !a.name.is_empty())
            .map(Attribute::name_string)
    });
    for name in named {
        for s in [name.clone(), name.to_uppercase()] {
            ids.push(FileId {
                ino,
                stream: Some(s),
            });
        }
    }
    ids.push(FileId {
        ino,
        stream: Some("no such stream".into()),
    });
    ids
}

/// Compares both paths on every record of $MFT (and a few past its end).
fn check_volume(fs: &Ntfs, what: &str) -> Seen {
    let records = fs.mft.size / fs.mft.record_size;
    let mut seen = Seen::default();
    for ino in (0..records).chain([records, records + 7, u64::from(u32::MAX) + 3]) {
        let whole = fs.load_file(ino);
        match &whole {
            Ok(f) => seen.note(f),
            Err(_) => seen.errors += 1,
        }
        for id in stream_ids(ino, whole.as_ref().ok()) {
            let slow = match &whole {
                Ok(f) => read(fs.open_file(&id, f)),
                Err(e) => Err(e.to_string()),
            };
            assert_eq!(read(fs.open_impl(&id)), slow, "{what}: open {id:?}");
            let slow = match &whole {
                Ok(f) => fs.metadata_of(&id, f).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let fast = fs.metadata_impl(&id).map_err(|e| e.to_string());
            assert_eq!(fast, slow, "{what}: metadata {id:?}");
        }
    }
    seen
}

fn check_layout(test: &str, layout: Layout) -> Option<Seen> {
    let path = image_path(test, &Spec::of(layout, 4096))?;
    Some(check_volume(&open_image(&path), &format!("{layout:?}")))
}

#[test]
fn open_and_metadata_equal_the_whole_record_path_on_the_windows_volume() {
    let test = "open_and_metadata_equal_the_whole_record_path_on_the_windows_volume";
    let Some(path) = testkit::real_image(test, "ntfs-windows") else {
        return;
    };
    let seen = check_volume(&open_image(&path), "Windows volume");
    assert!(seen.files > 2000, "{seen:?}");
    assert!(seen.resident > 0, "{seen:?}");
}

#[test]
fn open_and_metadata_equal_the_whole_record_path_on_mkntfs_volumes() {
    let test = "open_and_metadata_equal_the_whole_record_path_on_mkntfs_volumes";
    let mut seen = Seen::default();
    for layout in [
        Layout::Mixed,
        Layout::Fragmented,
        Layout::Sparse,
        Layout::Compressed,
        Layout::Small,
    ] {
        let Some(s) = check_layout(test, layout) else {
            return;
        };
        seen.add(&s);
    }
    assert!(seen.named_streams > 0, "{seen:?}");
    assert!(seen.attribute_lists > 0, "{seen:?}");
    assert!(seen.sparse > 0, "{seen:?}");
    assert!(seen.compressed > 0, "{seen:?}");
    assert!(seen.resident > 0, "{seen:?}");
}

/// Many threads opening and reading files of a volume whose $MFT is several times the record
/// cache (evictions and reused chunk buffers under contention) read what one thread reads.
#[test]
fn concurrent_opens_through_a_small_record_cache_read_what_one_thread_reads() {
    let test = "concurrent_opens_through_a_small_record_cache_read_what_one_thread_reads";
    let Some(path) = image_path(test, &Spec::of(Layout::BigDir, 4096)) else {
        return;
    };
    let fs = open_image(&path);
    let cache_bytes = MFT_CACHE_CHUNKS as u64 * fs.mft.chunk_bytes;
    assert!(
        fs.mft.size > 2 * cache_bytes,
        "$MFT of {} bytes fits the cache",
        fs.mft.size
    );
    let tree = fs.list_tree(&fscore::TreeLimits::default());
    let ids: Vec<FileId> = tree
        .entries
        .iter()
        .filter(|e| e.entry.file_type == fscore::FileType::File)
        .map(|e| e.entry.id.clone())
        .collect();
    assert!(ids.len() > 5000, "{} files", ids.len());
    let expected: Vec<Read> = ids.iter().map(|id| read(fs.open_impl(id))).collect();
    let threads = 4;
    std::thread::scope(|s| {
        for t in 0..threads {
            let (fs, ids, expected) = (&fs, &ids, &expected);
            s.spawn(move || {
                // Each thread walks the files in its own order, so the threads keep evicting
                // chunks the others are reading.
                let n = ids.len();
                for k in 0..n {
                    let i = match t {
                        0 => k,
                        1 => n - 1 - k,
                        _ => (k * (2 * t + 1) * 997) % n,
                    };
                    let got = read(fs.open_impl(&ids[i]));
                    assert_eq!(got, expected[i], "thread {t}: {:?}", ids[i]);
                }
            });
        }
    });
    let cache = fs.mft.cache.lock().expect("cache lock");
    assert!(cache.chunks.len() <= MFT_CACHE_CHUNKS);
    assert_eq!(cache.chunks.len(), cache.order.len());
    assert!(cache.spare.len() <= MFT_SPARE_CHUNKS);
}
