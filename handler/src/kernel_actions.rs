//! Writes to `target_core_user`'s control knobs: the module parameters `block_netlink` and
//! `reset_netlink` (docs/kernel-abi.md §3.7) and a device's `action/` files `block_dev`,
//! `reset_ring` and `free_kept_buf` (§3.5, §7.3-7.5).
//!
//! Every write is one `write(2)` of the bare value with no trailing newline (`echo -n`
//! semantics), on an existing file (never created), so a missing knob surfaces as
//! `NotFound` rather than a stray file. All paths are configurable so the functions can be
//! tested against a temporary directory; [`KernelActions::recording`] additionally keeps a
//! log of every write, in order.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Default directory of the module parameters.
pub const MODULE_PARAMS_DIR: &str = "/sys/module/target_core_user/parameters";

/// A control-file write failed.
#[derive(Debug, thiserror::Error)]
#[error("writing {value:?} to {}: {source}", path.display())]
pub struct ActionError {
    /// The file.
    pub path: PathBuf,
    /// The value written.
    pub value: String,
    /// The OS error (`NotFound`: module not loaded or knob absent on this kernel;
    /// `EINVAL` from `action/*`: the device is not enabled).
    #[source]
    pub source: io::Error,
}

impl ActionError {
    /// The file does not exist (module not loaded, or a kernel without this knob).
    #[must_use]
    pub fn is_not_found(&self) -> bool {
        self.source.kind() == io::ErrorKind::NotFound
    }
}

/// How `reset_ring` completes the commands still in the ring (docs/kernel-abi.md §7.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetMode {
    /// `1`: complete them with SAM_STAT_BUSY (initiators retry).
    Busy,
    /// `2`: complete them with CHECK CONDITION, LUN COMMUNICATION FAILURE.
    Failure,
}

impl ResetMode {
    fn value(self) -> &'static str {
        match self {
            Self::Busy => "1",
            Self::Failure => "2",
        }
    }
}

/// One step of the reply-mode start-up plan; see [`global_reply_mode_plan`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlanStep {
    /// Write `block_netlink`.
    BlockNetlink(bool),
    /// Write `1` to `reset_netlink`.
    ResetNetlink,
    /// `netlink::Listener::open()`.
    OpenListener,
    /// `Listener::set_features(bool)`.
    SetFeatures(bool),
}

/// The daemon's start-up plan for netlink reply mode (docs/kernel-abi.md pitfall 22, §5.7;
/// tcmu-runner main.c 1329-1346):
///
/// 1. `block_netlink=1`: new events fail fast (EAGAIN) instead of queueing behind a dead
///    predecessor ([`KernelActions::begin_reply_mode_startup`]);
/// 2. `reset_netlink=1`: completes every configfs writer stuck waiting for a reply from a
///    dead predecessor with EINTR (same call);
/// 3. open the netlink listener (join `TCM-USER/config`);
/// 4. `SET_FEATURES` with SUPP_KERN_CMD_REPLY=1: devices enabled from now on wait for our
///    replies (the flag is module-global and sticky);
/// 5. `block_netlink=0` ([`KernelActions::end_reply_mode_startup`]).
///
/// Then scan configfs for devices that already exist. If step 3 or 4 fails, still run
/// step 5 (after trying `SET_FEATURES=0` if step 4 had succeeded) so the kernel is not
/// left blocked; with the listener down, reply mode must not stay on. A `NotFound` on
/// step 1 or 2 means the module is not loaded (or predates the knob): continue.
#[must_use]
pub fn global_reply_mode_plan() -> [PlanStep; 5] {
    [
        PlanStep::BlockNetlink(true),
        PlanStep::ResetNetlink,
        PlanStep::OpenListener,
        PlanStep::SetFeatures(true),
        PlanStep::BlockNetlink(false),
    ]
}

/// Proof that [`KernelActions::prepare_clean_restart`] blocked and reset a device; hand it
/// to [`KernelActions::finish_clean_restart`] once the uio device is open and mapped.
///
/// It is also a guard: dropped without `finish_clean_restart` (opening the device failed
/// half-way, an early return), it unblocks the device itself, so a failed restart never
/// leaves the LUN answering BUSY for ever.
#[derive(Debug)]
#[must_use = "the device stays blocked (every new command gets BUSY) until finish_clean_restart or drop"]
pub struct CleanRestart {
    device_dir: PathBuf,
    /// Still blocked by us: unblock on drop.
    armed: bool,
}

impl CleanRestart {
    /// The configfs directory of the device.
    #[must_use]
    pub fn device_dir(&self) -> &Path {
        &self.device_dir
    }
}

impl Drop for CleanRestart {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let path = self.device_dir.join("action/block_dev");
        match write_once(&path, b"0") {
            Ok(()) => {
                tracing::info!(dir = %self.device_dir.display(), "device unblocked after an unfinished restart")
            }
            Err(e) => {
                tracing::error!(dir = %self.device_dir.display(), "could not unblock the device after an unfinished restart ({e}); run: echo -n 0 > {}", path.display())
            }
        }
    }
}

/// Writer of `target_core_user` control files.
#[derive(Debug)]
pub struct KernelActions {
    params_dir: PathBuf,
    log: Option<Mutex<Vec<(PathBuf, String)>>>,
}

impl Default for KernelActions {
    fn default() -> Self {
        Self::new()
    }
}

impl KernelActions {
    /// Real paths: parameters under [`MODULE_PARAMS_DIR`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            params_dir: PathBuf::from(MODULE_PARAMS_DIR),
            log: None,
        }
    }

    /// Module parameters under `params_dir` instead.
    #[must_use]
    pub fn with_params_dir(params_dir: impl Into<PathBuf>) -> Self {
        Self {
            params_dir: params_dir.into(),
            log: None,
        }
    }

    /// Like [`KernelActions::with_params_dir`], also recording every write (tests, dry
    /// runs); read the record with [`KernelActions::take_log`].
    #[must_use]
    pub fn recording(params_dir: impl Into<PathBuf>) -> Self {
        Self {
            params_dir: params_dir.into(),
            log: Some(Mutex::new(Vec::new())),
        }
    }

    /// The writes made so far, in order, as `(path, value)`; empties the record.
    pub fn take_log(&self) -> Vec<(PathBuf, String)> {
        self.log
            .as_ref()
            .map(|l| std::mem::take(&mut *l.lock()))
            .unwrap_or_default()
    }

    fn write(&self, path: PathBuf, value: &str) -> Result<(), ActionError> {
        if let Some(log) = &self.log {
            log.lock().push((path.clone(), value.to_owned()));
        }
        tracing::debug!(path = %path.display(), value, "kernel action");
        write_once(&path, value.as_bytes()).map_err(|source| ActionError {
            path,
            value: value.to_owned(),
            source,
        })
    }

    /// Write `block_netlink`: while 1, every new netlink event fails with EAGAIN.
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn block_netlink(&self, on: bool) -> Result<(), ActionError> {
        self.write(
            self.params_dir.join("block_netlink"),
            if on { "1" } else { "0" },
        )
    }

    /// Write `1` to `reset_netlink`: completes every pending netlink request with EINTR.
    /// Do it with `block_netlink` at 1, so no new request slips in behind the reset.
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn reset_netlink(&self) -> Result<(), ActionError> {
        self.write(self.params_dir.join("reset_netlink"), "1")
    }

    /// Write `action/block_dev`: while blocked, new commands fail with BUSY; writing 1 also
    /// fails the qfull queue with BUSY. Ring contents are unaffected.
    ///
    /// # Errors
    /// [`ActionError`] (EINVAL if the device is not enabled).
    pub fn block_dev(&self, device_dir: &Path, on: bool) -> Result<(), ActionError> {
        self.write(
            device_dir.join("action/block_dev"),
            if on { "1" } else { "0" },
        )
    }

    /// Write `action/reset_ring`: drops every command, zeroes `cmd_head`/`cmd_tail`, clears
    /// BROKEN. Never under a running handler (docs/kernel-abi.md pitfall 21).
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn reset_ring(&self, device_dir: &Path, mode: ResetMode) -> Result<(), ActionError> {
        self.write(device_dir.join("action/reset_ring"), mode.value())
    }

    /// Write `cmd_id` to `action/free_kept_buf`, releasing a KEEP_BUF command's blocks.
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn free_kept_buf(&self, device_dir: &Path, cmd_id: u16) -> Result<(), ActionError> {
        self.write(device_dir.join("action/free_kept_buf"), &cmd_id.to_string())
    }

    /// Steps 1-2 of [`global_reply_mode_plan`]: `block_netlink=1`, then `reset_netlink=1`.
    ///
    /// # Errors
    /// The first failing write (`is_not_found()`: module not loaded).
    pub fn begin_reply_mode_startup(&self) -> Result<(), ActionError> {
        self.block_netlink(true)?;
        self.reset_netlink()
    }

    /// Step 5 of [`global_reply_mode_plan`]: `block_netlink=0`.
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn end_reply_mode_startup(&self) -> Result<(), ActionError> {
        self.block_netlink(false)
    }

    /// Steps 1-2 of the clean-slate restart (docs/kernel-abi.md §7.3(b)): `block_dev=1`, then
    /// `reset_ring=1` (BUSY). The caller then opens and maps `/dev/uioN`, starts reading at
    /// `cmd_tail` (now 0) and calls [`KernelActions::finish_clean_restart`].
    ///
    /// If the reset fails the device is unblocked again (best effort) and the error
    /// returned; the caller can then fall back to resuming (§7.3(a)).
    ///
    /// # Errors
    /// [`ActionError`] from either write.
    pub fn prepare_clean_restart(&self, device_dir: &Path) -> Result<CleanRestart, ActionError> {
        self.block_dev(device_dir, true)?;
        if let Err(e) = self.reset_ring(device_dir, ResetMode::Busy) {
            if let Err(u) = self.block_dev(device_dir, false) {
                tracing::warn!(error = %u, "could not unblock after a failed reset_ring");
            }
            return Err(e);
        }
        Ok(CleanRestart {
            device_dir: device_dir.to_path_buf(),
            armed: true,
        })
    }

    /// Step 4 of the clean-slate restart: `block_dev=0`. Call it even if opening the device
    /// failed, unless the device should keep answering BUSY.
    ///
    /// # Errors
    /// [`ActionError`].
    pub fn finish_clean_restart(&self, mut restart: CleanRestart) -> Result<(), ActionError> {
        // One attempt here, reported to the caller; the guard does not write again.
        restart.armed = false;
        self.block_dev(&restart.device_dir, false)
    }

    /// Read `action/block_dev` (`blocked` / `unblocked`).
    ///
    /// # Errors
    /// [`ActionError`] on a read failure or an unexpected value (`InvalidData`).
    pub fn is_dev_blocked(&self, device_dir: &Path) -> Result<bool, ActionError> {
        let path = device_dir.join("action/block_dev");
        let err = |source| ActionError {
            path: path.clone(),
            value: String::new(),
            source,
        };
        let s = std::fs::read_to_string(&path).map_err(err)?;
        match s.trim_end_matches(['\n', '\0']) {
            "blocked" => Ok(true),
            "unblocked" => Ok(false),
            other => Err(err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("unexpected {other:?}"),
            ))),
        }
    }
}

/// One `write(2)` of `value` to the existing file `path`, like `echo -n value > path`.
/// sysfs/configfs store handlers see the whole value at once; a short write is an error.
fn write_once(path: &Path, value: &[u8]) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(path)?;
    let n = f.write(value)?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake {
        _dir: tempfile::TempDir,
        params: PathBuf,
        dev: PathBuf,
    }

    fn fake() -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let params = dir.path().join("sys/module/target_core_user/parameters");
        let dev = dir.path().join("config/target/core/user_1/disk0");
        std::fs::create_dir_all(&params).unwrap();
        std::fs::create_dir_all(dev.join("action")).unwrap();
        for f in ["block_netlink", "reset_netlink"] {
            std::fs::write(params.join(f), "stale\n").unwrap();
        }
        for f in ["block_dev", "reset_ring", "free_kept_buf"] {
            std::fs::write(dev.join("action").join(f), "stale\n").unwrap();
        }
        Fake {
            _dir: dir,
            params,
            dev,
        }
    }

    fn read(p: &Path) -> Vec<u8> {
        std::fs::read(p).unwrap()
    }

    #[test]
    fn module_params_exact_bytes() {
        let f = fake();
        let k = KernelActions::recording(&f.params);
        k.block_netlink(true).unwrap();
        assert_eq!(read(&f.params.join("block_netlink")), b"1");
        k.reset_netlink().unwrap();
        assert_eq!(read(&f.params.join("reset_netlink")), b"1");
        k.block_netlink(false).unwrap();
        assert_eq!(read(&f.params.join("block_netlink")), b"0");
        assert_eq!(k.take_log().len(), 3);
        assert!(k.take_log().is_empty());
    }

    #[test]
    fn device_actions_exact_bytes() {
        let f = fake();
        let k = KernelActions::with_params_dir(&f.params);
        k.block_dev(&f.dev, true).unwrap();
        assert_eq!(read(&f.dev.join("action/block_dev")), b"1");
        k.block_dev(&f.dev, false).unwrap();
        assert_eq!(read(&f.dev.join("action/block_dev")), b"0");
        k.reset_ring(&f.dev, ResetMode::Busy).unwrap();
        assert_eq!(read(&f.dev.join("action/reset_ring")), b"1");
        k.reset_ring(&f.dev, ResetMode::Failure).unwrap();
        assert_eq!(read(&f.dev.join("action/reset_ring")), b"2");
        k.free_kept_buf(&f.dev, 65535).unwrap();
        assert_eq!(read(&f.dev.join("action/free_kept_buf")), b"65535");
        assert!(
            k.take_log().is_empty(),
            "non-recording instance keeps no log"
        );
    }

    #[test]
    fn startup_plan_order() {
        let f = fake();
        let k = KernelActions::recording(&f.params);
        k.begin_reply_mode_startup().unwrap();
        k.end_reply_mode_startup().unwrap();
        assert_eq!(
            k.take_log(),
            vec![
                (f.params.join("block_netlink"), "1".to_owned()),
                (f.params.join("reset_netlink"), "1".to_owned()),
                (f.params.join("block_netlink"), "0".to_owned()),
            ]
        );
        assert_eq!(
            global_reply_mode_plan(),
            [
                PlanStep::BlockNetlink(true),
                PlanStep::ResetNetlink,
                PlanStep::OpenListener,
                PlanStep::SetFeatures(true),
                PlanStep::BlockNetlink(false),
            ]
        );
    }

    #[test]
    fn clean_restart_order() {
        let f = fake();
        let k = KernelActions::recording(&f.params);
        let r = k.prepare_clean_restart(&f.dev).unwrap();
        assert_eq!(r.device_dir(), f.dev);
        assert_eq!(read(&f.dev.join("action/block_dev")), b"1");
        k.finish_clean_restart(r).unwrap();
        let a = f.dev.join("action");
        assert_eq!(
            k.take_log(),
            vec![
                (a.join("block_dev"), "1".to_owned()),
                (a.join("reset_ring"), "1".to_owned()),
                (a.join("block_dev"), "0".to_owned()),
            ]
        );
        assert_eq!(read(&a.join("block_dev")), b"0");
    }

    #[test]
    fn an_unfinished_restart_unblocks_on_drop() {
        let f = fake();
        let k = KernelActions::recording(&f.params);
        let r = k.prepare_clean_restart(&f.dev).unwrap();
        assert_eq!(read(&f.dev.join("action/block_dev")), b"1");
        drop(r);
        assert_eq!(
            read(&f.dev.join("action/block_dev")),
            b"0",
            "a restart dropped half-way unblocks the device"
        );
        // A finished one is not written twice.
        let r = k.prepare_clean_restart(&f.dev).unwrap();
        k.finish_clean_restart(r).unwrap();
        std::fs::write(f.dev.join("action/block_dev"), "stale").unwrap();
        assert_eq!(read(&f.dev.join("action/block_dev")), b"stale");
    }

    #[test]
    fn failed_reset_unblocks() {
        let f = fake();
        std::fs::remove_file(f.dev.join("action/reset_ring")).unwrap();
        let k = KernelActions::recording(&f.params);
        let e = k.prepare_clean_restart(&f.dev).unwrap_err();
        assert!(e.is_not_found());
        assert!(e.path.ends_with("action/reset_ring"));
        let a = f.dev.join("action");
        assert_eq!(
            k.take_log(),
            vec![
                (a.join("block_dev"), "1".to_owned()),
                (a.join("reset_ring"), "1".to_owned()),
                (a.join("block_dev"), "0".to_owned()),
            ]
        );
        assert!(!a.join("reset_ring").exists(), "writes never create files");
    }

    #[test]
    fn module_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let k = KernelActions::recording(dir.path().join("absent"));
        let e = k.begin_reply_mode_startup().unwrap_err();
        assert!(e.is_not_found());
        assert_eq!(k.take_log().len(), 1, "stops at the first failure");
        assert!(e.to_string().contains("block_netlink"));
    }

    #[test]
    fn reads_block_state() {
        let f = fake();
        let k = KernelActions::new();
        let p = f.dev.join("action/block_dev");
        std::fs::write(&p, "blocked\n").unwrap();
        assert!(k.is_dev_blocked(&f.dev).unwrap());
        std::fs::write(&p, "unblocked\n").unwrap();
        assert!(!k.is_dev_blocked(&f.dev).unwrap());
        std::fs::write(&p, "what").unwrap();
        assert!(k.is_dev_blocked(&f.dev).is_err());
    }
}
