//! Checks the structures and constants of `rbd-sys` against the system's librbd/librados
//! headers: a C program compiled with the system compiler prints `sizeof`/`offsetof` and the
//! constants, and assigns every declared function to a pointer of the prototype the Rust side
//! declares, so a signature drift fails to compile (`-Werror`).
#![allow(clippy::cast_possible_truncation)]

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

const PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <rbd/librbd.h>
#include <rados/librados.h>
#define P(name, v) printf("%s %lu\n", name, (unsigned long)(v))
/* Prototype checks: each line fails to compile (-Werror) if the header disagrees. */
static int (*c1)(rados_t *, const char *) = rados_create;
static int (*c2)(rados_t, const char *, const char *) = rados_conf_set;
static int (*c3)(rados_t, char **) = rados_getaddrs;
static int (*c4)(rados_t, char *, uint32_t) = rados_blocklist_add;
static int (*c5)(rados_t, const char **, size_t, const char *, size_t, char **, size_t *,
                 char **, size_t *) = rados_mon_command;
static int64_t (*c6)(rados_t, const char *) = rados_pool_lookup;
static int (*c7)(rados_ioctx_t, const char *, rbd_image_t *, const char *) = rbd_open;
static int (*c8)(rbd_image_t, rbd_image_info_t *, size_t) = rbd_stat;
static int (*c9)(rbd_image_t, rbd_lock_mode_t *, char **, size_t *) = rbd_lock_get_owners;
static int (*c10)(rbd_image_t, rbd_image_watcher_t *, size_t *) = rbd_watchers_list;
static int (*c11)(void *, rbd_callback_t, rbd_completion_t *) = rbd_aio_create_completion;
static ssize_t (*c12)(rbd_completion_t) = rbd_aio_get_return_value;
static int (*c13)(rbd_image_t, const struct iovec *, int, uint64_t, rbd_completion_t) =
    rbd_aio_readv;
static int (*c14)(rbd_image_t, const struct iovec *, int, uint64_t, rbd_completion_t) =
    rbd_aio_writev;
static int (*c15)(rbd_image_t, uint64_t, uint64_t, rbd_completion_t) = rbd_aio_discard;
static int (*c16)(rbd_image_t, uint64_t, size_t, rbd_completion_t, int, int) =
    rbd_aio_write_zeroes;
static ssize_t (*c17)(rbd_image_t, uint64_t, size_t, const char *, const char *,
                      rbd_completion_t, uint64_t *, int) = rbd_aio_compare_and_write;
static int (*c18)(rbd_image_t, rbd_lock_mode_t, const char *) = rbd_lock_break;
static int (*c19)(rbd_image_t, char *, size_t) = rbd_get_id;
static int (*c20)(rbd_image_t, const char *) = rbd_snap_create;
static int (*c21)(rados_ioctx_t, const char *, uint64_t *, time_t *) = rados_stat;
static int (*c22)(rados_t, const char *, const char *, const char *) = rados_service_register;
static int (*c23)(rados_t, const char *) = rados_service_update_status;
static int (*c24)(rbd_image_t, const char *, uint64_t, uint64_t, uint8_t, uint8_t,
                  int (*)(uint64_t, size_t, int, void *), void *) = rbd_diff_iterate2;
static int (*c25)(rbd_image_t, rbd_config_option_t *, int *) = rbd_config_image_list;
static void (*c26)(rbd_config_option_t *, int) = rbd_config_image_list_cleanup;
int main(void) {
  void *keep[] = {c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12, c13, c14, c15, c16, c17,
                  c18, c19, c20, c21, c22, c23, c24, c25, c26};
  (void)keep;
  P("info.size", sizeof(rbd_image_info_t));
  P("info.obj_size", offsetof(rbd_image_info_t, obj_size));
  P("info.num_objs", offsetof(rbd_image_info_t, num_objs));
  P("info.order", offsetof(rbd_image_info_t, order));
  P("info.block_name_prefix", offsetof(rbd_image_info_t, block_name_prefix));
  P("info.parent_pool", offsetof(rbd_image_info_t, parent_pool));
  P("info.parent_name", offsetof(rbd_image_info_t, parent_name));
  P("watcher.size", sizeof(rbd_image_watcher_t));
  P("watcher.id", offsetof(rbd_image_watcher_t, id));
  P("watcher.cookie", offsetof(rbd_image_watcher_t, cookie));
  P("lock_mode.size", sizeof(rbd_lock_mode_t));
  P("config_option.size", sizeof(rbd_config_option_t));
  P("config_option.value", offsetof(rbd_config_option_t, value));
  P("config_option.source", offsetof(rbd_config_option_t, source));
  P("config_source.size", sizeof(rbd_config_source_t));
  P("LOCK_EXCLUSIVE", RBD_LOCK_MODE_EXCLUSIVE);
  P("LOCK_SHARED", RBD_LOCK_MODE_SHARED);
  P("MAX_IMAGE_NAME", RBD_MAX_IMAGE_NAME_SIZE);
  P("MAX_BLOCK_NAME", RBD_MAX_BLOCK_NAME_SIZE);
  P("FEATURE_EXCLUSIVE_LOCK", RBD_FEATURE_EXCLUSIVE_LOCK);
  P("FADVISE_FUA", LIBRADOS_OP_FLAG_FADVISE_FUA);
  return 0;
}
"#;

fn c_values() -> HashMap<String, u64> {
    for h in ["/usr/include/rbd/librbd.h", "/usr/include/rados/librados.h"] {
        assert!(
            std::path::Path::new(h).exists(),
            "{h} is missing: install librbd-dev librados-dev (scripts/install-ceph-deps.sh)"
        );
    }
    c_probe::c_values(
        PROGRAM,
        &[
            "-Wall",
            "-Werror",
            "-Wno-unused-variable",
            "-lrbd",
            "-lrados",
        ],
        "librbd.h",
    )
}

#[test]
fn layout_matches_system_headers() {
    use rbd_sys::*;
    let c = c_values();
    let ours: &[(&str, u64)] = &[
        ("info.size", size_of::<rbd_image_info_t>() as u64),
        (
            "info.obj_size",
            offset_of!(rbd_image_info_t, obj_size) as u64,
        ),
        (
            "info.num_objs",
            offset_of!(rbd_image_info_t, num_objs) as u64,
        ),
        ("info.order", offset_of!(rbd_image_info_t, order) as u64),
        (
            "info.block_name_prefix",
            offset_of!(rbd_image_info_t, block_name_prefix) as u64,
        ),
        (
            "info.parent_pool",
            offset_of!(rbd_image_info_t, parent_pool) as u64,
        ),
        (
            "info.parent_name",
            offset_of!(rbd_image_info_t, parent_name) as u64,
        ),
        ("watcher.size", size_of::<rbd_image_watcher_t>() as u64),
        ("watcher.id", offset_of!(rbd_image_watcher_t, id) as u64),
        (
            "watcher.cookie",
            offset_of!(rbd_image_watcher_t, cookie) as u64,
        ),
        ("lock_mode.size", size_of::<rbd_lock_mode_t>() as u64),
        (
            "config_option.size",
            size_of::<rbd_config_option_t>() as u64,
        ),
        (
            "config_option.value",
            offset_of!(rbd_config_option_t, value) as u64,
        ),
        (
            "config_option.source",
            offset_of!(rbd_config_option_t, source) as u64,
        ),
        (
            "config_source.size",
            size_of::<rbd_config_source_t>() as u64,
        ),
        ("LOCK_EXCLUSIVE", RBD_LOCK_MODE_EXCLUSIVE as u64),
        ("LOCK_SHARED", RBD_LOCK_MODE_SHARED as u64),
        ("MAX_IMAGE_NAME", RBD_MAX_IMAGE_NAME_SIZE as u64),
        ("MAX_BLOCK_NAME", RBD_MAX_BLOCK_NAME_SIZE as u64),
        ("FEATURE_EXCLUSIVE_LOCK", RBD_FEATURE_EXCLUSIVE_LOCK),
        ("FADVISE_FUA", LIBRADOS_OP_FLAG_FADVISE_FUA as u64),
    ];
    let mut bad = Vec::new();
    for (k, v) in ours {
        match c.get(*k) {
            Some(cv) if cv == v => {}
            other => bad.push(format!("{k}: ours {v}, C {other:?}")),
        }
    }
    assert_eq!(c.len(), ours.len(), "every C value is compared");
    assert!(
        bad.is_empty(),
        "rbd-sys disagrees with the headers: {bad:#?}"
    );
}
