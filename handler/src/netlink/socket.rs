//! [`Listener`]: the `TCM-USER` event subscription and the request channel.
//!
//! Two `NETLINK_GENERIC` sockets are used:
//! * the **event socket**, non-blocking and joined to the `config` group, is what the
//!   daemon polls ([`Listener::raw_fd`]); nothing is ever sent on it, so events and
//!   acknowledgements never interleave;
//! * the **request socket**, blocking with a receive timeout, carries `nlctrl` queries,
//!   `*_DONE` replies and `SET_FEATURES`, each with `NLM_F_ACK`, and reads the kernel's
//!   acknowledgement (the kernel handles genl requests synchronously inside `sendmsg`, so
//!   the ack is queued before `send` returns; the timeout only guards against surprises).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType,
};
use nix::sys::time::TimeVal;
use parking_lot::Mutex;
use tcmu_sys::genl;

use super::codec::{self, DecodeError, NLMSG_ERROR};
use super::event::{self, Event};
use super::NetlinkError;

/// Receive buffer asked for on the event socket (`SO_RCVBUFFORCE`, else `SO_RCVBUF`,
/// which the kernel caps at `net.core.rmem_max`). Each event is a few hundred bytes of
/// skb; this absorbs thousands of queued events.
const EVENT_RCVBUF: usize = 4 << 20;
/// Datagram buffer. Events are ~100 bytes; `nlctrl` replies a few KiB.
const DATAGRAM_LEN: usize = 64 << 10;
/// How long to wait for an acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// `NETLINK_EXT_ACK`, `NETLINK_CAP_ACK` (`linux/netlink.h`).
const NETLINK_EXT_ACK: libc::c_int = 11;
const NETLINK_CAP_ACK: libc::c_int = 10;

/// Subscription to `TCM-USER/config` plus a request channel to the family.
pub struct Listener {
    events: OwnedFd,
    requests: OwnedFd,
    family: u16,
    group: u32,
    seq: AtomicU32,
    /// Serialises request/ack exchanges on `requests` so concurrent `&self` callers do not
    /// read each other's acknowledgements.
    req_lock: Mutex<()>,
    pending: VecDeque<Result<Event, NetlinkError>>,
    buf: Vec<u8>,
}

impl Listener {
    /// Resolve `TCM-USER` and its `config` group through `nlctrl` and join the group.
    ///
    /// # Errors
    /// [`NetlinkError::FamilyNotFound`] when `target_core_user` is not loaded,
    /// [`NetlinkError::GroupNotFound`], or [`NetlinkError::Io`] for socket failures.
    pub fn open() -> Result<Self, NetlinkError> {
        let requests = nl_socket(false).map_err(|e| NetlinkError::io("socket", e))?;
        set_timeout(&requests, ACK_TIMEOUT)
            .map_err(|e| NetlinkError::io("setsockopt(SO_RCVTIMEO/SO_SNDTIMEO)", e))?;
        // Best effort: error strings and short acks; older kernels lack them.
        let _ = setsockopt_netlink(&requests, NETLINK_EXT_ACK, 1);
        let _ = setsockopt_netlink(&requests, NETLINK_CAP_ACK, 1);
        bind_nl(&requests).map_err(|e| NetlinkError::io("bind", e))?;

        let mut buf = vec![0u8; DATAGRAM_LEN];
        let seq = AtomicU32::new(1);
        let req = codec::encode_get_family(next_seq(&seq), genl::FAMILY);
        let replies = match transact(&requests, &mut buf, &req, "CTRL_CMD_GETFAMILY") {
            Ok(r) => r,
            Err(NetlinkError::Kernel {
                errno: Errno::ENOENT,
                ..
            }) => return Err(NetlinkError::FamilyNotFound),
            Err(e) => return Err(e),
        };
        let mut info = None;
        for r in &replies {
            let (hdr, attrs) = codec::split_genl(r)?;
            if hdr.cmd == codec::CTRL_CMD_NEWFAMILY {
                info = Some(codec::parse_family(attrs, genl::GROUP_CONFIG)?);
            }
        }
        let info = info.ok_or(NetlinkError::FamilyNotFound)?;
        let group = info.group.ok_or(NetlinkError::GroupNotFound)?;

        let events = nl_socket(true).map_err(|e| NetlinkError::io("socket", e))?;
        if socket::setsockopt(&events, sockopt::RcvBufForce, &EVENT_RCVBUF).is_err() {
            socket::setsockopt(&events, sockopt::RcvBuf, &EVENT_RCVBUF)
                .map_err(|e| NetlinkError::io("setsockopt(SO_RCVBUF)", e.into()))?;
        }
        bind_nl(&events).map_err(|e| NetlinkError::io("bind", e))?;
        let group_c = libc::c_int::try_from(group).map_err(|_| {
            NetlinkError::io("join group", io::Error::from(io::ErrorKind::InvalidData))
        })?;
        setsockopt_netlink(&events, libc::NETLINK_ADD_MEMBERSHIP, group_c)
            .map_err(|e| NetlinkError::io("setsockopt(NETLINK_ADD_MEMBERSHIP)", e))?;
        tracing::debug!(family = info.id, group, "joined TCM-USER/config");

        Ok(Self {
            events,
            requests,
            family: info.id,
            group,
            seq,
            req_lock: Mutex::new(()),
            pending: VecDeque::new(),
            buf,
        })
    }

    /// The event socket, to poll for readability (`POLLIN`).
    #[must_use]
    pub fn raw_fd(&self) -> RawFd {
        self.events.as_raw_fd()
    }

    /// The event socket, borrowed, for `poll`.
    #[must_use]
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.events.as_fd()
    }

    /// The resolved `TCM-USER` family id.
    #[must_use]
    pub fn family_id(&self) -> u16 {
        self.family
    }

    /// The resolved `config` multicast group id.
    #[must_use]
    pub fn group_id(&self) -> u32 {
        self.group
    }

    /// The next pending event, without blocking; `Ok(None)` when nothing is queued.
    /// Messages not from the kernel or not of `TCM-USER` are skipped. Call until `None`
    /// after each readiness notification.
    ///
    /// # Errors
    /// Per message: [`NetlinkError::Malformed`] / [`NetlinkError::MalformedEvent`] (keep
    /// going). [`NetlinkError::Overrun`]: events were lost (see the module docs).
    /// [`NetlinkError::Io`]: the socket failed.
    pub fn recv(&mut self) -> Result<Option<Event>, NetlinkError> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return r.map(Some);
            }
            let (n, pid) = match recv_from(
                &self.events,
                &mut self.buf,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            ) {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return Err(NetlinkError::Overrun)
                }
                Err(e) => return Err(NetlinkError::io("recv", e)),
            };
            if pid != 0 {
                tracing::warn!(pid, "ignoring netlink datagram not sent by the kernel");
                continue;
            }
            let Some(dg) = self.buf.get(..n) else {
                return Err(DecodeError::DatagramTooLarge {
                    len: n,
                    cap: self.buf.len(),
                }
                .into());
            };
            self.pending.extend(event::decode_datagram(dg, self.family));
        }
    }

    /// Answer `ev` with its matching `*_DONE`, carrying `status` (0 or `-errno`) and
    /// the event's DEVICE_ID, and wait for the kernel's acknowledgement.
    ///
    /// # Errors
    /// [`NetlinkError::NoPendingRequest`] (benign: the kernel was not waiting),
    /// [`NetlinkError::Kernel`], [`NetlinkError::NoAck`], [`NetlinkError::InvalidReply`],
    /// [`NetlinkError::Io`].
    pub fn reply(&self, ev: &Event, status: i32) -> Result<(), NetlinkError> {
        self.reply_to(ev.cmd.cmd(), ev.device_id, status)
    }

    /// Like [`Listener::reply`] from the raw event command and DEVICE_ID, for events that
    /// could not be decoded ([`NetlinkError::MalformedEvent`]).
    ///
    /// # Errors
    /// As [`Listener::reply`]; [`NetlinkError::InvalidReply`] if `event_cmd` is not an
    /// event command (1..=3).
    pub fn reply_to(&self, event_cmd: u8, device_id: u32, status: i32) -> Result<(), NetlinkError> {
        let done = event::done_cmd_for(event_cmd).ok_or_else(|| {
            NetlinkError::InvalidReply(format!("command {event_cmd} is not a TCMU event"))
        })?;
        if !(-4095..=0).contains(&status) {
            return Err(NetlinkError::InvalidReply(format!(
                "status {status} is not 0 or a negative errno"
            )));
        }
        let request = event::request_name(done);
        let msg = event::encode_done(self.family, next_seq(&self.seq), done, device_id, status);
        match self.request(&msg, request) {
            Err(NetlinkError::Kernel {
                errno: Errno::ENODEV,
                ..
            }) => Err(NetlinkError::NoPendingRequest { request, device_id }),
            other => other,
        }
    }

    /// Send `SET_FEATURES` with `SUPP_KERN_CMD_REPLY` = `kern_cmd_reply`. This sets a
    /// **module-global, sticky** flag: devices enabled afterwards wait (without timeout)
    /// for every event's reply. Needs CAP_NET_ADMIN (else `Kernel { errno: EPERM }`).
    ///
    /// # Errors
    /// [`NetlinkError::Kernel`], [`NetlinkError::NoAck`], [`NetlinkError::Io`].
    pub fn set_features(&self, kern_cmd_reply: bool) -> Result<(), NetlinkError> {
        let msg = event::encode_set_features(self.family, next_seq(&self.seq), kern_cmd_reply);
        self.request(&msg, "SET_FEATURES")
    }

    fn request(&self, msg: &[u8], request: &'static str) -> Result<(), NetlinkError> {
        let _guard = self.req_lock.lock();
        let mut buf = vec![0u8; 8192];
        transact(&self.requests, &mut buf, msg, request).map(drop)
    }
}

impl std::fmt::Debug for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listener")
            .field("events", &self.events)
            .field("requests", &self.requests)
            .field("family", &self.family)
            .field("group", &self.group)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

fn next_seq(seq: &AtomicU32) -> u32 {
    seq.fetch_add(1, Ordering::Relaxed)
}

/// Send `msg` (which asks for an ack) and collect the payloads of the replies carrying its
/// sequence number until the acknowledgement.
fn transact(
    fd: &OwnedFd,
    buf: &mut [u8],
    msg: &[u8],
    request: &'static str,
) -> Result<Vec<Vec<u8>>, NetlinkError> {
    let seq = codec::messages(msg)
        .next()
        .and_then(Result::ok)
        .map(|m| m.seq)
        .ok_or(NetlinkError::InvalidReply("unframed request".into()))?;
    send_all(fd, msg).map_err(|e| NetlinkError::io("send", e))?;
    let mut replies = Vec::new();
    loop {
        let (n, pid) = match recv_from(fd, buf, MsgFlags::MSG_TRUNC) {
            Ok(v) => v,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Err(NetlinkError::NoAck { request })
            }
            Err(e) => return Err(NetlinkError::io("recv", e)),
        };
        if pid != 0 {
            continue;
        }
        let dg = buf.get(..n).ok_or(DecodeError::DatagramTooLarge {
            len: n,
            cap: buf.len(),
        })?;
        for m in codec::messages(dg) {
            let m = m?;
            if m.seq != seq {
                continue; // a stale answer to an earlier, timed-out request
            }
            if m.ty != NLMSG_ERROR {
                replies.push(m.payload.to_vec());
                continue;
            }
            let ack = codec::parse_ack(m.flags, m.payload)?;
            if ack.error == 0 {
                return Ok(replies);
            }
            let errno = Errno::from_raw(ack.error.saturating_neg());
            return Err(NetlinkError::Kernel {
                request,
                errno,
                message: ack.message,
            });
        }
    }
}

fn nl_socket(nonblock: bool) -> io::Result<OwnedFd> {
    let mut flags = SockFlag::SOCK_CLOEXEC;
    if nonblock {
        flags |= SockFlag::SOCK_NONBLOCK;
    }
    Ok(socket::socket(
        AddressFamily::Netlink,
        SockType::Raw,
        flags,
        SockProtocol::NetlinkGeneric,
    )?)
}

fn socklen_of<T>() -> libc::socklen_t {
    libc::socklen_t::try_from(std::mem::size_of::<T>()).unwrap_or(libc::socklen_t::MAX)
}

/// Bind with `nl_pid` 0 (the kernel assigns a port id) and no legacy groups.
fn bind_nl(fd: &OwnedFd) -> io::Result<()> {
    Ok(socket::bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0))?)
}

/// `SOL_NETLINK` options (`NETLINK_ADD_MEMBERSHIP`, `NETLINK_EXT_ACK`, `NETLINK_CAP_ACK`),
/// which nix has no typed wrapper for; the `SOL_SOCKET` ones go through `nix::sockopt`.
fn setsockopt_netlink(fd: &OwnedFd, name: libc::c_int, val: libc::c_int) -> io::Result<()> {
    // SAFETY: `val` is a live, initialised c_int for the duration of the call, and the length
    // passed is exactly its size; the kernel only reads it.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_NETLINK,
            name,
            std::ptr::from_ref(&val).cast::<libc::c_void>(),
            socklen_of::<libc::c_int>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Bounds both directions of the request socket: the acknowledgement's wait, and the send
/// itself (the kernel takes a request inside `sendmsg`, but a blocking send must never wait
/// without bound on the main loop whatever the peer does).
fn set_timeout(fd: &OwnedFd, d: Duration) -> io::Result<()> {
    let tv = TimeVal::from(libc::timeval {
        tv_sec: libc::time_t::try_from(d.as_secs()).unwrap_or(libc::time_t::MAX),
        tv_usec: libc::suseconds_t::from(d.subsec_micros()),
    });
    socket::setsockopt(fd, sockopt::ReceiveTimeout, &tv)?;
    Ok(socket::setsockopt(fd, sockopt::SendTimeout, &tv)?)
}

/// Send one datagram to the kernel (the unconnected default destination, port id 0).
fn send_all(fd: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    loop {
        match socket::send(fd.as_raw_fd(), msg, MsgFlags::empty()) {
            Ok(n) if n == msg.len() => return Ok(()),
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "short netlink send",
                ))
            }
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Receive one datagram; returns its full length (with `MSG_TRUNC`, possibly more than
/// `buf.len()`) and the sender's port id (0 = kernel).
///
/// Not nix: its `recvfrom` takes no flags (`MSG_TRUNC` is how an oversized datagram is
/// noticed), and its `recvmsg` hands back the sender address without checking how much of
/// it the kernel wrote (a Unix socketpair standing in for netlink in the tests writes 2
/// bytes).
fn recv_from(fd: &OwnedFd, buf: &mut [u8], flags: MsgFlags) -> io::Result<(usize, u32)> {
    let mut sa: libc::sockaddr_nl = *NetlinkAddr::new(0, 0).as_ref();
    let mut sa_len = socklen_of::<libc::sockaddr_nl>();
    // SAFETY: `buf` is a live, writable slice and the kernel writes at most `buf.len()`
    // bytes into it; `sa`/`sa_len` are valid for writes and `sa_len` holds `sa`'s size.
    let r = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast::<libc::c_void>(),
            buf.len(),
            flags.bits(),
            std::ptr::from_mut(&mut sa).cast::<libc::sockaddr>(),
            &mut sa_len,
        )
    };
    let n = usize::try_from(r).map_err(|_| io::Error::last_os_error())?;
    Ok((n, sa.nl_pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    /// On a host without `target_core_user` this must fail with the exact, actionable
    /// message; where the module is loaded it must succeed and give a pollable fd.
    #[test]
    fn open_on_host() {
        let loaded = std::path::Path::new("/sys/module/target_core_user").exists();
        match Listener::open() {
            Ok(l) => {
                assert!(
                    loaded,
                    "TCM-USER resolved but /sys/module/target_core_user is absent"
                );
                assert!(l.raw_fd() >= 0);
                assert!(l.group_id() > 0);
            }
            Err(NetlinkError::FamilyNotFound) => {
                assert!(!loaded, "module loaded but family not found");
                assert_eq!(
                    NetlinkError::FamilyNotFound.to_string(),
                    "TCM-USER netlink family not found: is target_core_user loaded?"
                );
            }
            // Sandboxes without netlink (seccomp, gVisor) cannot run this check.
            Err(NetlinkError::Io {
                op: "socket" | "bind",
                source,
            }) => {
                eprintln!("skipping: no generic netlink here: {source}");
            }
            Err(e) => panic!("unexpected error opening the listener: {e}"),
        }
    }

    /// A listener over Unix datagram socketpairs standing in for netlink, so the
    /// receive queue and the request/ack path run on any host. Returns the peers that
    /// play the kernel.
    fn fake_listener(buf_len: usize) -> (Listener, UnixDatagram, UnixDatagram) {
        let (ev, ev_peer) = UnixDatagram::pair().unwrap();
        ev.set_nonblocking(true).unwrap();
        let (rq, rq_peer) = UnixDatagram::pair().unwrap();
        let requests = OwnedFd::from(rq);
        set_timeout(&requests, Duration::from_millis(100)).unwrap();
        let l = Listener {
            events: OwnedFd::from(ev),
            requests,
            family: FAM,
            group: 9,
            seq: AtomicU32::new(40),
            req_lock: Mutex::new(()),
            pending: VecDeque::new(),
            buf: vec![0; buf_len],
        };
        (l, ev_peer, rq_peer)
    }

    const FAM: u16 = 0x1b;

    fn event(c: u8, id: u32) -> Vec<u8> {
        codec::MsgBuilder::new(FAM, 0, 0, c, 2)
            .attr_str(genl::attr::DEVICE, "tcm-user/0/d/file/x")
            .attr_u32(genl::attr::MINOR, 2)
            .attr_u32(genl::attr::DEVICE_ID, id)
            .finish()
    }

    fn ack(seq: u32, error: i32) -> Vec<u8> {
        let mut payload = error.to_ne_bytes().to_vec();
        payload.extend_from_slice(&[36, 0, 0, 0, 0x1b, 0, 5, 0]);
        payload.extend_from_slice(&seq.to_ne_bytes());
        payload.extend_from_slice(&[0; 4]);
        let mut m = Vec::new();
        m.extend_from_slice(&u32::try_from(16 + payload.len()).unwrap().to_ne_bytes());
        m.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        m.extend_from_slice(&codec::NLM_F_CAPPED.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&[0; 4]);
        m.extend_from_slice(&payload);
        m
    }

    #[test]
    fn recv_queue() {
        let (mut l, peer, _rq) = fake_listener(DATAGRAM_LEN);
        assert!(l.recv().unwrap().is_none());
        // Two events in one datagram, a foreign message between them.
        let mut dg = event(genl::cmd::ADDED_DEVICE, 1);
        dg.extend(codec::MsgBuilder::new(0x40, 0, 0, 1, 1).finish());
        dg.extend(event(genl::cmd::REMOVED_DEVICE, 2));
        peer.send(&dg).unwrap();
        peer.send(&[1, 2, 3]).unwrap();
        peer.send(&event(genl::cmd::ADDED_DEVICE, 3)).unwrap();
        let e = l.recv().unwrap().unwrap();
        assert_eq!(
            (e.cmd.clone(), e.device_id, e.minor),
            (event::EventKind::Added, 1, 2)
        );
        assert_eq!(l.recv().unwrap().unwrap().cmd, event::EventKind::Removed);
        assert!(matches!(
            l.recv(),
            Err(NetlinkError::Malformed(DecodeError::Truncated { .. }))
        ));
        assert_eq!(l.recv().unwrap().unwrap().device_id, 3);
        assert!(l.recv().unwrap().is_none());
    }

    #[test]
    fn recv_oversized_datagram() {
        let (mut l, peer, _rq) = fake_listener(32);
        peer.send(&event(genl::cmd::ADDED_DEVICE, 1)).unwrap();
        assert!(matches!(
            l.recv(),
            Err(NetlinkError::Malformed(DecodeError::DatagramTooLarge {
                cap: 32,
                ..
            }))
        ));
        assert!(l.recv().unwrap().is_none());
    }

    #[test]
    fn reply_path() {
        let (l, _ev, rq) = fake_listener(DATAGRAM_LEN);
        let ev = Event {
            cmd: event::EventKind::Added,
            device_id: 5,
            minor: 2,
            device: "d".into(),
        };
        // Success: a stale ack for another sequence number is skipped first.
        rq.send(&ack(7, -22)).unwrap();
        rq.send(&ack(40, 0)).unwrap();
        l.reply(&ev, 0).unwrap();
        let mut sent = [0u8; 64];
        let n = rq.recv(&mut sent).unwrap();
        assert_eq!(
            &sent[..n],
            event::encode_done(FAM, 40, genl::cmd::ADDED_DEVICE_DONE, 5, 0).as_slice()
        );
        // ENODEV: benign.
        rq.send(&ack(41, -libc::ENODEV)).unwrap();
        let e = l.reply(&ev, -libc::EIO).unwrap_err();
        assert!(e.is_benign(), "{e}");
        let n = rq.recv(&mut sent).unwrap();
        assert_eq!(sent[16], genl::cmd::ADDED_DEVICE_DONE);
        assert_eq!(&sent[24..28], &(-libc::EIO).to_ne_bytes());
        assert_eq!(n, 36);
        // EINVAL: an error. SET_FEATURES: exact bytes.
        rq.send(&ack(42, -libc::EPERM)).unwrap();
        let e = l.set_features(true).unwrap_err();
        assert!(
            matches!(
                e,
                NetlinkError::Kernel {
                    request: "SET_FEATURES",
                    errno: Errno::EPERM,
                    ..
                }
            ),
            "{e}"
        );
        let n = rq.recv(&mut sent).unwrap();
        assert_eq!(
            &sent[..n],
            event::encode_set_features(FAM, 42, true).as_slice()
        );
        // No ack at all.
        assert!(matches!(
            l.set_features(false),
            Err(NetlinkError::NoAck {
                request: "SET_FEATURES"
            })
        ));
        // Refused locally, nothing sent.
        assert!(matches!(
            l.reply(&ev, 5),
            Err(NetlinkError::InvalidReply(_))
        ));
        assert!(matches!(
            l.reply_to(4, 5, 0),
            Err(NetlinkError::InvalidReply(_))
        ));
        let n = rq.recv(&mut sent).unwrap(); // the SET_FEATURES(false) request
        assert_eq!(sent[16..n].first(), Some(&genl::cmd::SET_FEATURES));
        rq.set_nonblocking(true).unwrap();
        assert!(
            rq.recv(&mut sent).is_err(),
            "invalid replies must not be sent"
        );
    }

    /// A request peer that reads nothing and acknowledges nothing: once its queue is full a
    /// reply fails (NoAck, or a send error) within the socket's bound; it never blocks.
    #[test]
    fn a_reply_to_a_peer_that_never_reads_fails_at_the_bound() {
        let (l, _ev, _rq) = fake_listener(DATAGRAM_LEN);
        set_timeout(&l.requests, Duration::from_millis(5)).unwrap();
        let ev = Event {
            cmd: event::EventKind::Added,
            device_id: 5,
            minor: 2,
            device: "d".into(),
        };
        let mut send_failed = false;
        // A Unix datagram queue holds a few hundred small datagrams; each reply adds one.
        for _ in 0..2000 {
            let t = std::time::Instant::now();
            let r = l.reply(&ev, 0);
            assert!(
                t.elapsed() < Duration::from_secs(2),
                "a reply waited {:?}",
                t.elapsed()
            );
            match r {
                Err(NetlinkError::NoAck { .. }) => {}
                Err(NetlinkError::Io { op: "send", .. }) => {
                    send_failed = true;
                    break;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(send_failed, "the peer's queue never filled");
    }

    #[test]
    fn nlctrl_resolves_itself() {
        // End-to-end check of the request path against the always-present nlctrl family.
        let Ok(fd) = nl_socket(false) else { return };
        set_timeout(&fd, ACK_TIMEOUT).unwrap();
        bind_nl(&fd).unwrap();
        let mut buf = vec![0u8; DATAGRAM_LEN];
        let r = transact(
            &fd,
            &mut buf,
            &codec::encode_get_family(1, "nlctrl"),
            "GETFAMILY",
        )
        .unwrap();
        let (hdr, attrs) = codec::split_genl(&r[0]).unwrap();
        assert_eq!(hdr.cmd, codec::CTRL_CMD_NEWFAMILY);
        let f = codec::parse_family(attrs, "notify").unwrap();
        assert_eq!(f.id, codec::GENL_ID_CTRL);
        assert!(f.group.is_some());
        let e = transact(
            &fd,
            &mut buf,
            &codec::encode_get_family(2, "nosuchfamily"),
            "GETFAMILY",
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                NetlinkError::Kernel {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{e}"
        );
        // Names over GENL_NAMSIZ - 1 fail policy validation; the extended ack explains.
        let _ = setsockopt_netlink(&fd, NETLINK_EXT_ACK, 1);
        let e = transact(
            &fd,
            &mut buf,
            &codec::encode_get_family(3, "a-name-far-too-long"),
            "GETFAMILY",
        )
        .unwrap_err();
        eprintln!("{e}");
        assert!(
            matches!(
                e,
                NetlinkError::Kernel {
                    errno: Errno::EINVAL,
                    ..
                }
            ),
            "{e}"
        );
    }
}
