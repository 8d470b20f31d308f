use crate::source::check_range;
use crate::{ReadAt, Result};

/// An in-memory source, for tests and for small decoded buffers.
pub struct MemSource {
    name: String,
    data: Vec<u8>,
}

impl MemSource {
    /// A source over `data`, named `name` in errors.
    pub fn new(name: impl Into<String>, data: Vec<u8>) -> Self {
        MemSource {
            name: name.into(),
            data,
        }
    }

    /// The bytes.
    pub fn data(&self) -> &[u8] {
        &self.data
    }
}

impl ReadAt for MemSource {
    fn read_exact_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        check_range(&self.name, offset, buf.len(), self.data.len() as u64)?;
        let start = offset as usize;
        buf.copy_from_slice(&self.data[start..start + buf.len()]);
        Ok(())
    }
    fn size(&self) -> u64 {
        self.data.len() as u64
    }
    fn name(&self) -> &str {
        &self.name
    }
}
