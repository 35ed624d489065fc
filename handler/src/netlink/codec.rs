//! A small, allocation-light codec for generic netlink: message framing (`nlmsghdr`), the
//! generic netlink header (`genlmsghdr`), attributes (`nlattr`), kernel acknowledgements
//! (`nlmsgerr`) and the `nlctrl` family-resolution reply.
//!
//! Every decoder works on a borrowed byte slice, checks each length before it reads, and
//! returns a [`DecodeError`] naming what was wrong; nothing here panics on input. All
//! integers are in host byte order, as netlink uses them.
//!
//! Layout (all lengths 4-byte aligned):
//!
//! ```text
//! nlmsghdr   u32 len | u16 type | u16 flags | u32 seq | u32 pid      (16 bytes)
//! genlmsghdr u8 cmd  | u8 version | u16 reserved                     (4 bytes)
//! nlattr     u16 len (header + payload, unpadded) | u16 type | payload | pad to 4
//! ```

/// `NLMSG_HDRLEN`.
pub const NLMSG_HDRLEN: usize = 16;
/// `GENL_HDRLEN`.
pub const GENL_HDRLEN: usize = 4;
/// `NLA_HDRLEN`.
pub const NLA_HDRLEN: usize = 4;

/// `NLMSG_NOOP`.
pub const NLMSG_NOOP: u16 = 1;
/// `NLMSG_ERROR`: an acknowledgement (error 0) or an error.
pub const NLMSG_ERROR: u16 = 2;
/// `NLMSG_DONE`.
pub const NLMSG_DONE: u16 = 3;
/// `NLMSG_OVERRUN`.
pub const NLMSG_OVERRUN: u16 = 4;

/// `NLM_F_REQUEST`.
pub const NLM_F_REQUEST: u16 = 0x1;
/// `NLM_F_ACK`.
pub const NLM_F_ACK: u16 = 0x4;
/// `NLM_F_CAPPED` (on an `NLMSG_ERROR`): the request payload was not echoed.
pub const NLM_F_CAPPED: u16 = 0x100;
/// `NLM_F_ACK_TLVS` (on an `NLMSG_ERROR`): extended-ack attributes follow.
pub const NLM_F_ACK_TLVS: u16 = 0x200;

/// `GENL_ID_CTRL`: the message type of `nlctrl`.
pub const GENL_ID_CTRL: u16 = 0x10;
/// `CTRL_CMD_NEWFAMILY`: the reply to `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_NEWFAMILY: u8 = 1;
/// `CTRL_CMD_GETFAMILY`.
pub const CTRL_CMD_GETFAMILY: u8 = 3;
/// Version sent in `nlctrl` requests (libnl's `CTRL_VERSION`).
pub const CTRL_VERSION: u8 = 1;
/// `CTRL_ATTR_FAMILY_ID` (u16).
pub const CTRL_ATTR_FAMILY_ID: u16 = 1;
/// `CTRL_ATTR_FAMILY_NAME` (string).
pub const CTRL_ATTR_FAMILY_NAME: u16 = 2;
/// `CTRL_ATTR_MCAST_GROUPS` (nested array of nested groups).
pub const CTRL_ATTR_MCAST_GROUPS: u16 = 7;
/// `CTRL_ATTR_MCAST_GRP_NAME` (string).
pub const CTRL_ATTR_MCAST_GRP_NAME: u16 = 1;
/// `CTRL_ATTR_MCAST_GRP_ID` (u32).
pub const CTRL_ATTR_MCAST_GRP_ID: u16 = 2;

/// `NLA_TYPE_MASK`: strips `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
pub const NLA_TYPE_MASK: u16 = 0x3fff;
/// `NLMSGERR_ATTR_MSG`: extended-ack error string.
pub const NLMSGERR_ATTR_MSG: u16 = 1;

/// Why a netlink byte sequence could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Fewer bytes than a fixed-size header needs.
    #[error("{what} truncated: need {need} bytes, have {have}")]
    Truncated {
        /// The structure being read.
        what: &'static str,
        /// Bytes it needs.
        need: usize,
        /// Bytes available.
        have: usize,
    },
    /// `nlmsg_len` is smaller than the header or runs past the datagram.
    #[error("nlmsghdr length {len} invalid with {remaining} bytes left in the datagram")]
    BadMessageLength {
        /// The length field.
        len: u32,
        /// Bytes left from the start of this message.
        remaining: usize,
    },
    /// `nla_len` is smaller than the attribute header or runs past its container.
    #[error("attribute type {attr}: nla_len {len} invalid with {remaining} bytes left")]
    BadAttrLength {
        /// The attribute type.
        attr: u16,
        /// The length field.
        len: u16,
        /// Bytes left from the start of this attribute.
        remaining: usize,
    },
    /// A fixed-size attribute has the wrong payload size.
    #[error("attribute {name}: expected {expected} bytes of payload, got {got}")]
    BadAttrSize {
        /// The attribute name.
        name: &'static str,
        /// Expected payload size.
        expected: usize,
        /// Actual payload size.
        got: usize,
    },
    /// A required attribute is absent.
    #[error("missing attribute {0}")]
    MissingAttr(&'static str),
    /// A string attribute is not UTF-8.
    #[error("attribute {0} is not valid UTF-8")]
    NotUtf8(&'static str),
    /// A TCMU command this handler does not know (or one only userspace sends).
    #[error("unexpected TCMU command {0}")]
    UnknownCommand(u8),
    /// A RECONFIG carrying more than one of DEV_CFG, DEV_SIZE and WRITECACHE.
    #[error("RECONFIG carries more than one of DEV_CFG, DEV_SIZE, WRITECACHE")]
    AmbiguousReconfig,
    /// The datagram was larger than the receive buffer and was cut.
    #[error("datagram of {len} bytes exceeds the {cap}-byte receive buffer")]
    DatagramTooLarge {
        /// Real datagram size (from `MSG_TRUNC`).
        len: usize,
        /// Buffer size.
        cap: usize,
    },
}

/// Round `n` up to the netlink alignment (4).
#[must_use]
pub const fn align4(n: usize) -> usize {
    (n + 3) & !3
}

fn take<const N: usize>(buf: &[u8], at: usize, what: &'static str) -> Result<[u8; N], DecodeError> {
    buf.get(at..at.saturating_add(N))
        .and_then(|s| <[u8; N]>::try_from(s).ok())
        .ok_or(DecodeError::Truncated {
            what,
            need: at.saturating_add(N),
            have: buf.len(),
        })
}

/// One netlink message inside a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NlMsg<'a> {
    /// `nlmsg_type`: a control type or a generic netlink family id.
    pub ty: u16,
    /// `nlmsg_flags`.
    pub flags: u16,
    /// `nlmsg_seq`.
    pub seq: u32,
    /// `nlmsg_pid` (0 for messages from the kernel).
    pub pid: u32,
    /// Everything after the 16-byte header, up to `nlmsg_len`.
    pub payload: &'a [u8],
}

/// Iterator over the messages of a datagram; yields at most one error, then stops.
#[derive(Debug, Clone)]
pub struct Messages<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Split a datagram into its netlink messages.
#[must_use]
pub fn messages(buf: &[u8]) -> Messages<'_> {
    Messages {
        rest: buf,
        failed: false,
    }
}

impl<'a> Iterator for Messages<'a> {
    type Item = Result<NlMsg<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.next_msg();
        match &r {
            Ok(_) => {}
            Err(_) => self.failed = true,
        }
        Some(r)
    }
}

impl<'a> Messages<'a> {
    fn next_msg(&mut self) -> Result<NlMsg<'a>, DecodeError> {
        let buf = self.rest;
        let len32 = u32::from_ne_bytes(take(buf, 0, "nlmsghdr")?);
        let ty = u16::from_ne_bytes(take(buf, 4, "nlmsghdr")?);
        let flags = u16::from_ne_bytes(take(buf, 6, "nlmsghdr")?);
        let seq = u32::from_ne_bytes(take(buf, 8, "nlmsghdr")?);
        let pid = u32::from_ne_bytes(take(buf, 12, "nlmsghdr")?);
        let bad = DecodeError::BadMessageLength {
            len: len32,
            remaining: buf.len(),
        };
        let len = usize::try_from(len32).map_err(|_| bad.clone())?;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return Err(bad);
        }
        let payload = buf.get(NLMSG_HDRLEN..len).ok_or(bad)?;
        // The last message of a datagram may lack its trailing padding.
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Ok(NlMsg {
            ty,
            flags,
            seq,
            pid,
            payload,
        })
    }
}

/// The generic netlink header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GenlHdr {
    /// `cmd`.
    pub cmd: u8,
    /// `version`.
    pub version: u8,
}

/// Split a generic netlink payload into its header and its attribute bytes.
///
/// # Errors
/// [`DecodeError::Truncated`] when the payload is shorter than the 4-byte header.
pub fn split_genl(payload: &[u8]) -> Result<(GenlHdr, &[u8]), DecodeError> {
    let h: [u8; GENL_HDRLEN] = take(payload, 0, "genlmsghdr")?;
    let attrs = payload.get(GENL_HDRLEN..).unwrap_or(&[]);
    Ok((
        GenlHdr {
            cmd: h[0],
            version: h[1],
        },
        attrs,
    ))
}

/// One attribute. `ty` has the nested/byte-order flags masked off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr<'a> {
    /// Attribute type (`nla_type & NLA_TYPE_MASK`).
    pub ty: u16,
    /// Payload without padding.
    pub payload: &'a [u8],
}

/// Iterator over a run of attributes; yields at most one error, then stops.
#[derive(Debug, Clone)]
pub struct Attrs<'a> {
    rest: &'a [u8],
    failed: bool,
}

/// Iterate the attributes in `buf`.
#[must_use]
pub fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs {
        rest: buf,
        failed: false,
    }
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Result<Attr<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        let r = self.next_attr();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

impl<'a> Attrs<'a> {
    fn next_attr(&mut self) -> Result<Attr<'a>, DecodeError> {
        let buf = self.rest;
        let len16 = u16::from_ne_bytes(take(buf, 0, "nlattr")?);
        let ty = u16::from_ne_bytes(take(buf, 2, "nlattr")?) & NLA_TYPE_MASK;
        let len = usize::from(len16);
        let bad = DecodeError::BadAttrLength {
            attr: ty,
            len: len16,
            remaining: buf.len(),
        };
        if len < NLA_HDRLEN || len > buf.len() {
            return Err(bad);
        }
        let payload = buf.get(NLA_HDRLEN..len).ok_or(bad)?;
        self.rest = buf.get(align4(len)..).unwrap_or(&[]);
        Ok(Attr { ty, payload })
    }
}

impl Attr<'_> {
    fn fixed<const N: usize>(&self, name: &'static str) -> Result<[u8; N], DecodeError> {
        <[u8; N]>::try_from(self.payload).map_err(|_| DecodeError::BadAttrSize {
            name,
            expected: N,
            got: self.payload.len(),
        })
    }

    /// The payload as a `u8`.
    ///
    /// # Errors
    /// [`DecodeError::BadAttrSize`] unless the payload is exactly 1 byte.
    pub fn u8(&self, name: &'static str) -> Result<u8, DecodeError> {
        self.fixed::<1>(name).map(|b| b[0])
    }

    /// The payload as a `u16`.
    ///
    /// # Errors
    /// [`DecodeError::BadAttrSize`] unless the payload is exactly 2 bytes.
    pub fn u16(&self, name: &'static str) -> Result<u16, DecodeError> {
        self.fixed(name).map(u16::from_ne_bytes)
    }

    /// The payload as a `u32`.
    ///
    /// # Errors
    /// [`DecodeError::BadAttrSize`] unless the payload is exactly 4 bytes.
    pub fn u32(&self, name: &'static str) -> Result<u32, DecodeError> {
        self.fixed(name).map(u32::from_ne_bytes)
    }

    /// The payload as a `u64` (read bytewise: alignment does not matter).
    ///
    /// # Errors
    /// [`DecodeError::BadAttrSize`] unless the payload is exactly 8 bytes.
    pub fn u64(&self, name: &'static str) -> Result<u64, DecodeError> {
        self.fixed(name).map(u64::from_ne_bytes)
    }

    /// The payload as a string: up to the first NUL (a missing NUL is tolerated, as the
    /// kernel's `NLA_STRING` policy does).
    ///
    /// # Errors
    /// [`DecodeError::NotUtf8`].
    pub fn string(&self, name: &'static str) -> Result<String, DecodeError> {
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        let bytes = self.payload.get(..end).unwrap_or(&[]);
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| DecodeError::NotUtf8(name))
    }
}

/// Builds one generic netlink request.
#[derive(Debug, Clone)]
pub struct MsgBuilder {
    buf: Vec<u8>,
}

impl MsgBuilder {
    /// Start a message: nlmsghdr (length filled in by [`MsgBuilder::finish`], pid 0) and
    /// genlmsghdr.
    #[must_use]
    pub fn new(ty: u16, flags: u16, seq: u32, cmd: u8, version: u8) -> Self {
        let mut buf = Vec::with_capacity(64);
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&ty.to_ne_bytes());
        buf.extend_from_slice(&flags.to_ne_bytes());
        buf.extend_from_slice(&seq.to_ne_bytes());
        buf.extend_from_slice(&0u32.to_ne_bytes());
        buf.extend_from_slice(&[cmd, version, 0, 0]);
        Self { buf }
    }

    /// Append an attribute with a raw payload, padded to 4 bytes. A payload too long for
    /// `nla_len` (over 65531 bytes) cannot be encoded and is left out; nothing this crate
    /// sends comes close.
    #[must_use]
    pub fn attr(mut self, ty: u16, payload: &[u8]) -> Self {
        let Ok(len) = u16::try_from(NLA_HDRLEN + payload.len()) else {
            return self;
        };
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&ty.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.buf.resize(align4(self.buf.len()), 0);
        self
    }

    /// Append a `u8` attribute.
    #[must_use]
    pub fn attr_u8(self, ty: u16, v: u8) -> Self {
        self.attr(ty, &[v])
    }

    /// Append a `u32` attribute.
    #[must_use]
    pub fn attr_u32(self, ty: u16, v: u32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Append an `s32` attribute.
    #[must_use]
    pub fn attr_i32(self, ty: u16, v: i32) -> Self {
        self.attr(ty, &v.to_ne_bytes())
    }

    /// Append a NUL-terminated string attribute.
    #[must_use]
    pub fn attr_str(self, ty: u16, s: &str) -> Self {
        let mut p = Vec::with_capacity(s.len() + 1);
        p.extend_from_slice(s.as_bytes());
        p.push(0);
        self.attr(ty, &p)
    }

    /// Write the total length into the header and return the bytes.
    #[must_use]
    pub fn finish(mut self) -> Vec<u8> {
        // Messages built here are at most a few hundred bytes.
        let len = u32::try_from(self.buf.len()).unwrap_or(u32::MAX);
        if let Some(h) = self.buf.get_mut(0..4) {
            h.copy_from_slice(&len.to_ne_bytes());
        }
        self.buf
    }
}

/// `CTRL_CMD_GETFAMILY` for `name`, asking for an acknowledgement.
#[must_use]
pub fn encode_get_family(seq: u32, name: &str) -> Vec<u8> {
    MsgBuilder::new(
        GENL_ID_CTRL,
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        CTRL_CMD_GETFAMILY,
        CTRL_VERSION,
    )
    .attr_str(CTRL_ATTR_FAMILY_NAME, name)
    .finish()
}

/// What `nlctrl` told us about a family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FamilyInfo {
    /// `CTRL_ATTR_FAMILY_ID`: the `nlmsg_type` of the family's messages.
    pub id: u16,
    /// Id of the requested multicast group, if the family has it.
    pub group: Option<u32>,
}

/// Parse the attributes of a `CTRL_CMD_NEWFAMILY` reply and look up multicast group
/// `group`.
///
/// # Errors
/// Malformed attributes, or no `CTRL_ATTR_FAMILY_ID`.
pub fn parse_family(attr_bytes: &[u8], group: &str) -> Result<FamilyInfo, DecodeError> {
    let mut id = None;
    let mut group_id = None;
    for a in attrs(attr_bytes) {
        let a = a?;
        match a.ty {
            CTRL_ATTR_FAMILY_ID => id = Some(a.u16("CTRL_ATTR_FAMILY_ID")?),
            CTRL_ATTR_MCAST_GROUPS => {
                for g in attrs(a.payload) {
                    let (name, gid) = parse_mcast_group(g?.payload)?;
                    if name.as_deref() == Some(group) {
                        group_id = gid;
                    }
                }
            }
            _ => {}
        }
    }
    let id = id.ok_or(DecodeError::MissingAttr("CTRL_ATTR_FAMILY_ID"))?;
    Ok(FamilyInfo {
        id,
        group: group_id,
    })
}

fn parse_mcast_group(bytes: &[u8]) -> Result<(Option<String>, Option<u32>), DecodeError> {
    let (mut name, mut id) = (None, None);
    for a in attrs(bytes) {
        let a = a?;
        match a.ty {
            CTRL_ATTR_MCAST_GRP_NAME => name = Some(a.string("CTRL_ATTR_MCAST_GRP_NAME")?),
            CTRL_ATTR_MCAST_GRP_ID => id = Some(a.u32("CTRL_ATTR_MCAST_GRP_ID")?),
            _ => {}
        }
    }
    Ok((name, id))
}

/// A decoded `NLMSG_ERROR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// 0 for a plain acknowledgement, else a negative errno.
    pub error: i32,
    /// Sequence number of the request it answers.
    pub seq: u32,
    /// The extended-ack message (`NLMSGERR_ATTR_MSG`), if the kernel gave one.
    pub message: Option<String>,
}

/// Decode the payload of an `NLMSG_ERROR` message whose header flags are `flags`.
/// Extended-ack attributes are best effort: if they are malformed they are ignored.
///
/// # Errors
/// [`DecodeError::Truncated`] when the error code or the echoed header is missing.
pub fn parse_ack(flags: u16, payload: &[u8]) -> Result<Ack, DecodeError> {
    let error = i32::from_ne_bytes(take(payload, 0, "nlmsgerr")?);
    let orig_len = u32::from_ne_bytes(take(payload, 4, "nlmsgerr")?);
    let seq = u32::from_ne_bytes(take(payload, 12, "nlmsgerr")?);
    let mut message = None;
    if flags & NLM_F_ACK_TLVS != 0 {
        let tlv_off = if flags & NLM_F_CAPPED != 0 {
            Some(4 + NLMSG_HDRLEN)
        } else {
            usize::try_from(orig_len)
                .ok()
                .and_then(|l| l.checked_add(4))
                .map(align4)
        };
        if let Some(tlvs) = tlv_off.and_then(|o| payload.get(o..)) {
            message = attrs(tlvs)
                .map_while(Result::ok)
                .find(|a| a.ty == NLMSGERR_ATTR_MSG)
                .and_then(|a| a.string("NLMSGERR_ATTR_MSG").ok())
                .filter(|s| !s.is_empty());
        }
    }
    Ok(Ack {
        error,
        seq,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn constants_match_libc() {
        assert_eq!(i32::from(NLMSG_NOOP), libc::NLMSG_NOOP);
        assert_eq!(i32::from(NLMSG_ERROR), libc::NLMSG_ERROR);
        assert_eq!(i32::from(NLMSG_DONE), libc::NLMSG_DONE);
        assert_eq!(i32::from(NLMSG_OVERRUN), libc::NLMSG_OVERRUN);
        assert_eq!(i32::from(NLM_F_REQUEST), libc::NLM_F_REQUEST);
        assert_eq!(i32::from(NLM_F_ACK), libc::NLM_F_ACK);
        assert_eq!(i32::from(NLM_F_CAPPED), libc::NLM_F_CAPPED);
        assert_eq!(i32::from(NLM_F_ACK_TLVS), libc::NLM_F_ACK_TLVS);
        assert_eq!(i32::from(GENL_ID_CTRL), libc::GENL_ID_CTRL);
        assert_eq!(i32::from(CTRL_CMD_NEWFAMILY), libc::CTRL_CMD_NEWFAMILY);
        assert_eq!(i32::from(CTRL_CMD_GETFAMILY), libc::CTRL_CMD_GETFAMILY);
        assert_eq!(i32::from(CTRL_ATTR_FAMILY_ID), libc::CTRL_ATTR_FAMILY_ID);
        assert_eq!(
            i32::from(CTRL_ATTR_FAMILY_NAME),
            libc::CTRL_ATTR_FAMILY_NAME
        );
        assert_eq!(
            i32::from(CTRL_ATTR_MCAST_GROUPS),
            libc::CTRL_ATTR_MCAST_GROUPS
        );
        assert_eq!(
            i32::from(CTRL_ATTR_MCAST_GRP_NAME),
            libc::CTRL_ATTR_MCAST_GRP_NAME
        );
        assert_eq!(
            i32::from(CTRL_ATTR_MCAST_GRP_ID),
            libc::CTRL_ATTR_MCAST_GRP_ID
        );
        assert_eq!(i32::from(NLA_TYPE_MASK), libc::NLA_TYPE_MASK & 0xffff);
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn get_family_bytes() {
        let m = encode_get_family(9, "TCM-USER");
        #[rustfmt::skip]
        let want: [u8; 36] = [
            36, 0, 0, 0,   0x10, 0,   5, 0,   9, 0, 0, 0,   0, 0, 0, 0,  // nlmsghdr
            3, 1, 0, 0,                                                    // GETFAMILY v1
            13, 0, 2, 0,   b'T', b'C', b'M', b'-', b'U', b'S', b'E', b'R', 0, 0, 0, 0,
        ];
        assert_eq!(m, want);
    }

    /// A `CTRL_CMD_NEWFAMILY` reply as Linux 6.1 `ctrl_fill_info` builds it for TCM-USER
    /// (family id 0x1b, one group "config" with id 9), with version/hdrsize/maxattr/ops.
    #[cfg(target_endian = "little")]
    #[rustfmt::skip]
    pub(crate) const NEWFAMILY_TCMU: &[u8] = &[
        // FAMILY_ID u16 0x1b
        6, 0, 1, 0,  0x1b, 0, 0, 0,
        // FAMILY_NAME "TCM-USER\0"
        13, 0, 2, 0,  b'T', b'C', b'M', b'-', b'U', b'S', b'E', b'R', 0, 0, 0, 0,
        // VERSION u32 2, HDRSIZE u32 0, MAXATTR u32 9
        8, 0, 3, 0,  2, 0, 0, 0,
        8, 0, 4, 0,  0, 0, 0, 0,
        8, 0, 5, 0,  9, 0, 0, 0,
        // OPS (nested, contents irrelevant): one op {ID=7, FLAGS=1}
        24, 0, 6, 0,   20, 0, 1, 0,   8, 0, 1, 0, 7, 0, 0, 0,   8, 0, 2, 0, 1, 0, 0, 0,
        // MCAST_GROUPS (nested, NLA_F_NESTED set to check masking)
        28, 0, 7, 0x80,
            24, 0, 1, 0,
                8, 0, 2, 0,  9, 0, 0, 0,                       // GRP_ID 9
                11, 0, 1, 0, b'c', b'o', b'n', b'f', b'i', b'g', 0, 0, // GRP_NAME "config"
    ];

    #[cfg(target_endian = "little")]
    #[test]
    fn family_reply_parsing() {
        let f = parse_family(NEWFAMILY_TCMU, "config").unwrap();
        assert_eq!(
            f,
            FamilyInfo {
                id: 0x1b,
                group: Some(9)
            }
        );
        let f = parse_family(NEWFAMILY_TCMU, "other").unwrap();
        assert_eq!(
            f,
            FamilyInfo {
                id: 0x1b,
                group: None
            }
        );
    }

    #[test]
    fn family_reply_without_id() {
        let b = MsgBuilder::new(GENL_ID_CTRL, 0, 0, CTRL_CMD_NEWFAMILY, 2)
            .attr_str(CTRL_ATTR_FAMILY_NAME, "TCM-USER")
            .finish();
        let (_, a) = split_genl(&b[NLMSG_HDRLEN..]).unwrap();
        assert_eq!(
            parse_family(a, "config"),
            Err(DecodeError::MissingAttr("CTRL_ATTR_FAMILY_ID"))
        );
    }

    #[test]
    fn family_reply_bad_nested_length() {
        // MCAST_GROUPS containing a group whose nla_len overruns its container.
        let inner = [200u8, 0, 1, 0, 0, 0, 0, 0];
        let b = MsgBuilder::new(GENL_ID_CTRL, 0, 0, 1, 2)
            .attr(CTRL_ATTR_FAMILY_ID, &[1, 0])
            .attr(CTRL_ATTR_MCAST_GROUPS, &inner)
            .finish();
        let (_, a) = split_genl(&b[NLMSG_HDRLEN..]).unwrap();
        assert!(matches!(
            parse_family(a, "config"),
            Err(DecodeError::BadAttrLength { len: 200, .. })
        ));
    }

    #[cfg(target_endian = "little")]
    #[test]
    fn ack_plain_error_and_extack() {
        // Plain ack (capped, no TLVs).
        #[rustfmt::skip]
        let ack = [0u8, 0, 0, 0,  36, 0, 0, 0, 0x1b, 0, 5, 0, 7, 0, 0, 0, 0x44, 0x33, 0, 0];
        assert_eq!(
            parse_ack(NLM_F_CAPPED, &ack).unwrap(),
            Ack {
                error: 0,
                seq: 7,
                message: None
            }
        );
        // -ENODEV with the request echoed (36 bytes: header + 20 payload) and no TLVs.
        let mut e = (-19i32).to_ne_bytes().to_vec();
        e.extend_from_slice(&[36, 0, 0, 0, 0x1b, 0, 5, 0, 8, 0, 0, 0, 0, 0, 0, 0]);
        e.extend_from_slice(&[0u8; 20]);
        assert_eq!(
            parse_ack(0, &e).unwrap(),
            Ack {
                error: -19,
                seq: 8,
                message: None
            }
        );
        // Same, plus an extended-ack message after the echoed request.
        e.extend_from_slice(&[12, 0, 1, 0, b'b', b'a', b'd', b' ', b'x', 0, 0, 0]);
        let a = parse_ack(NLM_F_ACK_TLVS, &e).unwrap();
        assert_eq!(a.message.as_deref(), Some("bad x"));
        // Capped with TLVs.
        let mut c = (-22i32).to_ne_bytes().to_vec();
        c.extend_from_slice(&[36, 0, 0, 0, 0x1b, 0, 5, 0, 9, 0, 0, 0, 0, 0, 0, 0]);
        c.extend_from_slice(&[8, 0, 1, 0, b'n', b'o', 0, 0]);
        let a = parse_ack(NLM_F_CAPPED | NLM_F_ACK_TLVS, &c).unwrap();
        assert_eq!((a.error, a.message.as_deref()), (-22, Some("no")));
        // Truncated.
        assert!(matches!(
            parse_ack(0, &[1, 2, 3]),
            Err(DecodeError::Truncated { .. })
        ));
        // TLV offset beyond the payload: ignored, not an error.
        let mut t = (-1i32).to_ne_bytes().to_vec();
        t.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(parse_ack(NLM_F_ACK_TLVS, &t).unwrap().message, None);
    }

    #[test]
    fn message_framing() {
        let a = MsgBuilder::new(0x20, 0, 1, 1, 2).attr_u8(6, 1).finish();
        let b = MsgBuilder::new(0x21, 0, 2, 2, 2).finish();
        let mut dg = a.clone();
        dg.extend_from_slice(&b);
        let v: Vec<_> = messages(&dg).collect::<Result<_, _>>().unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].ty, v[0].seq, v[0].payload.len()), (0x20, 1, 12));
        assert_eq!((v[1].ty, v[1].seq, v[1].payload.len()), (0x21, 2, 4));
        // Length below the header, beyond the datagram, or a short header.
        let mut bad = a.clone();
        bad[0] = 3;
        assert!(matches!(
            messages(&bad).next(),
            Some(Err(DecodeError::BadMessageLength { len: 3, .. }))
        ));
        bad[0] = 200;
        assert!(matches!(
            messages(&bad).next(),
            Some(Err(DecodeError::BadMessageLength { len: 200, .. }))
        ));
        assert!(matches!(
            messages(&a[..10]).next(),
            Some(Err(DecodeError::Truncated { .. }))
        ));
        // After an error the iterator stops.
        let mut it = messages(&a[..10]);
        assert!(it.next().unwrap().is_err());
        assert!(it.next().is_none());
    }

    #[test]
    fn attr_sizes_checked() {
        let a = Attr {
            ty: 2,
            payload: &[1, 2, 3],
        };
        assert_eq!(
            a.u32("MINOR"),
            Err(DecodeError::BadAttrSize {
                name: "MINOR",
                expected: 4,
                got: 3
            })
        );
        assert_eq!(
            a.u8("X"),
            Err(DecodeError::BadAttrSize {
                name: "X",
                expected: 1,
                got: 3
            })
        );
        let s = Attr {
            ty: 1,
            payload: &[0xff, 0xfe, 0],
        };
        assert_eq!(s.string("DEVICE"), Err(DecodeError::NotUtf8("DEVICE")));
        let s = Attr {
            ty: 1,
            payload: b"abc",
        };
        assert_eq!(s.string("DEVICE").unwrap(), "abc");
        let s = Attr {
            ty: 1,
            payload: b"ab\0c\0",
        };
        assert_eq!(s.string("DEVICE").unwrap(), "ab");
    }

    #[test]
    fn oversized_attr_is_dropped_not_panicking() {
        let big = vec![0u8; 70_000];
        let m = MsgBuilder::new(1, 0, 0, 0, 0).attr(1, &big).finish();
        assert_eq!(m.len(), NLMSG_HDRLEN + GENL_HDRLEN);
    }

    proptest! {
        #[test]
        fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512), flags in any::<u16>()) {
            for m in messages(&bytes) {
                let Ok(m) = m else { break };
                let _ = parse_ack(m.flags, m.payload);
                if let Ok((_, a)) = split_genl(m.payload) {
                    let _ = parse_family(a, "config");
                }
            }
            let _ = parse_ack(flags, &bytes);
            let _ = parse_family(&bytes, "config");
            for a in attrs(&bytes).map_while(Result::ok) {
                let _ = (a.u8("a"), a.u16("a"), a.u32("a"), a.u64("a"), a.string("a"));
            }
        }
    }
}
