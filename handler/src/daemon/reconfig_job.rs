//! A RECONFIG_DEVICE that needs the backend (a new cfgstring, a new size), run on a thread of
//! its own so the main loop never waits for a backend (an RBD open, a gluster DNS lookup, an
//! `rbd_resize` against a frozen OSD).
//!
//! The main loop answers the kernel: with the job's result when it comes in time, or with
//! ETIMEDOUT at the bound. Whichever comes first claims the answer ([`Job::claim`]); a job
//! that lost puts nothing in force (a late backend is closed on the job's thread, a late
//! resize leaves the LUN at its old size), so the reply always says what is served. A job
//! that put a new backend in force then closes the old one on its own thread, once the old
//! one's operations have returned (`device::reconfig::close_replaced`).

use crate::backend::{Backend, OpenError};
use crate::device::link::DeviceLink;
use crate::device::reconfig::{close_replaced, commit_size};
use crate::device::ReconfigError;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Opens the backend a new cfgstring names: `(subtype, cfgstring, device, size)`
/// (`open_backend` in the daemon; tests put their own in its place).
pub(super) type BackendOpener =
    Arc<dyn Fn(&str, &str, &str, u64) -> Result<Arc<dyn Backend>, OpenError> + Send + Sync>;

/// What a job needs the backend for.
pub(super) enum Work {
    /// Open this cfgstring (`subtype/rest`) and serve it.
    Cfgstring(String),
    /// Grow the store to this many bytes and serve the new size.
    Size(u64),
}

/// A running job, as the main loop sees it.
pub(super) struct Job {
    answered: Arc<AtomicBool>,
    /// When the main loop answers ETIMEDOUT if the job has not answered.
    pub deadline: Instant,
}

impl Job {
    /// Claim the answer for the main loop (at the deadline, or at shutdown): true if the job
    /// had not answered yet; it then puts nothing in force.
    pub fn claim(&self) -> bool {
        !self.answered.swap(true, Ordering::AcqRel)
    }
}

/// What a job reports to the main loop.
pub(super) enum Report {
    /// The job answered first: the status for RECONFIG_DEVICE_DONE.
    Answered(i32),
    /// The replaced backend is closed (or still busy at the bound); the job is over.
    Closed,
    /// The job ended without anything to close.
    Ended,
}

/// Everything a job's thread takes with it.
pub(super) struct Start {
    pub device: String,
    pub link: Arc<DeviceLink>,
    pub work: Work,
    pub open: BackendOpener,
    pub timeout: Duration,
    pub close_bound: Duration,
}

/// Start the job; `report` is called on its thread (first `Answered` if it won, then
/// `Closed` or `Ended`).
pub(super) fn start(
    s: Start,
    report: impl Fn(Report) + Send + 'static,
) -> Result<Job, ReconfigError> {
    let answered = Arc::new(AtomicBool::new(false));
    let job = Job {
        answered: Arc::clone(&answered),
        deadline: Instant::now() + s.timeout,
    };
    std::thread::Builder::new()
        .name("tcmu-reconfig".into())
        .spawn(move || run(s, &answered, &report))
        .map_err(ReconfigError::Spawn)?;
    Ok(job)
}

fn run(s: Start, answered: &AtomicBool, report: &dyn Fn(Report)) {
    let claim = || !answered.swap(true, Ordering::AcqRel);
    match s.work {
        Work::Cfgstring(cfg) => {
            let (subtype, rest) = cfg.split_once('/').unwrap_or((cfg.as_str(), ""));
            let size = {
                let lun = s.link.lun.read();
                lun.num_blocks * u64::from(lun.block_size)
            };
            let t = Instant::now();
            let opened = (s.open)(subtype, rest, &s.device, size);
            if !claim() {
                match opened {
                    Ok(b) => {
                        tracing::warn!(device = %s.device, backend = %b.describe(), took = ?t.elapsed(),
                        "the new cfgstring opened after the reconfiguration was answered ETIMEDOUT: closing it, the old backend stays")
                    }
                    Err(e) => {
                        tracing::warn!(device = %s.device, took = ?t.elapsed(), "the new cfgstring failed after the reconfiguration was answered ETIMEDOUT: {e}")
                    }
                }
                return report(Report::Ended);
            }
            match opened {
                Ok(new) => {
                    tracing::info!(device = %s.device, backend = %new.describe(), took = ?t.elapsed(), "reconfigured: new cfgstring opened; serving it");
                    let old = s.link.replace_backend(new);
                    report(Report::Answered(0));
                    close_replaced(&s.device, old, s.close_bound, || report(Report::Closed));
                }
                Err(e) => {
                    let e = ReconfigError::from(e);
                    tracing::error!(device = %s.device, "reconfiguration refused: {e}");
                    report(Report::Answered(e.errno()));
                    report(Report::Ended);
                }
            }
        }
        Work::Size(bytes) => {
            let r = s.link.backend().resize(bytes);
            if !claim() {
                tracing::warn!(device = %s.device, bytes, result = ?r, "the backend answered the resize after the reconfiguration was answered ETIMEDOUT: the LUN keeps its old size");
                return report(Report::Ended);
            }
            let status = match r {
                Ok(()) => {
                    commit_size(&s.link, bytes);
                    tracing::info!(device = %s.device, bytes, "reconfigured: resized");
                    0
                }
                Err(errno) => {
                    let e = ReconfigError::Resize { bytes, errno };
                    tracing::error!(device = %s.device, "reconfiguration refused: {e}");
                    e.errno()
                }
            };
            report(Report::Answered(status));
            report(Report::Ended);
        }
    }
}
