//! A latency histogram kept as plain atomics, read into the exposition's histogram form by the
//! collector (docs/metrics.md, "How the series are kept").

use super::LATENCY_BUCKETS;
use prometheus::proto;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many finite bucket bounds.
const N_BOUNDS: usize = LATENCY_BUCKETS.len();

/// Observations per bucket (not cumulative; the last slot is above the largest bound) and
/// their sum. `observe` is two atomic additions and a compare-and-swap: no lock, no
/// allocation.
pub(super) struct Histogram {
    counts: [AtomicU64; N_BOUNDS + 1],
    /// The sum of the observations, as `f64` bits.
    sum: AtomicU64,
}

impl Histogram {
    pub(super) fn new() -> Histogram {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0f64.to_bits()),
        }
    }

    /// One observation of `v` seconds: it counts in the first bucket whose bound is `>= v`
    /// (the `le` rule), or above them all.
    pub(super) fn observe(&self, v: f64) {
        let i = LATENCY_BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(N_BOUNDS);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // The closure always returns Some: the update cannot fail.
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                Some((f64::from_bits(s) + v).to_bits())
            });
    }

    /// The exposition form: cumulative buckets, the count being the sum of every bucket (so
    /// `+Inf` always equals `_count`, even while observations land during a scrape).
    pub(super) fn proto(&self) -> proto::Histogram {
        let mut cumulative = 0u64;
        let mut buckets = Vec::with_capacity(N_BOUNDS);
        for (count, bound) in self.counts.iter().zip(LATENCY_BUCKETS) {
            cumulative += count.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_cumulative_count(cumulative);
            b.set_upper_bound(*bound);
            buckets.push(b);
        }
        cumulative += self.counts[N_BOUNDS].load(Ordering::Relaxed);
        let mut h = proto::Histogram::default();
        h.set_sample_count(cumulative);
        h.set_sample_sum(f64::from_bits(self.sum.load(Ordering::Relaxed)));
        h.set_bucket(buckets);
        h
    }

    /// How many observations.
    #[cfg(test)]
    pub(super) fn count(&self) -> u64 {
        self.counts.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bound_counts_in_its_own_bucket_and_the_rest_above_all() {
        let h = Histogram::new();
        h.observe(0.000_05); // exactly the first bound
        h.observe(0.000_06);
        h.observe(61.0);
        h.observe(f64::NAN);
        let p = h.proto();
        let b = p.get_bucket();
        assert_eq!(b.len(), N_BOUNDS);
        assert_eq!(b[0].get_cumulative_count(), 1);
        assert_eq!(b[1].get_cumulative_count(), 2);
        assert_eq!(b[N_BOUNDS - 1].get_cumulative_count(), 2);
        assert_eq!(p.get_sample_count(), 4);
        assert_eq!(h.count(), 4);
    }
}
