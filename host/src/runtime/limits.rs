//! Per-call resource limits: a memory cap that remembers what it refused, so a
//! guest that dies of it gets an error naming the cause instead of "unreachable".

use wasmtime::ResourceLimiter;

pub struct MemoryCap {
    cap_bytes: usize,
    /// The size the guest asked for when it was refused, if it was.
    pub refused: Option<usize>,
}

impl MemoryCap {
    pub fn new(cap_bytes: usize) -> Self {
        MemoryCap {
            cap_bytes,
            refused: None,
        }
    }

    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.cap_bytes {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A table entry is a pointer; hold tables to the same budget.
        Ok(desired.saturating_mul(std::mem::size_of::<usize>()) <= self.cap_bytes)
    }
}
