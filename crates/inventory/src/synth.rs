//! Synthetic virtual disk headers for tests and demos: a differencing VHD and a VHDX (plain
//! or differencing) with just the structures the inventory reads. qemu-img cannot create
//! differencing VHD or VHDX files, so tests of Hyper-V checkpoint chains need these.

use crate::vhdx::*;

/// A differencing VHD of `size` bytes whose locators name `relative` and `absolute`.
pub fn vhd_differencing(size: u64, parent_name: &str, relative: &str, absolute: &str) -> Vec<u8> {
    let mut f = vec![0u8; 512];
    f[..8].copy_from_slice(b"conectix");
    f[8..12].copy_from_slice(&2u32.to_be_bytes());
    f[12..16].copy_from_slice(&0x0001_0000u32.to_be_bytes());
    f[16..24].copy_from_slice(&512u64.to_be_bytes());
    f[28..32].copy_from_slice(b"win ");
    f[40..48].copy_from_slice(&size.to_be_bytes());
    f[48..56].copy_from_slice(&size.to_be_bytes());
    f[60..64].copy_from_slice(&4u32.to_be_bytes());
    let c = crate::vhd::checksum(&f, 64);
    f[64..68].copy_from_slice(&c.to_be_bytes());
    let mut h = vec![0u8; 1024];
    h[..8].copy_from_slice(b"cxsparse");
    h[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
    h[32..36].copy_from_slice(&(2u32 << 20).to_be_bytes());
    for (i, u) in parent_name.encode_utf16().take(255).enumerate() {
        h[64 + 2 * i..66 + 2 * i].copy_from_slice(&u.to_be_bytes());
    }
    let mut out = f.clone();
    out.extend_from_slice(&h);
    for (i, (code, p)) in [(b"W2ru", relative), (b"W2ku", absolute)]
        .into_iter()
        .enumerate()
    {
        let data: Vec<u8> = p.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let off = out.len() as u64;
        let e = 576 + i * 24;
        out[512 + e..512 + e + 4].copy_from_slice(code);
        out[512 + e + 4..512 + e + 8].copy_from_slice(&512u32.to_be_bytes());
        out[512 + e + 8..512 + e + 12].copy_from_slice(&(data.len() as u32).to_be_bytes());
        out[512 + e + 16..512 + e + 24].copy_from_slice(&off.to_be_bytes());
        out.extend_from_slice(&data);
        out.resize(out.len().next_multiple_of(512), 0);
    }
    out.extend_from_slice(&f);
    out
}

fn guid_bytes(g: &str) -> [u8; 16] {
    let h: String = g.chars().filter(|c| *c != '-').collect();
    let b: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&h[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mut o = [0u8; 16];
    o[..4].copy_from_slice(&[b[3], b[2], b[1], b[0]]);
    o[4..6].copy_from_slice(&[b[5], b[4]]);
    o[6..8].copy_from_slice(&[b[7], b[6]]);
    o[8..].copy_from_slice(&b[8..]);
    o
}

/// A VHDX of `size` bytes; with `parent`, a differencing disk whose locator holds those
/// key/value pairs. `log_dirty` sets a non-zero LogGuid.
pub fn vhdx(size: u64, parent: Option<&[(&str, &str)]>, log_dirty: bool) -> Vec<u8> {
    let mut f = vec![0u8; 3 << 20];
    f[..8].copy_from_slice(SIGNATURE);
    for (i, u) in "lunproxy test".encode_utf16().enumerate() {
        f[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
    }
    for (n, off) in HEADER_OFFSETS.iter().enumerate() {
        let o = *off as usize;
        let mut h = vec![0u8; 4096];
        h[..4].copy_from_slice(b"head");
        h[8..16].copy_from_slice(&(n as u64 + 1).to_le_bytes());
        if log_dirty {
            h[48..64].fill(0x11);
        }
        h[66..68].copy_from_slice(&1u16.to_le_bytes());
        let c = crc32c(&h);
        h[4..8].copy_from_slice(&c.to_le_bytes());
        f[o..o + 4096].copy_from_slice(&h);
    }
    let mut rt = vec![0u8; 64 * 1024];
    rt[..4].copy_from_slice(b"regi");
    rt[8..12].copy_from_slice(&2u32.to_le_bytes());
    rt[16..32].copy_from_slice(&guid_bytes(BAT_REGION));
    rt[32..40].copy_from_slice(&(2u64 << 20).to_le_bytes());
    rt[40..44].copy_from_slice(&(1u32 << 20).to_le_bytes());
    rt[48..64].copy_from_slice(&guid_bytes(METADATA_REGION));
    rt[64..72].copy_from_slice(&(1u64 << 20).to_le_bytes());
    rt[72..76].copy_from_slice(&(1u32 << 20).to_le_bytes());
    rt[76..80].copy_from_slice(&1u32.to_le_bytes());
    let c = crc32c(&rt);
    rt[4..8].copy_from_slice(&c.to_le_bytes());
    for off in REGION_TABLE_OFFSETS {
        f[off as usize..off as usize + rt.len()].copy_from_slice(&rt);
    }
    let md = 1usize << 20;
    f[md..md + 8].copy_from_slice(b"metadata");
    let mut items: Vec<(&str, Vec<u8>)> = vec![
        (FILE_PARAMETERS, {
            let mut v = (32u32 << 20).to_le_bytes().to_vec();
            v.extend_from_slice(&(if parent.is_some() { 2u32 } else { 0 }).to_le_bytes());
            v
        }),
        (VIRTUAL_DISK_SIZE, size.to_le_bytes().to_vec()),
    ];
    if let Some(kv) = parent {
        let mut item = guid_bytes(VHDX_PARENT_LOCATOR_TYPE).to_vec();
        item.extend_from_slice(&0u16.to_le_bytes());
        item.extend_from_slice(&(kv.len() as u16).to_le_bytes());
        let mut strings = Vec::new();
        let base = 20 + kv.len() * 12;
        for (k, v) in kv {
            let kb: Vec<u8> = k.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            let vb: Vec<u8> = v.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
            let ko = base + strings.len();
            strings.extend_from_slice(&kb);
            let vo = base + strings.len();
            strings.extend_from_slice(&vb);
            item.extend_from_slice(&(ko as u32).to_le_bytes());
            item.extend_from_slice(&(vo as u32).to_le_bytes());
            item.extend_from_slice(&(kb.len() as u16).to_le_bytes());
            item.extend_from_slice(&(vb.len() as u16).to_le_bytes());
        }
        item.extend_from_slice(&strings);
        items.push((PARENT_LOCATOR, item));
    }
    f[md + 10..md + 12].copy_from_slice(&(items.len() as u16).to_le_bytes());
    let mut data_off = 64 * 1024usize;
    for (i, (g, data)) in items.iter().enumerate() {
        let e = md + 32 + i * 32;
        f[e..e + 16].copy_from_slice(&guid_bytes(g));
        f[e + 16..e + 20].copy_from_slice(&(data_off as u32).to_le_bytes());
        f[e + 20..e + 24].copy_from_slice(&(data.len() as u32).to_le_bytes());
        f[md + data_off..md + data_off + data.len()].copy_from_slice(data);
        data_off += data.len().next_multiple_of(4096);
    }
    f
}
