//! The exposition: every series with its labels, the ring-full rule, device removal, and
//! `promtool check metrics` on the result.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use tcmu_warden_supervisor::metrics::{BackendState, Metrics, OpClass, OutcomeClass, Stage};

/// Every series name (as in docs/metrics.md) with the labels beyond device/subtype.
const SERIES: &[(&str, &[&str])] = &[
    ("tcmu_warden_commands_total", &["op", "outcome"]),
    ("tcmu_warden_read_bytes_total", &[]),
    ("tcmu_warden_written_bytes_total", &[]),
    ("tcmu_warden_command_duration_seconds_bucket", &["op", "le"]),
    ("tcmu_warden_command_duration_seconds_sum", &["op"]),
    ("tcmu_warden_command_duration_seconds_count", &["op"]),
    (
        "tcmu_warden_command_stage_duration_seconds_bucket",
        &["stage", "le"],
    ),
    ("tcmu_warden_in_flight_commands", &[]),
    ("tcmu_warden_ring_capacity_bytes", &["area"]),
    ("tcmu_warden_ring_used_bytes", &["area"]),
    ("tcmu_warden_ring_used_max_bytes", &["area"]),
    ("tcmu_warden_ring_full_total", &["area"]),
    ("tcmu_warden_deadline_expired_total", &["tier"]),
    ("tcmu_warden_tmrs_total", &["type"]),
    ("tcmu_warden_backend_state", &["state"]),
    ("tcmu_warden_backend_reopens_total", &[]),
    ("tcmu_warden_backend_ping_duration_seconds_bucket", &["le"]),
    ("tcmu_warden_outliers_total", &[]),
    ("tcmu_warden_stuck_commands_total", &[]),
];

fn line<'a>(text: &'a str, name: &str, labels: &[(&str, &str)]) -> Option<&'a str> {
    text.lines().find(|l| {
        l.starts_with(&format!("{name}{{"))
            && labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
    })
}

fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let l = line(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?} in\n{text}"));
    l.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn every_series_appears_with_its_labels() {
    let m = Metrics::new();
    let _d = common::exercised(&m, "lun0", "file");
    let text = m.encode();
    for (name, extra) in SERIES {
        let l = line(&text, name, &[("device", "lun0"), ("subtype", "file")])
            .unwrap_or_else(|| panic!("{name} missing in\n{text}"));
        for label in *extra {
            assert!(
                l.contains(&format!("{label}=\"")),
                "{name} lacks label {label}: {l}"
            );
        }
    }
    for op in OpClass::ALL {
        for oc in OutcomeClass::ALL {
            let v = value(
                &text,
                "tcmu_warden_commands_total",
                &[
                    ("device", "lun0"),
                    ("op", op.label()),
                    ("outcome", oc.label()),
                ],
            );
            assert!((v - 1.0).abs() < f64::EPSILON, "{op:?}/{oc:?}: {v}");
        }
    }
    for s in Stage::ALL {
        let v = value(
            &text,
            "tcmu_warden_command_stage_duration_seconds_count",
            &[("device", "lun0"), ("stage", s.label())],
        );
        assert!((v - 36.0).abs() < f64::EPSILON);
    }
    // 36 commands of 4096 read and 512 written bytes.
    assert!((value(&text, "tcmu_warden_read_bytes_total", &[]) - 36.0 * 4096.0).abs() < 0.5);
    assert!((value(&text, "tcmu_warden_written_bytes_total", &[]) - 36.0 * 512.0).abs() < 0.5);
    // Total latency = sum of the stages: 325 µs lands in the 500 µs bucket, not in 250 µs.
    let read = [("device", "lun0"), ("op", "read")];
    let b = |le: &str| {
        let mut l = read.to_vec();
        l.push(("le", le));
        value(&text, "tcmu_warden_command_duration_seconds_bucket", &l)
    };
    assert!(b("0.00025").abs() < f64::EPSILON && (b("0.0005") - 4.0).abs() < f64::EPSILON);
    assert!(
        (value(&text, "tcmu_warden_backend_state", &[("state", "degraded")]) - 1.0).abs() < 0.1
    );
    assert!(value(&text, "tcmu_warden_backend_state", &[("state", "healthy")]).abs() < 0.1);
    assert!((value(&text, "tcmu_warden_in_flight_commands", &[]) - 3.0).abs() < 0.1);
    assert!(text.contains("\ntcmu_warden_devices 1\n"), "{text}");
    assert!(text.contains("tcmu_warden_build_info{"), "{text}");
    // Known TMR types and tiers exist at 0 before any event, so rate() works from the start.
    assert!(value(&text, "tcmu_warden_tmrs_total", &[("type", "lun_reset")]).abs() < 0.1);
    assert!(
        value(
            &text,
            "tcmu_warden_deadline_expired_total",
            &[("tier", "kernel")]
        )
        .abs()
            < 0.1
    );
}

#[test]
fn a_fresh_device_is_healthy_and_a_stage_of_zero_is_not_observed() {
    let m = Metrics::new();
    let d = m.device("lun1", "rbd");
    d.command_done(
        OpClass::Emulated,
        OutcomeClass::Good,
        36,
        0,
        [1_000, 0, 0, 0, 2_000],
    );
    let text = m.encode();
    assert!((value(&text, "tcmu_warden_backend_state", &[("state", "healthy")]) - 1.0).abs() < 0.1);
    let count = |stage| {
        value(
            &text,
            "tcmu_warden_command_stage_duration_seconds_count",
            &[("stage", stage)],
        )
    };
    assert!((count("handler") - 1.0).abs() < 0.1);
    assert!(count("backend").abs() < 0.1);
    assert!((count("publish") - 1.0).abs() < 0.1);
}

#[test]
fn ring_full_counts_transitions_into_full_and_tracks_high_water() {
    let m = Metrics::new();
    let d = m.device("lun0", "file");
    // Before capacities are known nothing is full.
    d.observe_use(1 << 20, 1 << 20);
    d.set_capacity(8192, 65536);
    d.set_max_cmd_entry(512);
    let full = |area| {
        value(
            &m.encode(),
            "tcmu_warden_ring_full_total",
            &[("area", area)],
        )
    };
    assert!(full("cmd_ring").abs() < 0.1 && full("data_area").abs() < 0.1);
    d.observe_use(8192 - 512, 65535); // one max entry still fits; one byte free
    assert!(full("cmd_ring").abs() < 0.1 && full("data_area").abs() < 0.1);
    d.observe_use(8192 - 511, 65536); // both at capacity
    d.observe_use(8192 - 8, 65536); // still full: same event
    assert!((full("cmd_ring") - 1.0).abs() < 0.1 && (full("data_area") - 1.0).abs() < 0.1);
    d.observe_use(0, 0);
    d.observe_use(8000, 65536); // full again: a second event
    assert!((full("cmd_ring") - 2.0).abs() < 0.1 && (full("data_area") - 2.0).abs() < 0.1);
    d.observe_use(100, 200);
    let text = m.encode();
    let used = |n, area| value(&text, n, &[("area", area)]);
    assert!((used("tcmu_warden_ring_used_bytes", "cmd_ring") - 100.0).abs() < 0.1);
    assert!((used("tcmu_warden_ring_used_max_bytes", "cmd_ring") - f64::from(1 << 20)).abs() < 0.1);
    assert!((used("tcmu_warden_ring_capacity_bytes", "data_area") - 65536.0).abs() < 0.1);
}

#[test]
fn removing_a_device_drops_its_series_only() {
    let m = Metrics::new();
    let _a = common::exercised(&m, "lun0", "file");
    let b = common::exercised(&m, "lun1", "rbd");
    b.deadline_expired("initiator"); // a tier beyond the known ones
    b.tmr("something_new");
    assert!(m.encode().contains("\ntcmu_warden_devices 2\n"));
    m.remove_device("lun1", "rbd");
    let text = m.encode();
    assert!(!text.contains("device=\"lun1\""), "{text}");
    assert!(text.contains("device=\"lun0\""));
    assert!(text.contains("\ntcmu_warden_devices 1\n"), "{text}");
    m.remove_device("lun0", "file");
    let text = m.encode();
    assert!(!text.contains("device=\""), "{text}");
    assert!(text.contains("\ntcmu_warden_devices 0\n"), "{text}");
    // With no device the exposition is still valid and has the process-level series.
    assert!(text.contains("tcmu_warden_build_info{"));
    let _ = BackendState::ALL;
}

fn promtool_check(text: &str) {
    let Some(promtool) = common::require_tool("promtool", "prometheus") else {
        return;
    };
    let mut child = Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // promtool exits non-zero on errors and prints lint problems (naming, units, ...) too:
    // both must be absent.
    assert!(
        out.status.success() && stdout.trim().is_empty() && stderr.trim().is_empty(),
        "promtool check metrics: {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
}

#[test]
fn promtool_check_metrics_passes() {
    let m = Metrics::new();
    // No device yet: the endpoint still serves a valid exposition.
    promtool_check(&m.encode());
    let _a = common::exercised(&m, "lun0", "file");
    let b = common::exercised(&m, "lun1", "glfs");
    b.deadline_expired("backend");
    b.tmr("lun_reset");
    promtool_check(&m.encode());
}

#[test]
fn status_reads_the_counters_back_from_the_series() {
    let m = Metrics::new();
    let d = m.device("user_0/a", "file");
    d.set_capacity(8192, 65536);
    d.observe_use(1024, 4096);
    d.set_in_flight(3);
    d.deadline_expired("handler");
    d.deadline_expired("handler");
    d.deadline_expired("initiator");
    d.tmr("abort_task");
    d.tmr("lun_reset");
    d.outlier();
    d.stuck_command();
    assert_eq!(d.capacity(), (8192, 65536));
    assert_eq!(d.used(), (1024, 4096));
    assert_eq!(d.in_flight(), 3);
    assert_eq!(d.deadlines_expired("handler"), 2);
    assert_eq!(d.deadlines_expired("initiator"), 1);
    assert_eq!(d.deadlines_expired("never"), 0);
    assert_eq!(d.tmrs(), 2);
    assert_eq!((d.outliers(), d.stuck_commands()), (1, 1));
    // The same values are what the endpoint serves.
    let text = m.encode();
    assert!(text.contains(
        "tcmu_warden_deadline_expired_total{device=\"user_0/a\",subtype=\"file\",tier=\"handler\"} 2"
    ));
    assert!(!text.contains("tier=\"never\""));
    // A detached device keeps its counters without any endpoint.
    let lone = tcmu_warden_supervisor::metrics::DeviceMetrics::detached("user_0/b", "ram");
    lone.outlier();
    assert_eq!(lone.outliers(), 1);
}

#[test]
fn devices_share_the_families_and_each_keeps_its_own_series() {
    let m = Metrics::new();
    let a = m.device("lun0", "file");
    let b = m.device("lun1", "file");
    a.outlier();
    a.outlier();
    b.outlier();
    a.deadline_expired("initiator"); // a tier beyond the known ones, on one device only
    let text = m.encode();
    // One HELP and TYPE per family, whatever the number of devices.
    assert_eq!(
        text.matches("# TYPE tcmu_warden_outliers_total counter\n")
            .count(),
        1
    );
    assert!((value(&text, "tcmu_warden_outliers_total", &[("device", "lun0")]) - 2.0).abs() < 0.1);
    assert!((value(&text, "tcmu_warden_outliers_total", &[("device", "lun1")]) - 1.0).abs() < 0.1);
    assert!(line(
        &text,
        "tcmu_warden_deadline_expired_total",
        &[("device", "lun1"), ("tier", "initiator")]
    )
    .is_none());
    // A second handle of a device that has series is the same series.
    m.device("lun0", "file").outlier();
    assert_eq!(a.outliers(), 3);
    // Removed, then added again (a LUN re-created with the same name): a fresh start.
    m.remove_device("lun0", "file");
    a.outlier(); // a handle still held keeps working, not exported
    assert!(!m.encode().contains("device=\"lun0\""));
    let again = m.device("lun0", "file");
    assert_eq!(again.outliers(), 0);
    assert_eq!(again.deadlines_expired("initiator"), 0);
    let text = m.encode();
    assert!(value(&text, "tcmu_warden_outliers_total", &[("device", "lun0")]).abs() < 0.1);
    assert!(text.contains("\ntcmu_warden_devices 2\n"), "{text}");
}
