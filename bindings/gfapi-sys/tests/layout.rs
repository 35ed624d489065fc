//! Checks the declarations of `gfapi-sys` against the system's `<glusterfs/api/glfs.h>`:
//! a C program assigns each function to a pointer of the prototype declared in Rust (so a
//! changed prototype is a compile error under `-Werror`) and prints the layout of
//! `struct glfs_stat`, which the Rust side compares with its own.

use std::collections::HashMap;
use std::process::Command;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <glusterfs/api/glfs.h>
#define P(name, v) printf("%s %lu\n", name, (unsigned long)(v))
#define CHECK(fn, T) _Static_assert(__builtin_types_compatible_p(__typeof__(&fn), T), "prototype of " #fn);
int main(void) {
  CHECK(glfs_new, glfs_t *(*)(const char *));
  CHECK(glfs_set_volfile_server, int (*)(glfs_t *, const char *, const char *, int));
  CHECK(glfs_set_logging, int (*)(glfs_t *, const char *, int));
  CHECK(glfs_set_xlator_option, int (*)(glfs_t *, const char *, const char *, const char *));
  CHECK(glfs_init, int (*)(glfs_t *));
  CHECK(glfs_fini, int (*)(glfs_t *));
  CHECK(glfs_get_volfile, ssize_t (*)(glfs_t *, void *, size_t));
  CHECK(glfs_open, glfs_fd_t *(*)(glfs_t *, const char *, int));
  CHECK(glfs_creat, glfs_fd_t *(*)(glfs_t *, const char *, int, mode_t));
  CHECK(glfs_close, int (*)(glfs_fd_t *));
  CHECK(glfs_stat, int (*)(glfs_t *, const char *, struct stat *));
  CHECK(glfs_fstat, int (*)(glfs_fd_t *, struct stat *));
  CHECK(glfs_lseek, off_t (*)(glfs_fd_t *, off_t, int));
  CHECK(glfs_statvfs, int (*)(glfs_t *, const char *, struct statvfs *));
  CHECK(glfs_unlink, int (*)(glfs_t *, const char *));
  CHECK(glfs_ftruncate, int (*)(glfs_fd_t *, off_t, struct glfs_stat *, struct glfs_stat *));
  CHECK(glfs_preadv, ssize_t (*)(glfs_fd_t *, const struct iovec *, int, off_t, int));
  CHECK(glfs_pwritev, ssize_t (*)(glfs_fd_t *, const struct iovec *, int, off_t, int));
  CHECK(glfs_fsync, int (*)(glfs_fd_t *, struct glfs_stat *, struct glfs_stat *));
  typedef void (*cbk)(glfs_fd_t *, ssize_t, struct glfs_stat *, struct glfs_stat *, void *);
  CHECK(glfs_preadv_async, int (*)(glfs_fd_t *, const struct iovec *, int, off_t, int, cbk, void *));
  CHECK(glfs_pwritev_async, int (*)(glfs_fd_t *, const struct iovec *, int, off_t, int, cbk, void *));
  CHECK(glfs_fsync_async, int (*)(glfs_fd_t *, cbk, void *));
  CHECK(glfs_fdatasync_async, int (*)(glfs_fd_t *, cbk, void *));
  CHECK(glfs_discard_async, int (*)(glfs_fd_t *, off_t, size_t, cbk, void *));
  CHECK(glfs_zerofill_async, int (*)(glfs_fd_t *, off_t, off_t, cbk, void *));
  { glfs_io_cbk c = (cbk)0; (void)c; }
  P("stat.size", sizeof(struct glfs_stat));
  P("stat.align", _Alignof(struct glfs_stat));
  P("stat.mask", offsetof(struct glfs_stat, glfs_st_mask));
  P("stat.atime", offsetof(struct glfs_stat, glfs_st_atime));
  P("stat.mtime", offsetof(struct glfs_stat, glfs_st_mtime));
  P("stat.ino", offsetof(struct glfs_stat, glfs_st_ino));
  P("stat.size_f", offsetof(struct glfs_stat, glfs_st_size));
  P("stat.blocks", offsetof(struct glfs_stat, glfs_st_blocks));
  P("stat.dev_minor", offsetof(struct glfs_stat, glfs_st_dev_minor));
  P("stat.blksize", offsetof(struct glfs_stat, glfs_st_blksize));
  P("stat.nlink", offsetof(struct glfs_stat, glfs_st_nlink));
  P("stat.mode", offsetof(struct glfs_stat, glfs_st_mode));
  P("struct_stat.size", sizeof(struct stat));
  P("struct_statvfs.size", sizeof(struct statvfs));
  P("off_t.size", sizeof(off_t));
  return 0;
}
"#;

fn pkg_config_cflags() -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(["--cflags", "--libs", "glusterfs-api"])
        .output()
        .expect("run pkg-config (install libglusterfs-dev: scripts/install-gluster-deps.sh)");
    assert!(
        out.status.success(),
        "pkg-config glusterfs-api failed: install libglusterfs-dev"
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

fn c_values() -> HashMap<String, u64> {
    let flags = pkg_config_cflags();
    let mut args = vec!["-Werror=incompatible-pointer-types", "-Werror"];
    args.extend(flags.iter().map(String::as_str));
    c_probe::c_values(PROGRAM, &args, "glfs.h")
}

#[test]
fn declarations_match_the_system_header() {
    use gfapi_sys::glfs_stat;
    use std::mem::{align_of, offset_of, size_of};
    let c = c_values();
    let ours: &[(&str, usize)] = &[
        ("stat.size", size_of::<glfs_stat>()),
        ("stat.align", align_of::<glfs_stat>()),
        ("stat.mask", offset_of!(glfs_stat, glfs_st_mask)),
        ("stat.atime", offset_of!(glfs_stat, glfs_st_atime)),
        ("stat.mtime", offset_of!(glfs_stat, glfs_st_mtime)),
        ("stat.ino", offset_of!(glfs_stat, glfs_st_ino)),
        ("stat.size_f", offset_of!(glfs_stat, glfs_st_size)),
        ("stat.blocks", offset_of!(glfs_stat, glfs_st_blocks)),
        ("stat.dev_minor", offset_of!(glfs_stat, glfs_st_dev_minor)),
        ("stat.blksize", offset_of!(glfs_stat, glfs_st_blksize)),
        ("stat.nlink", offset_of!(glfs_stat, glfs_st_nlink)),
        ("stat.mode", offset_of!(glfs_stat, glfs_st_mode)),
        ("struct_stat.size", size_of::<libc::stat>()),
        ("struct_statvfs.size", size_of::<libc::statvfs>()),
        ("off_t.size", size_of::<libc::off_t>()),
    ];
    for (name, v) in ours {
        assert_eq!(
            c.get(*name).copied(),
            Some(*v as u64),
            "{name}: C says {:?}, Rust says {v}",
            c.get(*name)
        );
    }
    assert_eq!(c.len(), ours.len(), "every C value is compared");
}

/// Linking by plain name must bind the 6.0 symbol versions (whose callback carries the
/// pre/post stats), not the 3.x ones kept in the library for old binaries.
#[test]
fn async_calls_bind_the_gfapi_6_symbol_versions() {
    let lib = "/usr/lib/x86_64-linux-gnu/libgfapi.so.0";
    if !std::path::Path::new(lib).exists() {
        eprintln!("{lib} not found; skipping the symbol-version check");
        return;
    }
    let out = Command::new("objdump").args(["-T", lib]).output();
    let Ok(out) = out else {
        eprintln!("objdump not available; skipping");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    for f in [
        "glfs_preadv_async",
        "glfs_pwritev_async",
        "glfs_fsync_async",
        "glfs_fdatasync_async",
        "glfs_discard_async",
        "glfs_zerofill_async",
        "glfs_ftruncate",
        "glfs_fsync",
    ] {
        // objdump -T shows the default version without parentheses.
        let default = text.lines().find(|l| {
            l.split_whitespace().last() == Some(f) && !l.contains('(') && l.contains("GFAPI_")
        });
        let default = default.unwrap_or_else(|| panic!("{f}: no default version in {lib}"));
        assert!(
            default.contains("GFAPI_6.0"),
            "{f}: default version is not GFAPI_6.0: {default}"
        );
    }
}
