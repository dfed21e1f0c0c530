//! The userspace engine's per-direction pipeline: a pure, deterministic core.
//!
//! No sockets, threads or clocks here: the I/O loop passes the time in (ns on
//! one monotonic clock), pushes the frames it reads, sleeps until
//! [`Pipeline::next_release`] and writes what [`Pipeline::pop_due`] returns.
//! Given the same parameters, seed, frames and times, a pipeline makes the
//! same decisions and releases the same bytes at the same times.
//!
//! A [`Pipeline`] is an ordered list of [`Stage`]s and a release scheduler.
//! [`Pipeline::new`] builds the usual one: a single [`Impairment`] stage with
//! netem's semantics (see its docs and `netem.rs` for the kernel references).
//! Other stages (an attacker that drops, rewrites, delays or injects frames; a
//! capture tap) go before or after it with [`Pipeline::insert_stage`] and never
//! touch impairment code. Between two stages the pipeline holds frames a stage
//! released later than it received them, and hands them to the next stage at
//! their release time, so every stage sees frames at the time they reach it,
//! in time order.

mod netem;
pub mod offload;
mod params;
mod scheduler;
mod stage;

use std::any::Any;

use serde::Serialize;

pub use netem::{Impairment, ImpairmentCounters};
pub use offload::Offload;
pub use params::{
    DEFAULT_LIMIT, Direction, DirectionParams, LossModel, MAX_DELAY_NS, MAX_JITTER_NS, ParamError,
    Rate, direction_seed,
};
pub use scheduler::{PopDue, ReleaseScheduler, Released};
pub use stage::{Emit, Emitted, Frame, POOL_MAX, Stage};

/// What one direction did and holds, for `testbed link show`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counters {
    /// Frames released by the pipeline (duplicates included).
    pub passed: u64,
    /// Frames dropped by the loss model.
    pub dropped_loss: u64,
    /// Frames tail-dropped at the queue limit.
    pub dropped_queue: u64,
    /// Super-frames picked for corruption that could not be segmented or
    /// checksummed (netem drops them too).
    pub dropped_malformed: u64,
    /// Duplicates made.
    pub duplicated: u64,
    /// Frames sent ahead of the queue.
    pub reordered: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
    /// Frames held by the pipeline now (waiting for release).
    pub queue_len: u64,
}

/// One link direction: stages in order, then a release scheduler.
///
/// Invariants:
/// - time never runs backwards: a `now_ns` below one seen before is taken as
///   the latest seen;
/// - every frame pushed is, at any moment, exactly one of: held (counted in
///   `queue_len`), released (`passed`) or dropped by some stage. For the
///   impairment stage alone: `pushed + duplicated = passed + dropped_loss +
///   dropped_queue + queue_len`;
/// - released frames come out in release-time order, FIFO among equal times,
///   with frames a stage sent "first" (netem reordering) ahead of all others.
pub struct Pipeline {
    stages: Vec<Box<dyn Stage>>,
    /// One reusable output buffer per stage.
    emits: Vec<Emit>,
    /// `boundaries[i]` holds frames stage `i` released later than it got
    /// them, until they reach stage `i + 1`.
    boundaries: Vec<ReleaseScheduler>,
    out: ReleaseScheduler,
    /// Spare frame buffers (see [`Pipeline::take_buffer`]).
    pool: Vec<Vec<u8>>,
    next_seq: u64,
    clock: u64,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("stages", &self.stage_names().collect::<Vec<_>>())
            .field("out", &self.out)
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline with one impairment stage.
    pub fn new(params: DirectionParams) -> Result<Pipeline, ParamError> {
        Ok(Pipeline::with_stages(vec![Box::new(Impairment::new(
            params,
        )?)]))
    }

    /// A pipeline of the given stages, in order. With none, frames pass
    /// straight through.
    pub fn with_stages(stages: Vec<Box<dyn Stage>>) -> Pipeline {
        let n = stages.len();
        Pipeline {
            emits: (0..n).map(|_| Emit::new()).collect(),
            boundaries: (0..n.saturating_sub(1))
                .map(|_| ReleaseScheduler::new())
                .collect(),
            stages,
            out: ReleaseScheduler::new(),
            pool: Vec::new(),
            next_seq: 0,
            clock: 0,
        }
    }

    /// Inserts `stage` before the stage now at `index` (`index == len`
    /// appends). Frames waiting between the stages at `index - 1` and `index`
    /// will pass through the new stage.
    ///
    /// # Panics
    /// If `index` is greater than the number of stages.
    pub fn insert_stage(&mut self, index: usize, stage: Box<dyn Stage>) {
        assert!(index <= self.stages.len(), "stage index out of range");
        if !self.stages.is_empty() {
            let at = index.min(self.stages.len() - 1);
            self.boundaries.insert(at, ReleaseScheduler::new());
        }
        self.stages.insert(index, stage);
        self.emits.insert(index, Emit::new());
    }

    /// The stages' names, in order.
    pub fn stage_names(&self) -> impl Iterator<Item = &str> {
        self.stages.iter().map(|s| s.name())
    }

    /// The first stage of type `T`.
    pub fn stage<T: Stage>(&self) -> Option<&T> {
        self.stages
            .iter()
            .find_map(|s| (s.as_ref() as &dyn Any).downcast_ref::<T>())
    }

    /// The first stage of type `T`, for runtime changes.
    pub fn stage_mut<T: Stage>(&mut self) -> Option<&mut T> {
        self.stages
            .iter_mut()
            .find_map(|s| (s.as_mut() as &mut dyn Any).downcast_mut::<T>())
    }

    /// The impairment parameters in force, if there is an impairment stage.
    pub fn params(&self) -> Option<&DirectionParams> {
        self.stage::<Impairment>().map(Impairment::params)
    }

    /// Changes the impairment for frames arriving from now on; held frames
    /// keep their release times. On error nothing changes.
    pub fn set_params(&mut self, params: DirectionParams) -> Result<(), ParamError> {
        self.stage_mut::<Impairment>()
            .ok_or(ParamError::NoImpairmentStage)?
            .set_params(params)
    }

    /// Takes `now_ns` as the current time, never going backwards.
    fn tick(&mut self, now_ns: u64) -> u64 {
        self.clock = self.clock.max(now_ns);
        self.clock
    }

    /// A plain frame arrives at `now_ns`; returns its sequence number.
    pub fn push(&mut self, now_ns: u64, data: Vec<u8>) -> u64 {
        self.push_offloaded(now_ns, data, Offload::default())
    }

    /// A frame with pending offload work arrives at `now_ns` (as read with
    /// `PACKET_VNET_HDR`); returns its sequence number.
    pub fn push_offloaded(&mut self, now_ns: u64, data: Vec<u8>, offload: Offload) -> u64 {
        let now = self.tick(now_ns);
        let seq = self.next_seq;
        self.next_seq += 1;
        let frame = Frame {
            data,
            seq,
            arrival_ns: now,
            offload,
        };
        self.advance(now);
        self.run(0, now, frame);
        seq
    }

    /// Hands `frame` to the stage at `index` at `now_ns`, as if the stage
    /// before it had just released it (`index == 0` is the entrance; `index`
    /// at or past the number of stages releases it directly). For stages that
    /// make frames of their own, such as an attacker injecting traffic that
    /// must still cross the impairments.
    pub fn inject(&mut self, index: usize, now_ns: u64, frame: Frame) {
        let now = self.tick(now_ns);
        self.advance(now);
        self.run(index, now, frame);
    }

    /// Runs `frame` through the stage at `index` and routes what comes out.
    fn run(&mut self, index: usize, now: u64, frame: Frame) {
        if index >= self.stages.len() {
            self.out.push(now, frame);
            return;
        }
        let mut out = std::mem::take(&mut self.emits[index]);
        std::mem::swap(&mut out.pool, &mut self.pool);
        self.stages[index].on_frame(now, frame, &mut out);
        std::mem::swap(&mut out.pool, &mut self.pool);
        for item in out.drain() {
            self.route(index, now, item);
        }
        self.emits[index] = out;
    }

    /// Sends one output of the stage at `index` on: to the release scheduler
    /// after the last stage, to the next stage now if due, else to wait.
    fn route(&mut self, index: usize, now: u64, item: Emitted) {
        let next = index + 1;
        if next >= self.stages.len() {
            if item.first {
                self.out.push_first(item.at_ns, item.frame);
            } else {
                self.out.push(item.at_ns, item.frame);
            }
        } else if item.first || item.at_ns <= now {
            self.run(next, now, item.frame);
        } else {
            self.boundaries[index].push(item.at_ns, item.frame);
        }
    }

    /// Delivers frames waiting between stages whose time has come, earliest
    /// first (ties: the earlier boundary first), each at its release time.
    fn advance(&mut self, now: u64) {
        loop {
            let mut due: Option<(u64, usize)> = None;
            for (i, boundary) in self.boundaries.iter().enumerate() {
                if let Some(at) = boundary.next_release()
                    && at <= now
                    && due.is_none_or(|(best, _)| at < best)
                {
                    due = Some((at, i));
                }
            }
            let Some((at, i)) = due else {
                return;
            };
            if let Some(released) = self.boundaries[i].pop_one(at) {
                self.run(i + 1, at, released.frame);
            }
        }
    }

    /// When the next frame is due (to leave, or to reach the next stage).
    /// `None` when the pipeline holds nothing.
    pub fn next_release(&self) -> Option<u64> {
        self.boundaries
            .iter()
            .filter_map(ReleaseScheduler::next_release)
            .chain(self.out.next_release())
            .min()
    }

    /// Every frame due at `now_ns`, in release order.
    pub fn pop_due(&mut self, now_ns: u64) -> PopDue<'_> {
        let now = self.tick(now_ns);
        self.advance(now);
        self.out.pop_due(now)
    }

    /// Frames held now.
    pub fn queue_len(&self) -> usize {
        self.out.len()
            + self
                .boundaries
                .iter()
                .map(ReleaseScheduler::len)
                .sum::<usize>()
    }

    /// The counters of this direction.
    pub fn counters(&self) -> Counters {
        let imp = self
            .stage::<Impairment>()
            .map(Impairment::counters)
            .unwrap_or_default();
        Counters {
            passed: self.out.released(),
            dropped_loss: imp.dropped_loss,
            dropped_queue: imp.dropped_queue,
            dropped_malformed: imp.dropped_malformed,
            duplicated: imp.duplicated,
            reordered: imp.reordered,
            corrupted: imp.corrupted,
            queue_len: self.queue_len() as u64,
        }
    }

    /// An empty buffer for the next frame read, reusing the capacity of
    /// dropped or recycled frames when there is one.
    pub fn take_buffer(&mut self) -> Vec<u8> {
        self.pool.pop().unwrap_or_default()
    }

    /// Gives back the buffer of a frame the I/O loop has sent.
    pub fn recycle(&mut self, mut buffer: Vec<u8>) {
        if self.pool.len() < POOL_MAX && buffer.capacity() > 0 {
            buffer.clear();
            self.pool.push(buffer);
        }
    }
}
