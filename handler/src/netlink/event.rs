//! TCMU device events (`TCMU_CMD_ADDED_DEVICE`, `_REMOVED_DEVICE`, `_RECONFIG_DEVICE`) and
//! the replies that answer them.
//!
//! The kernel builds each event in `tcmu_netlink_event_init`: a genl header with the command
//! and version 2, then DEVICE (NUL-terminated uio name), MINOR (u32) and DEVICE_ID (u32);
//! a RECONFIG adds exactly one of DEV_CFG (string), DEV_SIZE (u64, possibly preceded by a
//! PAD attribute) or WRITECACHE (u8).

use tcmu_sys::genl::{attr, cmd, VERSION};

use super::codec::{self, DecodeError, MsgBuilder, NLMSG_OVERRUN, NLM_F_ACK, NLM_F_REQUEST};
use super::NetlinkError;

/// One device event from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What happened.
    pub cmd: EventKind,
    /// `TCMU_ATTR_DEVICE_ID`: the `se_device` index; echoed in the reply.
    pub device_id: u32,
    /// `TCMU_ATTR_MINOR`: the uio minor (`/dev/uio<minor>`).
    pub minor: u32,
    /// `TCMU_ATTR_DEVICE`: the uio name, `tcm-user/<hba>/<name>/<subtype>/<cfgstring>`.
    pub device: String,
}

/// The kind of a device event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// `TCMU_CMD_ADDED_DEVICE`: the device was enabled; `/dev/uio<minor>` exists.
    Added,
    /// `TCMU_CMD_REMOVED_DEVICE`: the device is being removed (uio still registered).
    Removed,
    /// `TCMU_CMD_RECONFIG_DEVICE`: an attribute write asks the handler to accept a change.
    Reconfig(Reconfig),
}

/// The change a RECONFIG asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reconfig {
    /// `attrib/dev_config` was written: the new config string (the uio name changes too).
    DevCfg(String),
    /// `attrib/dev_size` was written: the new size in bytes.
    DevSize(u64),
    /// `attrib/emulate_write_cache` was written.
    WriteCache(bool),
}

impl EventKind {
    /// The TCMU command number of this event.
    #[must_use]
    pub fn cmd(&self) -> u8 {
        match self {
            Self::Added => cmd::ADDED_DEVICE,
            Self::Removed => cmd::REMOVED_DEVICE,
            Self::Reconfig(_) => cmd::RECONFIG_DEVICE,
        }
    }

    /// The one `*_DONE` command that answers this event. Replying with any other makes the
    /// kernel drop the pending request without completing it (docs/kernel-abi.md pitfall 33).
    #[must_use]
    pub fn done_cmd(&self) -> u8 {
        match self {
            Self::Added => cmd::ADDED_DEVICE_DONE,
            Self::Removed => cmd::REMOVED_DEVICE_DONE,
            Self::Reconfig(_) => cmd::RECONFIG_DEVICE_DONE,
        }
    }
}

/// The `*_DONE` command answering event command `event_cmd`, if it is an event.
#[must_use]
pub fn done_cmd_for(event_cmd: u8) -> Option<u8> {
    match event_cmd {
        cmd::ADDED_DEVICE => Some(cmd::ADDED_DEVICE_DONE),
        cmd::REMOVED_DEVICE => Some(cmd::REMOVED_DEVICE_DONE),
        cmd::RECONFIG_DEVICE => Some(cmd::RECONFIG_DEVICE_DONE),
        _ => None,
    }
}

/// Human name of a `*_DONE` / request command, for errors and logs.
#[must_use]
pub fn request_name(c: u8) -> &'static str {
    match c {
        cmd::ADDED_DEVICE_DONE => "ADDED_DEVICE_DONE",
        cmd::REMOVED_DEVICE_DONE => "REMOVED_DEVICE_DONE",
        cmd::RECONFIG_DEVICE_DONE => "RECONFIG_DEVICE_DONE",
        cmd::SET_FEATURES => "SET_FEATURES",
        _ => "TCMU request",
    }
}

/// Encode a `*_DONE` reply: CMD_STATUS (s32) then DEVICE_ID (u32), version 2, asking for
/// an acknowledgement.
#[must_use]
pub fn encode_done(family: u16, seq: u32, done_cmd: u8, device_id: u32, status: i32) -> Vec<u8> {
    MsgBuilder::new(family, NLM_F_REQUEST | NLM_F_ACK, seq, done_cmd, VERSION)
        .attr_i32(attr::CMD_STATUS, status)
        .attr_u32(attr::DEVICE_ID, device_id)
        .finish()
}

/// Encode `SET_FEATURES` with SUPP_KERN_CMD_REPLY (u8), asking for an acknowledgement.
#[must_use]
pub fn encode_set_features(family: u16, seq: u32, kern_cmd_reply: bool) -> Vec<u8> {
    MsgBuilder::new(
        family,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        cmd::SET_FEATURES,
        VERSION,
    )
    .attr_u8(attr::SUPP_KERN_CMD_REPLY, u8::from(kern_cmd_reply))
    .finish()
}

/// Decode the payload (everything after the nlmsghdr) of one TCM-USER message.
///
/// # Errors
/// [`NetlinkError::Malformed`] when not even the genl header is there;
/// [`NetlinkError::MalformedEvent`] otherwise, carrying the command and, when it could be
/// read, the DEVICE_ID, so the caller can still answer the kernel (with `-EINVAL`).
pub fn decode_event(payload: &[u8]) -> Result<Event, NetlinkError> {
    let (hdr, attr_bytes) = codec::split_genl(payload)?;
    let mut f = Fields::default();
    for a in codec::attrs(attr_bytes) {
        match a {
            Ok(a) => f.take(a),
            Err(e) => {
                f.note(e);
                break;
            }
        }
    }
    let device_id = f.device_id;
    let command = hdr.cmd;
    let malformed = |error| NetlinkError::MalformedEvent {
        cmd: command,
        device_id,
        error,
    };
    if let Some(e) = f.error.take() {
        return Err(malformed(e));
    }
    let kind = match hdr.cmd {
        cmd::ADDED_DEVICE => EventKind::Added,
        cmd::REMOVED_DEVICE => EventKind::Removed,
        cmd::RECONFIG_DEVICE => match (f.dev_cfg.take(), f.dev_size, f.write_cache) {
            (Some(c), None, None) => EventKind::Reconfig(Reconfig::DevCfg(c)),
            (None, Some(s), None) => EventKind::Reconfig(Reconfig::DevSize(s)),
            (None, None, Some(w)) => EventKind::Reconfig(Reconfig::WriteCache(w)),
            (None, None, None) => {
                return Err(malformed(DecodeError::MissingAttr(
                    "DEV_CFG|DEV_SIZE|WRITECACHE",
                )))
            }
            _ => return Err(malformed(DecodeError::AmbiguousReconfig)),
        },
        other => return Err(malformed(DecodeError::UnknownCommand(other))),
    };
    let device = f
        .device
        .take()
        .ok_or_else(|| malformed(DecodeError::MissingAttr("DEVICE")))?;
    let minor = f
        .minor
        .ok_or_else(|| malformed(DecodeError::MissingAttr("MINOR")))?;
    let device_id = device_id.ok_or_else(|| malformed(DecodeError::MissingAttr("DEVICE_ID")))?;
    Ok(Event {
        cmd: kind,
        device_id,
        minor,
        device,
    })
}

/// Attribute values seen so far; the first decoding error is kept, but the remaining
/// well-framed attributes are still read so DEVICE_ID is known for the reply.
#[derive(Default)]
struct Fields {
    device: Option<String>,
    minor: Option<u32>,
    device_id: Option<u32>,
    dev_cfg: Option<String>,
    dev_size: Option<u64>,
    write_cache: Option<bool>,
    error: Option<DecodeError>,
}

impl Fields {
    fn note(&mut self, e: DecodeError) {
        self.error.get_or_insert(e);
    }

    fn set<T>(&mut self, r: Result<T, DecodeError>) -> Option<T> {
        r.map_err(|e| self.note(e)).ok()
    }

    fn take(&mut self, a: codec::Attr<'_>) {
        match a.ty {
            attr::DEVICE => self.device = self.set(a.string("DEVICE")),
            attr::MINOR => self.minor = self.set(a.u32("MINOR")),
            attr::DEVICE_ID => self.device_id = self.set(a.u32("DEVICE_ID")),
            attr::DEV_CFG => self.dev_cfg = self.set(a.string("DEV_CFG")),
            attr::DEV_SIZE => self.dev_size = self.set(a.u64("DEV_SIZE")),
            attr::WRITECACHE => self.write_cache = self.set(a.u8("WRITECACHE")).map(|v| v != 0),
            // PAD (alignment for DEV_SIZE) and anything newer kernels may add.
            _ => {}
        }
    }
}

/// Decode every TCM-USER event in one datagram, in order. Messages of other types
/// (other families, `NLMSG_NOOP`, `NLMSG_DONE`, stray acks) are skipped. A framing error
/// ends the datagram (its remaining bytes cannot be located) and is reported in place.
#[must_use]
pub fn decode_datagram(buf: &[u8], family: u16) -> Vec<Result<Event, NetlinkError>> {
    let mut out = Vec::new();
    for m in codec::messages(buf) {
        match m {
            Err(e) => out.push(Err(NetlinkError::Malformed(e))),
            Ok(m) if m.ty == family => out.push(decode_event(m.payload)),
            Ok(m) if m.ty == NLMSG_OVERRUN => out.push(Err(NetlinkError::Overrun)),
            Ok(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FAM: u16 = 0x1b;

    /// ADDED_DEVICE exactly as the 6.1 kernel multicasts it for
    /// `tcm-user/1/disk0/file/img` (uio minor 3, se_device index 5).
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    const ADDED: &[u8] = &[
        68, 0, 0, 0,  0x1b, 0,  0, 0,  0, 0, 0, 0,  0, 0, 0, 0,  // nlmsghdr, seq 0 pid 0
        1, 2, 0, 0,                                              // ADDED_DEVICE v2
        // DEVICE: 25 chars + NUL = 26 → nla_len 30, padded to 32
        30, 0, 1, 0,
        b't', b'c', b'm', b'-', b'u', b's', b'e', b'r', b'/', b'1', b'/', b'd', b'i',
        b's', b'k', b'0', b'/', b'f', b'i', b'l', b'e', b'/', b'i', b'm', b'g', 0, 0, 0,
        8, 0, 2, 0,  3, 0, 0, 0,                                 // MINOR 3
        8, 0, 8, 0,  5, 0, 0, 0,                                 // DEVICE_ID 5
    ];

    fn base(c: u8) -> MsgBuilder {
        MsgBuilder::new(FAM, 0, 0, c, 2)
            .attr_str(attr::DEVICE, "tcm-user/1/disk0/file/img")
            .attr_u32(attr::MINOR, 3)
            .attr_u32(attr::DEVICE_ID, 5)
    }

    fn one(buf: &[u8]) -> Result<Event, NetlinkError> {
        let mut v = decode_datagram(buf, FAM);
        assert_eq!(v.len(), 1, "{v:?}");
        v.remove(0)
    }

    fn ev(kind: EventKind) -> Event {
        Event {
            cmd: kind,
            device_id: 5,
            minor: 3,
            device: "tcm-user/1/disk0/file/img".into(),
        }
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn added_fixture() {
        assert_eq!(one(ADDED).unwrap(), ev(EventKind::Added));
        // The builder produces the same bytes as the hand-written fixture.
        assert_eq!(base(cmd::ADDED_DEVICE).finish(), ADDED);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn reconfig_dev_size_after_pad() {
        // nla_put_u64_64bit on an arch needing alignment: a 4-byte PAD attr first, so the
        // u64 payload is 8-aligned within the skb.
        let mut m = base(cmd::RECONFIG_DEVICE).finish();
        m.extend_from_slice(&[4, 0, 3, 0]); // PAD
        m.extend_from_slice(&[12, 0, 5, 0, 0, 0, 0, 0x40, 0, 0, 0, 0]); // DEV_SIZE 1 GiB
        m[0] = u8::try_from(m.len()).unwrap();
        assert_eq!(
            one(&m).unwrap(),
            ev(EventKind::Reconfig(Reconfig::DevSize(1 << 30)))
        );
        // Without PAD (x86-64: efficient unaligned access).
        let m = base(cmd::RECONFIG_DEVICE)
            .attr(attr::DEV_SIZE, &(5u64 << 40).to_ne_bytes())
            .finish();
        assert_eq!(
            one(&m).unwrap(),
            ev(EventKind::Reconfig(Reconfig::DevSize(5 << 40)))
        );
    }

    #[test]
    fn reconfig_dev_cfg_and_write_cache() {
        let m = base(cmd::RECONFIG_DEVICE)
            .attr_str(attr::DEV_CFG, "file//new/path")
            .finish();
        assert_eq!(
            one(&m).unwrap(),
            ev(EventKind::Reconfig(Reconfig::DevCfg(
                "file//new/path".into()
            )))
        );
        for (v, b) in [(0u8, false), (1, true)] {
            let m = base(cmd::RECONFIG_DEVICE)
                .attr_u8(attr::WRITECACHE, v)
                .finish();
            assert_eq!(
                one(&m).unwrap(),
                ev(EventKind::Reconfig(Reconfig::WriteCache(b)))
            );
        }
    }

    #[test]
    fn removed() {
        let m = base(cmd::REMOVED_DEVICE).finish();
        assert_eq!(one(&m).unwrap(), ev(EventKind::Removed));
    }

    #[test]
    fn malformed_events_carry_reply_target() {
        let m = base(cmd::RECONFIG_DEVICE).finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                cmd: 3,
                device_id: Some(5),
                error: DecodeError::MissingAttr(_)
            })
        ));
        let m = base(cmd::RECONFIG_DEVICE)
            .attr_u8(attr::WRITECACHE, 1)
            .attr_str(attr::DEV_CFG, "x")
            .finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                error: DecodeError::AmbiguousReconfig,
                ..
            })
        ));
        let m = MsgBuilder::new(FAM, 0, 0, 1, 2)
            .attr_u32(attr::DEVICE_ID, 9)
            .finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                cmd: 1,
                device_id: Some(9),
                error: DecodeError::MissingAttr("DEVICE")
            })
        ));
        // Non-UTF-8 uio name (a cfgstring can hold any bytes): still answerable.
        let m = MsgBuilder::new(FAM, 0, 0, 1, 2)
            .attr(attr::DEVICE, &[b'a', 0xff, 0])
            .attr_u32(attr::MINOR, 0)
            .attr_u32(attr::DEVICE_ID, 7)
            .finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                device_id: Some(7),
                error: DecodeError::NotUtf8("DEVICE"),
                ..
            })
        ));
        // Wrong-sized MINOR.
        let m = MsgBuilder::new(FAM, 0, 0, 2, 2)
            .attr_str(attr::DEVICE, "d")
            .attr(attr::MINOR, &[1, 2])
            .attr_u32(attr::DEVICE_ID, 1)
            .finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                device_id: Some(1),
                error: DecodeError::BadAttrSize { name: "MINOR", .. },
                ..
            })
        ));
        // A command only userspace sends.
        let m = base(cmd::SET_FEATURES).finish();
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                error: DecodeError::UnknownCommand(7),
                ..
            })
        ));
        // No genl header.
        let mut m = MsgBuilder::new(FAM, 0, 0, 1, 2).finish();
        m.truncate(16);
        m[0] = 16;
        assert!(matches!(
            one(&m),
            Err(NetlinkError::Malformed(DecodeError::Truncated {
                what: "genlmsghdr",
                ..
            }))
        ));
    }

    #[test]
    fn truncated_attribute() {
        let mut m = base(cmd::ADDED_DEVICE).finish();
        // Claim a longer DEVICE_ID attribute than the message holds.
        let n = m.len();
        m[n - 8] = 40;
        assert!(matches!(
            one(&m),
            Err(NetlinkError::MalformedEvent {
                error: DecodeError::BadAttrLength { .. },
                ..
            })
        ));
    }

    #[test]
    fn several_messages_and_foreign_ones() {
        let mut dg = MsgBuilder::new(0x30, 0, 0, 1, 1).attr_u32(1, 1).finish(); // other family
        dg.extend(base(cmd::ADDED_DEVICE).finish());
        dg.extend(MsgBuilder::new(codec::NLMSG_NOOP, 0, 0, 0, 0).finish());
        dg.extend(base(cmd::REMOVED_DEVICE).finish());
        let v: Vec<_> = decode_datagram(&dg, FAM)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(v, vec![ev(EventKind::Added), ev(EventKind::Removed)]);
        // Garbage after a good message: the good one survives, then one framing error.
        let mut dg = base(cmd::ADDED_DEVICE).finish();
        dg.extend_from_slice(&[1, 2, 3]);
        let v = decode_datagram(&dg, FAM);
        assert_eq!(v.len(), 2);
        assert!(v[0].is_ok());
        assert!(matches!(
            v[1],
            Err(NetlinkError::Malformed(DecodeError::Truncated { .. }))
        ));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn done_bytes() {
        for (kind, c) in [
            (EventKind::Added, 4u8),
            (EventKind::Removed, 5),
            (EventKind::Reconfig(Reconfig::WriteCache(true)), 6),
        ] {
            assert_eq!(kind.done_cmd(), c);
            assert_eq!(done_cmd_for(kind.cmd()), Some(c));
            let m = encode_done(0x1b, 0x0102_0304, kind.done_cmd(), 5, -22);
            #[rustfmt::skip]
            let want: [u8; 36] = [
                36, 0, 0, 0,  0x1b, 0,  5, 0,  4, 3, 2, 1,  0, 0, 0, 0,  // REQUEST|ACK
                c, 2, 0, 0,                                              // *_DONE v2
                8, 0, 7, 0,  0xea, 0xff, 0xff, 0xff,                     // CMD_STATUS -22
                8, 0, 8, 0,  5, 0, 0, 0,                                 // DEVICE_ID 5
            ];
            assert_eq!(m, want);
        }
        assert_eq!(done_cmd_for(4), None);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn set_features_bytes() {
        #[rustfmt::skip]
        let want: [u8; 28] = [
            28, 0, 0, 0,  0x1b, 0,  5, 0,  1, 0, 0, 0,  0, 0, 0, 0,
            7, 2, 0, 0,
            5, 0, 9, 0,  1, 0, 0, 0,                                 // SUPP_KERN_CMD_REPLY 1
        ];
        assert_eq!(encode_set_features(0x1b, 1, true), want);
        assert_eq!(encode_set_features(0x1b, 1, false)[24], 0);
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_datagram(&bytes, FAM);
            let _ = decode_event(&bytes);
        }

        #[test]
        fn valid_header_random_attrs_never_panic(
            c in 0u8..9,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut m = MsgBuilder::new(FAM, 0, 0, c, 2).finish();
            m.extend_from_slice(&body);
            if let Ok(len) = u32::try_from(m.len()) {
                m[..4].copy_from_slice(&len.to_ne_bytes());
            }
            let _ = decode_datagram(&m, FAM);
        }

        #[test]
        fn roundtrip(name in "[ -~]{0,200}", minor in any::<u32>(), id in any::<u32>(),
                     size in any::<u64>(), pad in any::<bool>()) {
            let mut m = MsgBuilder::new(FAM, 0, 0, cmd::RECONFIG_DEVICE, 2)
                .attr_str(attr::DEVICE, &name)
                .attr_u32(attr::MINOR, minor)
                .attr_u32(attr::DEVICE_ID, id);
            if pad {
                m = m.attr(attr::PAD, &[]);
            }
            let m = m.attr(attr::DEV_SIZE, &size.to_ne_bytes()).finish();
            let e = decode_event(&m[16..]).unwrap();
            prop_assert_eq!(e, Event { cmd: EventKind::Reconfig(Reconfig::DevSize(size)), device_id: id, minor, device: name });
        }
    }
}
