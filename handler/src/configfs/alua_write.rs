//! Writing lock-driven ALUA states to configfs (docs/rbd.md, "Gateways in pairs").
//!
//! The handler answers REPORT TARGET PORT GROUPS and INQUIRY itself (TCMU passes them up), but
//! the kernel keeps its own copy of each group's state: it checks every command against it
//! per port while `attrib/alua_support=1`, `targetcli` shows it, and a write of a new state to
//! `alua/<group>/alua_access_state` is an implicit transition in the kernel's ALUA code (which
//! is where initiators are told that the states changed). So when the exclusive lock moves,
//! the new states are written there: the state as a number, then `alua_access_status` 2
//! ("Altered by Implicit ALUA"). The kernel accepts such a write only for a group whose
//! `alua_access_type` allows implicit transitions, which is how ceph-iscsi configures them.

use std::path::{Path, PathBuf};

/// `alua_access_status` for a transition made by the device server itself.
pub const ALTERED_BY_IMPLICIT_ALUA: u8 = 2;

/// A failed write: the file and why.
#[derive(Debug)]
pub struct WriteError {
    /// The file written.
    pub path: PathBuf,
    /// The error.
    pub error: std::io::Error,
}

/// Write `state` to each named group of the device at `device_dir`
/// (`<device_dir>/alua/<group>/alua_access_state`, then its `alua_access_status`). Every
/// group is tried; the failures are returned.
pub fn write_states(device_dir: &Path, changes: &[(String, u8)]) -> Vec<WriteError> {
    let mut failed = Vec::new();
    for (group, state) in changes {
        if group.is_empty() || group.contains(['/', '\0']) || group == ".." || group == "." {
            failed.push(WriteError {
                path: device_dir.join("alua"),
                error: std::io::Error::from(std::io::ErrorKind::InvalidInput),
            });
            continue;
        }
        let dir = device_dir.join("alua").join(group);
        // No newline: configfs stores what it is given (docs/kernel-abi.md).
        for (file, value) in [
            ("alua_access_state", *state),
            ("alua_access_status", ALTERED_BY_IMPLICIT_ALUA),
        ] {
            let path = dir.join(file);
            // Only existing attributes: configfs files are never created.
            let r = std::fs::OpenOptions::new()
                .write(true)
                .truncate(true)
                .open(&path)
                .and_then(|mut f| std::io::Write::write_all(&mut f, value.to_string().as_bytes()));
            if let Err(error) = r {
                failed.push(WriteError { path, error });
                break; // no status without the state
            }
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_device() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for g in ["default_tg_pt_gp", "ao", "ano2"] {
            let gd = d.path().join("alua").join(g);
            std::fs::create_dir_all(&gd).unwrap();
            std::fs::write(gd.join("alua_access_state"), "1\n").unwrap();
            std::fs::write(gd.join("alua_access_status"), "None\n").unwrap();
        }
        d
    }

    fn read(d: &Path, g: &str, f: &str) -> String {
        std::fs::read_to_string(d.join("alua").join(g).join(f)).unwrap()
    }

    #[test]
    fn the_states_and_the_implicit_status_land_in_the_named_groups_only() {
        let d = fake_device();
        let failed = write_states(d.path(), &[("ano2".into(), 0), ("ao".into(), 1)]);
        assert!(failed.is_empty(), "{failed:?}");
        assert_eq!(read(d.path(), "ano2", "alua_access_state"), "0");
        assert_eq!(read(d.path(), "ano2", "alua_access_status"), "2");
        assert_eq!(read(d.path(), "ao", "alua_access_state"), "1");
        assert_eq!(
            read(d.path(), "default_tg_pt_gp", "alua_access_state"),
            "1\n",
            "untouched"
        );
    }

    #[test]
    fn a_missing_group_or_a_bad_name_is_reported_and_creates_nothing() {
        let d = fake_device();
        let failed = write_states(
            d.path(),
            &[("gone".into(), 0), ("../x".into(), 0), ("ao".into(), 0)],
        );
        assert_eq!(failed.len(), 2, "{failed:?}");
        assert!(!d.path().join("alua/gone").exists());
        assert_eq!(
            read(d.path(), "ao", "alua_access_state"),
            "0",
            "the rest is written"
        );
    }
}
