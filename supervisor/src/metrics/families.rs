//! The per-device metric families: defined once per process, each device's series read from
//! its atomics at scrape time (docs/metrics.md, "How the series are kept").
//!
//! Adding a device inserts one [`Series`] in the table of live devices; no descriptor,
//! label child or hash entry is made per series (the `prometheus` crate's metric vectors
//! built a descriptor and validated the names for each of the ~80 series of a device, a
//! fifth of a device's open: bench/vm/README.md, "Adding LUNs").

use super::lock;
use super::series::Series;
use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// One per-device family: its name (after the prefix), HELP, type and the labels it has
/// beyond `device` and `subtype`.
#[derive(Clone, Copy)]
pub(super) struct Family {
    name: &'static str,
    help: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
}

const fn fam(
    name: &'static str,
    kind: MetricType,
    labels: &'static [&'static str],
    help: &'static str,
) -> Family {
    Family {
        name,
        help,
        kind,
        labels,
    }
}

use MetricType::{COUNTER, GAUGE, HISTOGRAM};

/// Every per-device family, in the order [`Series::push`] knows them by.
pub(super) const FAMILIES: [Family; 17] = [
    fam(
        "commands_total",
        COUNTER,
        &["op", "outcome"],
        "Commands completed to the kernel, by operation class and outcome.",
    ),
    fam(
        "read_bytes_total",
        COUNTER,
        &[],
        "Bytes read (Data-In) by completed commands.",
    ),
    fam(
        "written_bytes_total",
        COUNTER,
        &[],
        "Bytes written (Data-Out) by completed commands.",
    ),
    fam(
        "command_duration_seconds",
        HISTOGRAM,
        &["op"],
        "Time from reading a command off the ring to publishing its completion.",
    ),
    fam(
        "command_stage_duration_seconds",
        HISTOGRAM,
        &["stage"],
        "Time a command spent in one stage: handler (ring to backend submit), backend \
         (submit to completion), publish (completion to tail published).",
    ),
    fam(
        "in_flight_commands",
        GAUGE,
        &[],
        "Commands read from the ring and not yet completed.",
    ),
    fam(
        "ring_capacity_bytes",
        GAUGE,
        &["area"],
        "Size of the command ring (area=cmd_ring) and of the data area (area=data_area).",
    ),
    fam(
        "ring_used_bytes",
        GAUGE,
        &["area"],
        "Bytes in use in the command ring or the data area, last observed.",
    ),
    fam(
        "ring_used_max_bytes",
        GAUGE,
        &["area"],
        "High-water mark of ring_used_bytes since the device was added.",
    ),
    fam(
        "ring_full_total",
        COUNTER,
        &["area"],
        "Times the command ring or the data area went from not full to full.",
    ),
    fam(
        "deadline_expired_total",
        COUNTER,
        &["tier"],
        "Commands whose deadline expired, by timeout tier.",
    ),
    fam(
        "tmrs_total",
        COUNTER,
        &["type"],
        "Task management requests received, by type.",
    ),
    fam(
        "backend_state",
        GAUGE,
        &["state"],
        "Backend health: 1 for the current state, 0 for the others.",
    ),
    fam(
        "backend_reopens_total",
        COUNTER,
        &[],
        "Backend reopen attempts.",
    ),
    fam(
        "backend_ping_duration_seconds",
        HISTOGRAM,
        &[],
        "Latency of the backend health ping.",
    ),
    fam(
        "outliers_total",
        COUNTER,
        &[],
        "Commands slower than the outlier threshold (each is in the outlier log).",
    ),
    fam(
        "stuck_commands_total",
        COUNTER,
        &[],
        "Commands the watchdog found older than their deadline plus the grace.",
    ),
];

/// Index of each family in [`FAMILIES`].
pub(super) mod ix {
    pub const COMMANDS: usize = 0;
    pub const READ_BYTES: usize = 1;
    pub const WRITTEN_BYTES: usize = 2;
    pub const COMMAND_DURATION: usize = 3;
    pub const STAGE_DURATION: usize = 4;
    pub const IN_FLIGHT: usize = 5;
    pub const CAPACITY: usize = 6;
    pub const USED: usize = 7;
    pub const USED_MAX: usize = 8;
    pub const FULL: usize = 9;
    pub const DEADLINE: usize = 10;
    pub const TMRS: usize = 11;
    pub const BACKEND_STATE: usize = 12;
    pub const REOPENS: usize = 13;
    pub const PING: usize = 14;
    pub const OUTLIERS: usize = 15;
    pub const STUCK: usize = 16;
}

/// Key of a live device: (`device`, `subtype`).
type Key = (String, String);

/// The collector of every per-device family, registered once per process.
pub(super) struct DeviceFamilies {
    descs: Vec<Desc>,
    live: Arc<Mutex<BTreeMap<Key, Arc<Series>>>>,
}

impl DeviceFamilies {
    /// The families' descriptors, and an empty table (shared with [`super::Metrics`]).
    pub(super) fn new(live: Arc<Mutex<BTreeMap<Key, Arc<Series>>>>) -> DeviceFamilies {
        let descs = FAMILIES
            .iter()
            .map(|f| {
                let labels = ["device", "subtype"]
                    .iter()
                    .chain(f.labels)
                    .map(|l| (*l).to_owned())
                    .collect();
                Desc::new(
                    format!("{}_{}", super::PREFIX, f.name),
                    f.help.to_owned(),
                    labels,
                    HashMap::new(),
                )
                .expect("valid metric definition")
            })
            .collect();
        DeviceFamilies { descs, live }
    }
}

impl Collector for DeviceFamilies {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // The table is held only to copy its handles: an add or a removal never waits on a
        // scrape's formatting.
        let devices: Vec<Arc<Series>> = lock(&self.live).values().cloned().collect();
        FAMILIES
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let mut metrics = Vec::new();
                for d in &devices {
                    d.push(i, &mut metrics);
                }
                let mut mf = MetricFamily::default();
                mf.set_name(format!("{}_{}", super::PREFIX, f.name));
                mf.set_help(f.help.to_owned());
                mf.set_field_type(f.kind);
                mf.set_metric(metrics);
                mf
            })
            .collect()
    }
}

/// The label pairs of one series of `d`, sorted by name (as the exposition wants them).
pub(super) fn labels(d: &Series, extra: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    let mut pairs: Vec<proto::LabelPair> = [("device", d.device.as_str()), ("subtype", &d.subtype)]
        .iter()
        .chain(extra)
        .map(|(k, v)| {
            let mut p = proto::LabelPair::default();
            p.set_name((*k).to_owned());
            p.set_value((*v).to_owned());
            p
        })
        .collect();
    pairs.sort_by(|a, b| a.get_name().cmp(b.get_name()));
    pairs
}

/// A counter series.
pub(super) fn counter(labels: Vec<proto::LabelPair>, v: u64) -> proto::Metric {
    let mut c = proto::Counter::default();
    #[allow(clippy::cast_precision_loss)] // the exposition's values are f64
    c.set_value(v as f64);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_counter(c);
    m
}

/// A gauge series.
pub(super) fn gauge(labels: Vec<proto::LabelPair>, v: i64) -> proto::Metric {
    let mut g = proto::Gauge::default();
    #[allow(clippy::cast_precision_loss)] // the exposition's values are f64
    g.set_value(v as f64);
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_gauge(g);
    m
}

/// A histogram series.
pub(super) fn histogram(labels: Vec<proto::LabelPair>, h: proto::Histogram) -> proto::Metric {
    let mut m = proto::Metric::default();
    m.set_label(labels);
    m.set_histogram(h);
    m
}
