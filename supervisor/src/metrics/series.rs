//! One device's series: plain atomics the device updates and a scrape reads
//! (docs/metrics.md, "How the series are kept").

use super::families::{counter, gauge, histogram, ix, labels};
use super::histogram::Histogram;
use super::{
    lock, BackendState, OpClass, OutcomeClass, Stage, AREAS, DEFAULT_MAX_CMD_ENTRY_BYTES,
    KNOWN_TIERS, KNOWN_TMRS, N_OPS, N_OUTCOMES, N_STAGES, N_STATES,
};
use prometheus::proto;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

fn zeros<const N: usize>() -> [AtomicU64; N] {
    std::array::from_fn(|_| AtomicU64::new(0))
}

fn izeros<const N: usize>() -> [AtomicI64; N] {
    std::array::from_fn(|_| AtomicI64::new(0))
}

/// Every series of one device.
pub(super) struct Series {
    pub(super) device: String,
    pub(super) subtype: String,
    pub(super) commands: [[AtomicU64; N_OUTCOMES]; N_OPS],
    pub(super) read_bytes: AtomicU64,
    pub(super) written_bytes: AtomicU64,
    pub(super) op_duration: [Histogram; N_OPS],
    pub(super) stage_duration: [Histogram; N_STAGES],
    pub(super) in_flight: AtomicI64,
    pub(super) capacity: [AtomicI64; 2],
    pub(super) used: [AtomicI64; 2],
    pub(super) used_max: [AtomicI64; 2],
    pub(super) full: [AtomicU64; 2],
    pub(super) capacity_raw: [AtomicU64; 2],
    pub(super) max_raw: [AtomicU64; 2],
    pub(super) is_full: [AtomicBool; 2],
    pub(super) max_entry: AtomicU64,
    /// One per [`KNOWN_TIERS`].
    pub(super) deadline: [AtomicU64; KNOWN_TIERS.len()],
    /// Tiers beyond the known ones, in the order first counted.
    pub(super) extra_tiers: Mutex<Vec<(&'static str, u64)>>,
    /// One per [`KNOWN_TMRS`].
    pub(super) tmrs: [AtomicU64; KNOWN_TMRS.len()],
    /// TMR types beyond the known ones, in the order first counted.
    pub(super) extra_tmrs: Mutex<Vec<(&'static str, u64)>>,
    pub(super) backend_state: [AtomicI64; N_STATES],
    pub(super) reopens: AtomicU64,
    pub(super) ping: Histogram,
    pub(super) outliers: AtomicU64,
    pub(super) stuck: AtomicU64,
}

impl Series {
    /// A device's series at their start: counters at 0, the backend healthy.
    pub(super) fn new(device: &str, subtype: &str) -> Series {
        let s = Series {
            device: device.to_owned(),
            subtype: subtype.to_owned(),
            commands: std::array::from_fn(|_| zeros()),
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
            op_duration: std::array::from_fn(|_| Histogram::new()),
            stage_duration: std::array::from_fn(|_| Histogram::new()),
            in_flight: AtomicI64::new(0),
            capacity: izeros(),
            used: izeros(),
            used_max: izeros(),
            full: zeros(),
            capacity_raw: zeros(),
            max_raw: zeros(),
            is_full: [AtomicBool::new(false), AtomicBool::new(false)],
            max_entry: AtomicU64::new(DEFAULT_MAX_CMD_ENTRY_BYTES),
            deadline: zeros(),
            extra_tiers: Mutex::new(Vec::new()),
            tmrs: zeros(),
            extra_tmrs: Mutex::new(Vec::new()),
            backend_state: izeros(),
            reopens: AtomicU64::new(0),
            ping: Histogram::new(),
            outliers: AtomicU64::new(0),
            stuck: AtomicU64::new(0),
        };
        s.backend_state[BackendState::Healthy as usize].store(1, Relaxed);
        s
    }

    /// Count one event under a label value: a known one's atomic, or an extra one's entry
    /// (made on first use).
    pub(super) fn count(
        known: &[&str],
        counters: &[AtomicU64],
        extra: &Mutex<Vec<(&'static str, u64)>>,
        value: &'static str,
    ) {
        if let Some(i) = known.iter().position(|k| *k == value) {
            counters[i].fetch_add(1, Relaxed);
            return;
        }
        let mut e = lock(extra);
        match e.iter_mut().find(|(v, _)| *v == value) {
            Some((_, n)) => *n += 1,
            None => e.push((value, 1)),
        }
    }

    /// How many events under a label value.
    pub(super) fn counted(
        known: &[&str],
        counters: &[AtomicU64],
        extra: &Mutex<Vec<(&'static str, u64)>>,
        value: &str,
    ) -> u64 {
        match known.iter().position(|k| *k == value) {
            Some(i) => counters[i].load(Relaxed),
            None => lock(extra)
                .iter()
                .find(|(v, _)| *v == value)
                .map_or(0, |(_, n)| *n),
        }
    }

    /// Append this device's series of family `family` (an index in `FAMILIES`) to `out`.
    pub(super) fn push(&self, family: usize, out: &mut Vec<proto::Metric>) {
        let per_area = |out: &mut Vec<proto::Metric>, v: &[AtomicI64; 2]| {
            for (area, v) in AREAS.iter().zip(v) {
                out.push(gauge(labels(self, &[("area", area)]), v.load(Relaxed)));
            }
        };
        let plain = |out: &mut Vec<proto::Metric>, v: &AtomicU64| {
            out.push(counter(labels(self, &[]), v.load(Relaxed)));
        };
        let by = |out: &mut Vec<proto::Metric>,
                  name: &str,
                  known: &[&str],
                  counters: &[AtomicU64],
                  extra: &Mutex<Vec<(&'static str, u64)>>| {
            for (k, c) in known.iter().zip(counters) {
                out.push(counter(labels(self, &[(name, k)]), c.load(Relaxed)));
            }
            for (k, n) in lock(extra).iter() {
                out.push(counter(labels(self, &[(name, k)]), *n));
            }
        };
        match family {
            ix::COMMANDS => {
                for (op, row) in OpClass::ALL.iter().zip(&self.commands) {
                    for (oc, c) in OutcomeClass::ALL.iter().zip(row) {
                        let l = labels(self, &[("op", op.label()), ("outcome", oc.label())]);
                        out.push(counter(l, c.load(Relaxed)));
                    }
                }
            }
            ix::READ_BYTES => plain(out, &self.read_bytes),
            ix::WRITTEN_BYTES => plain(out, &self.written_bytes),
            ix::COMMAND_DURATION => {
                for (op, h) in OpClass::ALL.iter().zip(&self.op_duration) {
                    out.push(histogram(labels(self, &[("op", op.label())]), h.proto()));
                }
            }
            ix::STAGE_DURATION => {
                for (s, h) in Stage::ALL.iter().zip(&self.stage_duration) {
                    out.push(histogram(labels(self, &[("stage", s.label())]), h.proto()));
                }
            }
            ix::IN_FLIGHT => out.push(gauge(labels(self, &[]), self.in_flight.load(Relaxed))),
            ix::CAPACITY => per_area(out, &self.capacity),
            ix::USED => per_area(out, &self.used),
            ix::USED_MAX => per_area(out, &self.used_max),
            ix::FULL => {
                for (area, c) in AREAS.iter().zip(&self.full) {
                    out.push(counter(labels(self, &[("area", area)]), c.load(Relaxed)));
                }
            }
            ix::DEADLINE => by(out, "tier", KNOWN_TIERS, &self.deadline, &self.extra_tiers),
            ix::TMRS => by(out, "type", KNOWN_TMRS, &self.tmrs, &self.extra_tmrs),
            ix::BACKEND_STATE => {
                for (s, g) in BackendState::ALL.iter().zip(&self.backend_state) {
                    out.push(gauge(
                        labels(self, &[("state", s.label())]),
                        g.load(Relaxed),
                    ));
                }
            }
            ix::REOPENS => plain(out, &self.reopens),
            ix::PING => out.push(histogram(labels(self, &[]), self.ping.proto())),
            ix::OUTLIERS => plain(out, &self.outliers),
            ix::STUCK => plain(out, &self.stuck),
            _ => {}
        }
    }
}
