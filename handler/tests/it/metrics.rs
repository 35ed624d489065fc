//! The device thread feeds its Prometheus series: commands by op and outcome, bytes, stage
//! latencies, ring capacity.

use std::sync::Arc;
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb, Harness};
use tcmu_warden_supervisor::metrics::Metrics;

fn value(text: &str, prefix: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no series starting {prefix:?} in:\n{text}"))
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn commands_bytes_and_stages_are_counted() {
    let m = Metrics::new();
    let cfg = DeviceConfig {
        metrics: Some(m.device("user_0/lun0", "file")),
        ..DeviceConfig::default()
    };
    let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "metrics");
    let mut h = Harness::new(
        Arc::new(RamBackend::new(1 << 20)),
        lun,
        EmuConfig::default(),
        &cfg,
    );
    let data = vec![7u8; 4096];
    for lba in 0..10 {
        assert_good(&h.run(&cdb::write16(lba * 8, 8, false), DataDir::ToDevice(&data)));
    }
    for lba in 0..5 {
        assert_good(&h.run(&cdb::read16(lba * 8, 8), DataDir::FromDevice(4096)));
    }
    let c = h.run(&cdb::read16(4096, 1), DataDir::FromDevice(512));
    assert_eq!(c.status, 2, "LBA out of range");
    h.stop();
    let t = m.encode();
    let dev = r#"device="user_0/lun0""#;
    assert!(
        t.lines()
            .any(|l| l.starts_with("tcmu_warden_commands_total") && l.contains(dev)),
        "{t}"
    );
    let writes = t
        .lines()
        .find(|l| {
            l.starts_with("tcmu_warden_commands_total")
                && l.contains(r#"op="write""#)
                && l.contains(r#"outcome="good""#)
        })
        .expect("writes counted");
    assert!(writes.ends_with(" 10"), "{writes}");
    let reads = t
        .lines()
        .find(|l| {
            l.starts_with("tcmu_warden_commands_total")
                && l.contains(r#"op="read""#)
                && l.contains(r#"outcome="good""#)
        })
        .expect("reads counted");
    assert!(reads.ends_with(" 5"), "{reads}");
    assert!(
        t.lines()
            .any(|l| l.starts_with("tcmu_warden_commands_total")
                && l.contains(r#"outcome="check_condition""#)
                && l.ends_with(" 1")),
        "{t}"
    );
    assert_eq!(value(&t, "tcmu_warden_written_bytes_total"), 40960.0);
    assert_eq!(value(&t, "tcmu_warden_read_bytes_total"), 20480.0);
    let backend_count = t
        .lines()
        .find(|l| {
            l.starts_with("tcmu_warden_command_stage_duration_seconds_count")
                && l.contains(r#"stage="backend""#)
        })
        .expect("backend stage histogram");
    assert!(
        backend_count.ends_with(" 15"),
        "every data command went through the backend stage: {backend_count}"
    );
    assert!(
        t.lines()
            .any(|l| l.starts_with("tcmu_warden_ring_capacity_bytes")
                && l.contains(r#"area="data_area""#)
                && !l.ends_with(" 0")),
        "{t}"
    );
}
