//! The impairment stage: netem's enqueue path, decision for decision.
//!
//! References are to `net/sched/sch_netem.c` (Linux 6.x). The stage is one
//! [`Stage`] rather than a chain of small ones because netem's steps are not
//! independent: a duplicate re-enters the whole qdisc (its own loss,
//! corruption, limit, reorder and delay draws) before the original is queued;
//! the queue limit is checked after the corruption draw; the rate reference
//! is the last frame of the shared queue, reordered ones included. Splitting
//! these across stages would either change the semantics or make the stages
//! share hidden state.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::offload::{self, Offload};
use super::params::{DirectionParams, LossModel, ParamError, Rate};
use super::scheduler::TimeQueue;
use super::stage::{Emit, Frame, Stage};
use crate::emulation::netem::{NETEM_DIST_SCALE, percent_to_prob, table};

/// What the impairment stage did, since it was created (kept across
/// [`Impairment::set_params`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ImpairmentCounters {
    /// Frames handed on (originals and duplicates).
    pub accepted: u64,
    /// Frames dropped by the loss model.
    pub dropped_loss: u64,
    /// Frames tail-dropped because `limit` frames were held.
    pub dropped_queue: u64,
    /// Super-frames picked for corruption that could not be segmented, or
    /// frames whose pending checksum could not be computed.
    pub dropped_malformed: u64,
    /// Duplicates made (each then goes through the impairments itself).
    pub duplicated: u64,
    /// Frames sent at once ahead of the queue.
    pub reordered: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
}

/// netem's `struct crndstate`: the state of one correlated generator.
#[derive(Debug, Clone, Copy)]
struct Crandom {
    last: u32,
    rho: u32,
}

/// `get_crandom()`: with `rho == 0` a fresh uniform `u32`; otherwise
/// `(value * (2^32 - (rho + 1)) + last * (rho + 1)) >> 32`, remembered as
/// `last`.
fn crandom(rng: &mut ChaCha8Rng, state: &mut Crandom) -> u32 {
    let value = u64::from(rng.next_u32());
    if state.rho == 0 {
        return value as u32;
    }
    let rho = u64::from(state.rho) + 1;
    let answer = ((u128::from(value) * u128::from((1u64 << 32) - rho)
        + u128::from(state.last) * u128::from(rho))
        >> 32) as u32;
    state.last = answer;
    answer
}

/// A uniform integer below `n` (`n > 0`) by Lemire's multiply-shift with
/// rejection, the method of the kernel's `get_random_u32_below()`.
fn below(rng: &mut ChaCha8Rng, n: u32) -> u32 {
    let mut m = u64::from(rng.next_u32()) * u64::from(n);
    if (m as u32) < n {
        let threshold = n.wrapping_neg() % n;
        while (m as u32) < threshold {
            m = u64::from(rng.next_u32()) * u64::from(n);
        }
    }
    (m >> 32) as u32
}

/// The loss generator's Markov state (`clg.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClgState {
    /// GE good, or 4-state "transmitted in gap period" (netem's initial states).
    GoodOrTxGap,
    /// GE bad, or 4-state "transmitted in burst period".
    BadOrTxBurst,
    /// 4-state "lost in burst period".
    LostBurst,
    /// 4-state "isolated loss in gap period".
    LostGap,
}

/// The loss model as netem holds it: thresholds in 32-bit fixed point.
#[derive(Debug, Clone, Copy)]
enum Loss {
    Random(u32),
    /// a1 = p, a2 = r, a3 = h, a4 = 1-k (netem's `clg` fields).
    GilbertElliott {
        a1: u32,
        a2: u32,
        a3: u32,
        a4: u32,
    },
    /// a1 = p13, a2 = p31, a3 = p32, a4 = p14, a5 = p23.
    FourState {
        a1: u32,
        a2: u32,
        a3: u32,
        a4: u32,
        a5: u32,
    },
}

/// Validated parameters in the form the hot path uses.
#[derive(Debug, Clone, Copy)]
struct Compiled {
    latency: i64,
    jitter: i64,
    dist: Option<&'static [i16]>,
    loss: Loss,
    duplicate: u32,
    corrupt: u32,
    reorder: u32,
    gap: u32,
    rate: Option<Rate>,
    limit: usize,
}

impl Compiled {
    fn new(p: &DirectionParams) -> Compiled {
        let loss = match p.loss {
            LossModel::Random { percent, .. } => Loss::Random(percent_to_prob(percent)),
            LossModel::GilbertElliott {
                p,
                r,
                one_minus_h,
                one_minus_k,
            } => Loss::GilbertElliott {
                a1: percent_to_prob(p),
                a2: percent_to_prob(r),
                // tc sends h = 1 - (1-h); the kernel loses when rnd > h.
                a3: u32::MAX - percent_to_prob(one_minus_h),
                a4: percent_to_prob(one_minus_k),
            },
            LossModel::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            } => Loss::FourState {
                a1: percent_to_prob(p13),
                a2: percent_to_prob(p31),
                a3: percent_to_prob(p32),
                a4: percent_to_prob(p14),
                a5: percent_to_prob(p23),
            },
        };
        Compiled {
            // Both fit by validation (MAX_DELAY_NS, MAX_JITTER_NS).
            latency: p.delay_ns as i64,
            jitter: p.jitter_ns as i64,
            dist: table(p.distribution),
            loss,
            duplicate: percent_to_prob(p.duplicate),
            corrupt: percent_to_prob(p.corrupt),
            reorder: percent_to_prob(p.reorder),
            gap: p.reorder_gap,
            rate: p.rate,
            limit: p.limit as usize,
        }
    }
}

/// The impairment stage of one link direction: netem's semantics on a seeded
/// `ChaCha8Rng`.
///
/// Per frame, in netem's order (`netem_enqueue()`):
/// 1. duplicate draw (originals only), then loss draw; lost and not
///    duplicated means dropped; lost and duplicated means one copy goes on;
/// 2. corruption draw: one random bit of one random byte flipped (empty
///    frames are left alone);
/// 3. tail drop if `limit` frames are held (the would-be duplicate with it);
/// 4. the duplicate re-enters at step 1 without duplicating again, and is
///    queued before the original;
/// 5. reorder (netem `gap`/`reorder`): the frame goes out at once ahead of
///    everything, and the gap counter restarts; otherwise
/// 6. delay = `tabledist(latency, jitter)` (correlated), and with a rate the
///    frame leaves `packet_time` after the later of the last held frame's
///    release and `now + delay`.
///
/// "Held" frames are those released by this stage later than the current
/// call's time; the count drives the limit and the rate reference, so both
/// are functions of arrival times alone, not of when the I/O loop pops.
pub struct Impairment {
    params: DirectionParams,
    c: Compiled,
    rng: ChaCha8Rng,
    delay_cor: Crandom,
    loss_cor: Crandom,
    dup_cor: Crandom,
    reorder_cor: Crandom,
    corrupt_cor: Crandom,
    clg: ClgState,
    /// netem's `counter`: frames delayed since the last reordered one.
    counter: u32,
    /// Release times later than the last call's time, earliest on top.
    held: TimeQueue<()>,
    /// The latest release time handed out; the last held frame's while any
    /// is held (the latest is the last to expire).
    last_release: u64,
    counters: ImpairmentCounters,
}

impl std::fmt::Debug for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impairment")
            .field("params", &self.params)
            .field("held", &self.held.len())
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The generator for a seed: ChaCha8 keyed with the seed's 8 little-endian
/// bytes followed by zeros, stream 0.
fn rng_for(seed: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    ChaCha8Rng::from_seed(key)
}

impl Impairment {
    pub fn new(params: DirectionParams) -> Result<Impairment, ParamError> {
        params.validate()?;
        let zero = Crandom { last: 0, rho: 0 };
        let mut stage = Impairment {
            c: Compiled::new(&params),
            rng: rng_for(params.seed),
            delay_cor: zero,
            loss_cor: zero,
            dup_cor: zero,
            reorder_cor: zero,
            corrupt_cor: zero,
            clg: ClgState::GoodOrTxGap,
            counter: 0,
            held: TimeQueue::with_capacity((params.limit as usize).min(4096)),
            last_release: 0,
            counters: ImpairmentCounters::default(),
            params,
        };
        stage.init_state();
        Ok(stage)
    }

    /// What `netem_change()` resets: the correlated generators (`last` drawn
    /// afresh, in a fixed order), the loss chain's state and the gap counter.
    fn init_state(&mut self) {
        let p = &self.params;
        let rhos = [
            percent_to_prob(p.delay_correlation),
            match p.loss {
                LossModel::Random { correlation, .. } => percent_to_prob(correlation),
                _ => 0,
            },
            percent_to_prob(p.duplicate_correlation),
            percent_to_prob(p.reorder_correlation),
            percent_to_prob(p.corrupt_correlation),
        ];
        let mut states = rhos.map(|rho| Crandom { last: 0, rho });
        for state in &mut states {
            state.last = self.rng.next_u32();
        }
        [
            self.delay_cor,
            self.loss_cor,
            self.dup_cor,
            self.reorder_cor,
            self.corrupt_cor,
        ] = states;
        self.clg = ClgState::GoodOrTxGap;
        self.counter = 0;
    }

    /// Applies new parameters to frames arriving from now on. Frames already
    /// handed on keep their release times; the held count and the rate
    /// reference carry over, so a lower limit drops only new arrivals. As in
    /// `netem_change()`, correlations, the loss chain and the gap counter
    /// restart; the random stream continues unless the seed changed (then it
    /// restarts from the new seed, as `TCA_NETEM_PRNG_SEED` does).
    pub fn set_params(&mut self, params: DirectionParams) -> Result<(), ParamError> {
        params.validate()?;
        if params.seed != self.params.seed {
            self.rng = rng_for(params.seed);
        }
        self.c = Compiled::new(&params);
        self.params = params;
        self.init_state();
        Ok(())
    }

    pub fn params(&self) -> &DirectionParams {
        &self.params
    }

    pub fn counters(&self) -> ImpairmentCounters {
        self.counters
    }

    /// Frames this stage had released later than the time of its last call.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// netem's `loss_event()`.
    fn loss_event(&mut self) -> bool {
        match self.c.loss {
            Loss::Random(loss) => loss != 0 && loss >= crandom(&mut self.rng, &mut self.loss_cor),
            Loss::GilbertElliott { a1, a2, a3, a4 } => {
                // loss_gilb_ell(): transition first, then the loss draw with
                // the probability of the state the frame arrived in.
                match self.clg {
                    ClgState::BadOrTxBurst => {
                        if self.rng.next_u32() < a2 {
                            self.clg = ClgState::GoodOrTxGap;
                        }
                        self.rng.next_u32() > a3
                    }
                    _ => {
                        if self.rng.next_u32() < a1 {
                            self.clg = ClgState::BadOrTxBurst;
                        }
                        self.rng.next_u32() < a4
                    }
                }
            }
            Loss::FourState { a1, a2, a3, a4, a5 } => {
                // loss_4state(): one draw against cumulative thresholds.
                let rnd = u64::from(self.rng.next_u32());
                let (a1, a2, a3, a4, a5) = (
                    u64::from(a1),
                    u64::from(a2),
                    u64::from(a3),
                    u64::from(a4),
                    u64::from(a5),
                );
                match self.clg {
                    ClgState::GoodOrTxGap => {
                        if rnd < a4 {
                            self.clg = ClgState::LostGap;
                            true
                        } else if rnd < a1 + a4 {
                            self.clg = ClgState::LostBurst;
                            true
                        } else {
                            false
                        }
                    }
                    ClgState::BadOrTxBurst => {
                        if rnd < a5 {
                            self.clg = ClgState::LostBurst;
                            true
                        } else {
                            false
                        }
                    }
                    ClgState::LostBurst => {
                        if rnd < a3 {
                            self.clg = ClgState::BadOrTxBurst;
                            false
                        } else if rnd < a2 + a3 {
                            self.clg = ClgState::GoodOrTxGap;
                            false
                        } else {
                            true
                        }
                    }
                    ClgState::LostGap => {
                        self.clg = ClgState::GoodOrTxGap;
                        false
                    }
                }
            }
        }
    }

    /// netem's `tabledist(latency, jitter, &delay_cor, dist)`, ns; may be
    /// negative when jitter exceeds latency.
    fn tabledist(&mut self) -> i128 {
        let (mu, sigma) = (i128::from(self.c.latency), i128::from(self.c.jitter));
        if sigma == 0 {
            return mu;
        }
        let rnd = crandom(&mut self.rng, &mut self.delay_cor);
        match self.c.dist {
            // sigma <= i32::MAX, so 2 * sigma fits a u32 as in the kernel.
            None => i128::from(rnd % (2 * sigma as u32)) + mu - sigma,
            Some(dist) => {
                let t = i128::from(dist[rnd as usize % dist.len()]);
                let scale = i128::from(NETEM_DIST_SCALE);
                let mut x = (sigma % scale) * t;
                if x >= 0 {
                    x += scale / 2;
                } else {
                    x -= scale / 2;
                }
                x / scale + (sigma / scale) * t + mu
            }
        }
    }

    /// Forgets release times that are no longer later than `now_ns`.
    fn expire(&mut self, now_ns: u64) {
        while let Some(at) = self.held.peek_at() {
            if at > now_ns {
                break;
            }
            self.held.pop();
        }
    }

    /// `netem_enqueue()` for one frame; `is_duplicate` is netem's
    /// `skb->tc_depth != 0` for the re-injected copy. A super-frame picked
    /// for corruption is cut into segments first: the first goes on
    /// (corrupted), the others then enter one by one with draws of their own,
    /// unless the first was tail-dropped (netem drops them all then).
    fn enqueue(&mut self, now_ns: u64, frame: Frame, is_duplicate: bool, out: &mut Emit) {
        let (seq, arrival_ns) = (frame.seq, frame.arrival_ns);
        let mut rest = Vec::new();
        if self.enqueue_one(now_ns, frame, is_duplicate, out, &mut rest) {
            for data in rest {
                let segment = Frame {
                    data,
                    seq,
                    arrival_ns,
                    offload: Offload::default(),
                };
                self.enqueue(now_ns, segment, false, out);
            }
        }
    }

    /// Flips one random bit of the frame (after cutting a super-frame into
    /// segments, whose tail goes to `rest`, and completing a pending
    /// checksum). `false` if the frame cannot be made plain.
    fn corrupt(&mut self, frame: &mut Frame, rest: &mut Vec<Vec<u8>>) -> bool {
        if frame.offload.is_gso() {
            match offload::segment(&frame.data, &frame.offload) {
                Ok(segments) => {
                    let mut segments = segments.into_iter();
                    frame.data.clear();
                    frame.data.extend(segments.next().unwrap_or_default());
                    frame.offload = Offload::default();
                    rest.extend(segments);
                }
                Err(_) => return false,
            }
        }
        if frame.offload.finalize_checksum(&mut frame.data).is_err() {
            return false;
        }
        let len = u32::try_from(frame.data.len()).unwrap_or(u32::MAX);
        if len > 0 {
            let byte = below(&mut self.rng, len) as usize;
            let bit = below(&mut self.rng, 8);
            frame.data[byte] ^= 1 << bit;
            self.counters.corrupted += 1;
        }
        true
    }

    /// [`Impairment::enqueue`] for the frame itself; `false` if it was
    /// tail-dropped.
    fn enqueue_one(
        &mut self,
        now_ns: u64,
        mut frame: Frame,
        is_duplicate: bool,
        out: &mut Emit,
        rest: &mut Vec<Vec<u8>>,
    ) -> bool {
        let c = self.c;
        let duplicate = !is_duplicate
            && c.duplicate != 0
            && c.duplicate >= crandom(&mut self.rng, &mut self.dup_cor);
        let lost = self.loss_event();
        if lost && !duplicate {
            self.counters.dropped_loss += 1;
            out.discard(frame);
            return true;
        }
        // Lost and duplicated: netem's count is 1, the frame goes on alone.
        let copy = (duplicate && !lost).then(|| out.copy_of(&frame));

        if c.corrupt != 0
            && c.corrupt >= crandom(&mut self.rng, &mut self.corrupt_cor)
            && !self.corrupt(&mut frame, rest)
        {
            self.counters.dropped_malformed += 1;
            out.discard(frame);
            if let Some(copy) = copy {
                out.discard(copy);
            }
            return true;
        }

        self.expire(now_ns);
        if self.held.len() >= c.limit {
            self.counters.dropped_queue += 1;
            out.discard(frame);
            if let Some(copy) = copy {
                out.discard(copy);
            }
            return false;
        }

        if let Some(copy) = copy {
            self.counters.duplicated += 1;
            self.enqueue(now_ns, copy, true, out);
        }

        self.counters.accepted += 1;
        let delayed = c.gap == 0
            || self.counter < c.gap - 1
            || c.reorder < crandom(&mut self.rng, &mut self.reorder_cor);
        if !delayed {
            self.counter = 0;
            self.counters.reordered += 1;
            out.send_first(now_ns, frame);
            return true;
        }

        let mut delay = self.tabledist();
        let mut base = i128::from(now_ns);
        if let Some(rate) = c.rate {
            if !self.held.is_empty() {
                // The last held frame is the reference point: the time until
                // it leaves is subtracted from the delay (netem's "time bonus").
                let last = i128::from(self.last_release);
                delay = (delay - (last - base)).max(0);
                base = last;
            }
            let len = frame.offload.wire_len(&frame.data);
            delay += i128::from(rate.packet_time_ns(len));
        }
        let at = (base + delay).clamp(0, i128::from(u64::MAX)) as u64;
        self.counter = self.counter.wrapping_add(1);
        if at > now_ns {
            self.held.push(at, ());
            self.last_release = self.last_release.max(at);
        }
        out.send_at(at, frame);
        true
    }
}

impl Stage for Impairment {
    fn on_frame(&mut self, now_ns: u64, frame: Frame, out: &mut Emit) {
        self.enqueue(now_ns, frame, false, out);
    }

    fn name(&self) -> &str {
        "impairment"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crandom_without_correlation_is_the_raw_stream() {
        let mut a = rng_for(7);
        let mut b = rng_for(7);
        let mut st = Crandom { last: 123, rho: 0 };
        for _ in 0..100 {
            assert_eq!(crandom(&mut a, &mut st), b.next_u32());
        }
    }

    #[test]
    fn crandom_full_correlation_repeats_last() {
        let mut rng = rng_for(1);
        let mut st = Crandom {
            last: 42,
            rho: u32::MAX,
        };
        for _ in 0..100 {
            assert_eq!(crandom(&mut rng, &mut st), 42);
        }
    }

    #[test]
    fn below_stays_below_and_covers() {
        let mut rng = rng_for(3);
        let mut seen = [false; 7];
        for _ in 0..1000 {
            let v = below(&mut rng, 7);
            seen[v as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(below(&mut rng, 1), 0);
    }

    #[test]
    fn uniform_tabledist_bounds() {
        let params = DirectionParams {
            delay_ns: 100,
            jitter_ns: 10,
            ..DirectionParams::default()
        };
        let mut stage = Impairment::new(params).expect("valid");
        for _ in 0..10_000 {
            let d = stage.tabledist();
            assert!((90..110).contains(&d), "{d}");
        }
    }
}
