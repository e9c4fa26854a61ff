//! Which samples of an epoch each batch holds, alone or as one rank of several.
//!
//! Ranks share one epoch order (the same seed); global batch k is the k-th run of
//! `count * batch_size` consecutive positions of it, split into `count` near-equal contiguous
//! pieces, and rank r trains on piece r. So the ranks' samples are disjoint and together the
//! epoch, every rank takes the same number of steps, a step's global batch is exactly the batch
//! one process with `count * batch_size` would take, and each sample keeps its position (the
//! seed of its augmentation), so it is augmented as it would be alone.

use std::ops::Range;

use crate::error::{Error, Result};

/// This process's part in data-parallel loading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub rank: usize,
    /// How many ranks share the epoch.
    pub count: usize,
}

impl Shard {
    pub const ALONE: Shard = Shard { rank: 0, count: 1 };

    pub fn validate(&self) -> Result<()> {
        if self.count == 0 || self.rank >= self.count {
            return Err(Error::invalid(format!(
                "data loader: shard rank {} of {} ranks is out of range (need 0 <= rank < count)",
                self.rank, self.count
            )));
        }
        Ok(())
    }
}

/// The positions in the epoch's order of each batch this shard yields, in order.
///
/// With `drop_last`, a global batch smaller than `count * batch_size` is dropped; otherwise a last
/// global batch too small to give every rank a sample joins the one before it (those ranks'
/// last batch is one sample larger), so no rank ever gets an empty batch.
pub fn batch_ranges(n: usize, batch_size: usize, drop_last: bool, shard: Shard) -> Result<Vec<Range<usize>>> {
    shard.validate()?;
    if batch_size == 0 {
        return Err(Error::invalid("data loader: batch_size must be at least 1"));
    }
    let Shard { rank, count } = shard;
    if n < count {
        return Err(Error::invalid(format!(
            "data loader: {n} samples cannot be shared by {count} ranks (each needs at least one)"
        )));
    }
    let global = batch_size * count;
    let mut chunks: Vec<Range<usize>> = (0..n).step_by(global).map(|s| s..(s + global).min(n)).collect();
    if drop_last {
        chunks.retain(|c| c.len() == global);
    }
    if chunks.len() >= 2 && chunks.last().is_some_and(|c| c.len() < count) {
        if let Some(last) = chunks.pop() {
            if let Some(prev) = chunks.last_mut() {
                prev.end = last.end;
            }
        }
    }
    Ok(chunks.into_iter().map(|c| piece(c, rank, count)).collect())
}

/// Rank `rank`'s contiguous piece of `chunk` split `count` ways, the first `len % count` pieces
/// one longer.
fn piece(chunk: Range<usize>, rank: usize, count: usize) -> Range<usize> {
    let (base, extra) = (chunk.len() / count, chunk.len() % count);
    let start = chunk.start + rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn positions(n: usize, bs: usize, drop_last: bool, count: usize) -> Vec<Vec<Range<usize>>> {
        (0..count)
            .map(|rank| batch_ranges(n, bs, drop_last, Shard { rank, count }).unwrap())
            .collect()
    }

    #[test]
    fn alone_it_is_plain_batching() {
        assert_eq!(positions(10, 4, false, 1)[0], vec![0..4, 4..8, 8..10]);
        assert_eq!(positions(10, 4, true, 1)[0], vec![0..4, 4..8]);
        assert_eq!(positions(1, 4, false, 1)[0], vec![0..1]);
    }

    #[test]
    fn ranks_cover_the_epoch_once_in_equal_numbers_of_steps() {
        for (n, bs, count) in [
            (203, 16, 2),
            (203, 16, 3),
            (64, 32, 2),
            (7, 3, 3),
            (33, 4, 4),
            (5, 100, 5),
        ] {
            let all = positions(n, bs, false, count);
            let steps = all[0].len();
            let mut seen = vec![0u32; n];
            for ranges in &all {
                assert_eq!(ranges.len(), steps, "n {n} bs {bs} count {count}: unequal step counts");
                for r in ranges {
                    assert!(!r.is_empty(), "n {n} bs {bs} count {count}: an empty batch");
                    assert!(r.len() <= bs + 1, "n {n} bs {bs} count {count}: batch {r:?}");
                    r.clone().for_each(|p| seen[p] += 1);
                }
            }
            assert!(seen.iter().all(|&k| k == 1), "n {n} bs {bs} count {count}: {seen:?}");
        }
    }

    #[test]
    fn a_global_batch_is_what_one_process_takes_with_the_whole_batch() {
        let alone = positions(100, 32, false, 1).remove(0);
        let ranks = positions(100, 16, false, 2);
        for (k, global) in alone.iter().enumerate() {
            assert_eq!(ranks[0][k].start, global.start);
            assert_eq!(ranks[0][k].end, ranks[1][k].start);
            assert_eq!(ranks[1][k].end, global.end);
        }
    }

    #[test]
    fn drop_last_drops_whole_global_batches() {
        let ranks = positions(70, 16, true, 2);
        assert_eq!(ranks[0], vec![0..16, 32..48]);
        assert_eq!(ranks[1], vec![16..32, 48..64]);
    }

    #[test]
    fn bad_shards_are_refused() {
        let err = batch_ranges(10, 2, false, Shard { rank: 2, count: 2 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("rank 2 of 2"), "{err}");
        let err = batch_ranges(3, 2, false, Shard { rank: 0, count: 4 })
            .unwrap_err()
            .to_string();
        assert!(err.contains("3 samples cannot be shared by 4 ranks"), "{err}");
    }
}
