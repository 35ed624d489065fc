//! Reading a user backstore's attributes from configfs
//! (`/sys/kernel/config/target/core/user_<hba>/<name>/`).
//!
//! TCMU is a passthrough backstore: the kernel does not answer INQUIRY or READ CAPACITY, so
//! the handler reads the LUN's size, block size, transfer limit, write-cache setting, unit
//! serial and timeouts here to answer them as targetcli shows them, and its ALUA target port
//! groups ([`read_alua`]) to answer REPORT TARGET PORT GROUPS as LIO would.

pub mod alua_write;

use std::path::{Path, PathBuf};
use tcmu_scsi::alua::{self, supported, Alua, PortGroup, TargetPort};

/// The default configfs root of the target core.
pub const CORE_ROOT: &str = "/sys/kernel/config/target/core";

/// What the handler needs to know about one backstore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceAttrs {
    /// LUN size in bytes (`attrib/dev_size`, or `Size:` in `info`).
    pub dev_size: u64,
    /// Logical block size (`attrib/hw_block_size`).
    pub block_size: u32,
    /// Largest transfer the kernel advises, in 512-byte sectors (`attrib/hw_max_sectors`).
    pub hw_max_sectors: u32,
    /// Write cache enabled (`attrib/emulate_write_cache`).
    pub write_cache: bool,
    /// Unit serial number (`wwn/vpd_unit_serial`), if one is set.
    pub serial: Option<String>,
    /// Kernel command timeout in seconds (`attrib/cmd_time_out`; 0 = never).
    pub cmd_time_out: Option<u32>,
    /// Kernel queue-full timeout in seconds (`attrib/qfull_time_out`).
    pub qfull_time_out: Option<i32>,
}

/// A configfs read failed.
#[derive(Debug, thiserror::Error)]
#[error("configfs {path}: {reason}")]
pub struct ConfigfsError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

/// The directory of device `name` under HBA `user_<hba>`.
#[must_use]
pub fn device_dir(root: &Path, hba: u32, name: &str) -> PathBuf {
    root.join(format!("user_{hba}")).join(name)
}

fn read_str(path: &Path) -> Result<String, ConfigfsError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\0']).to_string())
        .map_err(|e| ConfigfsError {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn read_num<T: std::str::FromStr>(path: &Path) -> Result<T, ConfigfsError> {
    let s = read_str(path)?;
    s.trim().parse().map_err(|_| ConfigfsError {
        path: path.to_path_buf(),
        reason: format!("not a number: {s:?}"),
    })
}

/// Pull `<key> <value>` out of the `info` file (`... Size: 1073741824 ...`).
fn info_field(info: &str, key: &str) -> Option<u64> {
    let mut words = info.split_whitespace();
    while let Some(w) = words.next() {
        if w == key {
            return words.next()?.parse().ok();
        }
    }
    None
}

/// Read the attributes of the device at `dir`.
///
/// # Errors
/// When the size or block size cannot be read: without them the LUN cannot be answered.
pub fn read(dir: &Path) -> Result<DeviceAttrs, ConfigfsError> {
    let attrib = dir.join("attrib");
    // `info` only when an attribute is missing (one configfs read less per device added).
    let info = || read_str(&dir.join("info")).unwrap_or_default();
    let dev_size = match read_num::<u64>(&attrib.join("dev_size")) {
        Ok(v) => v,
        Err(e) => info_field(&info(), "Size:").ok_or(e)?,
    };
    let block_size = match read_num::<u32>(&attrib.join("hw_block_size")) {
        Ok(v) => v,
        Err(e) => info_field(&info(), "SectorSize:")
            .and_then(|v| u32::try_from(v).ok())
            .ok_or(e)?,
    };
    if block_size == 0 || !block_size.is_power_of_two() || !(512..=65536).contains(&block_size) {
        return Err(ConfigfsError {
            path: attrib.join("hw_block_size"),
            reason: format!("unusable block size {block_size}"),
        });
    }
    let hw_max_sectors = read_num(&attrib.join("hw_max_sectors")).unwrap_or(128);
    let write_cache = read_num::<u32>(&attrib.join("emulate_write_cache"))
        .map(|v| v != 0)
        .unwrap_or(true);
    let serial = read_str(&dir.join("wwn/vpd_unit_serial"))
        .ok()
        .and_then(|s| {
            let v = s
                .rsplit_once(':')
                .map_or(s.as_str(), |(_, v)| v)
                .trim()
                .to_string();
            (!v.is_empty()).then_some(v)
        });
    Ok(DeviceAttrs {
        dev_size,
        block_size,
        hw_max_sectors,
        write_cache,
        serial,
        cmd_time_out: read_num(&attrib.join("cmd_time_out")).ok(),
        qfull_time_out: read_num(&attrib.join("qfull_time_out")).ok(),
    })
}

/// The target root (`/sys/kernel/config/target`) of a core root (`.../target/core`).
#[must_use]
pub fn target_root(core_root: &Path) -> PathBuf {
    core_root
        .parent()
        .map_or_else(|| core_root.join(".."), Path::to_path_buf)
}

fn read_flag(path: &Path) -> bool {
    read_num::<u32>(path).is_ok_and(|v| v != 0)
}

/// One member port (`<fabric>/<wwn>/tpgt_<n>/lun_<m>`): its relative target port identifier
/// from the LUN's `statistics/scsi_port/indx`, and whether its TPG is enabled (a TPG with no
/// `enable` file, such as tcm_loop's, counts as enabled). The fabric directory is the name
/// `members` shows, or its lowercase form (`iSCSI` lives in `iscsi/`). None: unreadable.
fn member_port(target_root: &Path, line: &str) -> Option<TargetPort> {
    let (fabric, wwn, tag, lun) = alua::parse_member(line)?;
    let mut fdir = target_root.join(fabric);
    if !fdir.is_dir() {
        fdir = target_root.join(fabric.to_ascii_lowercase());
    }
    let tpg = fdir.join(wwn).join(format!("tpgt_{tag}"));
    let rtpi =
        read_num::<u16>(&tpg.join("lun").join(lun).join("statistics/scsi_port/indx")).ok()?;
    let enabled = read_num::<u32>(&tpg.join("enable")).map_or(true, |v| v != 0);
    Some(TargetPort { rtpi, enabled })
}

fn read_group(dir: &Path, name: &str, target_root: &Path) -> Option<PortGroup> {
    // A group whose tg_pt_gp_id was never set reads as empty: it cannot hold ports.
    let id = read_num::<u16>(&dir.join("tg_pt_gp_id")).ok()?;
    let state = alua::parse_state(&read_str(&dir.join("alua_access_state")).ok()?)?;
    let (implicit, explicit) =
        alua::parse_access_type(&read_str(&dir.join("alua_access_type")).unwrap_or_default());
    let bits = [
        ("alua_support_transitioning", supported::TRANSITIONING),
        ("alua_support_offline", supported::OFFLINE),
        ("alua_support_lba_dependent", supported::LBA_DEPENDENT),
        ("alua_support_unavailable", supported::UNAVAILABLE),
        ("alua_support_standby", supported::STANDBY),
        (
            "alua_support_active_nonoptimized",
            supported::ACTIVE_NON_OPTIMIZED,
        ),
        ("alua_support_active_optimized", supported::ACTIVE_OPTIMIZED),
    ];
    let supported = bits
        .iter()
        .filter(|(f, _)| read_flag(&dir.join(f)))
        .fold(0u8, |acc, (_, b)| acc | b);
    let members = read_str(&dir.join("members")).unwrap_or_default();
    let ports = members
        .lines()
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let p = member_port(target_root, l);
            if p.is_none() {
                tracing::debug!(
                    group = name,
                    member = l,
                    "ALUA member port unreadable; left out"
                );
            }
            p
        })
        .collect();
    Some(PortGroup {
        name: name.to_string(),
        id,
        state,
        supported,
        status: alua::parse_status(&read_str(&dir.join("alua_access_status")).unwrap_or_default()),
        preferred: read_flag(&dir.join("preferred")),
        implicit,
        explicit,
        implicit_trans_secs: read_num::<u32>(&dir.join("implicit_trans_secs"))
            .map_or(0, |v| u8::try_from(v).unwrap_or(u8::MAX)),
        ports,
    })
}

/// Read the device's ALUA target port groups (`<dev>/alua/<group>/`) and their member ports
/// (under `target_root`, the fabrics' configfs root), in ascending group id. Cheap enough to
/// call on every REPORT TARGET PORT GROUPS: a dozen small configfs reads per group.
///
/// None when the `alua/` directory cannot be read or holds no usable group (then the LUN
/// reports no ALUA). Groups without an id or with an unknown state are left out.
#[must_use]
pub fn read_alua(dev_dir: &Path, target_root: &Path) -> Option<Alua> {
    let rd = std::fs::read_dir(dev_dir.join("alua")).ok()?;
    let mut groups: Vec<PortGroup> = rd
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| read_group(&e.path(), &e.file_name().to_string_lossy(), target_root))
        .collect();
    if groups.is_empty() {
        return None;
    }
    groups.sort_by_key(|g| g.id);
    Some(Alua { groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, files: &[(&str, &str)]) {
        for (p, v) in files {
            let p = dir.join(p);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, v).unwrap();
        }
    }

    #[test]
    fn reads_a_backstore_as_the_kernel_lays_it_out() {
        let t = tempfile::tempdir().unwrap();
        let d = device_dir(t.path(), 3, "lun0");
        fake(
            &d,
            &[
                ("attrib/dev_size", "1073741824\n"),
                ("attrib/hw_block_size", "4096\n"),
                ("attrib/hw_max_sectors", "2048\n"),
                ("attrib/emulate_write_cache", "0\n"),
                ("attrib/cmd_time_out", "30\n"),
                ("attrib/qfull_time_out", "-1\n"),
                (
                    "wwn/vpd_unit_serial",
                    "T10 VPD Unit Serial Number: 5a1b7e4c-0d7e-4b0b-9d33-1d2b6c7a8e9f\n",
                ),
            ],
        );
        let a = read(&d).unwrap();
        assert_eq!(a.dev_size, 1 << 30);
        assert_eq!(a.block_size, 4096);
        assert_eq!(a.hw_max_sectors, 2048);
        assert!(!a.write_cache);
        assert_eq!(
            a.serial.as_deref(),
            Some("5a1b7e4c-0d7e-4b0b-9d33-1d2b6c7a8e9f")
        );
        assert_eq!(a.cmd_time_out, Some(30));
        assert_eq!(a.qfull_time_out, Some(-1));
    }

    fn alua_group(dev: &Path, name: &str, id: &str, state: &str, members: &str) {
        let g = format!("alua/{name}");
        let f = |a: &str| format!("{g}/{a}");
        fake(
            dev,
            &[
                (&f("tg_pt_gp_id"), id),
                (&f("alua_access_state"), state),
                (&f("alua_access_status"), "Altered by Implicit ALUA\n"),
                (&f("alua_access_type"), "Implicit and Explicit\n"),
                (&f("alua_support_transitioning"), "1\n"),
                (&f("alua_support_offline"), "1\n"),
                (&f("alua_support_lba_dependent"), "0\n"),
                (&f("alua_support_unavailable"), "1\n"),
                (&f("alua_support_standby"), "1\n"),
                (&f("alua_support_active_nonoptimized"), "1\n"),
                (&f("alua_support_active_optimized"), "1\n"),
                (&f("preferred"), "0\n"),
                (&f("implicit_trans_secs"), "0\n"),
                (&f("members"), members),
            ],
        );
    }

    #[test]
    fn reads_alua_groups_and_member_ports() {
        let t = tempfile::tempdir().unwrap();
        let core = t.path().join("target/core");
        let target = target_root(&core);
        assert_eq!(target, t.path().join("target"));
        let d = device_dir(&core, 0, "lun0");
        assert!(read_alua(&d, &target).is_none(), "no alua/ directory");
        alua_group(&d, "default_tg_pt_gp", "0\n", "0\n", "");
        alua_group(
            &d,
            "gp2",
            "2\n",
            "2\n",
            "loopback/naa.5001405000000001/tpgt_1/lun_0\niSCSI/iqn.2003-01.x:t/tpgt_3/lun_7\nbogus\n",
        );
        alua_group(&d, "unset", "\n", "0\n", "");
        fake(
            &target,
            &[
                (
                    "loopback/naa.5001405000000001/tpgt_1/lun/lun_0/statistics/scsi_port/indx",
                    "1\n",
                ),
                (
                    "iscsi/iqn.2003-01.x:t/tpgt_3/lun/lun_7/statistics/scsi_port/indx",
                    "4\n",
                ),
                ("iscsi/iqn.2003-01.x:t/tpgt_3/enable", "0\n"),
            ],
        );
        let a = read_alua(&d, &target).unwrap();
        let names: Vec<_> = a.groups.iter().map(|g| (g.name.as_str(), g.id)).collect();
        assert_eq!(names, [("default_tg_pt_gp", 0), ("gp2", 2)]);
        let gp2 = &a.groups[1];
        assert_eq!(gp2.state, tcmu_scsi::alua::state::STANDBY);
        assert_eq!(gp2.supported, 0xCF);
        assert_eq!(
            gp2.status,
            tcmu_scsi::alua::status::ALTERED_BY_IMPLICIT_ALUA
        );
        assert!(gp2.implicit && gp2.explicit && !gp2.preferred);
        assert_eq!(
            gp2.ports,
            [
                TargetPort {
                    rtpi: 1,
                    enabled: true
                },
                TargetPort {
                    rtpi: 4,
                    enabled: false
                }
            ]
        );
        assert_eq!(a.local_port(), Some(1));
        // An admin's state change is seen on the next read.
        fake(&d, &[("alua/gp2/alua_access_state", "0\n")]);
        assert_eq!(read_alua(&d, &target).unwrap().local_state(), Some(0));
    }

    #[test]
    fn falls_back_to_info_and_refuses_nonsense() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("dev");
        fake(&d, &[("info", "Status: ACTIVATED  Max Queue Depth: 128  SectorSize: 512  HwMaxSectors: 128\n        Config: file//tmp/a Size: 4194304 MaxDataAreaMB: 1024\n")]);
        let a = read(&d).unwrap();
        assert_eq!(
            (a.dev_size, a.block_size, a.hw_max_sectors, a.serial),
            (4_194_304, 512, 128, None)
        );
        fake(&d, &[("attrib/hw_block_size", "1000\n")]);
        let e = read(&d).unwrap_err().to_string();
        assert!(e.contains("unusable block size 1000"), "{e}");
    }
}
