//! Raw declarations of the libgfapi (GlusterFS 10, API `GFAPI_6.0`) calls tcmu-warden uses.
//!
//! Only what the `glfs` backend, its tests and its benchmark call is declared. The
//! asynchronous calls are the 6.0 versions, whose callback receives pre- and post-operation
//! `glfs_stat`s; linking by plain name binds to the library's default symbol version, which
//! is `GFAPI_6.0` for each of them (the 3.x versions with the older callback type are kept
//! in the library as non-default versions). `tests/layout.rs` compiles a C program against
//! `<glusterfs/api/glfs.h>` that checks every prototype below and the layout of
//! [`glfs_stat`](struct@glfs_stat).
//!
//! Everything here is `unsafe` to call; `bindings/gfapi` is the safe wrapper.
#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void, iovec, off_t, size_t, ssize_t};

/// `glfs_t`: one "virtual mount" of a volume (opaque).
#[repr(C)]
pub struct glfs_t {
    _private: [u8; 0],
}

/// `glfs_fd_t`: an open file on a volume (opaque).
#[repr(C)]
pub struct glfs_fd_t {
    _private: [u8; 0],
}

/// `struct glfs_stat`, the statx-like result passed to the asynchronous callbacks.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct glfs_stat {
    /// What results were written.
    pub glfs_st_mask: u64,
    /// Attribute flags.
    pub glfs_st_attributes: u64,
    /// Which attribute flags are supported.
    pub glfs_st_attributes_mask: u64,
    /// Last access.
    pub glfs_st_atime: libc::timespec,
    /// Creation.
    pub glfs_st_btime: libc::timespec,
    /// Last attribute change.
    pub glfs_st_ctime: libc::timespec,
    /// Last data change.
    pub glfs_st_mtime: libc::timespec,
    /// Inode number.
    pub glfs_st_ino: libc::ino_t,
    /// Size in bytes.
    pub glfs_st_size: off_t,
    /// 512-byte blocks allocated.
    pub glfs_st_blocks: libc::blkcnt_t,
    /// Device major (special files).
    pub glfs_st_rdev_major: u32,
    /// Device minor (special files).
    pub glfs_st_rdev_minor: u32,
    /// Containing device major.
    pub glfs_st_dev_major: u32,
    /// Containing device minor.
    pub glfs_st_dev_minor: u32,
    /// Preferred I/O size.
    pub glfs_st_blksize: libc::blksize_t,
    /// Hard links.
    pub glfs_st_nlink: libc::nlink_t,
    /// Owner.
    pub glfs_st_uid: libc::uid_t,
    /// Group.
    pub glfs_st_gid: libc::gid_t,
    /// Mode.
    pub glfs_st_mode: libc::mode_t,
}

/// `glfs_io_cbk` (6.0): called on one of gfapi's threads when an asynchronous operation
/// ends. `ret` is the byte count or 0 on success, -1 on failure with `errno` set on the
/// calling thread.
pub type glfs_io_cbk = Option<
    unsafe extern "C" fn(
        fd: *mut glfs_fd_t,
        ret: ssize_t,
        prestat: *mut glfs_stat,
        poststat: *mut glfs_stat,
        data: *mut c_void,
    ),
>;

extern "C" {
    pub fn glfs_new(volname: *const c_char) -> *mut glfs_t;
    pub fn glfs_set_volfile_server(
        fs: *mut glfs_t,
        transport: *const c_char,
        host: *const c_char,
        port: c_int,
    ) -> c_int;
    pub fn glfs_set_logging(fs: *mut glfs_t, logfile: *const c_char, loglevel: c_int) -> c_int;
    pub fn glfs_set_xlator_option(
        fs: *mut glfs_t,
        xlator: *const c_char,
        key: *const c_char,
        value: *const c_char,
    ) -> c_int;
    pub fn glfs_init(fs: *mut glfs_t) -> c_int;
    pub fn glfs_fini(fs: *mut glfs_t) -> c_int;
    pub fn glfs_get_volfile(fs: *mut glfs_t, buf: *mut c_void, len: size_t) -> ssize_t;

    pub fn glfs_open(fs: *mut glfs_t, path: *const c_char, flags: c_int) -> *mut glfs_fd_t;
    pub fn glfs_creat(
        fs: *mut glfs_t,
        path: *const c_char,
        flags: c_int,
        mode: libc::mode_t,
    ) -> *mut glfs_fd_t;
    pub fn glfs_close(fd: *mut glfs_fd_t) -> c_int;
    pub fn glfs_stat(fs: *mut glfs_t, path: *const c_char, buf: *mut libc::stat) -> c_int;
    pub fn glfs_fstat(fd: *mut glfs_fd_t, buf: *mut libc::stat) -> c_int;
    /// `lseek`, with `SEEK_DATA`/`SEEK_HOLE` (passed to the bricks' `lseek` fop); -1 and
    /// `errno` on failure (`ENXIO`: no data or hole at or after the offset).
    pub fn glfs_lseek(fd: *mut glfs_fd_t, offset: libc::off_t, whence: c_int) -> libc::off_t;
    pub fn glfs_statvfs(fs: *mut glfs_t, path: *const c_char, buf: *mut libc::statvfs) -> c_int;
    pub fn glfs_unlink(fs: *mut glfs_t, path: *const c_char) -> c_int;
    pub fn glfs_ftruncate(
        fd: *mut glfs_fd_t,
        length: off_t,
        prestat: *mut glfs_stat,
        poststat: *mut glfs_stat,
    ) -> c_int;

    pub fn glfs_preadv(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        iovcnt: c_int,
        offset: off_t,
        flags: c_int,
    ) -> ssize_t;
    pub fn glfs_pwritev(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        iovcnt: c_int,
        offset: off_t,
        flags: c_int,
    ) -> ssize_t;
    pub fn glfs_fsync(
        fd: *mut glfs_fd_t,
        prestat: *mut glfs_stat,
        poststat: *mut glfs_stat,
    ) -> c_int;

    pub fn glfs_preadv_async(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        count: c_int,
        offset: off_t,
        flags: c_int,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int;
    pub fn glfs_pwritev_async(
        fd: *mut glfs_fd_t,
        iov: *const iovec,
        count: c_int,
        offset: off_t,
        flags: c_int,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int;
    pub fn glfs_fsync_async(fd: *mut glfs_fd_t, cbk: glfs_io_cbk, data: *mut c_void) -> c_int;
    pub fn glfs_fdatasync_async(fd: *mut glfs_fd_t, cbk: glfs_io_cbk, data: *mut c_void) -> c_int;
    pub fn glfs_discard_async(
        fd: *mut glfs_fd_t,
        offset: off_t,
        len: size_t,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int;
    pub fn glfs_zerofill_async(
        fd: *mut glfs_fd_t,
        offset: off_t,
        len: off_t,
        cbk: glfs_io_cbk,
        data: *mut c_void,
    ) -> c_int;
}
