//! A stalled log output never stops I/O: the logger's non-blocking writer drops lines (and
//! counts them) instead of making the device thread wait. Alone in its test binary: it
//! installs the process's global subscriber.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tcmu_ring::emu::{DataDir, EmuConfig};
use tcmu_warden::backend::ram::RamBackend;
use tcmu_warden::device::DeviceConfig;
use tcmu_warden::testing::{assert_good, cdb as cdbs, Harness};

static RELEASED: AtomicBool = AtomicBool::new(false);

/// A log output that does not take anything until released (a stalled journald).
struct Stalled;

impl std::io::Write for Stalled {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        while !RELEASED.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn io_goes_on_while_the_log_output_is_stalled() {
    use tracing_subscriber::layer::SubscriberExt;
    let (writer, guard) = tcmu_warden::logging::non_blocking(Stalled);
    let subscriber =
        tracing_subscriber::registry().with(tracing_subscriber::fmt::layer().with_writer(writer));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    // Every command is an outlier, so the device thread logs one line per command.
    let cfg = DeviceConfig {
        outlier_threshold: Some(Duration::from_nanos(1)),
        ..DeviceConfig::default()
    };
    let lun = tcmu_scsi::lun::LunInfo::new(512, 2048, "log-stall");
    let mut h = Harness::new(
        Arc::new(RamBackend::new(1 << 20)),
        lun,
        EmuConfig::default(),
        &cfg,
    );
    let n = 2 * tcmu_warden::logging::BUFFER_LINES;
    let t = Instant::now();
    let block = vec![0x5a; 512];
    for i in 0..n {
        let lba = u64::try_from(i % 2048).unwrap();
        assert_good(&h.run(&cdbs::write16(lba, 1, false), DataDir::ToDevice(&block)));
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "only {i} of {n} commands done in 60 s: I/O waits on the log"
        );
    }
    let took = t.elapsed();
    let outliers = h.stats().outliers();
    let dropped = tcmu_warden::logging::dropped_lines();
    println!(
        "log output stalled: {n} writes in {took:?} ({:.0}/s), {outliers} outlier lines logged, {dropped} dropped",
        n as f64 / took.as_secs_f64()
    );
    assert!(outliers >= u64::try_from(n).unwrap());
    assert!(dropped > 0, "lines past the buffer are dropped and counted");
    h.stop();
    RELEASED.store(true, Ordering::Relaxed);
    drop(guard);
}
