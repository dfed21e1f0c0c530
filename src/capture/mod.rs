//! Packet capture from lab interfaces into pcapng.
//!
//! Each [`Target`] is one interface inside one named namespace. [`capture`]
//! opens an AF_PACKET socket per target inside its namespace, multiplexes them
//! with `poll(2)` on the calling thread, and writes every frame into a single
//! pcapng stream with one interface per target, so that Wireshark shows which
//! node and interface each frame was seen on.

pub mod pcapng;
mod socket;

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use self::pcapng::Output;
use self::socket::{OpenError, OpenStage, PacketSocket, SNAPLEN};

pub use self::pcapng::MAX_LABEL_LEN;

/// Longest time between checks of `stop`, `count` and `duration`.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Most frames read from one socket per round, so that one busy interface
/// cannot starve the others or delay a stop request.
const BATCH_PER_SOCKET: usize = 256;

/// Soft cap on the frame bytes held in memory per round: a socket is not read
/// further once the batch holds this much (frames left stay in its queue).
const BATCH_BYTES: usize = 8 << 20;

/// One interface to capture on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Named namespace (as in `ip netns`) that holds the interface.
    pub netns: String,
    /// Interface name inside that namespace.
    pub ifname: String,
    /// `"node:iface"`; becomes the pcapng `if_name` and names the target in errors.
    pub label: String,
}

/// When to stop on its own; `None` means no limit of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Stop after this many frames in total (over all targets).
    pub count: Option<u64>,
    /// Stop this long after every socket is open and the headers are written.
    pub duration: Option<Duration>,
}

/// What a capture saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames written to the output and flushed, over all targets
    /// (`== per_target.iter().sum()`).
    pub packets: u64,
    /// Frames written per target, in the order the targets were given
    /// (`per_target.len() == targets.len()`).
    pub per_target: Vec<u64>,
    /// Frames the kernel dropped because a socket queue was full (PACKET_STATISTICS).
    pub dropped_by_kernel: u64,
}

/// Why a capture failed. A broken pipe on the output is not an error.
#[derive(thiserror::Error, Debug)]
pub enum CaptureError {
    /// No targets were given.
    #[error("no capture targets given")]
    NoTargets,
    /// A label is too long to be stored as a pcapng interface name.
    #[error("{label:.40}...: label longer than {MAX_LABEL_LEN} bytes")]
    LabelTooLong { label: String },
    /// The target's namespace could not be opened or entered.
    #[error("{label}: cannot enter namespace {netns:?}: {source}")]
    Namespace {
        label: String,
        netns: String,
        #[source]
        source: io::Error,
    },
    /// The interface does not exist in the target's namespace.
    #[error("{label}: no interface {ifname:?} in namespace {netns:?}: {source}")]
    Interface {
        label: String,
        netns: String,
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// The packet socket could not be created or configured.
    #[error("{label}: cannot open packet socket: {source}")]
    Socket {
        label: String,
        #[source]
        source: io::Error,
    },
    /// The packet socket could not be bound to the interface.
    #[error("{label}: cannot bind packet socket to {ifname:?}: {source}")]
    Bind {
        label: String,
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// Reading from a target's socket failed.
    #[error("{label}: receive failed: {source}")]
    Receive {
        label: String,
        #[source]
        source: io::Error,
    },
    /// `poll(2)` failed.
    #[error("poll failed: {0}")]
    Poll(#[source] io::Error),
    /// Writing the pcapng output failed (other than a broken pipe).
    #[error("writing capture output: {0}")]
    Write(#[source] io::Error),
}

/// Capture from all targets into one pcapng stream until a limit is hit or `stop` becomes true.
///
/// Guarantees:
/// - the output starts with a Section Header Block and one Interface
///   Description Block per target, in `targets` order (interface id = index),
///   each with linktype Ethernet, snaplen 65535, `if_name = label` and
///   `if_tsresol = 9`; these are written and flushed only after every socket
///   is bound, so once they are visible the capture is live;
/// - every frame becomes one Enhanced Packet Block with a nanosecond timestamp
///   and `epb_flags` direction (outbound for `PACKET_OUTGOING`, else inbound);
///   frames longer than 65535 bytes are truncated and keep their original length;
/// - within one read batch, frames are written in timestamp order, and `out`
///   is flushed after every batch, so the stream can be piped live;
/// - `stop`, `limits.count` and `limits.duration` are checked at least every
///   100 ms; with `count = Some(n)` exactly `min(n, frames seen)` are written;
/// - a broken pipe on `out` ends the capture with `Ok`, as if stopped.
pub fn capture<W: Write>(
    targets: &[Target],
    out: W,
    limits: &Limits,
    stop: &AtomicBool,
) -> Result<Stats, CaptureError> {
    if targets.is_empty() {
        return Err(CaptureError::NoTargets);
    }
    if let Some(t) = targets.iter().find(|t| t.label.len() > MAX_LABEL_LEN) {
        return Err(CaptureError::LabelTooLong {
            label: t.label.clone(),
        });
    }
    let mut sockets = targets
        .iter()
        .map(open_target)
        .collect::<Result<Vec<_>, _>>()?;
    let mut stats = Stats {
        per_target: vec![0; targets.len()],
        ..Stats::default()
    };
    let labels: Vec<&str> = targets.iter().map(|t| t.label.as_str()).collect();
    let mut output = match Output::new(out, &labels).and_then(|mut o| o.flush().map(|()| o)) {
        Ok(o) => Some(o),
        Err(e) if is_broken_pipe(&e) => None,
        Err(e) => return Err(CaptureError::Write(e)),
    };
    tracing::debug!(targets = ?labels, ?limits, "capture started");

    if let Some(output) = output.as_mut() {
        let result = run(targets, &mut sockets, output, limits, stop, &mut stats);
        let flushed = output.flush();
        result?;
        match flushed {
            Err(e) if !is_broken_pipe(&e) => return Err(CaptureError::Write(e)),
            _ => {}
        }
    }

    for (sock, target) in sockets.iter().zip(targets) {
        match sock.kernel_drops() {
            Ok(n) => stats.dropped_by_kernel += n,
            Err(e) => tracing::warn!(target = %target.label, "cannot read PACKET_STATISTICS: {e}"),
        }
    }
    tracing::debug!(?stats, "capture finished");
    Ok(stats)
}

/// Open one target's socket, naming the target in any error.
fn open_target(t: &Target) -> Result<PacketSocket, CaptureError> {
    PacketSocket::open(&t.netns, &t.ifname).map_err(|e| match e {
        OpenError::Namespace(source) => CaptureError::Namespace {
            label: t.label.clone(),
            netns: t.netns.clone(),
            source,
        },
        OpenError::Step(OpenStage::Interface, source) => CaptureError::Interface {
            label: t.label.clone(),
            netns: t.netns.clone(),
            ifname: t.ifname.clone(),
            source,
        },
        OpenError::Step(OpenStage::Socket, source) => CaptureError::Socket {
            label: t.label.clone(),
            source,
        },
        OpenError::Step(OpenStage::Bind, source) => CaptureError::Bind {
            label: t.label.clone(),
            ifname: t.ifname.clone(),
            source,
        },
    })
}

/// One frame of the current batch; its bytes are `arena[start..start + captured]`.
struct Pending {
    target: usize,
    timestamp: Duration,
    start: usize,
    captured: usize,
    original_len: usize,
    flags: u32,
}

/// The poll/read/write loop. Returns `Ok` when a limit or `stop` is reached or
/// the output pipe is closed.
fn run<W: Write>(
    targets: &[Target],
    sockets: &mut [PacketSocket],
    output: &mut Output<W>,
    limits: &Limits,
    stop: &AtomicBool,
    stats: &mut Stats,
) -> Result<(), CaptureError> {
    // `None` if the duration is too large to represent: no deadline.
    let deadline = limits.duration.and_then(|d| Instant::now().checked_add(d));
    let mut scratch = vec![0u8; SNAPLEN];
    let mut arena: Vec<u8> = Vec::new();
    let mut batch: Vec<Pending> = Vec::new();

    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let remaining = match limits.count {
            Some(n) if stats.packets >= n => return Ok(()),
            Some(n) => n - stats.packets,
            None => u64::MAX,
        };
        let mut timeout = POLL_INTERVAL;
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            timeout = timeout.min(left);
        }

        let ready: Vec<usize> = {
            let mut fds: Vec<PollFd<'_>> = sockets
                .iter()
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            // Round up so a sub-millisecond remainder does not busy-loop.
            let ms = u16::try_from(timeout.as_micros().div_ceil(1000)).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(0) | Err(Errno::EINTR) => continue,
                Ok(_) => {}
                Err(e) => return Err(CaptureError::Poll(e.into())),
            }
            fds.iter()
                .enumerate()
                .filter(|(_, fd)| fd.revents().is_some_and(|r| !r.is_empty()))
                .map(|(i, _)| i)
                .collect()
        };

        arena.clear();
        batch.clear();
        let remaining = usize::try_from(remaining).unwrap_or(usize::MAX);
        for i in ready {
            let budget = BATCH_PER_SOCKET.min(remaining.saturating_sub(batch.len()));
            for _ in 0..budget {
                if arena.len() >= BATCH_BYTES {
                    break;
                }
                let got = match sockets[i].recv(&mut scratch) {
                    Ok(Some(got)) => got,
                    Ok(None) => break,
                    Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                        // The interface went down (or away). Keep the socket:
                        // it resumes if the interface comes back up.
                        tracing::warn!(target = %targets[i].label, "interface went down");
                        break;
                    }
                    Err(source) => {
                        return Err(CaptureError::Receive {
                            label: targets[i].label.clone(),
                            source,
                        });
                    }
                };
                let start = arena.len();
                arena.extend_from_slice(&scratch[..got.captured]);
                batch.push(Pending {
                    target: i,
                    timestamp: got.timestamp,
                    start,
                    captured: got.captured,
                    original_len: got.original_len,
                    flags: pcapng::epb_flags(got.pkttype),
                });
            }
        }
        if batch.is_empty() {
            continue;
        }

        batch.sort_by_key(|p| p.timestamp);
        let written = batch.iter().try_for_each(|p| {
            output.packet(
                p.target as u32,
                p.timestamp,
                &arena[p.start..p.start + p.captured],
                p.original_len,
                p.flags,
            )
        });
        match written.and_then(|()| output.flush()) {
            // Count a batch only once it has reached the writer.
            Ok(()) => {
                stats.packets += batch.len() as u64;
                for p in &batch {
                    stats.per_target[p.target] += 1;
                }
            }
            Err(e) if is_broken_pipe(&e) => {
                tracing::debug!("output closed; stopping capture");
                return Ok(());
            }
            Err(e) => return Err(CaptureError::Write(e)),
        }
    }
}

fn is_broken_pipe(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::BrokenPipe
}
