//! AF_PACKET receive sockets, each bound to one interface of one named namespace.
//!
//! Invariants of a [`PacketSocket`]:
//! - it was created inside the target namespace (by [`netns::run_in`]) and so
//!   stays attached to that namespace for its whole life;
//! - it is bound to exactly one interface (by ifindex) with protocol
//!   `ETH_P_ALL`, and it was created with protocol 0 so that no frame of any
//!   other interface can be queued between `socket()` and `bind()`;
//! - it is non-blocking, has `SO_TIMESTAMPNS` enabled, and does not set
//!   `PACKET_IGNORE_OUTGOING`, so it sees both directions.

use std::io::{self, IoSliceMut};
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::net::if_::if_nametoindex;
use nix::sys::socket::{
    AddressFamily, ControlMessageOwned, LinkAddr, MsgFlags, SockFlag, SockType, SockaddrLike, bind,
    recvmsg, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeSpec;

use crate::netlink::netns;

/// Largest frame stored per packet; longer frames are truncated to this and
/// keep their original length in the pcapng record.
pub const SNAPLEN: usize = 65_535;

/// Receive buffer asked for on every socket (forced past `rmem_max` when the
/// caller has `CAP_NET_ADMIN`, otherwise capped by the kernel).
pub const RCVBUF_BYTES: usize = 4 << 20;

/// Which step of opening a socket failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenStage {
    /// The interface name could not be resolved to an ifindex.
    Interface,
    /// `socket()` or a socket option failed.
    Socket,
    /// `bind()` to the interface failed.
    Bind,
}

/// Why a socket could not be opened: either the namespace itself could not be
/// entered, or a step inside it failed.
#[derive(Debug)]
pub enum OpenError {
    /// Opening or entering the namespace failed.
    Namespace(io::Error),
    /// A step inside the namespace failed.
    Step(OpenStage, io::Error),
}

/// One frame as read from a socket; the bytes are in the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes stored in the buffer (`min(original_len, buffer length)`).
    pub captured: usize,
    /// Length of the frame on the wire, as reported with `MSG_TRUNC`.
    pub original_len: usize,
    /// Kernel receive timestamp (or `CLOCK_REALTIME` now if the kernel sent
    /// none), as time since the Unix epoch.
    pub timestamp: Duration,
    /// `sll_pkttype` of the frame (`PACKET_HOST`, `PACKET_OUTGOING`, ...).
    pub pkttype: u8,
}

/// A bound, non-blocking AF_PACKET `SOCK_RAW` socket (see the module invariants).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    /// Control-message buffer reused by every `recvmsg`, sized for one timespec.
    cmsg: Vec<u8>,
}

impl PacketSocket {
    /// Open a socket on interface `ifname` inside namespace `netns`.
    pub fn open(netns_name: &str, ifname: &str) -> Result<Self, OpenError> {
        let ifname = ifname.to_owned();
        match netns::run_in(netns_name, move || Ok(open_here(&ifname))) {
            Err(e) => Err(OpenError::Namespace(e)),
            Ok(Err((stage, e))) => Err(OpenError::Step(stage, e)),
            Ok(Ok(fd)) => Ok(Self {
                fd,
                cmsg: nix::cmsg_space!(TimeSpec),
            }),
        }
    }

    /// Read one frame into `buf` without blocking.
    ///
    /// Returns `Ok(None)` when the queue is empty. Never reads more than
    /// `buf.len()` bytes; frame content is not inspected.
    pub fn recv(&mut self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let res = recvmsg::<LinkAddr>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut self.cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
            );
            let msg = match res {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let timestamp = msg
                .cmsgs()
                .ok()
                .and_then(|mut cmsgs| {
                    cmsgs.find_map(|c| match c {
                        ControlMessageOwned::ScmTimestampns(ts) => timespec_to_duration(&ts),
                        _ => None,
                    })
                })
                .unwrap_or_else(realtime_now);
            let pkttype = msg.address.map_or(libc::PACKET_HOST, |addr| addr.pkttype());
            let original_len = msg.bytes;
            return Ok(Some(Received {
                captured: original_len.min(buf.len()),
                original_len,
                timestamp,
                pkttype,
            }));
        }
    }

    /// Frames the kernel dropped on this socket because its queue was full,
    /// since the socket was opened or the previous call (the kernel resets the
    /// counters on every read).
    pub fn kernel_drops(&self) -> io::Result<u64> {
        let mut stats = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: the fd is a live AF_PACKET socket we own; `stats` is a valid,
        // writable `tpacket_stats` and `len` holds its exact size, so the kernel
        // writes at most `len` bytes into it. nix has no PACKET_STATISTICS option.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                (&raw mut stats).cast::<libc::c_void>(),
                &mut len,
            )
        };
        Errno::result(rc)?;
        Ok(u64::from(stats.tp_drops))
    }
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Everything that must happen inside the namespace: resolve the ifindex,
/// create the socket, set options, bind.
fn open_here(ifname: &str) -> Result<OwnedFd, (OpenStage, io::Error)> {
    let ifindex = if_nametoindex(ifname).map_err(|e| (OpenStage::Interface, e.into()))?;
    let ifindex = libc::c_int::try_from(ifindex).map_err(|_| {
        (
            OpenStage::Interface,
            io::Error::new(io::ErrorKind::InvalidData, "ifindex out of range"),
        )
    })?;
    let sock_err = |e: Errno| (OpenStage::Socket, io::Error::from(e));
    // Protocol 0: the socket receives nothing until `bind` names the protocol,
    // so frames of other interfaces cannot sneak into the queue.
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(sock_err)?;
    setsockopt(&fd, sockopt::ReceiveTimestampns, &true).map_err(sock_err)?;
    if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
        // Without CAP_NET_ADMIN: take what rmem_max allows.
        setsockopt(&fd, sockopt::RcvBuf, &RCVBUF_BYTES).map_err(sock_err)?;
    }

    // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as libc::c_ushort;
    sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    sll.sll_ifindex = ifindex;
    let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
    // SAFETY: the pointer refers to a fully initialised `sockaddr_ll` that lives
    // for the whole call, and `len` is exactly its size; `from_raw` copies it.
    let addr = unsafe { LinkAddr::from_raw((&raw const sll).cast::<libc::sockaddr>(), Some(len)) }
        .ok_or_else(|| {
            (
                OpenStage::Bind,
                io::Error::new(io::ErrorKind::InvalidInput, "bad sockaddr_ll"),
            )
        })?;
    bind(fd.as_raw_fd(), &addr).map_err(|e| (OpenStage::Bind, e.into()))?;
    Ok(fd)
}

/// A kernel timespec as time since the epoch; `None` if it is negative or malformed.
fn timespec_to_duration(ts: &TimeSpec) -> Option<Duration> {
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec()).ok()?;
    (nanos < 1_000_000_000).then(|| Duration::new(secs, nanos))
}

/// `CLOCK_REALTIME` now, as time since the epoch (zero if the clock is before 1970).
fn realtime_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timespec_conversion_rejects_bad_values() {
        assert_eq!(
            timespec_to_duration(&TimeSpec::new(5, 7)),
            Some(Duration::new(5, 7))
        );
        assert_eq!(timespec_to_duration(&TimeSpec::new(-1, 0)), None);
    }

    #[test]
    fn realtime_is_after_2020() {
        assert!(realtime_now() > Duration::from_secs(1_577_836_800));
    }
}
