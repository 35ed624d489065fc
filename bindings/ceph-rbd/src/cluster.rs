//! [`Cluster`] (a connected RADOS client) and [`IoCtx`] (a pool, optionally a namespace).

use crate::{check, cstr, Errno, Error, Result};
use rbd_sys as sys;
use std::ffi::{c_char, CStr};
use std::path::PathBuf;
use std::sync::Arc;

/// How to connect: which user, which configuration file, which options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct ConnectOptions {
    /// The cephx user without `client.` (`admin`); `None` is librados' default.
    pub id: Option<String>,
    /// The configuration file; `None` reads the default search path (`/etc/ceph/ceph.conf`).
    pub conf: Option<PathBuf>,
    /// Options set after the file is read (`rados_osd_op_timeout` = `5`, ...).
    pub set: Vec<(String, String)>,
}

/// A connected RADOS client. Shut down in `Drop`, after every [`IoCtx`] made from it is gone
/// (they hold it).
pub struct Cluster {
    h: sys::rados_t,
}

// SAFETY: a rados_t is safe to use from several threads at once (librados serialises
// internally); this wrapper only hands out shared access after connect, and frees it once.
unsafe impl Send for Cluster {}
// SAFETY: see Send.
unsafe impl Sync for Cluster {}

/// A handle that is created but not connected yet; shut down if connecting fails.
struct Unconnected(sys::rados_t);

impl Drop for Unconnected {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the handle came from rados_create and is freed only here.
            unsafe { sys::rados_shutdown(self.0) };
        }
    }
}

impl Cluster {
    /// Create a client, read its configuration and connect. Blocks until the monitors answer
    /// or `client_mount_timeout` (settable in `opts.set`) passes.
    ///
    /// # Errors
    /// The step that failed: `rados_create`, `rados_conf_read_file` (`ENOENT` for a missing
    /// file), `rados_conf_set` (`ENOENT` for an unknown option), `rados_connect`.
    pub fn connect(opts: &ConnectOptions) -> Result<Arc<Cluster>> {
        let id = opts
            .id
            .as_deref()
            .map(|i| cstr("rados_create", i))
            .transpose()?;
        let mut h: sys::rados_t = std::ptr::null_mut();
        // SAFETY: `h` is a valid out-pointer; `id` is NULL or a NUL-terminated string that
        // outlives the call.
        check("rados_create", unsafe {
            sys::rados_create(&mut h, id.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        })?;
        let un = Unconnected(h);
        let conf = match &opts.conf {
            Some(p) => Some(cstr(
                "rados_conf_read_file",
                p.to_str()
                    .ok_or(Error::new("rados_conf_read_file", Errno::EINVAL))?,
            )?),
            None => None,
        };
        // SAFETY: `un.0` is a live unconnected handle; the path is NULL (default search path)
        // or a NUL-terminated string.
        check("rados_conf_read_file", unsafe {
            sys::rados_conf_read_file(un.0, conf.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        })?;
        for (k, v) in &opts.set {
            let (k, v) = (cstr("rados_conf_set", k)?, cstr("rados_conf_set", v)?);
            // SAFETY: live unconnected handle, NUL-terminated strings.
            check("rados_conf_set", unsafe {
                sys::rados_conf_set(un.0, k.as_ptr(), v.as_ptr())
            })?;
        }
        // SAFETY: live unconnected handle.
        check("rados_connect", unsafe { sys::rados_connect(un.0) })?;
        let h = un.0;
        std::mem::forget(un);
        Ok(Arc::new(Cluster { h }))
    }

    /// The raw handle, for calls this wrapper does not cover. Valid while `self` is.
    #[must_use]
    pub fn as_raw(&self) -> sys::rados_t {
        self.h
    }

    /// A configuration value as the client sees it (`rados_osd_op_timeout`).
    ///
    /// # Errors
    /// `ENOENT` for an unknown option.
    pub fn conf_get(&self, option: &str) -> Result<String> {
        let o = cstr("rados_conf_get", option)?;
        let mut buf = [0 as c_char; 256];
        // SAFETY: live handle; `buf` is writable for its length.
        check("rados_conf_get", unsafe {
            sys::rados_conf_get(self.h, o.as_ptr(), buf.as_mut_ptr(), buf.len())
        })?;
        // SAFETY: rados_conf_get NUL-terminates within the buffer on success.
        Ok(unsafe { CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned())
    }

    /// This client's id: the `N` of `client.N`, as watchers and lock owners name it.
    #[must_use]
    pub fn instance_id(&self) -> u64 {
        // SAFETY: live connected handle.
        unsafe { sys::rados_get_instance_id(self.h) }
    }

    /// This client's address as the OSD blocklist names it (`127.0.0.1:0/3282371594`).
    ///
    /// # Errors
    /// The librados error.
    pub fn addr(&self) -> Result<String> {
        let mut p: *mut c_char = std::ptr::null_mut();
        // SAFETY: live handle; `p` is a valid out-pointer.
        check("rados_getaddrs", unsafe {
            sys::rados_getaddrs(self.h, &mut p)
        })?;
        if p.is_null() {
            return Err(Error::new("rados_getaddrs", Errno::EIO));
        }
        // SAFETY: librados returned a NUL-terminated string we now own.
        let s = unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        // SAFETY: freed once, with the function librados documents for it.
        unsafe { sys::rados_buffer_free(p) };
        Ok(plain_addr(&s))
    }

    /// Wait until the client has the cluster's latest OSD map.
    ///
    /// # Errors
    /// The librados error.
    pub fn wait_for_latest_osdmap(&self) -> Result<()> {
        // SAFETY: live connected handle.
        check("rados_wait_for_latest_osdmap", unsafe {
            sys::rados_wait_for_latest_osdmap(self.h)
        })
        .map(drop)
    }

    /// The id of pool `name`.
    ///
    /// # Errors
    /// `ENOENT` when there is no such pool.
    pub fn pool_lookup(&self, name: &str) -> Result<i64> {
        let n = cstr("rados_pool_lookup", name)?;
        // SAFETY: live handle, NUL-terminated name.
        let r = unsafe { sys::rados_pool_lookup(self.h, n.as_ptr()) };
        if r < 0 {
            Err(Error::from_ret("rados_pool_lookup", r))
        } else {
            Ok(r)
        }
    }

    /// Blocklist a client address for `secs` seconds (0: the cluster's default).
    ///
    /// # Errors
    /// The librados error (`EACCES` without the caps for it).
    pub fn blocklist_add(&self, addr: &str, secs: u32) -> Result<()> {
        let a = cstr("rados_blocklist_add", addr)?;
        let mut bytes = a.into_bytes_with_nul();
        // SAFETY: live handle; `bytes` is a NUL-terminated writable buffer (the C prototype
        // takes `char *` but does not write).
        check("rados_blocklist_add", unsafe {
            sys::rados_blocklist_add(self.h, bytes.as_mut_ptr().cast(), secs)
        })
        .map(drop)
    }

    /// Register this client in the manager's service map: daemon `daemon` of service
    /// `service`, with static `metadata` (librados adds the host, kernel and Ceph version).
    /// librados allows one registration per client; the entry lives as long as the client
    /// (its reports to the manager are the entry's beacons).
    ///
    /// # Errors
    /// `EINVAL` for a NUL inside a name, key or value; `EEXIST` when this client is
    /// registered already.
    pub fn service_register(
        &self,
        service: &str,
        daemon: &str,
        metadata: &[(&str, &str)],
    ) -> Result<()> {
        let s = cstr("rados_service_register", service)?;
        let d = cstr("rados_service_register", daemon)?;
        let m = dict("rados_service_register", metadata)?;
        // SAFETY: live handle; NUL-terminated strings; `m` is the dict encoding (pairs of
        // NUL-terminated strings, then an empty key), alive for the call.
        check("rados_service_register", unsafe {
            sys::rados_service_register(self.h, s.as_ptr(), d.as_ptr(), m.as_ptr().cast())
        })
        .map(drop)
    }

    /// Replace the registered daemon's status in the service map (sent with the client's
    /// next report to the manager; a local call).
    ///
    /// # Errors
    /// `EINVAL` for a NUL inside a key or value; the librados error.
    pub fn service_update_status(&self, status: &[(&str, &str)]) -> Result<()> {
        let m = dict("rados_service_update_status", status)?;
        // SAFETY: live handle; `m` is the dict encoding, alive for the call.
        check("rados_service_update_status", unsafe {
            sys::rados_service_update_status(self.h, m.as_ptr().cast())
        })
        .map(drop)
    }

    /// Send one JSON command to the monitors; returns (output, status string).
    ///
    /// # Errors
    /// The monitors' error (`EACCES` without the caps, `EINVAL` for a bad command), with the
    /// status string lost; use [`Cluster::mon_command_verbose`] to keep it.
    pub fn mon_command(&self, json: &str) -> Result<(String, String)> {
        self.mon_command_verbose(json).map_err(|(e, _)| e)
    }

    /// Like [`Cluster::mon_command`], keeping the monitors' status string on failure.
    ///
    /// # Errors
    /// The error and the status string.
    pub fn mon_command_verbose(
        &self,
        json: &str,
    ) -> std::result::Result<(String, String), (Error, String)> {
        let c = cstr("rados_mon_command", json).map_err(|e| (e, String::new()))?;
        let mut cmd = [c.as_ptr()];
        let (mut out, mut outlen): (*mut c_char, usize) = (std::ptr::null_mut(), 0);
        let (mut st, mut stlen): (*mut c_char, usize) = (std::ptr::null_mut(), 0);
        // SAFETY: live handle; one NUL-terminated command; no input buffer; every out-pointer
        // is valid. The returned buffers are freed below with rados_buffer_free.
        let r = unsafe {
            sys::rados_mon_command(
                self.h,
                cmd.as_mut_ptr(),
                1,
                std::ptr::null(),
                0,
                &mut out,
                &mut outlen,
                &mut st,
                &mut stlen,
            )
        };
        let take = |p: *mut c_char, len: usize| {
            if p.is_null() {
                return String::new();
            }
            // SAFETY: librados returned `len` readable bytes at `p`.
            let s = String::from_utf8_lossy(unsafe { std::slice::from_raw_parts(p.cast(), len) })
                .into_owned();
            // SAFETY: freed once, with the function librados documents for it.
            unsafe { sys::rados_buffer_free(p) };
            s
        };
        let (out, st) = (take(out, outlen), take(st, stlen));
        if r < 0 {
            Err((Error::from_ret("rados_mon_command", i64::from(r)), st))
        } else {
            Ok((out, st))
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: the handle is live and freed only here; every IoCtx holds an Arc to this
        // Cluster, so none is left.
        unsafe { sys::rados_shutdown(self.h) };
    }
}

/// librados' dict encoding: each key and value NUL-terminated, then an empty key.
fn dict(what: &'static str, pairs: &[(&str, &str)]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for (k, v) in pairs {
        if k.is_empty() || k.contains('\0') || v.contains('\0') {
            return Err(Error::new(what, Errno::EINVAL));
        }
        for part in [k, v] {
            out.extend_from_slice(part.as_bytes());
            out.push(0);
        }
    }
    out.push(0);
    Ok(out)
}

/// `[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]` or `v1:...` -> `127.0.0.1:0/123`, the form the
/// blocklist and watcher lists use.
fn plain_addr(s: &str) -> String {
    let s = s.trim().trim_start_matches('[').trim_end_matches(']');
    let first = s.split(',').next().unwrap_or(s);
    first
        .strip_prefix("v2:")
        .or_else(|| first.strip_prefix("v1:"))
        .or_else(|| first.strip_prefix("any:"))
        .unwrap_or(first)
        .to_string()
}

/// An I/O context on one pool (and namespace). Destroyed in `Drop`; holds its [`Cluster`].
pub struct IoCtx {
    h: sys::rados_ioctx_t,
    cluster: Arc<Cluster>,
}

// SAFETY: librados I/O contexts may be used from several threads; the only mutation
// (set_namespace) happens in the constructor before the value is shared.
unsafe impl Send for IoCtx {}
// SAFETY: see Send.
unsafe impl Sync for IoCtx {}

impl IoCtx {
    /// An I/O context on `pool`, in `namespace` (`None`: the default namespace).
    ///
    /// # Errors
    /// `ENOENT` when the pool does not exist.
    pub fn new(cluster: &Arc<Cluster>, pool: &str, namespace: Option<&str>) -> Result<Arc<IoCtx>> {
        let p = cstr("rados_ioctx_create", pool)?;
        let ns = namespace
            .map(|n| cstr("rados_ioctx_set_namespace", n))
            .transpose()?;
        let mut h: sys::rados_ioctx_t = std::ptr::null_mut();
        // SAFETY: live connected cluster, NUL-terminated name, valid out-pointer.
        check("rados_ioctx_create", unsafe {
            sys::rados_ioctx_create(cluster.h, p.as_ptr(), &mut h)
        })?;
        let io = IoCtx {
            h,
            cluster: Arc::clone(cluster),
        };
        if let Some(ns) = &ns {
            // SAFETY: live ioctx not shared yet; NUL-terminated namespace.
            unsafe { sys::rados_ioctx_set_namespace(io.h, ns.as_ptr()) };
        }
        Ok(Arc::new(io))
    }

    /// The cluster this context belongs to.
    #[must_use]
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub(crate) fn as_raw(&self) -> sys::rados_ioctx_t {
        self.h
    }

    /// Size of object `oid` (a round trip to the OSD that holds it: bounded by
    /// `rados_osd_op_timeout`).
    ///
    /// # Errors
    /// `ENOENT` when it does not exist; `ETIMEDOUT`, `ESHUTDOWN`, ...
    pub fn stat(&self, oid: &str) -> Result<u64> {
        let o = cstr("rados_stat", oid)?;
        let mut size = 0u64;
        let mut mtime: libc::time_t = 0;
        // SAFETY: live ioctx, NUL-terminated name, valid out-pointers.
        check("rados_stat", unsafe {
            sys::rados_stat(self.h, o.as_ptr(), &mut size, &mut mtime)
        })?;
        Ok(size)
    }

    /// Set extended attribute `name` of object `oid` to `value` (one write op).
    ///
    /// # Errors
    /// `ETIMEDOUT`, `ESHUTDOWN`, `EPERM`, ...
    pub fn set_xattr(&self, oid: &str, name: &str, value: &[u8]) -> Result<()> {
        let o = cstr("rados_setxattr", oid)?;
        let n = cstr("rados_setxattr", name)?;
        // SAFETY: live ioctx, NUL-terminated names, `value` readable for its length.
        check("rados_setxattr", unsafe {
            sys::rados_setxattr(
                self.h,
                o.as_ptr(),
                n.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
            )
        })
        .map(drop)
    }

    /// Extended attribute `name` of object `oid` (at most `max` bytes); `None` when the
    /// attribute (or the object) does not exist.
    ///
    /// # Errors
    /// `ETIMEDOUT`, `ESHUTDOWN`, ...
    pub fn get_xattr(&self, oid: &str, name: &str, max: usize) -> Result<Option<Vec<u8>>> {
        let o = cstr("rados_getxattr", oid)?;
        let n = cstr("rados_getxattr", name)?;
        let mut buf = vec![0u8; max];
        // SAFETY: live ioctx, NUL-terminated names, `buf` writable for its length.
        let r = unsafe {
            sys::rados_getxattr(
                self.h,
                o.as_ptr(),
                n.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if r == -libc::ENODATA || r == -libc::ENOENT {
            return Ok(None);
        }
        let len = check("rados_getxattr", r)?;
        buf.truncate(usize::try_from(len).unwrap_or(0).min(max));
        Ok(Some(buf))
    }

    /// Create an image of `size` bytes (default features: layering, exclusive-lock,
    /// object-map, fast-diff, deep-flatten on Pacific).
    ///
    /// # Errors
    /// `EEXIST` when it exists.
    pub fn create_image(&self, name: &str, size: u64) -> Result<()> {
        let n = cstr("rbd_create", name)?;
        let mut order: libc::c_int = 0;
        // SAFETY: live ioctx, NUL-terminated name, valid order pointer (0: default).
        check("rbd_create", unsafe {
            sys::rbd_create(self.h, n.as_ptr(), size, &mut order)
        })
        .map(drop)
    }

    /// Remove an image.
    ///
    /// # Errors
    /// `ENOENT` when it does not exist, `EBUSY` while it has watchers.
    pub fn remove_image(&self, name: &str) -> Result<()> {
        let n = cstr("rbd_remove", name)?;
        // SAFETY: live ioctx, NUL-terminated name.
        check("rbd_remove", unsafe { sys::rbd_remove(self.h, n.as_ptr()) }).map(drop)
    }
}

impl Drop for IoCtx {
    fn drop(&mut self) {
        // SAFETY: live ioctx, freed only here; every Image holds an Arc to this IoCtx, so
        // none is left. The cluster outlives it (held in `self.cluster`, dropped after).
        unsafe { sys::rados_ioctx_destroy(self.h) };
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dicts_are_nul_separated_and_end_with_an_empty_key() {
        assert_eq!(
            super::dict("t", &[("a", "1"), ("bc", "")]).unwrap(),
            b"a\x001\x00bc\x00\x00\x00"
        );
        assert_eq!(super::dict("t", &[]).unwrap(), b"\x00");
        assert!(
            super::dict("t", &[("", "x")]).is_err(),
            "an empty key ends the dict"
        );
        assert!(super::dict("t", &[("a", "x\0y")]).is_err());
    }

    #[test]
    fn addresses_in_the_blocklist_form() {
        assert_eq!(
            super::plain_addr("[v2:127.0.0.1:0/123,v1:127.0.0.1:0/123]"),
            "127.0.0.1:0/123"
        );
        assert_eq!(super::plain_addr("127.0.0.1:0/5"), "127.0.0.1:0/5");
        assert_eq!(super::plain_addr("v1:10.0.0.1:0/7"), "10.0.0.1:0/7");
    }
}
