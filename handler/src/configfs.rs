//! Reading a user backstore's attributes from configfs
//! (`/sys/kernel/config/target/core/user_<hba>/<name>/`).
//!
//! TCMU is a passthrough backstore: the kernel does not answer INQUIRY or READ CAPACITY, so
//! the handler reads the LUN's size, block size, transfer limit, write-cache setting, unit
//! serial and timeouts here to answer them as targetcli shows them.

use std::path::{Path, PathBuf};

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
    let info = read_str(&dir.join("info")).unwrap_or_default();
    let dev_size = match read_num::<u64>(&attrib.join("dev_size")) {
        Ok(v) => v,
        Err(e) => info_field(&info, "Size:").ok_or(e)?,
    };
    let block_size = match read_num::<u32>(&attrib.join("hw_block_size")) {
        Ok(v) => v,
        Err(e) => info_field(&info, "SectorSize:")
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
