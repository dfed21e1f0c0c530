//! The attacker's primitives on raw frames: what one attack does to each frame
//! its filter matches, as data.
//!
//! A [`Program`] is an ordered list of [`Primitive`]s applied to every matched
//! frame, plus an optional [`Injection`] of crafted frames. Named attacks
//! ([`super::library`]) are programs with parameters; the engine's attack stage
//! ([`super::stage`]) runs them.
//!
//! Applying a program to one frame yields zero or more [`Output`]s, each with a
//! release delay. Invariants: an output is `altered` iff its bytes differ from
//! the frame the attacker received (an edit that writes the same bytes leaves
//! it unaltered); delays are at most [`MAX_DELAY`]; a frame yields at most
//! [`MAX_COPIES`] + 2 outputs.

use std::time::Duration;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::packet;
use crate::emulation::pipeline::{Frame, Offload};

/// Longest delay or replay horizon a primitive may ask for.
pub const MAX_DELAY: Duration = Duration::from_secs(600);
/// Most copies one frame may fan out into (duplicates or replays).
pub const MAX_COPIES: u32 = 1_000;

/// One change to a frame's transport payload (see [`packet::payload_range`]).
/// Offsets past the payload's end leave the frame as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Edit {
    /// XOR `mask` into the payload from `offset` (flip bits).
    Xor { offset: usize, mask: Vec<u8> },
    /// Overwrite the payload from `offset` with `bytes`.
    Write { offset: usize, bytes: Vec<u8> },
}

impl Edit {
    /// Applies the edit to `payload`; returns whether any byte changed.
    fn apply(&self, payload: &mut [u8]) -> bool {
        let (offset, with, xor) = match self {
            Edit::Xor { offset, mask } => (*offset, mask, true),
            Edit::Write { offset, bytes } => (*offset, bytes, false),
        };
        let Some(target) = payload.get_mut(offset..) else {
            return false;
        };
        let mut changed = false;
        for (b, w) in target.iter_mut().zip(with) {
            let new = if xor { *b ^ w } else { *w };
            changed |= new != *b;
            *b = new;
        }
        changed
    }
}

/// One step of a program, applied to every matched frame in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "op")]
pub enum Primitive {
    /// Drops the frame with this probability (1 = always).
    Drop { probability: f64 },
    /// Holds the frame this long before it goes on, with this probability
    /// (below 1, delayed frames fall behind later ones: reordering).
    Delay { delay: Duration, probability: f64 },
    /// Sends `copies` extra copies with the frame.
    Duplicate { copies: u32 },
    /// Changes the payload, then recomputes IP and UDP/TCP checksums so the
    /// receiver's stack accepts the frame and its application sees the change.
    Modify { edits: Vec<Edit> },
    /// Records the frame and sends `copies` copies later: the first `after`
    /// the original, then one every `interval`; each copy gets `edits`.
    Replay {
        after: Duration,
        copies: u32,
        interval: Duration,
        edits: Vec<Edit>,
    },
}

/// Crafted frames sent by the attack itself: `count` frames, one every
/// `interval`, cycling through `frames`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Injection {
    pub frames: Vec<Vec<u8>>,
    pub count: u64,
    pub interval: Duration,
}

/// What an attack does: primitives for matched frames, and frames of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Program {
    pub steps: Vec<Primitive>,
    pub inject: Option<Injection>,
}

/// One frame leaving the attacker.
#[derive(Debug)]
pub struct Output {
    /// How long after the attacker received the original it leaves.
    pub delay: Duration,
    pub frame: Frame,
    /// Its bytes differ from the original's.
    pub altered: bool,
}

/// What applying a program to one frame did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Effect {
    pub dropped: bool,
    pub delayed: bool,
    pub duplicated: u32,
    pub modified: bool,
    pub replayed: u32,
    /// A change was asked for but the frame could not take it (a
    /// segmentation-offload super-frame, or checksum state that did not parse).
    pub unmodifiable: bool,
}

impl Effect {
    /// The attack did something to the frame.
    pub fn acted(&self) -> bool {
        self.dropped || self.delayed || self.duplicated > 0 || self.modified || self.replayed > 0
    }
}

impl Program {
    /// Whether the program changes nothing for matched frames (a sniffer).
    pub fn is_passive(&self) -> bool {
        self.steps.is_empty() && self.inject.is_none()
    }

    /// Applies the steps to `frame`, pushing what leaves to `out` (in release
    /// order for equal delays). `copy` makes a copy of a frame (the pipeline
    /// lends spare buffers).
    pub fn apply(
        &self,
        frame: Frame,
        rng: &mut ChaCha8Rng,
        copy: &mut dyn FnMut(&Frame) -> Frame,
        out: &mut Vec<Output>,
    ) -> Effect {
        let mut effect = Effect::default();
        let start = out.len();
        out.push(Output {
            delay: Duration::ZERO,
            frame,
            altered: false,
        });
        for step in &self.steps {
            match step {
                Primitive::Drop { probability } => {
                    if *probability >= 1.0 || unit_draw(rng) < *probability {
                        out.truncate(start);
                        effect.dropped = true;
                        return effect;
                    }
                }
                Primitive::Delay { delay, probability } => {
                    if *probability >= 1.0 || unit_draw(rng) < *probability {
                        for o in &mut out[start..] {
                            o.delay += *delay;
                        }
                        effect.delayed = true;
                    }
                }
                Primitive::Duplicate { copies } => {
                    let n = out.len();
                    for _ in 0..*copies {
                        for i in start..n {
                            let o = &out[i];
                            let (delay, altered, frame) = (o.delay, o.altered, copy(&o.frame));
                            out.push(Output {
                                delay,
                                frame,
                                altered,
                            });
                        }
                    }
                    effect.duplicated += copies;
                }
                Primitive::Modify { edits } => {
                    for o in &mut out[start..] {
                        match modify(&mut o.frame, edits) {
                            Some(changed) => {
                                o.altered |= changed;
                                effect.modified |= changed;
                            }
                            None => effect.unmodifiable = true,
                        }
                    }
                }
                Primitive::Replay {
                    after,
                    copies,
                    interval,
                    edits,
                } => {
                    let n = out.len();
                    for k in 0..*copies {
                        for i in start..n {
                            let o = &out[i];
                            let mut frame = copy(&o.frame);
                            let mut altered = o.altered;
                            if !edits.is_empty() {
                                match modify(&mut frame, edits) {
                                    Some(changed) => altered |= changed,
                                    None => effect.unmodifiable = true,
                                }
                            }
                            out.push(Output {
                                delay: o.delay + *after + *interval * k,
                                frame,
                                altered,
                            });
                        }
                    }
                    effect.replayed += copies;
                }
            }
        }
        effect
    }
}

/// A uniform draw from [0, 1) with 53 random bits.
fn unit_draw(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Applies `edits` to a frame's payload and fixes its checksums. `None` when
/// the frame cannot be changed (a super-frame, or an unparsable checksum
/// request); else whether a byte changed.
fn modify(frame: &mut Frame, edits: &[Edit]) -> Option<bool> {
    if frame.offload.is_gso() {
        return None;
    }
    // A pending checksum is computed first, so the frame is plain and the
    // recomputed checksums below cover the new bytes.
    frame.offload.finalize_checksum(&mut frame.data).ok()?;
    frame.offload = Offload::default();
    let range = packet::payload_range(&frame.data)?;
    let payload = &mut frame.data[range];
    let mut changed = false;
    for edit in edits {
        changed |= edit.apply(payload);
    }
    if changed {
        packet::fix_checksums(&mut frame.data);
    }
    Some(changed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn frame(data: Vec<u8>) -> Frame {
        Frame {
            data,
            seq: 0,
            arrival_ns: 0,
            offload: Offload::default(),
        }
    }

    fn copier() -> impl FnMut(&Frame) -> Frame {
        |f: &Frame| f.clone()
    }

    #[test]
    fn edits_change_only_the_bytes_they_cover() {
        let mut p = vec![0u8, 1, 2, 3];
        assert!(
            Edit::Xor {
                offset: 1,
                mask: vec![0xff]
            }
            .apply(&mut p)
        );
        assert_eq!(p, [0, 0xfe, 2, 3]);
        assert!(
            !Edit::Write {
                offset: 2,
                bytes: vec![2, 3, 9]
            }
            .apply(&mut p),
            "same bytes, and the rest past the end"
        );
        assert!(
            !Edit::Xor {
                offset: 9,
                mask: vec![1]
            }
            .apply(&mut p)
        );
    }

    #[test]
    fn drop_delay_duplicate_and_replay_compose_in_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let program = Program {
            steps: vec![
                Primitive::Delay {
                    delay: Duration::from_millis(5),
                    probability: 1.0,
                },
                Primitive::Duplicate { copies: 1 },
                Primitive::Replay {
                    after: Duration::from_secs(1),
                    copies: 2,
                    interval: Duration::from_millis(100),
                    edits: vec![],
                },
            ],
            inject: None,
        };
        let mut out = Vec::new();
        let e = program.apply(frame(vec![1, 2, 3]), &mut rng, &mut copier(), &mut out);
        let delays: Vec<u64> = out.iter().map(|o| o.delay.as_millis() as u64).collect();
        assert_eq!(delays, [5, 5, 1005, 1005, 1105, 1105]);
        assert!(e.acted() && e.delayed && e.duplicated == 1 && e.replayed == 2);
        assert!(out.iter().all(|o| !o.altered && o.frame.data == [1, 2, 3]));

        let drop = Program {
            steps: vec![Primitive::Drop { probability: 1.0 }],
            inject: None,
        };
        out.clear();
        assert!(
            drop.apply(frame(vec![1]), &mut rng, &mut copier(), &mut out)
                .dropped
        );
        assert!(out.is_empty());
    }

    #[test]
    fn drop_probability_is_about_right() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let program = Program {
            steps: vec![Primitive::Drop { probability: 0.25 }],
            inject: None,
        };
        let mut out = Vec::new();
        let dropped = (0..10_000)
            .filter(|_| {
                out.clear();
                program
                    .apply(frame(vec![0]), &mut rng, &mut copier(), &mut out)
                    .dropped
            })
            .count();
        assert!((2_200..2_800).contains(&dropped), "{dropped}");
    }

    #[test]
    fn modify_changes_the_udp_payload_and_keeps_the_checksum_valid() {
        let built = packet::build_udp(
            [2, 0, 0, 0, 0, 1],
            [2, 0, 0, 0, 0, 2],
            "10.0.0.1:5000".parse().unwrap(),
            "10.0.0.2:4434".parse().unwrap(),
            b"hello",
        )
        .unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let program = Program {
            steps: vec![Primitive::Modify {
                edits: vec![Edit::Xor {
                    offset: 0,
                    mask: vec![0x20],
                }],
            }],
            inject: None,
        };
        let mut out = Vec::new();
        let e = program.apply(frame(built.clone()), &mut rng, &mut copier(), &mut out);
        assert!(e.modified && out[0].altered);
        let data = &out[0].frame.data;
        let range = packet::payload_range(data).unwrap();
        assert_eq!(&data[range], b"Hello");
        assert_eq!(
            crate::emulation::pipeline::offload::l4_checksum_ok(data),
            Some(true)
        );
    }
}
