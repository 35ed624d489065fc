//! The exposition is byte for byte the one the `prometheus` crate's metric vectors gave
//! before the per-device series became plain atomics read by one collector
//! (docs/metrics.md, "How the series are kept"): same names, HELP, TYPE, labels, order and
//! values. `data/exposition.prom` was written by this test on the tree before that change
//! (`TCMU_WARDEN_BLESS=1`); `build_info` is left out (it carries the version).

mod common;

use tcmu_warden_supervisor::metrics::Metrics;

const GOLDEN: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/exposition.prom");

fn without_build_info(text: &str) -> String {
    text.lines()
        .filter(|l| !l.contains("tcmu_warden_build_info"))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_exposition_is_the_one_of_the_metric_vectors() {
    let m = Metrics::new();
    let _a = common::exercised(&m, "user_0/lun0", "file");
    let b = common::exercised(&m, "user_1/db", "rbd");
    b.deadline_expired("initiator"); // a tier beyond the known ones
    b.tmr("something_new"); // a TMR type beyond the known ones
    b.ping_latency(75.0); // above the largest bucket
    let gone = common::exercised(&m, "user_0/gone", "glfs");
    gone.deadline_expired("initiator");
    m.remove_device("user_0/gone", "glfs");
    let _idle = m.device("user_2/idle", "ram");
    m.log_lines_dropped(7);
    let text = without_build_info(&m.encode());
    if std::env::var_os("TCMU_WARDEN_BLESS").is_some() {
        std::fs::write(GOLDEN, &text).unwrap();
    }
    let golden = std::fs::read_to_string(GOLDEN).unwrap();
    for (i, (got, want)) in text.lines().zip(golden.lines()).enumerate() {
        assert_eq!(got, want, "line {}", i + 1);
    }
    assert_eq!(text.lines().count(), golden.lines().count());
}
