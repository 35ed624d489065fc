//! Raw declarations of the librbd and librados C calls tcmu-warden's RBD backend uses
//! (Ceph Pacific, librbd 1.16). Nothing here is safe to call directly: the `ceph-rbd` crate
//! wraps it. `tests/layout.rs` checks the structures and constants against the C headers.
//!
//! Every call returns a negative errno on failure unless its comment says otherwise.
#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, iovec, size_t, ssize_t};

/// A RADOS cluster handle (`rados_t`).
pub type rados_t = *mut c_void;
/// An I/O context on one pool (`rados_ioctx_t`).
pub type rados_ioctx_t = *mut c_void;
/// An open image (`rbd_image_t`).
pub type rbd_image_t = *mut c_void;
/// An asynchronous completion (`rbd_completion_t`).
pub type rbd_completion_t = *mut c_void;
/// Completion callback, run on a librbd thread.
pub type rbd_callback_t = Option<unsafe extern "C" fn(cb: rbd_completion_t, arg: *mut c_void)>;
/// `rbd_lock_mode_t`.
pub type rbd_lock_mode_t = c_int;

/// `RBD_LOCK_MODE_EXCLUSIVE`.
pub const RBD_LOCK_MODE_EXCLUSIVE: rbd_lock_mode_t = 0;
/// `RBD_LOCK_MODE_SHARED`.
pub const RBD_LOCK_MODE_SHARED: rbd_lock_mode_t = 1;
/// `RBD_MAX_IMAGE_NAME_SIZE`.
pub const RBD_MAX_IMAGE_NAME_SIZE: usize = 96;
/// `RBD_MAX_BLOCK_NAME_SIZE`.
pub const RBD_MAX_BLOCK_NAME_SIZE: usize = 24;
/// `RBD_FEATURE_EXCLUSIVE_LOCK`.
pub const RBD_FEATURE_EXCLUSIVE_LOCK: u64 = 1 << 2;
/// `LIBRADOS_OP_FLAG_FADVISE_FUA`: write through to stable storage.
pub const LIBRADOS_OP_FLAG_FADVISE_FUA: c_int = 0x80;

/// `rbd_config_source_t`: where an image's effective option value comes from.
pub type rbd_config_source_t = c_int;

/// `rbd_config_option_t` (from `rbd_config_image_list`): one option's effective value.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_config_option_t {
    /// Option name, NUL-terminated (allocated by librbd).
    pub name: *mut c_char,
    /// Its value as text, NUL-terminated (allocated by librbd).
    pub value: *mut c_char,
    /// `RBD_CONFIG_SOURCE_CONFIG` (the client's configuration), `_POOL` or `_IMAGE` (an
    /// override stored in the pool or the image).
    pub source: rbd_config_source_t,
}

/// `rbd_image_info_t` (from `rbd_stat`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_info_t {
    /// Size in bytes.
    pub size: u64,
    /// Object size in bytes.
    pub obj_size: u64,
    /// Number of objects.
    pub num_objs: u64,
    /// log2 of the object size.
    pub order: c_int,
    /// Deprecated.
    pub block_name_prefix: [c_char; RBD_MAX_BLOCK_NAME_SIZE],
    /// Deprecated.
    pub parent_pool: i64,
    /// Deprecated.
    pub parent_name: [c_char; RBD_MAX_IMAGE_NAME_SIZE],
}

/// `rbd_image_watcher_t` (from `rbd_watchers_list`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct rbd_image_watcher_t {
    /// The watcher's address, `127.0.0.1:0/123456`.
    pub addr: *mut c_char,
    /// Its client id (`client.<id>`).
    pub id: i64,
    /// The watch cookie.
    pub cookie: u64,
}

extern "C" {
    // --- librados ------------------------------------------------------------------------
    pub fn rados_create(cluster: *mut rados_t, id: *const c_char) -> c_int;
    pub fn rados_conf_read_file(cluster: rados_t, path: *const c_char) -> c_int;
    pub fn rados_conf_set(cluster: rados_t, option: *const c_char, value: *const c_char) -> c_int;
    pub fn rados_conf_get(
        cluster: rados_t,
        option: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    pub fn rados_connect(cluster: rados_t) -> c_int;
    /// Also frees a handle that never connected.
    pub fn rados_shutdown(cluster: rados_t);
    /// The client's global id (`client.<id>`); no error.
    pub fn rados_get_instance_id(cluster: rados_t) -> u64;
    /// `*addrs` is freed with `rados_buffer_free`.
    pub fn rados_getaddrs(cluster: rados_t, addrs: *mut *mut c_char) -> c_int;
    pub fn rados_blocklist_add(
        cluster: rados_t,
        client_address: *mut c_char,
        expire_seconds: u32,
    ) -> c_int;
    pub fn rados_wait_for_latest_osdmap(cluster: rados_t) -> c_int;
    /// The pool id, or a negative errno (`-ENOENT`).
    pub fn rados_pool_lookup(cluster: rados_t, pool_name: *const c_char) -> i64;
    pub fn rados_ioctx_create(
        cluster: rados_t,
        pool_name: *const c_char,
        ioctx: *mut rados_ioctx_t,
    ) -> c_int;
    pub fn rados_ioctx_destroy(io: rados_ioctx_t);
    /// Size and mtime of one object (a round trip to its OSD).
    pub fn rados_stat(
        io: rados_ioctx_t,
        oid: *const c_char,
        psize: *mut u64,
        pmtime: *mut libc::time_t,
    ) -> c_int;
    /// Set extended attribute `name` of object `o` (creates the object if needed).
    pub fn rados_setxattr(
        io: rados_ioctx_t,
        o: *const c_char,
        name: *const c_char,
        buf: *const c_char,
        len: size_t,
    ) -> c_int;
    /// Length read, or `-ENODATA` when the attribute does not exist.
    pub fn rados_getxattr(
        io: rados_ioctx_t,
        o: *const c_char,
        name: *const c_char,
        buf: *mut c_char,
        len: size_t,
    ) -> c_int;
    /// `nspace` NULL or "" is the default namespace.
    pub fn rados_ioctx_set_namespace(io: rados_ioctx_t, nspace: *const c_char);
    /// `outbuf`/`outs` are freed with `rados_buffer_free`.
    pub fn rados_mon_command(
        cluster: rados_t,
        cmd: *mut *const c_char,
        cmdlen: size_t,
        inbuf: *const c_char,
        inbuflen: size_t,
        outbuf: *mut *mut c_char,
        outbuflen: *mut size_t,
        outs: *mut *mut c_char,
        outslen: *mut size_t,
    ) -> c_int;
    pub fn rados_buffer_free(buf: *mut c_char);
    /// Register this client in the manager's service map as daemon `daemon` of `service`,
    /// with static metadata; `metadata_dict` is NUL-separated keys and values ending with an
    /// empty key (`"k\0v\0\0"`). Once per client (`-EEXIST` after).
    pub fn rados_service_register(
        cluster: rados_t,
        service: *const c_char,
        daemon: *const c_char,
        metadata_dict: *const c_char,
    ) -> c_int;
    /// Replace the registered daemon's status (encoded like the metadata); sent with the
    /// client's next report to the manager.
    pub fn rados_service_update_status(cluster: rados_t, status_dict: *const c_char) -> c_int;

    // --- librbd: images --------------------------------------------------------------------
    pub fn rbd_create(
        io: rados_ioctx_t,
        name: *const c_char,
        size: u64,
        order: *mut c_int,
    ) -> c_int;
    pub fn rbd_remove(io: rados_ioctx_t, name: *const c_char) -> c_int;
    pub fn rbd_open(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_open_read_only(
        io: rados_ioctx_t,
        name: *const c_char,
        image: *mut rbd_image_t,
        snap_name: *const c_char,
    ) -> c_int;
    pub fn rbd_close(image: rbd_image_t) -> c_int;
    pub fn rbd_stat(image: rbd_image_t, info: *mut rbd_image_info_t, infosize: size_t) -> c_int;
    pub fn rbd_get_size(image: rbd_image_t, size: *mut u64) -> c_int;
    pub fn rbd_get_features(image: rbd_image_t, features: *mut u64) -> c_int;
    /// `-ERANGE` when `id_len` is too small.
    pub fn rbd_get_id(image: rbd_image_t, id: *mut c_char, id_len: size_t) -> c_int;
    /// The image's effective configuration (client, pool and image overrides applied).
    /// `*max_options` is the room in `options` on entry and the count on return; `-ERANGE`
    /// when the room is short (the count needed is then in `*max_options`).
    pub fn rbd_config_image_list(
        image: rbd_image_t,
        options: *mut rbd_config_option_t,
        max_options: *mut c_int,
    ) -> c_int;
    /// Frees what `rbd_config_image_list` filled in.
    pub fn rbd_config_image_list_cleanup(options: *mut rbd_config_option_t, max_options: c_int);
    pub fn rbd_resize(image: rbd_image_t, size: u64) -> c_int;
    pub fn rbd_snap_create(image: rbd_image_t, snapname: *const c_char) -> c_int;
    /// Calls `cb(offset, len, exists, arg)` for each extent of `[ofs, ofs + len)` that
    /// changed since `fromsnapname` (NULL: since creation, i.e. every allocated extent when
    /// `exists` is 1); a negative return from `cb` stops the walk and is returned.
    pub fn rbd_diff_iterate2(
        image: rbd_image_t,
        fromsnapname: *const c_char,
        ofs: u64,
        len: u64,
        include_parent: u8,
        whole_object: u8,
        cb: Option<unsafe extern "C" fn(u64, size_t, c_int, *mut c_void) -> c_int>,
        arg: *mut c_void,
    ) -> c_int;

    // --- librbd: exclusive lock and watchers ----------------------------------------------
    pub fn rbd_is_exclusive_lock_owner(image: rbd_image_t, is_owner: *mut c_int) -> c_int;
    pub fn rbd_lock_acquire(image: rbd_image_t, lock_mode: rbd_lock_mode_t) -> c_int;
    pub fn rbd_lock_release(image: rbd_image_t) -> c_int;
    /// `-ERANGE` with `*max_lock_owners` set when the array is too small; the strings are
    /// freed with `rbd_lock_get_owners_cleanup`.
    pub fn rbd_lock_get_owners(
        image: rbd_image_t,
        lock_mode: *mut rbd_lock_mode_t,
        lock_owners: *mut *mut c_char,
        max_lock_owners: *mut size_t,
    ) -> c_int;
    pub fn rbd_lock_get_owners_cleanup(lock_owners: *mut *mut c_char, lock_owner_count: size_t);
    pub fn rbd_lock_break(
        image: rbd_image_t,
        lock_mode: rbd_lock_mode_t,
        lock_owner: *const c_char,
    ) -> c_int;
    /// `-ERANGE` with `*max_watchers` set when the array is too small; freed with
    /// `rbd_watchers_list_cleanup`.
    pub fn rbd_watchers_list(
        image: rbd_image_t,
        watchers: *mut rbd_image_watcher_t,
        max_watchers: *mut size_t,
    ) -> c_int;
    pub fn rbd_watchers_list_cleanup(watchers: *mut rbd_image_watcher_t, num_watchers: size_t);

    // --- librbd: asynchronous I/O ----------------------------------------------------------
    pub fn rbd_aio_create_completion(
        cb_arg: *mut c_void,
        complete_cb: rbd_callback_t,
        c: *mut rbd_completion_t,
    ) -> c_int;
    /// The operation's result: bytes transferred or a negative errno.
    pub fn rbd_aio_get_return_value(c: rbd_completion_t) -> ssize_t;
    pub fn rbd_aio_release(c: rbd_completion_t);
    pub fn rbd_aio_readv(
        image: rbd_image_t,
        iov: *const iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_writev(
        image: rbd_image_t,
        iov: *const iovec,
        iovcnt: c_int,
        off: u64,
        c: rbd_completion_t,
    ) -> c_int;
    pub fn rbd_aio_flush(image: rbd_image_t, c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_discard(image: rbd_image_t, off: u64, len: u64, c: rbd_completion_t) -> c_int;
    pub fn rbd_aio_write_zeroes(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        c: rbd_completion_t,
        zero_flags: c_int,
        op_flags: c_int,
    ) -> c_int;
    /// Returns a negative errno (`-EILSEQ` on a miscompare, `*mismatch_off` set).
    pub fn rbd_aio_compare_and_write(
        image: rbd_image_t,
        off: u64,
        len: size_t,
        cmp_buf: *const c_char,
        buf: *const c_char,
        c: rbd_completion_t,
        mismatch_off: *mut u64,
        op_flags: c_int,
    ) -> ssize_t;
}
