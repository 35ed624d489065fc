use super::*;
use crate::bytes::{be16, be32};
use crate::cdb::{decode, Rw};
use crate::emulate::respond;
use crate::lun::LunInfo;
use crate::sense::key;

fn group(name: &str, id: u16, st: u8, ports: &[(u16, bool)]) -> PortGroup {
    PortGroup {
        name: name.to_string(),
        id,
        state: st,
        supported: 0xCF, // LIO's default: T O U S AN AO
        status: status::NONE,
        preferred: false,
        implicit: true,
        explicit: true,
        implicit_trans_secs: 0,
        ports: ports
            .iter()
            .map(|&(rtpi, enabled)| TargetPort { rtpi, enabled })
            .collect(),
    }
}

/// The VM scenario's layout: the default group (empty once the port moved)
/// and gp2 holding the LUN's only port.
fn two_groups(gp2_state: u8) -> Alua {
    let mut gp2 = group("gp2", 2, gp2_state, &[(1, true)]);
    gp2.preferred = true;
    gp2.status = status::ALTERED_BY_IMPLICIT_ALUA;
    gp2.implicit_trans_secs = 7;
    Alua {
        groups: vec![
            group("default_tg_pt_gp", 0, state::ACTIVE_OPTIMIZED, &[]),
            gp2,
        ],
    }
}

#[test]
fn rtpg_length_only_format() {
    let a = two_groups(state::STANDBY);
    let mut out = [0xAAu8; 64];
    out.fill(0);
    let n = a.report(false, &mut out);
    // 4 header + (8) + (8 + 4)
    assert_eq!(n, 24);
    assert_eq!(
        be32(&out, 0),
        20,
        "RETURN DATA LENGTH counts the descriptors"
    );
    // default_tg_pt_gp: AO, supported bits, id 0, no ports.
    assert_eq!(&out[4..12], &[0x00, 0xCF, 0, 0, 0, 0, 0, 0]);
    // gp2: PREF | standby, id 2, status implicit, 1 port, rtpi 1.
    assert_eq!(&out[12..20], &[0x82, 0xCF, 0, 2, 0, 2, 0, 1]);
    assert_eq!(&out[20..24], &[0, 0, 0, 1]);
}

#[test]
fn rtpg_extended_header() {
    let a = two_groups(state::ACTIVE_NON_OPTIMIZED);
    let mut out = [0u8; 64];
    let n = a.report(true, &mut out);
    assert_eq!(n, 28);
    assert_eq!(be32(&out, 0), 24, "n - 3: includes bytes 4-7 of the header");
    assert_eq!(out[4], 0x10, "format type 001b");
    assert_eq!(out[5], 7, "implicit transition time of the local group");
    assert_eq!(out[8 + 8], 0x81);
    assert_eq!(be16(&out, 8 + 8 + 2), 2);
}

#[test]
fn rtpg_truncates_to_the_buffer_but_reports_the_full_length() {
    let a = two_groups(state::STANDBY);
    let mut out = [0u8; 10];
    assert_eq!(a.report(false, &mut out), 24);
    assert_eq!(be32(&out, 0), 20);
    let mut none: [u8; 0] = [];
    assert_eq!(a.report(true, &mut none), 28);
}

#[test]
fn rtpg_through_decode_and_respond() {
    let mut lun = LunInfo::new(512, 2048, "abc");
    let cdb_ext = decode(&[0xA3, 0x2A, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap();
    assert_eq!(
        cdb_ext,
        Cdb::ReportTargetPortGroups {
            extended: true,
            alloc_len: 256
        }
    );
    let cdb = decode(&[0xA3, 0x0A, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0]).unwrap();
    assert_eq!(crate::cdb::data_in_len(&cdb, 512), 8);
    // Without groups: refused as an unsupported service action.
    let mut out = [0u8; 256];
    let e = respond(&cdb, &lun, &mut out).unwrap_err();
    assert_eq!((e.key, e.asc, e.ascq), (key::ILLEGAL_REQUEST, 0x24, 0));
    lun.alua = Some(two_groups(state::ACTIVE_OPTIMIZED));
    assert_eq!(respond(&cdb, &lun, &mut out).unwrap(), 24);
    assert_eq!(respond(&cdb_ext, &lun, &mut out).unwrap(), 28);
    // Reserved parameter data formats.
    for b1 in [0x4A, 0xEA] {
        let e = decode(&[0xA3, b1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]).unwrap_err();
        assert_eq!((e.key, e.asc), (key::ILLEGAL_REQUEST, 0x24));
    }
}

#[test]
fn local_group_and_port_only_when_unambiguous() {
    let a = two_groups(state::STANDBY);
    assert_eq!(a.local_group().map(|g| g.id), Some(2));
    assert_eq!(a.local_port(), Some(1));
    assert_eq!(a.local_state(), Some(state::STANDBY));
    // Two enabled ports in different groups with different states: unknown.
    let mut b = two_groups(state::STANDBY);
    b.groups[0].ports.push(TargetPort {
        rtpi: 3,
        enabled: true,
    });
    assert!(b.local_group().is_none());
    assert!(b.local_port().is_none());
    assert_eq!(b.local_state(), None);
    // ... with the same state, the state is known but not the group.
    b.groups[0].state = state::STANDBY;
    assert_eq!(b.local_state(), Some(state::STANDBY));
    assert!(b.local_group().is_none());
    // A disabled port (another gateway's TPG) does not count.
    b.groups[0].ports[0].enabled = false;
    assert_eq!(b.local_group().map(|g| g.id), Some(2));
    // Two enabled ports in one group: the group is known, the port is not.
    let c = Alua {
        groups: vec![group("g", 5, 0, &[(1, true), (2, true)])],
    };
    assert_eq!(c.local_group().map(|g| g.id), Some(5));
    assert_eq!(c.local_port(), None);
    // No members at all (LUN not exported): nothing known, nothing enforced.
    let d = Alua {
        groups: vec![group("default_tg_pt_gp", 0, state::STANDBY, &[])],
    };
    assert_eq!(d.local_state(), None);
    assert!(d.check(&Cdb::TestUnitReady).is_ok());
}

fn read() -> Cdb {
    Cdb::Read(Rw {
        lba: 0,
        blocks: 1,
        fua: false,
        dpo: false,
    })
}

fn sense_of(a: &Alua, c: &Cdb) -> Option<(u8, u8, u8)> {
    a.check(c).err().map(|s| (s.key, s.asc, s.ascq))
}

#[test]
fn access_state_checks() {
    let inq = Cdb::Inquiry {
        evpd: false,
        page: 0,
        alloc_len: 96,
    };
    let rtpg = Cdb::ReportTargetPortGroups {
        extended: false,
        alloc_len: 64,
    };
    let rs = Cdb::RequestSense {
        desc: false,
        alloc_len: 18,
    };
    let rc = Cdb::ReadCapacity10;
    for st in [
        state::ACTIVE_OPTIMIZED,
        state::ACTIVE_NON_OPTIMIZED,
        state::LBA_DEPENDENT,
    ] {
        let a = two_groups(st);
        for c in [read(), Cdb::TestUnitReady, inq, rtpg, rc] {
            assert_eq!(sense_of(&a, &c), None, "state {st} {c:?}");
        }
    }
    let standby = two_groups(state::STANDBY);
    assert_eq!(sense_of(&standby, &read()), Some((key::NOT_READY, 4, 0x0B)));
    assert_eq!(
        sense_of(&standby, &Cdb::TestUnitReady),
        Some((key::NOT_READY, 4, 0x0B))
    );
    for c in [inq, rtpg, rs, rc] {
        assert_eq!(sense_of(&standby, &c), None, "{c:?} allowed in standby");
    }
    for (st, ascq) in [
        (state::UNAVAILABLE, 0x0C),
        (state::TRANSITIONING, 0x0A),
        (state::OFFLINE, 0x12),
    ] {
        let a = two_groups(st);
        assert_eq!(sense_of(&a, &read()), Some((key::NOT_READY, 4, ascq)));
        assert_eq!(sense_of(&a, &rc), Some((key::NOT_READY, 4, ascq)));
        for c in [inq, rtpg, rs] {
            assert_eq!(sense_of(&a, &c), None, "{c:?} allowed in state {st}");
        }
    }
}

#[test]
fn inquiry_tpgs_and_vpd83_designators() {
    let mut lun = LunInfo::new(512, 2048, "abc");
    let std = Cdb::Inquiry {
        evpd: false,
        page: 0,
        alloc_len: 96,
    };
    let vpd = Cdb::Inquiry {
        evpd: true,
        page: 0x83,
        alloc_len: 512,
    };
    let mut out = [0u8; 512];
    respond(&std, &lun, &mut out).unwrap();
    assert_eq!(out[5] & 0x30, 0, "no ALUA: TPGS 0");
    let plain = respond(&vpd, &lun, &mut out).unwrap();
    lun.alua = Some(two_groups(state::ACTIVE_OPTIMIZED));
    respond(&std, &lun, &mut out).unwrap();
    assert_eq!(out[5] & 0x30, 0x10, "implicit ALUA");
    let n = respond(&vpd, &lun, &mut out).unwrap();
    assert_eq!(n, plain + 16);
    assert_eq!(usize::from(be16(&out, 2)), n - 4);
    assert_eq!(&out[plain..plain + 8], &[0x01, 0x14, 0, 4, 0, 0, 0, 1]);
    assert_eq!(&out[plain + 8..n], &[0x01, 0x15, 0, 4, 0, 0, 0, 2]);
    // Groups without implicit access: TPGS 0.
    let mut a = two_groups(state::ACTIVE_OPTIMIZED);
    for g in &mut a.groups {
        g.implicit = false;
    }
    lun.alua = Some(a);
    respond(&std, &lun, &mut out).unwrap();
    assert_eq!(out[5] & 0x30, 0);
}

#[test]
fn rsoc_lists_rtpg_only_with_alua() {
    let mut lun = LunInfo::new(512, 2048, "abc");
    let one = Cdb::ReportSupportedOpcodes {
        rctd: false,
        options: 3,
        opcode: 0xA3,
        service_action: 0x0A,
        alloc_len: 64,
    };
    let mut out = [0u8; 64];
    respond(&one, &lun, &mut out).unwrap();
    assert_eq!(out[1] & 0x07, 0x01, "not supported without groups");
    lun.alua = Some(Alua::default());
    respond(&one, &lun, &mut out).unwrap();
    assert_eq!(out[1] & 0x07, 0x03);
    assert_eq!(be16(&out, 2), 12);
    assert_eq!(&out[4..6], &[0xA3, 0xEA]);
}

#[test]
fn configfs_text_parsers() {
    assert_eq!(parse_state("2\n"), Some(state::STANDBY));
    assert_eq!(parse_state("15"), Some(state::TRANSITIONING));
    assert_eq!(parse_state("5"), None);
    assert_eq!(parse_state("x"), None);
    assert_eq!(
        parse_status("Altered by Implicit ALUA\n"),
        status::ALTERED_BY_IMPLICIT_ALUA
    );
    assert_eq!(parse_status("None"), status::NONE);
    assert_eq!(parse_access_type("Implicit and Explicit\n"), (true, true));
    assert_eq!(parse_access_type("Implicit"), (true, false));
    assert_eq!(parse_access_type("None"), (false, false));
    assert_eq!(
        parse_member("loopback/naa.5001405abcdef012/tpgt_1/lun_0\n"),
        Some(("loopback", "naa.5001405abcdef012", 1, "lun_0"))
    );
    assert_eq!(
        parse_member("iSCSI/iqn.2003-01.org.x:t/tpgt_3/lun_12"),
        Some(("iSCSI", "iqn.2003-01.org.x:t", 3, "lun_12"))
    );
    for bad in [
        "",
        "a/b",
        "a/b/tpg_1/lun_0",
        "a/b/tpgt_x/lun_0",
        "a/b/tpgt_1/x",
        "a//tpgt_1/lun_0",
        "a/b/tpgt_1/lun_0/x",
    ] {
        assert_eq!(parse_member(bad), None, "{bad:?}");
    }
}

/// ceph-iscsi's implicit layout seen from gateway 2: "ao" (gateway 1's TPG, disabled here)
/// and "ano2" (this gateway's enabled TPG), plus the empty default group.
fn gateway_pair() -> Alua {
    let mut ao = group("ao", 1, state::ACTIVE_OPTIMIZED, &[(1, false)]);
    ao.explicit = false;
    let mut ano = group("ano2", 2, state::ACTIVE_NON_OPTIMIZED, &[(2, true)]);
    ano.explicit = false;
    Alua {
        groups: vec![
            group("default_tg_pt_gp", 0, state::ACTIVE_OPTIMIZED, &[]),
            ao,
            ano,
        ],
    }
}

fn states(a: &Alua) -> Vec<u8> {
    a.groups.iter().map(|g| g.state).collect()
}

#[test]
fn the_lock_holder_is_active_optimized_and_the_other_gateway_non_optimized() {
    let (ao, ano) = (state::ACTIVE_OPTIMIZED, state::ACTIVE_NON_OPTIMIZED);
    // Nobody holds the lock (or unknown): the configured owner stays optimized.
    assert_eq!(states(&lock_driven(gateway_pair(), None)), [ao, ao, ano]);
    // This gateway holds it: its group is optimized, the other one non-optimized.
    let here = lock_driven(gateway_pair(), Some(true));
    assert_eq!(states(&here), [ao, ano, ao]);
    assert_eq!(here.local_state(), Some(ao));
    assert_eq!(here.groups[2].status, status::ALTERED_BY_IMPLICIT_ALUA);
    assert_eq!(
        here.groups[0].status,
        status::NONE,
        "the empty group is untouched"
    );
    // The other gateway holds it (seen from the configured owner).
    let mut owner_view = gateway_pair();
    owner_view.groups[1].ports[0].enabled = true;
    owner_view.groups[2].ports[0].enabled = false;
    assert_eq!(
        states(&lock_driven(owner_view.clone(), Some(false))),
        [ao, ano, ao]
    );
    assert_eq!(
        lock_driven(owner_view, Some(false)).local_state(),
        Some(ano)
    );
    // A group in standby stays so; an explicit-only local group is not driven.
    let mut standby = gateway_pair();
    standby.groups[1].state = state::STANDBY;
    assert_eq!(
        states(&lock_driven(standby, Some(true))),
        [ao, state::STANDBY, ao]
    );
    let mut explicit = gateway_pair();
    explicit.groups[2].implicit = false;
    assert_eq!(states(&lock_driven(explicit, Some(true))), [ao, ao, ano]);
    // With three gateways and the lock elsewhere, which remote group holds it is unknown:
    // only the local group changes.
    let mut three = gateway_pair();
    three.groups[2].state = ao;
    three.groups.push(group("ano3", 3, ano, &[(3, false)]));
    assert_eq!(states(&lock_driven(three, Some(false))), [ao, ao, ano, ano]);
}
