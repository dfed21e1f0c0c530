//! The userspace engine's I/O core: AF_PACKET sockets and the relay loop that
//! moves frames between two interfaces through one [`Pipeline`] per direction.
//!
//! A [`Relay`] owns its sockets ("ports") and its directions ("lanes"); each
//! lane reads one port, runs its pipeline and writes another port. One
//! [`Relay::run`] call serves every lane on the calling thread, so a thread
//! can serve several links by adding more port pairs to the same vectors.
//!
//! # Timing
//!
//! The loop waits in `epoll_wait(2)` on every port and on one `timerfd`
//! armed (one-shot, CLOCK_MONOTONIC, nanosecond resolution, no timer slack)
//! for the earliest release of any lane. So a frame is stamped when it
//! becomes readable, and a held frame leaves when it is due, both within the
//! wake-up latency of one thread, with no busy spinning.
//!
//! # Offloads
//!
//! Frames read from a veth end may carry a partial checksum
//! (`CHECKSUM_PARTIAL`) and, with TSO on the sending veth, be TCP
//! super-frames of up to 64 KiB. Plain AF_PACKET loses that metadata, so
//! forwarded UDP/TCP would fail the receiver's checksum check (observed) and
//! super-frames would be refused on send. The relay's sockets use
//! `PACKET_VNET_HDR` instead: each frame is read with its `virtio_net_hdr`
//! and written back with it, so the kernel finishes the checksum and the
//! segmentation after the relay, exactly as it would have without it, and
//! the nodes keep their offloads (a super-frame costs the relay one read and
//! one write). The pipeline sees the header as [`Offload`]; a stage that
//! changes bytes makes the frame plain first (`pipeline::offload`).

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::net::if_::if_nametoindex;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
use nix::sys::socket::{
    AddressFamily, LinkAddr, SockFlag, SockType, SockaddrLike, bind, setsockopt, socket, sockopt,
};
use nix::sys::time::TimeSpec;
use nix::sys::timer::{Expiration, TimerSetTimeFlags};
use nix::sys::timerfd::{ClockId, TimerFd, TimerFlags};
use serde::Serialize;

use super::pipeline::offload::VNET_HDR_LEN;
use super::pipeline::{Counters, Direction, DirectionParams, Frame, Offload, ParamError, Pipeline};
use crate::attack::stage::{Armed, AttackStage, AttackStatus};
use crate::netlink::netns;

/// Size of the receive buffer for one frame. Larger than any frame a 64 KiB
/// GSO packet can become; longer frames are reported truncated and dropped.
pub const FRAME_BUF: usize = 65_536 + 4_096;

/// Socket receive buffer asked for (forced past `rmem_max` with
/// `CAP_NET_ADMIN`).
pub const RCVBUF_BYTES: usize = 8 << 20;

/// Socket send buffer asked for.
pub const SNDBUF_BYTES: usize = 4 << 20;

/// Longest the loop blocks (ms) when nothing happens, so that `stop` and
/// parameter changes are seen promptly.
pub const IDLE_POLL_MS: u16 = 20;

/// Epoll data of the release timer (ports use their index).
const TIMER_EVENT: u64 = u64::MAX;

/// Most frames read from one socket in one system call; the loop releases
/// due frames after each such batch, so a flood on one port does not delay
/// releases.
const RECV_BATCH: usize = 32;

/// A bound, non-blocking AF_PACKET `SOCK_RAW` socket on one interface.
///
/// Invariants: created inside its namespace (so it stays there), bound to one
/// ifindex with `ETH_P_ALL` (created with protocol 0 so that no frame of
/// another interface is queued before the bind), `PACKET_IGNORE_OUTGOING`
/// set (it never reads frames sent on its interface, its own included).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// Opens a socket on interface `ifname` inside the named namespace.
    pub fn open(netns_name: &str, ifname: &str) -> io::Result<PacketSocket> {
        let ifname = ifname.to_owned();
        netns::run_in(netns_name, move || PacketSocket::open_here(&ifname))
    }

    /// Opens a socket on interface `ifname` of the calling thread's namespace.
    pub fn open_here(ifname: &str) -> io::Result<PacketSocket> {
        let ifindex = if_nametoindex(ifname)?;
        PacketSocket::open_ifindex(ifindex)
    }

    /// Opens a socket on interface `ifindex` of the calling thread's namespace.
    pub fn open_ifindex(ifindex: u32) -> io::Result<PacketSocket> {
        let index = libc::c_int::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "ifindex out of range"))?;
        let fd = socket(
            AddressFamily::Packet,
            SockType::Raw,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        if setsockopt(&fd, sockopt::RcvBufForce, &RCVBUF_BYTES).is_err() {
            setsockopt(&fd, sockopt::RcvBuf, &RCVBUF_BYTES)?;
        }
        if setsockopt(&fd, sockopt::SndBufForce, &SNDBUF_BYTES).is_err() {
            setsockopt(&fd, sockopt::SndBuf, &SNDBUF_BYTES)?;
        }
        set_packet_option(&fd, libc::PACKET_IGNORE_OUTGOING)?;
        set_packet_option(&fd, libc::PACKET_VNET_HDR)?;

        // SAFETY: `sockaddr_ll` is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as libc::c_ushort;
        sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
        sll.sll_ifindex = index;
        let len = mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: the pointer refers to a fully initialised `sockaddr_ll` that
        // lives for the whole call and `len` is exactly its size; `from_raw`
        // copies it.
        let addr =
            unsafe { LinkAddr::from_raw((&raw const sll).cast::<libc::sockaddr>(), Some(len)) }
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "bad sockaddr_ll"))?;
        bind(fd.as_raw_fd(), &addr)?;
        Ok(PacketSocket { fd })
    }
}

/// Frames read by one [`PacketSocket::recv_many`]: up to `capacity` frames,
/// each with its offload header and full length.
#[derive(Debug)]
pub struct RecvBatch {
    hdrs: Vec<[u8; VNET_HDR_LEN]>,
    bufs: Vec<Vec<u8>>,
    lens: Vec<usize>,
    msgs: MsgVec,
}

impl RecvBatch {
    /// Room for `capacity` frames of up to [`FRAME_BUF`] bytes.
    pub fn new(capacity: usize) -> RecvBatch {
        RecvBatch {
            hdrs: vec![[0; VNET_HDR_LEN]; capacity],
            bufs: vec![vec![0; FRAME_BUF]; capacity],
            lens: vec![0; capacity],
            msgs: MsgVec::default(),
        }
    }

    /// Most frames one read takes.
    pub fn capacity(&self) -> usize {
        self.bufs.len()
    }

    /// Frame `i`: its offload header, its bytes, and whether it was cut
    /// short (longer than [`FRAME_BUF`]; the bytes are then incomplete).
    pub fn frame(&self, i: usize) -> (Offload, &[u8], bool) {
        let len = self.lens[i];
        let cap = self.bufs[i].len();
        (
            Offload::decode(&self.hdrs[i]),
            &self.bufs[i][..len.min(cap)],
            len > cap,
        )
    }
}

/// Most frames one `sendmmsg` call takes.
const SEND_BATCH: usize = 64;

impl PacketSocket {
    /// Reads up to the batch's capacity of queued frames in one system call
    /// (`recvmmsg`), without blocking. Returns how many were read (0: none
    /// queued).
    pub fn recv_many(&self, batch: &mut RecvBatch) -> io::Result<usize> {
        let RecvBatch {
            hdrs,
            bufs,
            lens,
            msgs,
        } = batch;
        let msgs = msgs.fill(
            hdrs.iter_mut()
                .zip(bufs.iter_mut())
                .map(|(h, b)| ((h.as_mut_ptr(), h.len()), (b.as_mut_ptr(), b.len()))),
        );
        let flags = libc::MSG_DONTWAIT | libc::MSG_TRUNC;
        let got = loop {
            // SAFETY: `msgs` was just filled: each header points at two
            // iovecs for one of `batch`'s header and frame buffers, which
            // outlive the call and nothing else accesses meanwhile. No names
            // or control buffers are passed; no timeout.
            let rc = unsafe {
                libc::recvmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    msgs.len() as libc::c_uint,
                    flags,
                    std::ptr::null_mut(),
                )
            };
            match Errno::result(rc) {
                Ok(k) => break k as usize,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Ok(0),
                Err(e) => return Err(e.into()),
            }
        };
        for (len, m) in lens.iter_mut().zip(&msgs[..got]) {
            *len = (m.msg_len as usize).saturating_sub(VNET_HDR_LEN);
        }
        Ok(got)
    }

    /// Sends frames with their offload headers in as few system calls as
    /// possible (`sendmmsg`), without blocking, using `scratch` for the
    /// message arrays. Reports, per frame in order, whether it was sent (the
    /// error if not).
    pub fn send_many(
        &self,
        frames: &[(Offload, Vec<u8>)],
        scratch: &mut SendScratch,
        mut each: impl FnMut(io::Result<()>),
    ) {
        let mut start = 0;
        while start < frames.len() {
            let chunk = &frames[start..(start + SEND_BATCH).min(frames.len())];
            scratch.hdrs.clear();
            scratch.hdrs.extend(chunk.iter().map(|(o, _)| o.encode()));
            // The kernel only reads through these pointers.
            let msgs = scratch
                .msgs
                .fill(chunk.iter().zip(&scratch.hdrs).map(|((_, data), h)| {
                    (
                        (h.as_ptr().cast_mut(), h.len()),
                        (data.as_ptr().cast_mut(), data.len()),
                    )
                }));
            // SAFETY: `msgs` was just filled: each header points at two
            // iovecs for a header in `scratch.hdrs` and a frame's buffer, all
            // alive and unchanged for the call.
            let rc = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    msgs.len() as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            match Errno::result(rc) {
                Ok(k) if k > 0 => {
                    for _ in 0..k {
                        each(Ok(()));
                    }
                    start += k as usize;
                }
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    // The first frame of the chunk failed; go on after it.
                    each(Err(e.into()));
                    start += 1;
                }
            }
        }
    }
}

/// The `mmsghdr` and `iovec` arrays of one `recvmmsg`/`sendmmsg` call, kept
/// so the packet path does not allocate once they have grown: each message
/// is two buffers, the virtio-net header and the frame.
#[derive(Default)]
struct MsgVec {
    iovs: Vec<[libc::iovec; 2]>,
    msgs: Vec<libc::mmsghdr>,
}

impl std::fmt::Debug for MsgVec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MsgVec")
            .field("capacity", &self.msgs.capacity())
            .finish()
    }
}

// SAFETY: the raw pointers inside are rewritten by `fill` right before each
// system call and never dereferenced otherwise; a `MsgVec` owns no pointee,
// so moving it to another thread moves nothing it points to.
unsafe impl Send for MsgVec {}

impl MsgVec {
    /// One message per `((header, len), (frame, len))`; returns the headers.
    fn fill(
        &mut self,
        parts: impl Iterator<Item = ((*mut u8, usize), (*mut u8, usize))>,
    ) -> &mut [libc::mmsghdr] {
        let iovec = |(base, len): (*mut u8, usize)| libc::iovec {
            iov_base: base.cast(),
            iov_len: len,
        };
        self.iovs.clear();
        self.iovs.extend(parts.map(|(h, d)| [iovec(h), iovec(d)]));
        self.msgs.clear();
        // SAFETY: `mmsghdr` is plain old data; all-zero is a valid value.
        self.msgs.resize(self.iovs.len(), unsafe { mem::zeroed() });
        for (m, iov) in self.msgs.iter_mut().zip(self.iovs.iter_mut()) {
            m.msg_hdr.msg_iov = iov.as_mut_ptr();
            m.msg_hdr.msg_iovlen = 2;
        }
        &mut self.msgs
    }
}

/// Reusable buffers for [`PacketSocket::send_many`].
#[derive(Debug, Default)]
pub struct SendScratch {
    hdrs: Vec<[u8; VNET_HDR_LEN]>,
    msgs: MsgVec,
}

/// Sets an integer `SOL_PACKET` option to 1 (nix has neither
/// `PACKET_IGNORE_OUTGOING` nor `PACKET_VNET_HDR`).
fn set_packet_option(fd: &OwnedFd, option: libc::c_int) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: `fd` is a live socket we own; the option value points to a
    // `c_int` that lives for the whole call and the length is its size.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            option,
            (&raw const one).cast::<libc::c_void>(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc)?;
    Ok(())
}

impl AsFd for PacketSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Why a relay could not be built.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("invalid parameters for {direction:?}: {source}")]
    Params {
        direction: Direction,
        source: ParamError,
    },
}

/// I/O counts of one direction, besides the pipeline's own [`Counters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct IoCounters {
    /// Frames read from the ingress socket and pushed into the pipeline.
    pub rx_frames: u64,
    /// Bytes of those frames.
    pub rx_bytes: u64,
    /// Frames dropped because they did not fit the receive buffer.
    pub rx_truncated: u64,
    /// Receive errors other than "nothing queued".
    pub rx_errors: u64,
    /// Frames written to the egress socket.
    pub tx_frames: u64,
    /// Frames the egress socket refused (full buffer, too long, link down).
    pub tx_errors: u64,
    /// The last send error, as an errno value (0: none).
    pub last_tx_errno: i32,
}

/// A snapshot of one direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LaneStats {
    pub pipeline: Counters,
    pub io: IoCounters,
}

/// What a direction shares with its [`RelayHandle`].
#[derive(Debug, Default)]
struct LaneShared {
    /// The parameters in force (or about to be: see `pending`).
    params: Mutex<DirectionParams>,
    /// Parameters waiting to be applied by the loop.
    pending: Mutex<Option<DirectionParams>>,
    /// Set with `pending`, so the loop takes the lock only when needed.
    dirty: AtomicBool,
    stats: Mutex<LaneStats>,
    /// Attacks to start or stop, waiting for the loop.
    attack_commands: Mutex<Vec<AttackCommand>>,
    /// Set with `attack_commands`.
    attack_dirty: AtomicBool,
    /// Every attack started on this direction (published with `stats`).
    attacks: Mutex<Vec<AttackStatus>>,
}

/// A change to a direction's attacker stage.
enum AttackCommand {
    Start(Box<Armed>),
    Stop(u64),
}

impl std::fmt::Debug for AttackCommand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttackCommand::Start(a) => write!(f, "Start({})", a.id),
            AttackCommand::Stop(id) => write!(f, "Stop({id})"),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Changes parameters and reads counters of a running [`Relay`], from any
/// thread. Cheap to clone.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    ab: Arc<LaneShared>,
    ba: Arc<LaneShared>,
}

impl RelayHandle {
    fn lane(&self, direction: Direction) -> &LaneShared {
        match direction {
            Direction::AToB => &self.ab,
            Direction::BToA => &self.ba,
        }
    }

    /// Changes one direction's impairment; the loop applies it on its next
    /// iteration (within [`IDLE_POLL_MS`]) to frames arriving from then on. Held
    /// frames keep their release times. Invalid parameters are refused here.
    pub fn set_params(
        &self,
        direction: Direction,
        params: DirectionParams,
    ) -> Result<(), ParamError> {
        params.validate()?;
        let lane = self.lane(direction);
        *lock(&lane.params) = params.clone();
        *lock(&lane.pending) = Some(params);
        lane.dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// The parameters of one direction: the latest accepted by
    /// [`RelayHandle::set_params`], else those it was built with.
    pub fn params(&self, direction: Direction) -> DirectionParams {
        lock(&self.lane(direction).params).clone()
    }

    /// The latest counters of one direction (published by the loop after each
    /// iteration that did something).
    pub fn stats(&self, direction: Direction) -> LaneStats {
        *lock(&self.lane(direction).stats)
    }

    fn attack_command(&self, direction: Direction, command: AttackCommand) {
        let lane = self.lane(direction);
        lock(&lane.attack_commands).push(command);
        lane.attack_dirty.store(true, Ordering::Release);
    }

    /// Starts an attack on one direction; the loop installs it on its next
    /// iteration (within [`IDLE_POLL_MS`]), and `armed.after` counts from
    /// then.
    pub fn start_attack(&self, direction: Direction, armed: Armed) {
        self.attack_command(direction, AttackCommand::Start(Box::new(armed)));
    }

    /// Stops attack `id` on one direction (within [`IDLE_POLL_MS`]).
    pub fn stop_attack(&self, direction: Direction, id: u64) {
        self.attack_command(direction, AttackCommand::Stop(id));
    }

    /// The attacks started on one direction, as last published.
    pub fn attacks(&self, direction: Direction) -> Vec<AttackStatus> {
        lock(&self.lane(direction).attacks).clone()
    }
}

/// One direction: frames read from `ports[from]` go through `pipeline` and
/// out of `ports[to]`.
struct Lane {
    from: usize,
    to: usize,
    pipeline: Pipeline,
    io: IoCounters,
    shared: Arc<LaneShared>,
    /// Frames popped from the pipeline, waiting to be sent and recycled.
    due: Vec<(Offload, Vec<u8>)>,
    /// Crafted frames the attacker hands out, on their way into the pipeline.
    injected: Vec<Frame>,
    send: SendScratch,
    /// Something changed since the stats were last published.
    changed: bool,
}

impl Lane {
    fn new(from: usize, to: usize, mut pipeline: Pipeline, params: DirectionParams) -> Lane {
        pipeline.insert_stage(0, Box::new(AttackStage::new()));
        Lane {
            from,
            to,
            pipeline,
            io: IoCounters::default(),
            shared: Arc::new(LaneShared {
                params: Mutex::new(params),
                ..LaneShared::default()
            }),
            due: Vec::new(),
            injected: Vec::new(),
            send: SendScratch::default(),
            changed: true,
        }
    }

    fn attacker(&mut self) -> &mut AttackStage {
        self.pipeline
            .stage_mut::<AttackStage>()
            .expect("every lane's pipeline starts with an attack stage")
    }

    fn apply_pending(&mut self, now: u64) {
        if self.shared.attack_dirty.swap(false, Ordering::Acquire) {
            let commands = std::mem::take(&mut *lock(&self.shared.attack_commands));
            for command in commands {
                match command {
                    AttackCommand::Start(armed) => self.attacker().start(now, *armed),
                    AttackCommand::Stop(id) => {
                        self.attacker().stop(id);
                    }
                }
            }
            self.changed = true;
        }
        if self.shared.dirty.swap(false, Ordering::Acquire)
            && let Some(params) = lock(&self.shared.pending).take()
        {
            // Validated by the handle; a failure leaves the old parameters.
            if let Err(e) = self.pipeline.set_params(params) {
                tracing::warn!("relay: parameter change refused: {e}");
            }
            self.changed = true;
        }
    }

    /// When this lane next has something to do: a frame to release or a
    /// crafted frame to send.
    fn next_wake(&mut self) -> Option<u64> {
        let inject = self.attacker().next_due();
        [self.pipeline.next_release(), inject]
            .into_iter()
            .flatten()
            .min()
    }

    /// Sends every frame due at `now` out of `port` and recycles its buffer.
    fn release(&mut self, now: u64, port: &PacketSocket) {
        let mut injected = std::mem::take(&mut self.injected);
        self.attacker().pump(now, &mut |f| injected.push(f));
        for frame in injected.drain(..) {
            // After the attack stage: crafted frames still cross the
            // link's impairments.
            self.pipeline.inject(1, now, frame);
        }
        self.injected = injected;
        self.due.extend(
            self.pipeline
                .pop_due(now)
                .map(|r| (r.frame.offload, r.frame.data)),
        );
        if self.due.is_empty() {
            return;
        }
        self.changed = true;
        let io = &mut self.io;
        port.send_many(&self.due, &mut self.send, |result| match result {
            Ok(()) => io.tx_frames += 1,
            Err(e) => {
                io.tx_errors += 1;
                io.last_tx_errno = e.raw_os_error().unwrap_or(-1);
            }
        });
        for (_, buf) in self.due.drain(..) {
            self.pipeline.recycle(buf);
        }
    }

    fn publish(&mut self, now: u64) {
        if self.changed {
            self.changed = false;
            *lock(&self.shared.stats) = LaneStats {
                pipeline: self.pipeline.counters(),
                io: self.io,
            };
            let attacks = self.attacker().statuses(now);
            if !attacks.is_empty() {
                *lock(&self.shared.attacks) = attacks;
            }
        }
    }
}

/// Moves frames between pairs of interfaces, one [`Pipeline`] per direction
/// of each pair, on the thread that calls [`Relay::run`].
pub struct Relay {
    ports: Vec<PacketSocket>,
    lanes: Vec<Lane>,
    /// `lanes_by_port[p]`: the lane that reads port `p`.
    lanes_by_port: Vec<usize>,
    start: Instant,
    batch: RecvBatch,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("ports", &self.ports)
            .field("lanes", &self.lanes.len())
            .finish_non_exhaustive()
    }
}

impl Default for Relay {
    fn default() -> Self {
        Relay::new()
    }
}

impl Relay {
    /// A relay with no links yet.
    pub fn new() -> Relay {
        Relay {
            ports: Vec::new(),
            lanes: Vec::new(),
            lanes_by_port: Vec::new(),
            start: Instant::now(),
            batch: RecvBatch::new(RECV_BATCH),
        }
    }

    /// Adds a link between `a` and `b`: frames read on `a` go through a
    /// pipeline built from `ab` and leave on `b`, and the other way round with
    /// `ba`. Returns the handle that changes its parameters and reads its
    /// counters while [`Relay::run`] runs on another thread.
    pub fn add_link(
        &mut self,
        a: PacketSocket,
        b: PacketSocket,
        ab: DirectionParams,
        ba: DirectionParams,
    ) -> Result<RelayHandle, RelayError> {
        let build = |direction, params: &DirectionParams| {
            Pipeline::new(params.clone()).map_err(|source| RelayError::Params { direction, source })
        };
        let pab = build(Direction::AToB, &ab)?;
        let pba = build(Direction::BToA, &ba)?;
        let (pa, pb) = (self.ports.len(), self.ports.len() + 1);
        let (lab, lba) = (self.lanes.len(), self.lanes.len() + 1);
        self.ports.extend([a, b]);
        self.lanes.push(Lane::new(pa, pb, pab, ab));
        self.lanes.push(Lane::new(pb, pa, pba, ba));
        self.lanes_by_port.extend([lab, lba]);
        Ok(RelayHandle {
            ab: Arc::clone(&self.lanes[lab].shared),
            ba: Arc::clone(&self.lanes[lba].shared),
        })
    }

    /// The relay clock's zero: pipelines see times as ns since this instant.
    pub fn clock(&self) -> Instant {
        self.start
    }

    /// Nanoseconds since the relay was built, on the monotonic clock.
    fn now_ns(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Relays until `stop` is set (seen within [`IDLE_POLL_MS`]). Frames still
    /// held when it returns stay in the pipelines; calling `run` again resumes.
    /// Returns an error only if polling itself fails.
    ///
    /// After any event the loop polls without sleeping for `busy_poll`:
    /// waking a sleeping thread (in a VM, a halted vCPU) costs tens of
    /// microseconds per frame, which busy polling avoids while traffic flows,
    /// at the price of a core kept busy. Zero: always sleep when idle.
    pub fn run(&mut self, stop: &AtomicBool, busy_poll: Duration) -> io::Result<()> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        for (i, port) in self.ports.iter().enumerate() {
            epoll.add(port, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
        }
        let timer = TimerFd::new(
            ClockId::CLOCK_MONOTONIC,
            TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC,
        )?;
        epoll.add(&timer, EpollEvent::new(EpollFlags::EPOLLIN, TIMER_EVENT))?;
        let mut armed: Option<u64> = None;
        let mut events = vec![EpollEvent::empty(); 64];
        let mut busy_until = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let now = self.now_ns();
            for lane in &mut self.lanes {
                lane.apply_pending(now);
            }
            self.release_all(now);
            for lane in &mut self.lanes {
                lane.publish(now);
            }
            let next = self.lanes.iter_mut().filter_map(Lane::next_wake).min();
            if next != armed {
                match next {
                    // A zero expiry would disarm the timer: 1 ns is "now".
                    Some(at) => timer.set(
                        Expiration::OneShot(TimeSpec::from_duration(Duration::from_nanos(
                            at.saturating_sub(self.now_ns()).max(1),
                        ))),
                        TimerSetTimeFlags::empty(),
                    )?,
                    None => timer.unset()?,
                }
                armed = next;
            }
            let timeout = if Instant::now() < busy_until {
                0
            } else {
                IDLE_POLL_MS
            };
            let n = match epoll.wait(&mut events, timeout) {
                Ok(n) => n,
                Err(Errno::EINTR) => 0,
                Err(e) => return Err(e.into()),
            };
            if n > 0 {
                busy_until = Instant::now() + busy_poll;
            }
            for event in &events[..n] {
                match event.data() {
                    TIMER_EVENT => {
                        // Consume the expiry count so the timer stops being readable.
                        let mut count = [0u8; 8];
                        let _ = nix::unistd::read(&timer, &mut count);
                        armed = None;
                    }
                    port => self.drain(port as usize),
                }
            }
        }
        let now = self.now_ns();
        for lane in &mut self.lanes {
            lane.changed = true;
            lane.publish(now);
        }
        Ok(())
    }

    /// Sends everything due at `now` on every lane.
    fn release_all(&mut self, now: u64) {
        for lane in &mut self.lanes {
            lane.release(now, &self.ports[lane.to]);
        }
    }

    /// Reads every frame queued on `port` (in batches, releasing due frames
    /// between batches) into the pipeline of the lane that reads it.
    fn drain(&mut self, port: usize) {
        let lane_index = self.lanes_by_port[port];
        loop {
            let lane = &mut self.lanes[lane_index];
            let got = match self.ports[lane.from].recv_many(&mut self.batch) {
                Ok(n) => n,
                Err(_) => {
                    lane.io.rx_errors += 1;
                    0
                }
            };
            if got == 0 {
                return;
            }
            lane.changed = true;
            let now = self.now_ns();
            let lane = &mut self.lanes[lane_index];
            for i in 0..got {
                let (offload, bytes, truncated) = self.batch.frame(i);
                if truncated {
                    lane.io.rx_truncated += 1;
                    continue;
                }
                let mut data = lane.pipeline.take_buffer();
                data.extend_from_slice(bytes);
                lane.pipeline.push_offloaded(now, data, offload);
                lane.io.rx_frames += 1;
                lane.io.rx_bytes += bytes.len() as u64;
            }
            // Zero-delay frames leave at once; delayed ones wait.
            let now = self.now_ns();
            self.release_all(now);
            if got < self.batch.capacity() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_interfaces_are_refused() {
        assert!(PacketSocket::open_here("no-such-if-tbrl").is_err());
    }

    #[test]
    fn invalid_params_are_refused_by_the_handle() {
        let shared = || Arc::new(LaneShared::default());
        let handle = RelayHandle {
            ab: shared(),
            ba: shared(),
        };
        let bad = DirectionParams {
            corrupt: -1.0,
            ..DirectionParams::default()
        };
        assert!(handle.set_params(Direction::AToB, bad).is_err());
        assert!(!handle.ab.dirty.load(Ordering::Relaxed));
        handle
            .set_params(Direction::BToA, DirectionParams::default())
            .unwrap();
        assert!(handle.ba.dirty.load(Ordering::Relaxed));
        assert_eq!(handle.stats(Direction::AToB), LaneStats::default());
    }
}
