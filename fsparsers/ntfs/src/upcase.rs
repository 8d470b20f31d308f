//! Case folding through the volume's $UpCase table, as Windows compares file names.

/// The 65,536-entry table mapping each UTF-16 code unit to its upper-case form.
pub struct UpCase {
    table: Vec<u16>,
}

impl UpCase {
    /// A table that folds ASCII only: the fallback when $UpCase is unreadable.
    pub fn ascii() -> UpCase {
        let table = (0..=u16::MAX)
            .map(|c| {
                if (u16::from(b'a')..=u16::from(b'z')).contains(&c) {
                    c - 32
                } else {
                    c
                }
            })
            .collect();
        UpCase { table }
    }

    /// The table from the bytes of $UpCase (little-endian code units). Missing entries (a
    /// short table) map to themselves.
    pub fn from_bytes(b: &[u8]) -> UpCase {
        let mut up = UpCase::ascii();
        up.table = (0..=u16::MAX).collect();
        for (i, c) in b.chunks_exact(2).take(65536).enumerate() {
            up.table[i] = u16::from_le_bytes([c[0], c[1]]);
        }
        up
    }

    /// Upper-case form of one code unit.
    pub fn fold(&self, c: u16) -> u16 {
        self.table[usize::from(c)]
    }

    /// True when `a` and `b` are equal ignoring case.
    pub fn eq_ignore_case(&self, a: &[u16], b: &[u16]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| self.fold(x) == self.fold(y))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_through_the_table() {
        let u = UpCase::ascii();
        let w = |s: &str| s.encode_utf16().collect::<Vec<_>>();
        assert!(u.eq_ignore_case(&w("File.TXT"), &w("file.txt")));
        assert!(!u.eq_ignore_case(&w("é"), &w("É")));
        let mut t: Vec<u8> = (0..=u16::MAX).flat_map(|c| c.to_le_bytes()).collect();
        t[0xE9 * 2] = 0xC9; // é -> É
        let u = UpCase::from_bytes(&t);
        assert!(u.eq_ignore_case(&w("é"), &w("É")));
        assert!(
            !u.eq_ignore_case(&w("a"), &w("A")),
            "table has no ASCII folding"
        );
    }
}
