//! The paged KV block manager: fixed-size blocks handed out from a free list.

pub type BlockId = u32;

/// Owns the free list; each sequence keeps its own block table and gives it back whole.
#[derive(Clone, Debug)]
pub struct KvBlockManager {
    block_size: u32,
    total: u32,
    free: Vec<BlockId>,
}

impl KvBlockManager {
    pub fn new(block_size: u32, total_blocks: u32) -> KvBlockManager {
        assert!(block_size > 0, "block size must be positive");
        // Reversed so blocks are handed out 0, 1, 2, … (only for readability of traces).
        KvBlockManager {
            block_size,
            total: total_blocks,
            free: (0..total_blocks).rev().collect(),
        }
    }

    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    pub fn total_blocks(&self) -> u32 {
        self.total
    }

    pub fn free_blocks(&self) -> u32 {
        self.free.len() as u32
    }

    pub fn used_blocks(&self) -> u32 {
        self.total - self.free_blocks()
    }

    /// Blocks needed to hold `tokens` tokens.
    pub fn blocks_for(&self, tokens: u64) -> u64 {
        tokens.div_ceil(u64::from(self.block_size))
    }

    /// Grows `table` to hold `tokens` tokens. All or nothing: false (and `table` untouched) when too few are free.
    #[inline]
    pub fn grow(&mut self, table: &mut Vec<BlockId>, tokens: u64) -> bool {
        // The common case, a decode token inside the last block, must cost next to nothing: it runs for every
        // sequence of every step.
        if tokens <= table.len() as u64 * u64::from(self.block_size) {
            return true;
        }
        let need = self.blocks_for(tokens).saturating_sub(table.len() as u64);
        if need > self.free.len() as u64 {
            return false;
        }
        let at = self.free.len() - need as usize;
        table.extend(self.free.drain(at..).rev());
        true
    }

    /// Returns every block of `table` to the free list.
    pub fn release(&mut self, table: &mut Vec<BlockId>) {
        self.free.append(table);
    }

    /// Checks that the free list and the given tables partition the blocks exactly: none lost, none owned twice.
    pub fn check_partition<'a>(&self, tables: impl IntoIterator<Item = &'a [BlockId]>) -> Result<(), String> {
        let mut owner = vec![false; self.total as usize];
        let mut claim = |b: BlockId, what: &str| -> Result<(), String> {
            let slot = owner
                .get_mut(b as usize)
                .ok_or_else(|| format!("block {b} out of range ({what})"))?;
            if *slot {
                return Err(format!("block {b} owned twice ({what})"));
            }
            *slot = true;
            Ok(())
        };
        for &b in &self.free {
            claim(b, "free list")?;
        }
        for table in tables {
            for &b in table {
                claim(b, "sequence")?;
            }
        }
        match owner.iter().position(|o| !o) {
            Some(b) => Err(format!("block {b} leaked: neither free nor owned")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grow_is_all_or_nothing_and_release_returns_everything() {
        let mut m = KvBlockManager::new(16, 4);
        let mut a = Vec::new();
        let mut b = Vec::new();
        assert!(m.grow(&mut a, 17)); // 2 blocks
        assert_eq!(a.len(), 2);
        assert!(m.grow(&mut a, 32)); // still 2
        assert_eq!(a.len(), 2);
        assert!(!m.grow(&mut b, 48)); // needs 3, only 2 free
        assert!(b.is_empty());
        assert!(m.grow(&mut b, 32));
        assert_eq!(m.free_blocks(), 0);
        m.check_partition([a.as_slice(), b.as_slice()]).unwrap();
        m.release(&mut a);
        assert!(a.is_empty());
        assert_eq!(m.free_blocks(), 2);
        m.check_partition([b.as_slice()]).unwrap();
        assert!(m.check_partition([]).unwrap_err().contains("leaked"));
    }
}
