//! Fuzz the generic netlink codec and the TCMU event decoder.
//!
//! The input is used twice:
//! 1. as a raw datagram from the kernel: `decode_datagram`, `messages`, `attrs`,
//!    `parse_family` and `parse_ack` must not panic, the message iterator yields at most one
//!    error and only as its last item, and every event decoded from it must survive
//!    encode-then-decode unchanged (encoded as the kernel builds it);
//! 2. as a recipe for a well-formed event (command, ids, strings, reconfig value): encoding
//!    it and decoding the datagram must give back exactly that event. The same holds for the
//!    replies the daemon sends (`encode_done`, `encode_set_features`) and for a
//!    `CTRL_CMD_NEWFAMILY` reply built from the recipe.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tcmu_sys::genl::{attr, cmd, VERSION};
use tcmu_warden::netlink::codec::{
    self, MsgBuilder, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_MCAST_GROUPS, CTRL_ATTR_MCAST_GRP_ID,
    CTRL_ATTR_MCAST_GRP_NAME, GENL_ID_CTRL,
};
use tcmu_warden::netlink::event::{decode_datagram, encode_done, encode_set_features};
use tcmu_warden::netlink::{Event, EventKind, NetlinkError, Reconfig};

/// The family id the kernel gave TCM-USER in these tests.
const FAM: u16 = 0x1b;

/// The datagram the kernel would multicast for `ev` (`tcmu_netlink_event_init` and
/// `tcmu_netlink_event_send`: DEVICE, MINOR, DEVICE_ID, then the RECONFIG attribute, DEV_SIZE
/// as a 64-bit attribute after a PAD when `pad`).
fn encode_event(ev: &Event, seq: u32, pad: bool) -> Vec<u8> {
    let mut m = MsgBuilder::new(FAM, 0, seq, ev.cmd.cmd(), VERSION)
        .attr_str(attr::DEVICE, &ev.device)
        .attr_u32(attr::MINOR, ev.minor)
        .attr_u32(attr::DEVICE_ID, ev.device_id);
    match &ev.cmd {
        EventKind::Added | EventKind::Removed => {}
        EventKind::Reconfig(Reconfig::DevCfg(c)) => m = m.attr_str(attr::DEV_CFG, c),
        EventKind::Reconfig(Reconfig::DevSize(s)) => {
            if pad {
                m = m.attr(attr::PAD, &[]);
            }
            m = m.attr(attr::DEV_SIZE, &s.to_ne_bytes());
        }
        EventKind::Reconfig(Reconfig::WriteCache(w)) => {
            m = m.attr_u8(attr::WRITECACHE, u8::from(*w));
        }
    }
    m.finish()
}

/// An attribute string cannot carry a NUL (the decoder stops at the first one) and must fit
/// in `nla_len`.
fn encodable(s: &str) -> bool {
    !s.contains('\0') && s.len() < 60_000
}

/// `got` is exactly the events `want`, all decoded without error.
fn same(got: &[Result<Event, NetlinkError>], want: &[&Event]) -> bool {
    got.len() == want.len()
        && got
            .iter()
            .zip(want)
            .all(|(g, w)| matches!(g, Ok(e) if e == *w))
}

fn raw(data: &[u8]) {
    let events = decode_datagram(data, FAM);
    for ev in events.iter().flatten() {
        if encodable(&ev.device)
            && !matches!(&ev.cmd, EventKind::Reconfig(Reconfig::DevCfg(c)) if !encodable(c))
        {
            for pad in [false, true] {
                let again = decode_datagram(&encode_event(ev, 7, pad), FAM);
                assert!(same(&again, &[ev]), "{ev:?} came back as {again:?}");
            }
        }
    }
    let mut failed = false;
    let mut n = 0usize;
    for m in codec::messages(data) {
        assert!(!failed, "message iterator went on after an error");
        n += 1;
        match m {
            Ok(m) => {
                assert!(m.payload.len() + codec::NLMSG_HDRLEN <= data.len());
                if let Ok((_, a)) = codec::split_genl(m.payload) {
                    let _ = codec::parse_family(a, "config");
                    let mut attr_failed = false;
                    for at in codec::attrs(a) {
                        assert!(!attr_failed, "attribute iterator went on after an error");
                        match at {
                            Ok(at) => {
                                assert!(at.ty <= codec::NLA_TYPE_MASK);
                                assert!(at.payload.len() + codec::NLA_HDRLEN <= a.len());
                                let _ = at.string("fuzz");
                            }
                            Err(_) => attr_failed = true,
                        }
                    }
                }
                let _ = codec::parse_ack(m.flags, m.payload);
            }
            Err(_) => failed = true,
        }
    }
    // decode_datagram reports every message of the family, every overrun and the framing
    // error, so it never has more entries than there are messages.
    assert!(events.len() <= n);
}

/// A small cursor over the recipe bytes; missing bytes read as zero.
struct Recipe<'a>(&'a [u8]);

impl Recipe<'_> {
    fn u8(&mut self) -> u8 {
        match self.0.split_first() {
            Some((&b, rest)) => {
                self.0 = rest;
                b
            }
            None => 0,
        }
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }
    fn u64(&mut self) -> u64 {
        u64::from(self.u32()) << 32 | u64::from(self.u32())
    }
    /// A string of up to 63 bytes, NULs replaced (lossy UTF-8).
    fn string(&mut self) -> String {
        let n = usize::from(self.u8() % 64).min(self.0.len());
        let (s, rest) = self.0.split_at(n);
        self.0 = rest;
        String::from_utf8_lossy(s).replace('\0', "@")
    }
}

fn recipe(data: &[u8]) {
    let mut r = Recipe(data);
    let sel = r.u8();
    let device_id = r.u32();
    let minor = r.u32();
    let seq = r.u32();
    let device = r.string();
    let kind = match sel % 6 {
        0 => EventKind::Added,
        1 => EventKind::Removed,
        2 => EventKind::Reconfig(Reconfig::DevCfg(r.string())),
        3 => EventKind::Reconfig(Reconfig::DevSize(r.u64())),
        4 => EventKind::Reconfig(Reconfig::WriteCache(r.u8() & 1 != 0)),
        _ => EventKind::Reconfig(Reconfig::DevSize(u64::MAX - u64::from(r.u8()))),
    };
    let ev = Event {
        cmd: kind,
        device_id,
        minor,
        device,
    };
    let dgram = encode_event(&ev, seq, sel & 0x80 != 0);
    let got = decode_datagram(&dgram, FAM);
    assert!(same(&got, &[&ev]), "{ev:?} came back as {got:?}");
    // Two events in one datagram come back in order; a foreign family in between is skipped.
    let mut two = dgram.clone();
    two.extend_from_slice(&MsgBuilder::new(FAM + 1, 0, 0, 1, 1).attr_u8(1, 1).finish());
    two.extend_from_slice(&dgram);
    let got = decode_datagram(&two, FAM);
    assert!(
        same(&got, &[&ev, &ev]),
        "two of {ev:?} came back as {got:?}"
    );
    // A truncated datagram is an error, never a different event.
    if sel & 0x40 != 0 && dgram.len() > 1 {
        let cut = 1 + usize::from(r.u8()) % (dgram.len() - 1);
        for e in decode_datagram(&dgram[..cut], FAM) {
            assert!(e.is_err(), "a datagram cut at {cut} decoded as {e:?}");
        }
    }

    // The daemon's replies decode to what was encoded.
    let status = r.u32() as i32;
    let done = encode_done(FAM, seq, ev.cmd.done_cmd(), ev.device_id, status);
    let msgs: Vec<_> = codec::messages(&done).collect();
    assert_eq!(msgs.len(), 1);
    let m = msgs[0].clone().expect("reply frames");
    assert_eq!((m.ty, m.seq), (FAM, seq));
    let (h, a) = codec::split_genl(m.payload).expect("genl header");
    assert_eq!((h.cmd, h.version), (ev.cmd.done_cmd(), VERSION));
    let a: Vec<_> = codec::attrs(a).map(|x| x.expect("attr")).collect();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].ty, attr::CMD_STATUS);
    assert_eq!(a[0].u32("CMD_STATUS").map(|v| v as i32), Ok(status));
    assert_eq!(a[1].u32("DEVICE_ID"), Ok(ev.device_id));
    let sf = encode_set_features(FAM, seq, sel & 1 != 0);
    let m = codec::messages(&sf)
        .next()
        .expect("one message")
        .expect("frames");
    let (h, a) = codec::split_genl(m.payload).expect("genl header");
    assert_eq!(h.cmd, cmd::SET_FEATURES);
    let a = codec::attrs(a).next().expect("one attr").expect("frames");
    assert_eq!(a.u8("SUPP_KERN_CMD_REPLY"), Ok(sel & 1));

    // nlctrl's answer to GETFAMILY: the id, and the group looked up by name among others.
    let (fam_id, grp_id) = (r.u32() as u16, r.u32());
    let other = r.string();
    let group = |name: &str, id: u32| {
        MsgBuilder::new(0, 0, 0, 0, 0)
            .attr_str(CTRL_ATTR_MCAST_GRP_NAME, name)
            .attr_u32(CTRL_ATTR_MCAST_GRP_ID, id)
            .finish()[codec::NLMSG_HDRLEN + codec::GENL_HDRLEN..]
            .to_vec()
    };
    let mut groups = Vec::new();
    for (i, g) in [group(&other, grp_id ^ 1), group("config", grp_id)]
        .iter()
        .enumerate()
    {
        groups.extend_from_slice(&u16::try_from(4 + g.len()).unwrap().to_ne_bytes());
        groups.extend_from_slice(&(u16::try_from(i).unwrap() + 1).to_ne_bytes());
        groups.extend_from_slice(g);
    }
    let reply = MsgBuilder::new(GENL_ID_CTRL, 0, seq, codec::CTRL_CMD_NEWFAMILY, 2)
        .attr(CTRL_ATTR_FAMILY_ID, &fam_id.to_ne_bytes())
        .attr(CTRL_ATTR_MCAST_GROUPS, &groups)
        .finish();
    let m = codec::messages(&reply)
        .next()
        .expect("one")
        .expect("frames");
    let (_, a) = codec::split_genl(m.payload).expect("genl header");
    let info = codec::parse_family(a, "config").expect("family reply");
    assert_eq!(info.id, fam_id);
    // The last group named "config" wins (`other` may be "config" too).
    assert_eq!(info.group, Some(grp_id));
}

fuzz_target!(|data: &[u8]| {
    raw(data);
    recipe(data);
});
