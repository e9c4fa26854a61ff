//! An in-process group of ranks (one thread each) with the collectives of `Transport`: the tests
//! check data-parallel training against one process without an MPI. Every collective is an
//! exchange through shared slots; sums are taken in rank order, so every rank gets the same bits.

use std::sync::{Arc, Barrier, Mutex};

use super::{Transport, WorldInfo};
use crate::error::{Error, Result};

struct Shared {
    slots: Mutex<Vec<Vec<u8>>>,
    barrier: Barrier,
}

pub struct LocalTransport {
    rank: usize,
    size: usize,
    shared: Arc<Shared>,
}

impl LocalTransport {
    /// `size` transports, one per rank; hand each to its own thread.
    pub fn group(size: usize) -> Vec<LocalTransport> {
        let shared = Arc::new(Shared {
            slots: Mutex::new(vec![Vec::new(); size]),
            barrier: Barrier::new(size),
        });
        (0..size)
            .map(|rank| LocalTransport {
                rank,
                size,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Deposits `bytes`, waits for every rank, and returns all deposits in rank order.
    fn exchange(&self, bytes: &[u8]) -> Vec<Vec<u8>> {
        self.shared.slots.lock().unwrap_or_else(|e| e.into_inner())[self.rank] = bytes.to_vec();
        self.shared.barrier.wait();
        let all = self.shared.slots.lock().unwrap_or_else(|e| e.into_inner()).clone();
        // Nobody deposits the next collective's bytes before everyone has read these.
        self.shared.barrier.wait();
        all
    }
}

fn sum_in_rank_order<T, const N: usize>(
    all: &[Vec<u8>],
    buf: &mut [T],
    from: fn([u8; N]) -> T,
    add: fn(T, T) -> T,
) -> Result<()>
where
    T: Copy,
{
    for (i, v) in buf.iter_mut().enumerate() {
        let mut acc: Option<T> = None;
        for bytes in all {
            let chunk: [u8; N] = bytes
                .get(i * N..(i + 1) * N)
                .and_then(|c| c.try_into().ok())
                .ok_or_else(|| Error::Distributed("all-reduce: the ranks gave different lengths".into()))?;
            let x = from(chunk);
            acc = Some(match acc {
                None => x,
                Some(a) => add(a, x),
            });
        }
        if let Some(a) = acc {
            *v = a;
        }
    }
    Ok(())
}

impl Transport for LocalTransport {
    fn info(&self) -> WorldInfo {
        WorldInfo {
            rank: self.rank,
            size: self.size,
            local_rank: self.rank,
            local_size: self.size,
        }
    }

    fn describe(&self) -> String {
        format!("in-process group of {} threads", self.size)
    }

    fn all_reduce_sum_f32(&mut self, buf: &mut [f32]) -> Result<()> {
        let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.exchange(&bytes);
        sum_in_rank_order(&all, buf, f32::from_le_bytes, |a, b| a + b)
    }

    fn all_reduce_sum_f64(&mut self, buf: &mut [f64]) -> Result<()> {
        let bytes: Vec<u8> = buf.iter().flat_map(|v| v.to_le_bytes()).collect();
        let all = self.exchange(&bytes);
        sum_in_rank_order(&all, buf, f64::from_le_bytes, |a, b| a + b)
    }

    fn broadcast(&mut self, buf: &mut [u8], root: usize) -> Result<()> {
        let all = self.exchange(buf);
        let src = &all[root];
        if src.len() != buf.len() {
            return Err(Error::Distributed(format!(
                "broadcast: rank {root} sent {} bytes, rank {} expected {}",
                src.len(),
                self.rank,
                buf.len()
            )));
        }
        buf.copy_from_slice(src);
        Ok(())
    }

    fn all_gather(&mut self, send: &[u8]) -> Result<Vec<u8>> {
        Ok(self.exchange(send).concat())
    }

    fn barrier(&mut self) -> Result<()> {
        self.exchange(&[]);
        Ok(())
    }

    fn finalize(&mut self) -> Result<()> {
        Ok(())
    }
}
