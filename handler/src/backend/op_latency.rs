//! The latency of a backend's operations by kind, one histogram per [`IoOp`] kind labelled
//! with [`IoOp::name`]: the one helper the library backends (RBD, gluster) use for their
//! `*_op_duration_seconds` series (docs/metrics.md), so both speak of the same operations
//! with the same words.

use super::IoOp;
use prometheus::{Histogram, HistogramOpts, HistogramVec};
use std::time::Instant;

/// One device's histograms, resolved once: observing is one atomic update, no lookup.
pub struct OpLatency([Histogram; IoOp::NAMES.len()]);

impl OpLatency {
    /// The children of `vec` for one device: `labels` (the device's labels, in the vector's
    /// order) followed by the operation's name.
    #[must_use]
    pub fn resolve(vec: &HistogramVec, labels: &[&str]) -> OpLatency {
        OpLatency(IoOp::NAMES.map(|op| {
            let mut l = labels.to_vec();
            l.push(op);
            vec.with_label_values(&l)
        }))
    }

    /// Histograms registered nowhere (a device without a metrics endpoint).
    ///
    /// # Panics
    /// Never: the options are static and valid.
    #[must_use]
    pub fn unregistered() -> OpLatency {
        OpLatency(IoOp::NAMES.map(|op| {
            Histogram::with_opts(HistogramOpts::new("op_duration_seconds", op))
                .expect("valid histogram options")
        }))
    }

    /// An operation of kind `op` that started at `started` has just finished.
    pub fn observe(&self, op: IoOp, started: Instant) {
        self.0[op.index()].observe(started.elapsed().as_secs_f64());
    }

    /// Remove one device's children from `vec` (the device is gone).
    pub fn remove(vec: &HistogramVec, labels: &[&str]) {
        for op in IoOp::NAMES {
            let mut l = labels.to_vec();
            l.push(op);
            let _ = vec.remove_label_values(&l);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::HistogramOpts;

    #[test]
    fn each_kind_lands_in_its_own_named_series() {
        let v = HistogramVec::new(HistogramOpts::new("t", "t"), &["device", "op"]).unwrap();
        let l = OpLatency::resolve(&v, &["d"]);
        let t = Instant::now();
        l.observe(IoOp::Write { fua: true }, t);
        l.observe(
            IoOp::WriteZeroes {
                unmap: false,
                fua: false,
            },
            t,
        );
        l.observe(
            IoOp::WriteZeroes {
                unmap: true,
                fua: true,
            },
            t,
        );
        let count = |op| v.with_label_values(&["d", op]).get_sample_count();
        assert_eq!(count("write"), 1);
        assert_eq!(count("write_zeroes"), 2);
        assert_eq!(count("read"), 0);
        OpLatency::remove(&v, &["d"]);
        let left: usize = prometheus::core::Collector::collect(&v)
            .iter()
            .map(|mf| mf.get_metric().len())
            .sum();
        assert_eq!(left, 0);
        assert_eq!(IoOp::Unmap { fua: false }.name(), "unmap");
        assert_eq!(IoOp::Flush.name(), "flush");
    }
}
