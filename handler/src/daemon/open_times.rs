//! How long each step of opening a device took: the stages of the `added answered` log line,
//! the daemon's share of an `enable` (which waits in the kernel for our answer to ADDED).
//!
//! Always on: a monotonic clock read per stage, a few per device added.

use crate::device::StartTimes;
use std::time::{Duration, Instant};

/// The stages of [`super::open::serve`], in order. Zero for a stage that did not run.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OpenTimes {
    /// `/dev/uioN` opened, its sysfs `name` and map size read.
    pub uio: Duration,
    /// The configfs attributes read and the device's settings resolved.
    pub attrs: Duration,
    /// The backend opened.
    pub backend: Duration,
    /// The ring reset of a device found at start-up (none for an ADDED).
    pub restart: Duration,
    /// The ring mapped.
    pub map: Duration,
    /// The device's configuration put together: its Prometheus series registered, its
    /// callbacks, its log lines.
    pub config: Duration,
    /// `device::spawn`: the device built and handed to its loop.
    pub device: Duration,
    /// Of `device`, its parts.
    pub start: StartTimes,
}

/// Laps of a stopwatch: each call to [`Laps::lap`] is the time since the previous one.
#[derive(Debug)]
pub struct Laps(Instant);

impl Laps {
    /// Start now.
    #[must_use]
    pub fn start() -> Laps {
        Laps(Instant::now())
    }

    /// The time since the start or the previous lap.
    pub fn lap(&mut self) -> Duration {
        let now = Instant::now();
        let d = now - self.0;
        self.0 = now;
        d
    }
}

/// Milliseconds with microsecond resolution, for log fields.
#[must_use]
pub fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// The CPU time this process has used so far (user and system, every thread): logged with
/// each device added, so the daemon's CPU between two adds is a difference of two lines.
#[must_use]
pub fn process_cpu() -> Duration {
    nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).map_or(
        Duration::ZERO,
        |u| {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
                    + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
            };
            tv(u.user_time()) + tv(u.system_time())
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn laps_add_up_and_ms_rounds_to_microseconds() {
        let t0 = Instant::now();
        let mut l = Laps::start();
        std::thread::sleep(Duration::from_millis(2));
        let a = l.lap();
        let b = l.lap();
        assert!(a >= Duration::from_millis(2), "{a:?}");
        assert!(a + b <= t0.elapsed());
        assert!((ms(Duration::from_nanos(1_234_567)) - 1.235).abs() < 1e-9);
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(
            process_cpu() > before,
            "no CPU time counted for 30 ms of spinning"
        );
    }
}
