//! The real `/dev/uioN` device of a TCMU backstore.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use crate::doorbell::Doorbell;
use crate::error::RingError;
use crate::mapping::Mapping;

/// Default sysfs class directory of uio devices.
pub const SYSFS_CLASS_UIO: &str = "/sys/class/uio";

/// An open uio device: exclusive (a second open gets EBUSY), so it is opened `O_CLOEXEC`
/// (docs/kernel-abi.md pitfall 19) and `O_NONBLOCK` (the event loop polls it).
#[derive(Debug)]
pub struct Uio {
    file: File,
    minor: u32,
    name: String,
    map_size: usize,
}

impl Uio {
    /// Opens `dev` (`/dev/uioN`), reading its attributes under `/sys/class/uio`.
    pub fn open(dev: &Path) -> Result<Uio, RingError> {
        Self::open_at(dev, Path::new(SYSFS_CLASS_UIO))
    }

    /// Opens `dev` (whose file name must be `uio<N>`), reading `<sysfs_class_uio>/uio<N>/name`
    /// and `<sysfs_class_uio>/uio<N>/maps/map0/size`.
    pub fn open_at(dev: &Path, sysfs_class_uio: &Path) -> Result<Uio, RingError> {
        let fname = dev
            .file_name()
            .and_then(|f| f.to_str())
            .ok_or_else(|| RingError::BadName(dev.display().to_string()))?;
        let minor: u32 = fname
            .strip_prefix("uio")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| RingError::BadName(fname.to_owned()))?;
        let dir = sysfs_class_uio.join(fname);
        let name_path = dir.join("name");
        let name = read_sysfs(&name_path)?;
        let name = name.strip_suffix('\n').unwrap_or(&name).to_owned();
        let size_path = dir.join("maps/map0/size");
        let map_size = parse_map_size(&read_sysfs(&size_path)?).map_err(|e| RingError::Sysfs {
            path: size_path,
            reason: e.to_string(),
        })?;
        // std opens with O_CLOEXEC already; it is spelled out because pitfall 19 of
        // docs/kernel-abi.md matters.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(dev)
            .map_err(RingError::Io)?;
        Ok(Uio {
            file,
            minor,
            name,
            map_size,
        })
    }

    /// The uio `name` attribute without its trailing newline.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// N in `/dev/uioN`.
    #[must_use]
    pub fn minor(&self) -> u32 {
        self.minor
    }

    /// `maps/map0/size`.
    #[must_use]
    pub fn map_size(&self) -> usize {
        self.map_size
    }

    /// Maps the whole region (exactly `map0` size, `MAP_SHARED`, offset 0). The mapping stays
    /// valid after the device is removed, until it is dropped.
    pub fn map(&self) -> Result<Mapping, RingError> {
        Mapping::map_shared(self.file.as_fd(), self.map_size)
    }
}

fn read_sysfs(path: &Path) -> Result<String, RingError> {
    std::fs::read_to_string(path).map_err(|e| RingError::Sysfs {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

impl Doorbell for Uio {
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn ack(&self) -> std::io::Result<bool> {
        let mut buf = [0u8; 4];
        match (&self.file).read(&mut buf) {
            Ok(4) => Ok(true),
            Ok(n) => Err(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("uio read returned {n} bytes"),
            )),
            Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn kick(&self) -> std::io::Result<()> {
        match (&self.file).write(&1u32.to_ne_bytes()) {
            Ok(4) => Ok(()),
            Ok(n) => Err(std::io::Error::new(
                ErrorKind::WriteZero,
                format!("uio write wrote {n} bytes"),
            )),
            Err(e) => Err(e),
        }
    }
}

/// Parses `maps/map0/size`: `%pa`, i.e. `0x` + hex digits (`0x0000000040800000\n`).
pub fn parse_map_size(s: &str) -> Result<usize, RingError> {
    let t = s.trim();
    let hex = t
        .strip_prefix("0x")
        .or_else(|| t.strip_prefix("0X"))
        .ok_or_else(|| RingError::BadMapSize(t.to_owned()))?;
    if hex.is_empty() {
        return Err(RingError::BadMapSize(t.to_owned()));
    }
    let v = u64::from_str_radix(hex, 16).map_err(|_| RingError::BadMapSize(t.to_owned()))?;
    let v = usize::try_from(v).map_err(|_| RingError::BadMapSize(t.to_owned()))?;
    if v == 0 {
        return Err(RingError::BadMapSize(t.to_owned()));
    }
    Ok(v)
}

/// The fields of a TCMU uio name `tcm-user/<hba>/<dev>[/<subtype>[/<cfgstring>]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UioName<'a> {
    /// N of the `user_<N>` HBA.
    pub hba: u32,
    /// Device (configfs directory) name.
    pub device: &'a str,
    /// First field of `dev_config`, by convention the handler subtype.
    pub subtype: Option<&'a str>,
    /// Rest of `dev_config` (may contain `/`).
    pub cfgstring: Option<&'a str>,
}

/// Splits a uio name into at most 5 `/`-separated fields (docs/kernel-abi.md pitfall 30).
pub fn parse_uio_name(name: &str) -> Result<UioName<'_>, RingError> {
    let bad = || RingError::BadName(name.to_owned());
    // sysfs ends the name with a newline; the kernel's dev_config parser stops at one, so a
    // configuration never ends with newlines and every trailing one is dropped (one only
    // would make `a\n\n` read back differently from how it was written).
    let name_t = name.trim_end_matches('\n');
    let mut it = name_t.splitn(5, '/');
    if it.next() != Some("tcm-user") {
        return Err(bad());
    }
    let hba = it
        .next()
        .and_then(|h| h.parse::<u32>().ok())
        .ok_or_else(bad)?;
    let device = it.next().filter(|d| !d.is_empty()).ok_or_else(bad)?;
    let subtype = it.next();
    let cfgstring = it.next();
    Ok(UioName {
        hba,
        device,
        subtype,
        cfgstring,
    })
}

/// `/dev/uio<minor>`.
#[must_use]
pub fn dev_path(minor: u32) -> PathBuf {
    PathBuf::from(format!("/dev/uio{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pitfall_03_map_size_is_hex() {
        assert_eq!(parse_map_size("0x0000000040800000\n").unwrap(), 0x4080_0000);
        assert_eq!(parse_map_size("0x1000").unwrap(), 4096);
        // Decimal (what a naive parser expects) is refused rather than misread.
        assert!(parse_map_size("1082130432\n").is_err());
        assert!(parse_map_size("0x").is_err());
        assert!(parse_map_size("0x0").is_err());
        assert!(parse_map_size("0xzz").is_err());
        assert!(parse_map_size("").is_err());
        assert!(parse_map_size("0x10000000000000000").is_err());
    }

    #[test]
    fn uio_name_five_fields() {
        let n = parse_uio_name("tcm-user/3/disk1/file/path/with/slashes\n").unwrap();
        assert_eq!(
            n,
            UioName {
                hba: 3,
                device: "disk1",
                subtype: Some("file"),
                cfgstring: Some("path/with/slashes")
            }
        );
        let n = parse_uio_name("tcm-user/0/d").unwrap();
        assert_eq!(
            n,
            UioName {
                hba: 0,
                device: "d",
                subtype: None,
                cfgstring: None
            }
        );
        let n = parse_uio_name("tcm-user/0/d/rbd").unwrap();
        assert_eq!(n.subtype, Some("rbd"));
        assert_eq!(n.cfgstring, None);
        let n = parse_uio_name("tcm-user/0/d/rbd/").unwrap();
        assert_eq!(n.cfgstring, Some(""));
        assert!(parse_uio_name("uio/0/d").is_err());
        assert!(parse_uio_name("tcm-user/x/d").is_err());
        assert!(parse_uio_name("tcm-user/1").is_err());
        assert!(parse_uio_name("tcm-user/1/").is_err());
        // Found by the cfgstring fuzz target: several trailing newlines.
        let n = parse_uio_name("tcm-user/0/g0/glfs/vol@h/lun.img\n\n\n").unwrap();
        assert_eq!(n.cfgstring, Some("vol@h/lun.img"));
    }
}
