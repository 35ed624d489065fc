//! [`Volume`]: one `glfs_t`, connected with a bounded `glfs_init` and finished off-thread.

use crate::{check, last_errno, Errno, Fd};
use gfapi_sys as sys;
use std::ffi::CString;
use std::fmt;
use std::ptr::NonNull;
use std::sync::Arc;
use std::time::Duration;

/// One volfile server: where glusterd answers for the volume.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// `tcp` or `rdma`.
    pub transport: String,
    /// Host name or address.
    pub host: String,
    /// glusterd's port (24007 by default).
    pub port: u16,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)?;
        } else {
            write!(f, "{}:{}", self.host, self.port)?;
        }
        if self.transport != "tcp" {
            write!(f, " ({})", self.transport)?;
        }
        Ok(())
    }
}

/// Everything `glfs_init` needs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VolumeConfig {
    /// The volume's name.
    pub volume: String,
    /// Volfile servers, tried in order.
    pub servers: Vec<Server>,
    /// Translator options set before init: `(xlator pattern, key, value)`, e.g.
    /// `("vol-client-*", "ping-timeout", "5")`.
    pub xlator_options: Vec<(String, String, String)>,
    /// gfapi's log file (`None`: gfapi's default) and level (`glfs_set_logging`).
    pub log: Option<(String, i32)>,
}

/// Why a volume could not be connected.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A name contains a NUL byte, or the list of servers is empty.
    #[error("{0}")]
    Invalid(String),
    /// A set-up call before `glfs_init` failed.
    #[error("{step}: {errno}")]
    Setup {
        /// The call that failed.
        step: &'static str,
        /// Its error.
        errno: Errno,
    },
    /// `glfs_init` failed.
    #[error("glfs_init: {0}")]
    Init(Errno),
    /// `glfs_init` did not return within the bound (glusterd frozen or unreachable).
    #[error("glfs_init did not return within {0:?}")]
    Timeout(Duration),
}

/// One connected `glfs_t`. See the crate docs.
pub struct Volume {
    fs: NonNull<sys::glfs_t>,
    config: VolumeConfig,
}

// SAFETY: a glfs_t may be used from any thread, and by several at once: gfapi serialises
// what it must internally (every gfapi consumer, e.g. qemu and tcmu-runner, shares one
// glfs_t between I/O threads).
unsafe impl Send for Volume {}
// SAFETY: as above; every method takes `&self` and only passes the pointer to gfapi.
unsafe impl Sync for Volume {}

/// A raw glfs_t handed from the init thread to the caller.
struct RawFs(*mut sys::glfs_t);
// SAFETY: see `Volume`: the handle may move between threads.
unsafe impl Send for RawFs {}

fn cstr(what: &str, s: &str) -> Result<CString, ConnectError> {
    CString::new(s).map_err(|_| ConnectError::Invalid(format!("{what} {s:?} contains a NUL byte")))
}

impl Volume {
    /// Create, configure and initialise a `glfs_t` for `config`, waiting at most `timeout`
    /// for `glfs_init`. On a timeout the init thread is left to finish (and then finishes
    /// the handle) by itself.
    ///
    /// # Errors
    /// See [`ConnectError`].
    pub fn connect(config: &VolumeConfig, timeout: Duration) -> Result<Arc<Volume>, ConnectError> {
        if config.servers.is_empty() {
            return Err(ConnectError::Invalid("no volfile server given".into()));
        }
        let vol = cstr("volume name", &config.volume)?;
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Ok((
                    cstr("transport", &s.transport)?,
                    cstr("host", &s.host)?,
                    s.port,
                ))
            })
            .collect::<Result<Vec<_>, ConnectError>>()?;
        let opts = config
            .xlator_options
            .iter()
            .map(|(x, k, v)| Ok((cstr("xlator", x)?, cstr("key", k)?, cstr("value", v)?)))
            .collect::<Result<Vec<_>, ConnectError>>()?;
        let log = match &config.log {
            Some((f, l)) => Some((cstr("log file", f)?, *l)),
            None => None,
        };
        let (tx, rx) = crossbeam_channel::bounded::<Result<RawFs, ConnectError>>(1);
        let init = move || {
            // SAFETY: `vol` is a valid C string.
            let fs = unsafe { sys::glfs_new(vol.as_ptr()) };
            if fs.is_null() {
                let _ = tx.send(Err(ConnectError::Setup {
                    step: "glfs_new",
                    errno: last_errno(),
                }));
                return;
            }
            let setup = || -> Result<(), ConnectError> {
                for (t, h, p) in &servers {
                    // SAFETY: fs is a fresh glfs_t; the strings are valid C strings.
                    check(unsafe {
                        sys::glfs_set_volfile_server(fs, t.as_ptr(), h.as_ptr(), i32::from(*p))
                    })
                    .map_err(|errno| ConnectError::Setup {
                        step: "glfs_set_volfile_server",
                        errno,
                    })?;
                }
                for (x, k, v) in &opts {
                    // SAFETY: as above.
                    check(unsafe {
                        sys::glfs_set_xlator_option(fs, x.as_ptr(), k.as_ptr(), v.as_ptr())
                    })
                    .map_err(|errno| ConnectError::Setup {
                        step: "glfs_set_xlator_option",
                        errno,
                    })?;
                }
                if let Some((f, l)) = &log {
                    // SAFETY: as above.
                    check(unsafe { sys::glfs_set_logging(fs, f.as_ptr(), *l) }).map_err(
                        |errno| ConnectError::Setup {
                            step: "glfs_set_logging",
                            errno,
                        },
                    )?;
                }
                // SAFETY: fs is configured and not yet initialised.
                check(unsafe { sys::glfs_init(fs) }).map_err(ConnectError::Init)
            };
            match setup() {
                Ok(()) => {
                    if let Err(crossbeam_channel::SendError(Ok(RawFs(fs)))) = tx.send(Ok(RawFs(fs)))
                    {
                        // The caller gave up waiting: nobody else owns this handle.
                        // SAFETY: fs was initialised and is not used by anyone else.
                        unsafe { sys::glfs_fini(fs) };
                    }
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    // SAFETY: the handle is ours alone; glfs_fini frees a handle whose init
                    // failed too.
                    unsafe { sys::glfs_fini(fs) };
                }
            }
        };
        std::thread::Builder::new()
            .name("glfs-init".into())
            .spawn(init)
            .map_err(|e| ConnectError::Setup {
                step: "spawning the glfs-init thread",
                errno: e.raw_os_error().map_or(Errno::EAGAIN, Errno::from_raw),
            })?;
        match rx.recv_timeout(timeout) {
            Ok(Ok(RawFs(fs))) => Ok(Arc::new(Volume {
                fs: NonNull::new(fs).ok_or(ConnectError::Init(Errno::EIO))?,
                config: config.clone(),
            })),
            Ok(Err(e)) => Err(e),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                Err(ConnectError::Timeout(timeout))
            }
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                Err(ConnectError::Init(Errno::EIO))
            }
        }
    }

    /// The configuration this volume was connected with.
    #[must_use]
    pub fn config(&self) -> &VolumeConfig {
        &self.config
    }

    pub(crate) fn raw(&self) -> *mut sys::glfs_t {
        self.fs.as_ptr()
    }

    /// The client volfile glusterd sent (the translator graph with its options).
    ///
    /// # Errors
    /// gfapi's error; `ENOENT` when there is none.
    pub fn volfile(&self) -> Result<String, Errno> {
        let mut buf = vec![0u8; 64 * 1024];
        for _ in 0..3 {
            // SAFETY: buf is writable for buf.len() bytes.
            let n =
                unsafe { sys::glfs_get_volfile(self.raw(), buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) => return Err(Errno::ENOENT),
                Ok(n) => {
                    buf.truncate(n.min(buf.len()));
                    return Ok(String::from_utf8_lossy(&buf).into_owned());
                }
                Err(_) if n == -1 => return Err(last_errno()),
                Err(_) => buf.resize(n.unsigned_abs(), 0),
            }
        }
        Err(Errno::EIO)
    }

    /// `stat` a path on the volume.
    ///
    /// # Errors
    /// gfapi's error (`ENOENT`, `ENOTCONN`, ...).
    pub fn stat(&self, path: &str) -> Result<libc::stat, Errno> {
        let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: an all-zero stat is a valid value of this plain C struct.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: valid handle, C string and out-pointer.
        check(unsafe { sys::glfs_stat(self.raw(), p.as_ptr(), &mut st) })?;
        Ok(st)
    }

    /// `statvfs` a path on the volume. Never answered from a cache: a cheap probe that the
    /// bricks answer.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn statvfs(&self, path: &str) -> Result<libc::statvfs, Errno> {
        let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: an all-zero statvfs is a valid value of this plain C struct.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid handle, C string and out-pointer.
        check(unsafe { sys::glfs_statvfs(self.raw(), p.as_ptr(), &mut st) })?;
        Ok(st)
    }

    /// Remove a file.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn unlink(&self, path: &str) -> Result<(), Errno> {
        let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: valid handle and C string.
        check(unsafe { sys::glfs_unlink(self.raw(), p.as_ptr()) })
    }

    /// Open an existing file with `flags` (`O_RDWR | O_DIRECT`, ...).
    ///
    /// # Errors
    /// gfapi's error.
    pub fn open(self: &Arc<Self>, path: &str, flags: libc::c_int) -> Result<Fd, Errno> {
        let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: valid handle and C string.
        let fd = unsafe { sys::glfs_open(self.raw(), p.as_ptr(), flags) };
        Fd::from_raw(fd, Arc::clone(self))
    }

    /// Create (or open) a file with `flags | O_CREAT` and `mode`.
    ///
    /// # Errors
    /// gfapi's error.
    pub fn create(
        self: &Arc<Self>,
        path: &str,
        flags: libc::c_int,
        mode: libc::mode_t,
    ) -> Result<Fd, Errno> {
        let p = CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: valid handle and C string.
        let fd = unsafe { sys::glfs_creat(self.raw(), p.as_ptr(), flags | libc::O_CREAT, mode) };
        Fd::from_raw(fd, Arc::clone(self))
    }
}

impl fmt::Debug for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Volume")
            .field("volume", &self.config.volume)
            .field("servers", &self.config.servers)
            .finish_non_exhaustive()
    }
}

struct FiniOnDrop(RawFs);

impl Drop for FiniOnDrop {
    fn drop(&mut self) {
        // SAFETY: the last owner of an initialised glfs_t; no file of it is open any more
        // (every Fd holds an Arc<Volume>) and no operation is in flight (each holds its Fd).
        unsafe { sys::glfs_fini((self.0).0) };
    }
}

impl Drop for Volume {
    /// `glfs_fini` takes ~10 s with GlusterFS 10: run it on a thread of its own.
    fn drop(&mut self) {
        let fini = FiniOnDrop(RawFs(self.fs.as_ptr()));
        if let Err(e) = std::thread::Builder::new()
            .name("glfs-fini".into())
            .spawn(move || drop(fini))
        {
            // Could not spawn: the closure (and the handle inside) was dropped with the
            // error, which ran glfs_fini here instead.
            drop(e);
        }
    }
}
