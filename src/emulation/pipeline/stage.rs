//! Frames, the [`Stage`] trait and [`Emit`], the buffer a stage writes to.

use std::any::Any;

use super::offload::Offload;

/// Spare buffers kept for reuse, per pipeline. Enough for a burst of drops
/// and duplicates without holding much memory (at most this many Vec headers
/// plus their capacity).
pub const POOL_MAX: usize = 256;

/// One Ethernet frame in flight through a pipeline, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The bytes on the wire (Ethernet header onwards, no FCS). May be empty.
    pub data: Vec<u8>,
    /// Position in the order frames entered the pipeline, from 0. A duplicate
    /// keeps the sequence number of the frame it copies.
    pub seq: u64,
    /// When the frame entered the pipeline, ns.
    pub arrival_ns: u64,
    /// Checksum and segmentation work the kernel left for later (a plain
    /// frame by default). A stage that changes bytes must make the frame
    /// plain first (see [`super::offload`]).
    pub offload: Offload,
}

/// One output of a stage: a frame and when it leaves the stage.
#[derive(Debug)]
pub struct Emitted {
    /// When the frame leaves the stage, ns. May be earlier than the time the
    /// stage was called with (netem's negative delays); it is then due at once
    /// and orders among the due frames by this time.
    pub at_ns: u64,
    /// Sent ahead of every frame already waiting (netem's reordering,
    /// `__qdisc_enqueue_head`). `at_ns` is then the time of the call.
    pub first: bool,
    pub frame: Frame,
}

/// Collects a stage's outputs for one input frame, and lends the pipeline's
/// spare buffers for copies.
///
/// A stage may emit zero (drop), one or more frames per input, each with its
/// own release time. The pipeline reuses one `Emit` per stage, so pushing
/// does not allocate once the vector has grown to the largest fan-out seen.
#[derive(Debug, Default)]
pub struct Emit {
    items: Vec<Emitted>,
    pub(crate) pool: Vec<Vec<u8>>,
}

impl Emit {
    pub fn new() -> Emit {
        Emit::default()
    }

    /// Releases `frame` from this stage at `at_ns`.
    pub fn send_at(&mut self, at_ns: u64, frame: Frame) {
        self.items.push(Emitted {
            at_ns,
            first: false,
            frame,
        });
    }

    /// Releases `frame` now, ahead of everything this pipeline holds (what
    /// netem does with a reordered packet).
    pub fn send_first(&mut self, now_ns: u64, frame: Frame) {
        self.items.push(Emitted {
            at_ns: now_ns,
            first: true,
            frame,
        });
    }

    /// Drops `frame`, keeping its buffer for reuse.
    pub fn discard(&mut self, frame: Frame) {
        if self.pool.len() < POOL_MAX && frame.data.capacity() > 0 {
            let mut data = frame.data;
            data.clear();
            self.pool.push(data);
        }
    }

    /// A copy of `frame` (same bytes and metadata), in a spare buffer when
    /// one is available.
    pub fn copy_of(&mut self, frame: &Frame) -> Frame {
        let mut data = self.pool.pop().unwrap_or_default();
        data.clear();
        data.extend_from_slice(&frame.data);
        Frame {
            data,
            seq: frame.seq,
            arrival_ns: frame.arrival_ns,
            offload: frame.offload,
        }
    }

    /// The outputs collected so far, in emission order.
    pub fn items(&self) -> &[Emitted] {
        &self.items
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Takes the outputs in emission order, keeping the capacity.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Emitted> {
        self.items.drain(..)
    }
}

/// One step of a link direction's pipeline: the impairments, an attacker, a
/// capture tap.
///
/// Contract:
/// - `on_frame` is called once per frame reaching the stage, with the time the
///   frame reaches it. Times never decrease from one call to the next.
/// - It pushes zero or more outputs to `out` and returns; it must not block,
///   sleep or read a clock (time is `now_ns`), so that a stage is a
///   deterministic function of its inputs and its own seeded state.
/// - An output released at or before `now_ns` goes on to the next stage at
///   once, within the same call; one released later reaches the next stage
///   at its release time (the pipeline holds it until then).
///
/// Stages are `Any` so that a pipeline can hand back a concrete stage
/// ([`super::Pipeline::stage_mut`]) for runtime changes, and `Send` so that a
/// pipeline can move to the engine's I/O thread.
pub trait Stage: Any + Send {
    fn on_frame(&mut self, now_ns: u64, frame: Frame, out: &mut Emit);

    /// A short name for status output and logs.
    fn name(&self) -> &str {
        "stage"
    }
}
