//! The attacker as a stage of a link direction's pipeline: the bump in the
//! wire.
//!
//! Every relayed direction's pipeline starts with an [`AttackStage`] (before
//! the impairments, so the attacker sees frames as the sender sent them, and
//! what it sends still crosses the link's impairments). With no attack running
//! it passes frames on at once. Attacks are started and stopped while frames
//! flow; each running attack has its own seeded random state and counters.
//!
//! Invariants:
//! - a frame is handled by the first running attack (in start order) whose
//!   filter matches it and that is active (started, not stopped, budget
//!   left); other frames pass unchanged and at once;
//! - `acted <= matched`; an attack's budget (`count`, shared by all the
//!   directions it runs on) bounds `acted` over all of them, and its
//!   injections bound `injected`;
//! - the stage holds no frames itself: delayed and replayed copies wait in the
//!   pipeline, injected ones are handed out by [`AttackStage::pump`].

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::matcher::Matcher;
use super::primitives::{Output, Program};
use crate::capture::pcapng;
use crate::emulation::pipeline::{Emit, Frame, Offload, Stage};

/// What one attack did on one direction (or, summed, on all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackCounters {
    /// Frames its filter matched while it was active.
    pub matched: u64,
    /// Matched frames it did something to.
    pub acted: u64,
    pub dropped: u64,
    pub delayed: u64,
    /// Extra copies sent by `duplicate`.
    pub duplicated: u64,
    pub modified: u64,
    /// Copies sent later by `replay`.
    pub replayed: u64,
    /// Crafted frames sent.
    pub injected: u64,
    /// Frames a change was asked for but could not be made to.
    pub unmodifiable: u64,
}

impl AttackCounters {
    pub fn add(&mut self, o: &AttackCounters) {
        self.matched += o.matched;
        self.acted += o.acted;
        self.dropped += o.dropped;
        self.delayed += o.delayed;
        self.duplicated += o.duplicated;
        self.modified += o.modified;
        self.replayed += o.replayed;
        self.injected += o.injected;
        self.unmodifiable += o.unmodifiable;
    }
}

/// The frames an attack received and sent, as pcapng: interface 0 is
/// `ID:received` (the frames as they reached the attacker), interface 1
/// `ID:sent` (what it sent in their place, and what it injected).
pub struct Capture {
    out: pcapng::Output<File>,
    /// Wall-clock ns at the relay clock's zero.
    epoch_ns: u64,
}

/// A capture shared by an attack's directions.
pub type SharedCapture = Arc<Mutex<Capture>>;

impl Capture {
    /// Starts a capture into `file` for attack `id`; `now_ns` is the relay
    /// clock now.
    pub fn new(file: File, id: u64, now_ns: u64) -> std::io::Result<SharedCapture> {
        let labels = [format!("{id}:received"), format!("{id}:sent")];
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as u64;
        Ok(Arc::new(Mutex::new(Capture {
            out: pcapng::Output::new(file, &labels)?,
            epoch_ns: wall.saturating_sub(now_ns),
        })))
    }

    fn write(&mut self, interface: u32, at_ns: u64, data: &[u8]) {
        let ts = Duration::from_nanos(self.epoch_ns + at_ns);
        let flags = if interface == 0 {
            pcapng::EPB_INBOUND
        } else {
            pcapng::EPB_OUTBOUND
        };
        if let Err(e) = self.out.packet(interface, ts, data, data.len(), flags) {
            tracing::warn!("attack capture: {e}");
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::warn!("attack capture: {e}");
        }
    }
}

fn with<T>(m: &Mutex<T>, f: impl FnOnce(&mut T)) {
    f(&mut m.lock().unwrap_or_else(PoisonError::into_inner));
}

/// An attack ready to start on one direction.
#[derive(Clone)]
pub struct Armed {
    pub id: u64,
    pub matcher: Matcher,
    pub program: Arc<Program>,
    /// Starts this long after it is installed.
    pub after: Duration,
    /// Stops by itself this long after it started.
    pub duration: Option<Duration>,
    /// Matched frames it may still act on, shared by all its directions
    /// (`None`: no limit).
    pub budget: Option<Arc<AtomicU64>>,
    pub seed: u64,
    pub capture: Option<SharedCapture>,
}

struct Running {
    armed: Armed,
    start_ns: u64,
    stop_ns: Option<u64>,
    rng: ChaCha8Rng,
    counters: AttackCounters,
    next_inject_ns: u64,
    stopped: bool,
}

impl Running {
    fn active(&self, now: u64) -> bool {
        !self.stopped && now >= self.start_ns && self.stop_ns.is_none_or(|s| now < s)
    }

    fn budget_left(&self) -> bool {
        self.armed
            .budget
            .as_ref()
            .is_none_or(|b| b.load(Ordering::Relaxed) > 0)
    }

    /// Takes one frame from the budget; false when it is spent.
    fn take_budget(&self) -> bool {
        self.armed.budget.as_ref().is_none_or(|b| {
            b.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }

    /// Gives back a unit taken for a frame the attack did not act on after all.
    fn refund_budget(&self) {
        if let Some(b) = &self.armed.budget {
            b.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn injections_left(&self) -> u64 {
        self.armed
            .program
            .inject
            .as_ref()
            .map_or(0, |i| i.count.saturating_sub(self.counters.injected))
    }
}

/// An attack's state on one direction, as the engine reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttackStatus {
    pub id: u64,
    /// Started and not yet stopped, expired or out of budget.
    pub active: bool,
    pub counters: AttackCounters,
}

/// The attacker stage of one direction. See the module docs.
#[derive(Default)]
pub struct AttackStage {
    attacks: Vec<Running>,
    scratch: Vec<Output>,
}

impl AttackStage {
    pub fn new() -> AttackStage {
        AttackStage::default()
    }

    /// Starts `armed` at `now_ns + armed.after`.
    pub fn start(&mut self, now_ns: u64, armed: Armed) {
        let start_ns = now_ns + armed.after.as_nanos() as u64;
        let stop_ns = armed.duration.map(|d| start_ns + d.as_nanos() as u64);
        self.attacks.push(Running {
            rng: ChaCha8Rng::seed_from_u64(armed.seed),
            armed,
            start_ns,
            stop_ns,
            counters: AttackCounters::default(),
            next_inject_ns: start_ns,
            stopped: false,
        });
    }

    /// Stops attack `id` (frames it already scheduled still leave). Returns
    /// whether it ran here.
    pub fn stop(&mut self, id: u64) -> bool {
        let mut found = false;
        for a in self.attacks.iter_mut().filter(|a| a.armed.id == id) {
            a.stopped = true;
            found = true;
            if let Some(c) = &a.armed.capture {
                with(c, Capture::flush);
            }
        }
        found
    }

    /// Every attack started here, at `now_ns`.
    pub fn statuses(&self, now_ns: u64) -> Vec<AttackStatus> {
        self.attacks
            .iter()
            .map(|a| AttackStatus {
                id: a.armed.id,
                active: a.active(now_ns) && (a.budget_left() || a.injections_left() > 0),
                counters: a.counters,
            })
            .collect()
    }

    /// When the next crafted frame is due, if any is.
    pub fn next_due(&self) -> Option<u64> {
        self.attacks
            .iter()
            .filter(|a| {
                !a.stopped
                    && a.injections_left() > 0
                    && a.stop_ns.is_none_or(|s| a.next_inject_ns < s)
            })
            .map(|a| a.next_inject_ns)
            .min()
    }

    /// Hands every crafted frame due at `now_ns` to `sink` (which sends it
    /// on through the rest of the pipeline).
    pub fn pump(&mut self, now_ns: u64, sink: &mut dyn FnMut(Frame)) {
        for a in &mut self.attacks {
            let Some(inj) = a.armed.program.inject.clone() else {
                continue;
            };
            while !a.stopped
                && a.injections_left() > 0
                && a.next_inject_ns <= now_ns
                && a.stop_ns.is_none_or(|s| a.next_inject_ns < s)
                && !inj.frames.is_empty()
            {
                let i = (a.counters.injected % inj.frames.len() as u64) as usize;
                let data = inj.frames[i].clone();
                if let Some(c) = &a.armed.capture {
                    with(c, |c| c.write(1, a.next_inject_ns, &data));
                }
                a.counters.injected += 1;
                a.next_inject_ns += inj.interval.as_nanos().max(1) as u64;
                sink(Frame {
                    data,
                    seq: u64::MAX,
                    arrival_ns: now_ns,
                    offload: Offload::default(),
                });
            }
        }
    }
}

impl Stage for AttackStage {
    fn on_frame(&mut self, now_ns: u64, frame: Frame, out: &mut Emit) {
        let Some(a) = self
            .attacks
            .iter_mut()
            .find(|a| a.active(now_ns) && a.armed.matcher.matches(&frame.data))
        else {
            out.send_at(now_ns, frame);
            return;
        };
        a.counters.matched += 1;
        if !a.take_budget() {
            out.send_at(now_ns, frame);
            return;
        }
        if a.armed.program.steps.is_empty() {
            // A sniffer: the frame passes, recorded.
            if let Some(c) = &a.armed.capture {
                with(c, |c| c.write(0, now_ns, &frame.data));
            }
            a.counters.acted += 1;
            out.send_at(now_ns, frame);
            return;
        }
        if let Some(c) = &a.armed.capture {
            with(c, |c| c.write(0, now_ns, &frame.data));
        }
        let effect = a.armed.program.apply(
            frame,
            &mut a.rng,
            &mut |f| out.copy_of(f),
            &mut self.scratch,
        );
        if !effect.acted() {
            a.refund_budget();
        }
        let c = &mut a.counters;
        c.acted += u64::from(effect.acted());
        c.dropped += u64::from(effect.dropped);
        c.delayed += u64::from(effect.delayed);
        c.duplicated += u64::from(effect.duplicated);
        c.modified += u64::from(effect.modified);
        c.replayed += u64::from(effect.replayed);
        c.unmodifiable += u64::from(effect.unmodifiable);
        for o in self.scratch.drain(..) {
            let at = now_ns + o.delay.as_nanos() as u64;
            if let Some(c) = &a.armed.capture {
                with(c, |c| c.write(1, at, &o.frame.data));
            }
            out.send_at(at, o.frame);
        }
    }

    fn name(&self) -> &str {
        "attack"
    }
}
