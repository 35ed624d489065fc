//! Asymmetric logical unit access (SPC-4 5.15): the target port groups of a
//! logical unit as LIO keeps them (configfs `alua/<group>/`), REPORT TARGET
//! PORT GROUPS parameter data, and which commands each access state allows.
//!
//! TCMU does not tell the handler which target port (I_T nexus) a command
//! arrived on. What depends on the port — the group whose state applies, the
//! VPD 0x83 port designators — is therefore only reported or enforced when
//! it is the same for every enabled port of the logical unit (see
//! [`Alua::local_group`]); otherwise the kernel's own per-port check (active
//! while `attrib/alua_support=1`) is the only one.

use crate::bytes::{put, put16, put32};
use crate::cdb::Cdb;
use crate::sense::Sense;

/// Asymmetric access states (SPC-4 table 257).
pub mod state {
    /// Active/optimized.
    pub const ACTIVE_OPTIMIZED: u8 = 0x0;
    /// Active/non-optimized.
    pub const ACTIVE_NON_OPTIMIZED: u8 = 0x1;
    /// Standby.
    pub const STANDBY: u8 = 0x2;
    /// Unavailable.
    pub const UNAVAILABLE: u8 = 0x3;
    /// Logical block dependent.
    pub const LBA_DEPENDENT: u8 = 0x4;
    /// Offline.
    pub const OFFLINE: u8 = 0xE;
    /// Transitioning between states.
    pub const TRANSITIONING: u8 = 0xF;
}

/// Supported-states bits of a target port group descriptor (byte 1).
pub mod supported {
    /// T_SUP: transitioning.
    pub const TRANSITIONING: u8 = 0x80;
    /// O_SUP: offline.
    pub const OFFLINE: u8 = 0x40;
    /// LBD_SUP: logical block dependent.
    pub const LBA_DEPENDENT: u8 = 0x10;
    /// U_SUP: unavailable.
    pub const UNAVAILABLE: u8 = 0x08;
    /// S_SUP: standby.
    pub const STANDBY: u8 = 0x04;
    /// AN_SUP: active/non-optimized.
    pub const ACTIVE_NON_OPTIMIZED: u8 = 0x02;
    /// AO_SUP: active/optimized.
    pub const ACTIVE_OPTIMIZED: u8 = 0x01;
}

/// STATUS CODE of a target port group descriptor.
pub mod status {
    /// No status available.
    pub const NONE: u8 = 0x00;
    /// Altered by SET TARGET PORT GROUPS.
    pub const ALTERED_BY_EXPLICIT_STPG: u8 = 0x01;
    /// Altered by implicit asymmetric access state change.
    pub const ALTERED_BY_IMPLICIT_ALUA: u8 = 0x02;
}

/// TPGS field value (standard INQUIRY byte 5) for implicit ALUA only.
pub const TPGS_IMPLICIT: u8 = 0x10;

/// One target port: a LUN of a fabric's TPG that exports this device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetPort {
    /// RELATIVE TARGET PORT IDENTIFIER, as the kernel numbers the port.
    pub rtpi: u16,
    /// The port's TPG is enabled (fabrics without an `enable` switch: true).
    pub enabled: bool,
}

/// One target port group (`alua/<name>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortGroup {
    /// The configfs group name (`default_tg_pt_gp`, ...).
    pub name: String,
    /// TARGET PORT GROUP (`tg_pt_gp_id`).
    pub id: u16,
    /// Asymmetric access state ([`state`]).
    pub state: u8,
    /// Supported-states bits ([`supported`]).
    pub supported: u8,
    /// STATUS CODE ([`status`]).
    pub status: u8,
    /// PREF bit (`preferred`).
    pub preferred: bool,
    /// Implicit transitions allowed (`alua_access_type` includes Implicit).
    pub implicit: bool,
    /// Explicit transitions allowed (`alua_access_type` includes Explicit).
    pub explicit: bool,
    /// IMPLICIT TRANSITION TIME in seconds (`implicit_trans_secs`).
    pub implicit_trans_secs: u8,
    /// The member ports (`members`).
    pub ports: Vec<TargetPort>,
}

/// The target port groups of a logical unit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Alua {
    /// Groups in ascending id order.
    pub groups: Vec<PortGroup>,
}

impl Alua {
    /// TPGS for standard INQUIRY: implicit ALUA (`0x10`) when any group
    /// allows implicit transitions, else 0. Explicit ALUA is never claimed:
    /// SET TARGET PORT GROUPS is not supported.
    pub fn tpgs(&self) -> u8 {
        if self.groups.iter().any(|g| g.implicit) {
            TPGS_IMPLICIT
        } else {
            0
        }
    }

    /// The group every enabled port of the LUN belongs to, if there is
    /// exactly one such group (the only case where the group of the port a
    /// command arrived on is known without the I_T nexus).
    pub fn local_group(&self) -> Option<&PortGroup> {
        let mut with_enabled = self
            .groups
            .iter()
            .filter(|g| g.ports.iter().any(|p| p.enabled));
        let first = with_enabled.next()?;
        with_enabled.next().is_none().then_some(first)
    }

    /// The relative target port identifier of the LUN's only enabled port.
    pub fn local_port(&self) -> Option<u16> {
        let mut enabled = self
            .groups
            .iter()
            .flat_map(|g| g.ports.iter())
            .filter(|p| p.enabled);
        let first = enabled.next()?;
        enabled.next().is_none().then_some(first.rtpi)
    }

    /// The access state that applies to every command, whatever port it
    /// arrived on: the common state of all groups holding an enabled port
    /// (None when there is no such group or their states differ).
    pub fn local_state(&self) -> Option<u8> {
        let mut states = self
            .groups
            .iter()
            .filter(|g| g.ports.iter().any(|p| p.enabled))
            .map(|g| g.state);
        let first = states.next()?;
        states.all(|s| s == first).then_some(first)
    }

    /// Whether `cdb` may run in the LUN's access state ([`Self::local_state`]),
    /// with the command lists LIO applies (SPC-4 5.15.2.4):
    ///
    /// * active/optimized, active/non-optimized, LBA dependent, unknown: all;
    /// * standby: INQUIRY, MODE SENSE/SELECT, READ CAPACITY(10/16), REQUEST
    ///   SENSE, REPORT TARGET PORT GROUPS; else NOT READY 04/0B;
    /// * unavailable: INQUIRY, REQUEST SENSE, REPORT TARGET PORT GROUPS; else
    ///   NOT READY 04/0C;
    /// * transitioning: the same three; else NOT READY 04/0A;
    /// * offline: the same three; else NOT READY 04/12.
    ///
    /// TEST UNIT READY is refused in standby, as by LIO: a path checker
    /// (multipathd's `tur`) reads 02/04/0B as a standby ("ghost") path.
    pub fn check(&self, cdb: &Cdb) -> Result<(), Sense> {
        check_state(self.local_state(), cdb)
    }

    /// REPORT TARGET PORT GROUPS parameter data (SPC-4 6.27), length-only
    /// header or, with `extended`, the extended header (format 001b and the
    /// local group's implicit transition time). Each descriptor carries PREF,
    /// the state, the supported-states bits, the group id, the status code,
    /// the port count and each port's relative target port identifier.
    /// RETURN DATA LENGTH is n - 3 in both formats (SPC-4 tables 262/263: the
    /// bytes after the field, so it includes bytes 4-7 of the extended
    /// header), which is how sg_rtpg and Linux's scsi_dh_alua read it. (LIO's
    /// own emulation counts only the descriptors, 4 bytes short with the
    /// extended header.)
    ///
    /// Writes what fits in `out`; returns the full length (the caller
    /// truncates to the allocation length).
    pub fn report(&self, extended: bool, out: &mut [u8]) -> usize {
        let header = if extended { 8 } else { 4 };
        if extended {
            put(out, 4, 0x10);
            put(
                out,
                5,
                self.local_group().map_or(0, |g| g.implicit_trans_secs),
            );
        }
        let mut pos = header;
        for g in &self.groups {
            let ports = g.ports.get(..g.ports.len().min(255)).unwrap_or(&[]);
            put(
                out,
                pos,
                if g.preferred { 0x80 } else { 0 } | (g.state & 0x0F),
            );
            put(out, pos + 1, g.supported);
            put16(out, pos + 2, g.id);
            put(out, pos + 5, g.status);
            put(out, pos + 7, u8::try_from(ports.len()).unwrap_or(u8::MAX));
            pos += 8;
            for p in ports {
                put16(out, pos + 2, p.rtpi);
                pos += 4;
            }
        }
        put32(out, 0, u32::try_from(pos - 4).unwrap_or(u32::MAX));
        pos
    }
}

/// [`Alua::check`] for a known (cached) state; None allows everything.
///
/// # Errors
/// The NOT READY sense of the state, for a command it does not allow.
pub fn check_state(state: Option<u8>, cdb: &Cdb) -> Result<(), Sense> {
    let Some(s) = state else {
        return Ok(());
    };
    let always = matches!(
        cdb,
        Cdb::Inquiry { .. } | Cdb::RequestSense { .. } | Cdb::ReportTargetPortGroups { .. }
    );
    match s {
        state::STANDBY
            if !always
                && !matches!(
                    cdb,
                    Cdb::ModeSense { .. }
                        | Cdb::ModeSelect { .. }
                        | Cdb::ReadCapacity10
                        | Cdb::ReadCapacity16 { .. }
                ) =>
        {
            Err(Sense::alua_standby())
        }
        state::UNAVAILABLE if !always => Err(Sense::alua_unavailable()),
        state::TRANSITIONING if !always => Err(Sense::not_ready_in_transition()),
        state::OFFLINE if !always => Err(Sense::alua_offline()),
        _ => Ok(()),
    }
}

/// The name LIO gives an access state.
pub fn state_name(s: u8) -> &'static str {
    match s {
        state::ACTIVE_OPTIMIZED => "Active/Optimized",
        state::ACTIVE_NON_OPTIMIZED => "Active/NonOptimized",
        state::STANDBY => "Standby",
        state::UNAVAILABLE => "Unavailable",
        state::LBA_DEPENDENT => "LBA Dependent",
        state::OFFLINE => "Offline",
        state::TRANSITIONING => "Transitioning",
        _ => "Unknown",
    }
}

/// Lock-driven implicit ALUA (docs/rbd.md, "Gateways in pairs"): the groups as seen while
/// the backing store's exclusive lock is held by this handler (`Some(true)`), by another
/// (`Some(false)`), or by nobody or unknown (`None`: the configured states stand, so the
/// gateway configured as owner starts active/optimized).
///
/// Applies only when the LUN's enabled ports are all in one group ([`Alua::local_group`])
/// that allows implicit transitions, and moves groups only between active/optimized and
/// active/non-optimized (a group an administrator put in standby, unavailable or offline
/// stays so). Holding the lock: the local group becomes active/optimized and every other
/// active/optimized group active/non-optimized. Another holds it: the local group becomes
/// active/non-optimized, and when there is exactly one other group with ports, that one (the
/// holder's) active/optimized. A group whose state changes gets status "altered by implicit ALUA".
#[must_use]
pub fn lock_driven(mut alua: Alua, held_here: Option<bool>) -> Alua {
    let Some(here) = held_here else { return alua };
    let Some(local) = alua.local_group().filter(|g| g.implicit).map(|g| g.id) else {
        return alua;
    };
    // Groups without member ports (LIO's default group once every port moved) are left as
    // they are.
    let others = alua
        .groups
        .iter()
        .filter(|g| g.id != local && !g.ports.is_empty())
        .count();
    let active = |s: u8| matches!(s, state::ACTIVE_OPTIMIZED | state::ACTIVE_NON_OPTIMIZED);
    for g in &mut alua.groups {
        // The kernel changes only groups that allow implicit transitions.
        if !active(g.state) || g.ports.is_empty() || !g.implicit {
            continue;
        }
        let want = if g.id == local {
            if here {
                state::ACTIVE_OPTIMIZED
            } else {
                state::ACTIVE_NON_OPTIMIZED
            }
        } else if here {
            state::ACTIVE_NON_OPTIMIZED
        } else if others == 1 {
            state::ACTIVE_OPTIMIZED
        } else {
            g.state
        };
        if want != g.state {
            g.state = want;
            g.status = status::ALTERED_BY_IMPLICIT_ALUA;
        }
    }
    alua
}

/// Parse `alua_access_state` (a number).
pub fn parse_state(s: &str) -> Option<u8> {
    let v: u8 = s.trim().parse().ok()?;
    matches!(
        v,
        state::ACTIVE_OPTIMIZED
            | state::ACTIVE_NON_OPTIMIZED
            | state::STANDBY
            | state::UNAVAILABLE
            | state::LBA_DEPENDENT
            | state::OFFLINE
            | state::TRANSITIONING
    )
    .then_some(v)
}

/// Parse `alua_access_status` as LIO prints it.
pub fn parse_status(s: &str) -> u8 {
    match s.trim() {
        "Altered by Explicit STPG" => status::ALTERED_BY_EXPLICIT_STPG,
        "Altered by Implicit ALUA" => status::ALTERED_BY_IMPLICIT_ALUA,
        _ => status::NONE,
    }
}

/// Parse `alua_access_type` as LIO prints it: (implicit, explicit).
pub fn parse_access_type(s: &str) -> (bool, bool) {
    match s.trim() {
        "Implicit" => (true, false),
        "Explicit" => (false, true),
        "Implicit and Explicit" => (true, true),
        _ => (false, false),
    }
}

/// One line of `members`: `<fabric>/<wwn>/tpgt_<tag>/<lun dir>`, as
/// (fabric, wwn, tag, lun directory name).
pub fn parse_member(line: &str) -> Option<(&str, &str, u16, &str)> {
    let mut parts = line.trim().splitn(4, '/');
    let fabric = parts.next().filter(|s| !s.is_empty())?;
    let wwn = parts.next().filter(|s| !s.is_empty())?;
    let tag = parts.next()?.strip_prefix("tpgt_")?.parse().ok()?;
    let lun = parts
        .next()
        .filter(|s| s.starts_with("lun_") && !s.contains('/'))?;
    Some((fabric, wwn, tag, lun))
}

#[cfg(test)]
#[path = "alua_tests.rs"]
mod tests;
