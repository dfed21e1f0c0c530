//! Kernel netem: the `TCA_OPTIONS` payload of an `RTM_NEWQDISC` of kind
//! `netem`, encoded and decoded byte by byte, plus the delay distribution
//! tables iproute2 ships. Pure functions: nothing here needs root.
//!
//! # Wire format
//!
//! Attribute numbers come from the kernel's `include/uapi/linux/pkt_sched.h`
//! (enum `TCA_NETEM_*`, `NETEM_LOSS_*`, structs `tc_netem_*`); semantics from
//! `net/sched/sch_netem.c` (`netem_change`, `parse_attr`, `get_loss_clg`,
//! `netem_dump`). Integers are in host byte order, as everywhere in rtnetlink.
//!
//! ```text
//! TCA_OPTIONS payload (NOT a nest; sch_netem.c parse_attr() skips the struct):
//!   struct tc_netem_qopt { u32 latency, limit, loss, gap, duplicate, jitter }  24 bytes
//!   then plain attributes, each { u16 len (header included), u16 type } + value,
//!   padded to 4 bytes, in this order (the order tc uses; the kernel ignores it):
//!   TCA_NETEM_LATENCY64  10  s64 ns                      always
//!   TCA_NETEM_JITTER64   11  s64 ns                      always
//!   TCA_NETEM_CORR        1  { u32 delay, loss, dup }    always
//!   TCA_NETEM_REORDER     3  { u32 prob, corr }          always
//!   TCA_NETEM_CORRUPT     4  { u32 prob, corr }          always
//!   TCA_NETEM_LOSS        5  nest (NLA_F_NESTED, as tc sets it) holding one of
//!        NETEM_LOSS_GI    1  { u32 p13, p31, p32, p14, p23 }   (struct order!)
//!        NETEM_LOSS_GE    2  { u32 p, r, h, k1 }                when a model is set
//!   TCA_NETEM_RATE64      8  u64 bytes/s                 only when rate >= 2^32
//!   TCA_NETEM_RATE        6  { u32 rate, s32 packet_overhead, u32 cell_size,
//!                              s32 cell_overhead }       always
//!   TCA_NETEM_DELAY_DIST  2  s16[n], 1 <= n <= 16384     when a table is given
//!   TCA_NETEM_PRNG_SEED  14  u64                         when a seed is given
//! ```
//!
//! `TCA_NETEM_PRNG_SEED` is 14: it follows `TCA_NETEM_SLOT_DIST` (13) in the
//! enum. It is absent from Linux 6.1's header (this machine's linux-libc-dev
//! 6.1.187 ends at `SLOT_DIST`) and was added in 2023 by the "netem: use a
//! seeded PRNG" series; kernels without it ignore the attribute silently.
//!
//! # Traps this encoding avoids (all read in `sch_netem.c`)
//! - `netem_change` keeps the OLD value of any of CORR, REORDER, CORRUPT, RATE
//!   and DELAY_DIST that a change request leaves out. So this encoder always
//!   sends CORR, REORDER, CORRUPT and RATE (zero means off) and a change applies
//!   the whole [`NetemOptions`]. A delay table cannot be removed by a change:
//!   replace the qdisc (delete + add) to drop one.
//! - The kernel takes `max(rate32, RATE64)`: the real rate goes in the u32
//!   field, saturating at `u32::MAX`, and RATE64 is added only at >= 2^32 B/s.
//! - The qopt `latency`/`jitter` fields are psched ticks (64 ns); they are sent
//!   as 0 and the nanoseconds travel in LATENCY64/JITTER64, which override them.
//!   iproute2 6.1's `tc` sends ticks only; [`decode_options`] reads both.
//! - Reordering happens only when `gap >= 1` (`q->gap == 0` means "not doing
//!   reordering"); `tc` silently sets `gap = 1` when given `reorder` alone. If
//!   `gap != 0` and REORDER is absent the kernel assumes 100 % reordering.
//! - `limit == 0` makes netem drop every packet; [`NetemOptions::default`] uses
//!   1000, tc's default.

use std::sync::OnceLock;

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{TcHandle, TcMessage};

use super::Distribution;

/// `TCA_NETEM_*` attribute types (`include/uapi/linux/pkt_sched.h`).
pub mod attr {
    pub const CORR: u16 = 1;
    pub const DELAY_DIST: u16 = 2;
    pub const REORDER: u16 = 3;
    pub const CORRUPT: u16 = 4;
    pub const LOSS: u16 = 5;
    pub const RATE: u16 = 6;
    pub const ECN: u16 = 7;
    pub const RATE64: u16 = 8;
    pub const PAD: u16 = 9;
    pub const LATENCY64: u16 = 10;
    pub const JITTER64: u16 = 11;
    pub const SLOT: u16 = 12;
    pub const SLOT_DIST: u16 = 13;
    pub const PRNG_SEED: u16 = 14;
    /// `NETEM_LOSS_GI`, inside `TCA_NETEM_LOSS`: the 4-state model.
    pub const LOSS_GI: u16 = 1;
    /// `NETEM_LOSS_GE`, inside `TCA_NETEM_LOSS`: Gilbert-Elliott.
    pub const LOSS_GE: u16 = 2;
}

/// The qdisc kind string.
pub const KIND: &str = "netem";

/// `sizeof(struct tc_netem_qopt)`.
pub const QOPT_LEN: usize = 24;

/// Entries in the tables iproute2 ships (`NETEM_DIST_SIZE` in q_netem.c).
pub const NETEM_DIST_SIZE: usize = 4096;

/// The table iproute2 ships for a distribution (the same one `tc` would load,
/// entry for entry), computed once per process; `None` for uniform, which
/// netem computes without a table. The userspace engine draws from these too,
/// so both backends share one definition.
pub fn table(distribution: Distribution) -> Option<&'static [i16]> {
    static NORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETO: OnceLock<Vec<i16>> = OnceLock::new();
    static PARETONORMAL: OnceLock<Vec<i16>> = OnceLock::new();
    let (cell, make): (_, fn() -> Vec<i16>) = match distribution {
        Distribution::Uniform => return None,
        Distribution::Normal => (&NORMAL, normal_table),
        Distribution::Pareto => (&PARETO, pareto_table),
        Distribution::Paretonormal => (&PARETONORMAL, paretonormal_table),
    };
    Some(cell.get_or_init(make).as_slice())
}

/// Fixed-point scale of table entries (`NETEM_DIST_SCALE`): 8192 is one sigma.
pub const NETEM_DIST_SCALE: i32 = 8192;

/// Most entries the kernel accepts in a table (`NETEM_DIST_MAX`).
pub const NETEM_DIST_MAX: usize = 16384;

/// One psched tick in ns (`PSCHED_SHIFT` = 6): the unit of the qopt's
/// `latency` and `jitter` fields.
const PSCHED_TICK_SHIFT: u32 = 6;

/// netem's options in kernel terms, one field per thing the kernel stores.
///
/// Probabilities and correlations are `u32` fractions of `u32::MAX`: 0 is
/// never, `u32::MAX` always (see [`percent_to_prob`]). Every combination of
/// values encodes; `decode_options(&encode_options(x)) == Ok(x)` for all `x`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetemOptions {
    /// Added delay, ns (`TCA_NETEM_LATENCY64`).
    pub latency_ns: i64,
    /// Delay variation, ns (`TCA_NETEM_JITTER64`). The kernel uses
    /// `min(|jitter|, i32::MAX)` (about 2.1 s) and reports that back.
    pub jitter_ns: i64,
    /// Correlation of each delay with the previous one.
    pub delay_corr: u32,
    /// Queue limit in packets. 0 drops every packet.
    pub limit: u32,
    /// Random loss probability (used when `loss_model` is `None`).
    pub loss: u32,
    /// Correlation of random loss.
    pub loss_corr: u32,
    /// A Markov loss model; replaces random loss when set.
    pub loss_model: Option<LossModel>,
    /// Duplication probability.
    pub duplicate: u32,
    /// Correlation of duplication.
    pub duplicate_corr: u32,
    /// Probability that a packet is sent at once (reordered) instead of
    /// delayed. Takes effect only when `gap >= 1`.
    pub reorder: u32,
    /// Correlation of reordering.
    pub reorder_corr: u32,
    /// Reordering gap: packets `1..gap` are delayed, the `gap`-th may jump
    /// ahead. 0 disables reordering.
    pub gap: u32,
    /// Corruption probability (one random bit flipped).
    pub corrupt: u32,
    /// Correlation of corruption.
    pub corrupt_corr: u32,
    /// Rate limit in bytes per second; 0 is unlimited.
    pub rate_bytes_per_sec: u64,
    /// Bytes added to (or, negative, removed from) each packet's length for
    /// the rate computation.
    pub packet_overhead: i32,
    /// Link-layer cell size in bytes (e.g. 53 for ATM); 0 is none.
    pub cell_size: u32,
    /// Per-cell overhead in bytes.
    pub cell_overhead: i32,
    /// Seed of netem's PRNG (`TCA_NETEM_PRNG_SEED`); `None` lets the kernel
    /// pick a random one. Kernel dumps always carry the seed in use.
    pub prng_seed: Option<u64>,
    /// Delay distribution table; `None` is netem's uniform distribution.
    pub delay_dist: Option<DelayDist>,
}

impl Default for NetemOptions {
    /// No impairment at all, with tc's default queue limit of 1000 packets.
    fn default() -> Self {
        NetemOptions {
            latency_ns: 0,
            jitter_ns: 0,
            delay_corr: 0,
            limit: 1000,
            loss: 0,
            loss_corr: 0,
            loss_model: None,
            duplicate: 0,
            duplicate_corr: 0,
            reorder: 0,
            reorder_corr: 0,
            gap: 0,
            corrupt: 0,
            corrupt_corr: 0,
            rate_bytes_per_sec: 0,
            packet_overhead: 0,
            cell_size: 0,
            cell_overhead: 0,
            prng_seed: None,
            delay_dist: None,
        }
    }
}

/// A Markov loss model (`TCA_NETEM_LOSS`). All fields are `u32` probabilities
/// stored verbatim by the kernel; the meanings are those of `sch_netem.c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossModel {
    /// `NETEM_LOSS_GI`, the 4-state model (`loss_4state`), tc's
    /// `loss state P13 P31 P32 P23 P14`. States: 1 = transmit in gap,
    /// 2 = transmit in burst, 3 = lose in burst, 4 = isolated loss. `pij` is
    /// the probability of going from state i to state j. On the wire the
    /// struct order is p13, p31, p32, p14, p23.
    FourState {
        p13: u32,
        p31: u32,
        p32: u32,
        p23: u32,
        p14: u32,
    },
    /// `NETEM_LOSS_GE`, Gilbert-Elliott (`loss_gilb_ell`). Good -> Bad with
    /// probability `p`, Bad -> Good with `r`; a packet is lost with
    /// probability `k1` in Good and `1 - h` in Bad. tc's
    /// `loss gemodel P R 1-H 1-K` stores `h = u32::MAX - prob(1-H)` and
    /// `k1 = prob(1-K)`.
    GilbertElliott { p: u32, r: u32, h: u32, k1: u32 },
}

/// A delay distribution table: 1 to [`NETEM_DIST_MAX`] signed entries, each
/// a quantile in units of sigma / [`NETEM_DIST_SCALE`]. The length bounds are
/// the kernel's (`get_dist_table`), so every `DelayDist` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayDist(Vec<i16>);

/// Why a delay distribution table was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DistTableError {
    #[error("a delay distribution table needs at least one entry")]
    Empty,
    #[error("a delay distribution table has {entries} entries; the kernel takes at most 16384")]
    TooLong { entries: usize },
    #[error("a delay distribution of {bytes} bytes is not a whole number of 16-bit entries")]
    OddLength { bytes: usize },
}

impl DelayDist {
    /// Wraps a table, checking the kernel's length bounds.
    pub fn new(entries: Vec<i16>) -> Result<DelayDist, DistTableError> {
        match entries.len() {
            0 => Err(DistTableError::Empty),
            n if n > NETEM_DIST_MAX => Err(DistTableError::TooLong { entries: n }),
            _ => Ok(DelayDist(entries)),
        }
    }

    /// The table iproute2 generates for a distribution; `None` for uniform,
    /// which netem computes without a table.
    pub fn for_distribution(distribution: Distribution) -> Option<DelayDist> {
        table(distribution).map(|t| DelayDist(t.to_vec()))
    }

    pub fn as_slice(&self) -> &[i16] {
        &self.0
    }

    pub fn into_vec(self) -> Vec<i16> {
        self.0
    }

    fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|v| v.to_ne_bytes()).collect()
    }

    fn from_bytes(bytes: &[u8]) -> Result<DelayDist, DistTableError> {
        let (chunks, rest) = bytes.as_chunks::<2>();
        if !rest.is_empty() {
            return Err(DistTableError::OddLength { bytes: bytes.len() });
        }
        DelayDist::new(chunks.iter().map(|c| i16::from_ne_bytes(*c)).collect())
    }
}

/// A percentage as a netem probability: `round(pct / 100 * u32::MAX)`, with
/// ties to even like tc's `rint`, so the result equals what `tc` sends (e.g.
/// 30 % is `0x4ccccccc`). Values outside `0..=100` are clamped; NaN is 0.
pub fn percent_to_prob(pct: f64) -> u32 {
    if pct.is_nan() {
        return 0;
    }
    let fraction = pct.clamp(0.0, 100.0) / 100.0;
    // In 0.0..=u32::MAX by the clamp, so the cast is exact.
    (fraction * f64::from(u32::MAX)).round_ties_even() as u32
}

/// A netem probability as a percentage in `0.0..=100.0` (for display and for
/// comparing read-back values): the inverse of [`percent_to_prob`] up to its
/// rounding.
pub fn prob_to_percent(prob: u32) -> f64 {
    f64::from(prob) / f64::from(u32::MAX) * 100.0
}

/// Why netem options read back from the kernel were rejected. Every variant
/// names the check that failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetemDecodeError {
    #[error("netem options are {len} bytes, shorter than the 24-byte struct tc_netem_qopt")]
    TooShort { len: usize },
    #[error("netem options: {0}")]
    Framing(#[from] wire::FramingError),
    #[error("netem attribute {attr} is {actual} bytes, expected {expected}")]
    WrongLength {
        attr: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error(
        "netem loss model type {kind} is unknown; expected NETEM_LOSS_GI (1) or NETEM_LOSS_GE (2)"
    )]
    UnknownLossModel { kind: u16 },
    #[error("netem delay distribution: {0}")]
    DelayDist(#[from] DistTableError),
    #[error("the netem qdisc message carries no TCA_OPTIONS")]
    MissingOptions,
}

/// Encodes `options` as the payload of `TCA_OPTIONS` (see the module docs for
/// the layout). Never fails: every field value is valid on the wire, and a
/// [`DelayDist`] holds at most 32 KiB, so every length fits its u16 field.
pub fn encode_options(options: &NetemOptions) -> Vec<u8> {
    let mut out = Vec::with_capacity(160);
    // struct tc_netem_qopt; latency and jitter (ticks) stay 0.
    for field in [
        0,
        options.limit,
        options.loss,
        options.gap,
        options.duplicate,
        0,
    ] {
        out.extend_from_slice(&field.to_ne_bytes());
    }
    wire::put(&mut out, attr::LATENCY64, &options.latency_ns.to_ne_bytes());
    wire::put(&mut out, attr::JITTER64, &options.jitter_ns.to_ne_bytes());
    wire::put(
        &mut out,
        attr::CORR,
        &u32s(&[
            options.delay_corr,
            options.loss_corr,
            options.duplicate_corr,
        ]),
    );
    wire::put(
        &mut out,
        attr::REORDER,
        &u32s(&[options.reorder, options.reorder_corr]),
    );
    wire::put(
        &mut out,
        attr::CORRUPT,
        &u32s(&[options.corrupt, options.corrupt_corr]),
    );
    if let Some(model) = &options.loss_model {
        let (kind, value) = match *model {
            LossModel::FourState {
                p13,
                p31,
                p32,
                p23,
                p14,
            } => (attr::LOSS_GI, u32s(&[p13, p31, p32, p14, p23])),
            LossModel::GilbertElliott { p, r, h, k1 } => (attr::LOSS_GE, u32s(&[p, r, h, k1])),
        };
        let mut nest = Vec::with_capacity(24);
        wire::put(&mut nest, kind, &value);
        wire::put(&mut out, attr::LOSS | wire::NLA_F_NESTED, &nest);
    }
    let rate32 = u32::try_from(options.rate_bytes_per_sec).unwrap_or(u32::MAX);
    if options.rate_bytes_per_sec > u64::from(u32::MAX) {
        wire::put(
            &mut out,
            attr::RATE64,
            &options.rate_bytes_per_sec.to_ne_bytes(),
        );
    }
    let mut rate = Vec::with_capacity(16);
    rate.extend_from_slice(&rate32.to_ne_bytes());
    rate.extend_from_slice(&options.packet_overhead.to_ne_bytes());
    rate.extend_from_slice(&options.cell_size.to_ne_bytes());
    rate.extend_from_slice(&options.cell_overhead.to_ne_bytes());
    wire::put(&mut out, attr::RATE, &rate);
    if let Some(dist) = &options.delay_dist {
        wire::put(&mut out, attr::DELAY_DIST, &dist.to_bytes());
    }
    if let Some(seed) = options.prng_seed {
        wire::put(&mut out, attr::PRNG_SEED, &seed.to_ne_bytes());
    }
    out
}

fn u32s(values: &[u32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_ne_bytes()).collect()
}

/// Decodes a `TCA_OPTIONS` payload of kind netem, as the kernel dumps it or
/// as `tc` or [`encode_options`] sends it. Reads the way `netem_change` does:
/// - LATENCY64/JITTER64 override the qopt's tick fields (ticks * 64 ns
///   otherwise);
/// - the rate is `max(RATE.rate, RATE64)`;
/// - without REORDER, a nonzero gap means 100 % reordering;
/// - for a repeated attribute the last one wins.
///
/// Unknown attributes (ECN, SLOT, PAD, future ones) are skipped. Framing and
/// the length of every known attribute are checked exactly; the function never
/// panics, whatever the input.
pub fn decode_options(payload: &[u8]) -> Result<NetemOptions, NetemDecodeError> {
    let (qopt, attrs) = payload
        .split_first_chunk::<QOPT_LEN>()
        .ok_or(NetemDecodeError::TooShort { len: payload.len() })?;
    let field = |i: usize| {
        let mut bytes = [0; 4];
        bytes.copy_from_slice(&qopt[4 * i..4 * i + 4]);
        u32::from_ne_bytes(bytes)
    };
    // struct tc_netem_qopt { latency, limit, loss, gap, duplicate, jitter }
    let (latency_ticks, limit, loss, gap, duplicate, jitter_ticks) =
        (field(0), field(1), field(2), field(3), field(4), field(5));
    let mut options = NetemOptions {
        latency_ns: i64::from(latency_ticks) << PSCHED_TICK_SHIFT,
        jitter_ns: i64::from(jitter_ticks) << PSCHED_TICK_SHIFT,
        limit,
        loss,
        gap,
        duplicate,
        ..NetemOptions::default()
    };
    let mut reorder_seen = false;
    let mut rate32: u32 = 0;
    let mut rate64: Option<u64> = None;
    for attribute in wire::Attrs::new(attrs, QOPT_LEN) {
        let attribute = attribute?;
        let value = attribute.value;
        match attribute.kind {
            attr::LATENCY64 => {
                options.latency_ns = fixed::<8, _>("TCA_NETEM_LATENCY64", value, |r| r.i64())?
            }
            attr::JITTER64 => {
                options.jitter_ns = fixed::<8, _>("TCA_NETEM_JITTER64", value, |r| r.i64())?
            }
            attr::CORR => {
                [
                    options.delay_corr,
                    options.loss_corr,
                    options.duplicate_corr,
                ] = fixed::<12, _>("TCA_NETEM_CORR", value, |r| {
                    Some([r.u32()?, r.u32()?, r.u32()?])
                })?;
            }
            attr::REORDER => {
                [options.reorder, options.reorder_corr] =
                    fixed::<8, _>("TCA_NETEM_REORDER", value, |r| Some([r.u32()?, r.u32()?]))?;
                reorder_seen = true;
            }
            attr::CORRUPT => {
                [options.corrupt, options.corrupt_corr] =
                    fixed::<8, _>("TCA_NETEM_CORRUPT", value, |r| Some([r.u32()?, r.u32()?]))?;
            }
            attr::RATE => {
                (
                    rate32,
                    options.packet_overhead,
                    options.cell_size,
                    options.cell_overhead,
                ) = fixed::<16, _>("TCA_NETEM_RATE", value, |r| {
                    Some((r.u32()?, r.i32()?, r.u32()?, r.i32()?))
                })?;
            }
            attr::RATE64 => rate64 = Some(fixed::<8, _>("TCA_NETEM_RATE64", value, |r| r.u64())?),
            attr::LOSS => options.loss_model = decode_loss(value, attribute.offset)?,
            attr::DELAY_DIST => options.delay_dist = Some(DelayDist::from_bytes(value)?),
            attr::PRNG_SEED => {
                options.prng_seed = Some(fixed::<8, _>("TCA_NETEM_PRNG_SEED", value, |r| r.u64())?);
            }
            _ => {}
        }
    }
    options.rate_bytes_per_sec = rate64.map_or(u64::from(rate32), |r| r.max(u64::from(rate32)));
    if !reorder_seen && options.gap != 0 {
        options.reorder = u32::MAX;
    }
    Ok(options)
}

/// Reads a fixed-size attribute whose value must be exactly `N` bytes.
fn fixed<const N: usize, T>(
    name: &'static str,
    value: &[u8],
    read: impl FnOnce(&mut wire::Reader) -> Option<T>,
) -> Result<T, NetemDecodeError> {
    wire::fixed::<N, T>(value, read).map_err(|actual| NetemDecodeError::WrongLength {
        attr: name,
        expected: N,
        actual,
    })
}

/// Decodes the `TCA_NETEM_LOSS` nest. Like `get_loss_clg`, the last model in
/// the nest wins, an empty nest sets none, and an unknown type is an error.
fn decode_loss(nest: &[u8], offset: usize) -> Result<Option<LossModel>, NetemDecodeError> {
    let mut model = None;
    for sub in wire::Attrs::new(nest, offset + wire::NLA_HDRLEN) {
        let sub = sub?;
        model = Some(match sub.kind {
            attr::LOSS_GI => fixed::<20, _>("NETEM_LOSS_GI", sub.value, |r| {
                let [p13, p31, p32, p14, p23] = [r.u32()?, r.u32()?, r.u32()?, r.u32()?, r.u32()?];
                Some(LossModel::FourState {
                    p13,
                    p31,
                    p32,
                    p23,
                    p14,
                })
            })?,
            attr::LOSS_GE => fixed::<16, _>("NETEM_LOSS_GE", sub.value, |r| {
                let [p, r_, h, k1] = [r.u32()?, r.u32()?, r.u32()?, r.u32()?];
                Some(LossModel::GilbertElliott { p, r: r_, h, k1 })
            })?,
            kind => return Err(NetemDecodeError::UnknownLossModel { kind }),
        });
    }
    Ok(model)
}

/// An `RTM_NEWQDISC` request for a netem qdisc with `options` on interface
/// `ifindex`. The caller chooses the netlink flags: `NLM_F_CREATE|NLM_F_EXCL`
/// to add, `NLM_F_CREATE|NLM_F_REPLACE` to add or change in place.
///
/// `TCA_OPTIONS` travels as `TcAttribute::Other` because netem's options are
/// a struct followed by attributes, which `TcAttribute::Options` cannot
/// express.
pub fn qdisc_message(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    options: &NetemOptions,
) -> RouteNetlinkMessage {
    wire::new_qdisc(ifindex, handle, parent, KIND, encode_options(options))
}

/// The netem options of a qdisc message read back from the kernel (or built
/// by [`qdisc_message`]): `Ok(None)` when the qdisc is not netem.
pub fn from_qdisc_message(message: &TcMessage) -> Result<Option<NetemOptions>, NetemDecodeError> {
    if wire::qdisc_kind(message) != Some(KIND) {
        return Ok(None);
    }
    let raw = wire::raw_options(message).ok_or(NetemDecodeError::MissingOptions)?;
    decode_options(&raw).map(Some)
}

// ---------------------------------------------------------------------------
// Distribution tables, generated the way iproute2's netem/normal.c, pareto.c
// and paretonormal.c do (NIST Net's algorithms), so the tables are identical
// to the .dist files tc reads: the tests compare them entry by entry.

/// Inverse CDF of the standard normal sampled like iproute2's `normal.c`:
/// step x from -10 in 0.00005 increments, bucket `rint(16384 * Phi(x))` keeps
/// the last x that falls in it, and every 4th bucket becomes an entry,
/// `rint(x * 8192)`, not yet clamped to i16.
fn normal_quantiles() -> Vec<i32> {
    const TABLESIZE: usize = 16384;
    let mut table = vec![0.0_f64; TABLESIZE + 1];
    let mut x = -10.0_f64;
    while x < 10.05 {
        let cdf = 0.5 + 0.5 * erf(x / std::f64::consts::SQRT_2);
        // cdf is in [0, 1], so the bucket is in 0..=TABLESIZE.
        let bucket = (TABLESIZE as f64 * cdf).round_ties_even() as usize;
        if let Some(slot) = table.get_mut(bucket) {
            *slot = x;
        }
        x += 0.00005;
    }
    table
        .iter()
        .take(TABLESIZE)
        .step_by(4)
        .map(|q| (q * f64::from(NETEM_DIST_SCALE)).round_ties_even() as i32)
        .collect()
}

fn clamp_i16(v: i32) -> i16 {
    v.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// One entry of iproute2's Pareto table (shape a = 3), for `u` in (0, 1]
/// counting down: `(u^(-1/3) - 1.5) * 4/3 * 8192`, capped at 32767.
fn pareto_value(u: f64) -> i32 {
    const A: f64 = 3.0;
    let mut v = 1.0 / u.powf(1.0 / A);
    v -= 1.5;
    v *= (4.0 / 3.0) * f64::from(NETEM_DIST_SCALE);
    if v > 32767.0 {
        v = 32767.0;
    }
    v.round_ties_even() as i32
}

/// netem's `normal` table: 4096 entries, non-decreasing, median 0, equal to
/// iproute2's `normal.dist`.
pub fn normal_table() -> Vec<i16> {
    normal_quantiles().into_iter().map(clamp_i16).collect()
}

/// netem's `pareto` table: 4096 entries, equal to iproute2's `pareto.dist`.
pub fn pareto_table() -> Vec<i16> {
    (1..=NETEM_DIST_SIZE)
        .rev()
        .map(|k| clamp_i16(pareto_value((k * 16) as f64 / 65536.0)))
        .collect()
}

/// netem's `paretonormal` table, `(normal + 3 * pareto) / 4` entry by entry
/// (C integer division), equal to iproute2's `paretonormal.dist`.
pub fn paretonormal_table() -> Vec<i16> {
    normal_quantiles()
        .into_iter()
        .enumerate()
        .map(|(k, normal)| {
            let pareto = pareto_value((65536 - 16 * k) as f64 / 65536.0);
            clamp_i16((normal + 3 * pareto) / 4)
        })
        .collect()
}

/// The error function, a port of fdlibm's `s_erf.c` (as in glibc and musl),
/// so that the tables above come out bit for bit like the C generators'.
///
/// Original notice, preserved as its licence asks:
/// ```text
/// Copyright (C) 1993 by Sun Microsystems, Inc. All rights reserved.
///
/// Developed at SunPro, a Sun Microsystems, Inc. business.
/// Permission to use, copy, modify, and distribute this
/// software is freely granted, provided that this notice
/// is preserved.
/// ```
fn erf(x: f64) -> f64 {
    use erf_consts::*;
    let hx = (x.to_bits() >> 32) as u32;
    let ix = hx & 0x7fff_ffff;
    let negative = hx >> 31 != 0;
    if ix >= 0x7ff0_0000 {
        // erf(nan) = nan, erf(+-inf) = +-1
        let sign = if negative { -1.0 } else { 1.0 };
        return sign + 1.0 / x;
    }
    if ix < 0x3feb_0000 {
        // |x| < 0.84375
        if ix < 0x3e30_0000 {
            // |x| < 2**-28
            if ix < 0x0080_0000 {
                return 0.125 * (8.0 * x + f(EFX8) * x);
            }
            return x + f(EFX) * x;
        }
        let z = x * x;
        let r = f(PP0) + z * (f(PP1) + z * (f(PP2) + z * (f(PP3) + z * f(PP4))));
        let s = 1.0 + z * (f(QQ1) + z * (f(QQ2) + z * (f(QQ3) + z * (f(QQ4) + z * f(QQ5)))));
        return x + x * (r / s);
    }
    if ix < 0x3ff4_0000 {
        // 0.84375 <= |x| < 1.25
        let s = x.abs() - 1.0;
        let p = f(PA0)
            + s * (f(PA1) + s * (f(PA2) + s * (f(PA3) + s * (f(PA4) + s * (f(PA5) + s * f(PA6))))));
        let q = 1.0
            + s * (f(QA1) + s * (f(QA2) + s * (f(QA3) + s * (f(QA4) + s * (f(QA5) + s * f(QA6))))));
        return if negative {
            -f(ERX) - p / q
        } else {
            f(ERX) + p / q
        };
    }
    if ix >= 0x4018_0000 {
        // |x| >= 6
        return if negative { TINY - 1.0 } else { 1.0 - TINY };
    }
    let ax = x.abs();
    let s = 1.0 / (ax * ax);
    let (r, ss) = if ix < 0x4006_db6e {
        // |x| < 1/0.35
        (
            f(RA0)
                + s * (f(RA1)
                    + s * (f(RA2)
                        + s * (f(RA3) + s * (f(RA4) + s * (f(RA5) + s * (f(RA6) + s * f(RA7))))))),
            1.0 + s
                * (f(SA1)
                    + s * (f(SA2)
                        + s * (f(SA3)
                            + s * (f(SA4)
                                + s * (f(SA5) + s * (f(SA6) + s * (f(SA7) + s * f(SA8)))))))),
        )
    } else {
        // 1/0.35 <= |x| < 6
        (
            f(RB0)
                + s * (f(RB1)
                    + s * (f(RB2) + s * (f(RB3) + s * (f(RB4) + s * (f(RB5) + s * f(RB6)))))),
            1.0 + s
                * (f(SB1)
                    + s * (f(SB2)
                        + s * (f(SB3) + s * (f(SB4) + s * (f(SB5) + s * (f(SB6) + s * f(SB7))))))),
        )
    };
    // z = ax with the low 32 bits cleared (fdlibm's SET_LOW_WORD(z, 0)).
    let z = f64::from_bits(ax.to_bits() & 0xffff_ffff_0000_0000);
    let e = (-z * z - 0.5625).exp() * ((z - ax) * (z + ax) + r / ss).exp();
    if negative { e / ax - 1.0 } else { 1.0 - e / ax }
}

fn f(bits: u64) -> f64 {
    f64::from_bits(bits)
}

/// fdlibm's erf coefficients as IEEE-754 bit patterns (the hex words its
/// source gives next to each decimal value; a test checks both agree).
#[rustfmt::skip]
mod erf_consts {
    pub const TINY: f64 = 1e-300;
    pub const ERX: u64 = 0x3FEB0AC1_60000000;
    pub const EFX: u64 = 0x3FC06EBA_8214DB69;
    pub const EFX8: u64 = 0x3FF06EBA_8214DB69;
    pub const PP0: u64 = 0x3FC06EBA_8214DB68;
    pub const PP1: u64 = 0xBFD4CD7D_691CB913;
    pub const PP2: u64 = 0xBF9D2A51_DBD7194F;
    pub const PP3: u64 = 0xBF77A291_236668E4;
    pub const PP4: u64 = 0xBEF8EAD6_120016AC;
    pub const QQ1: u64 = 0x3FD97779_CDDADC09;
    pub const QQ2: u64 = 0x3FB0A54C_5536CEBA;
    pub const QQ3: u64 = 0x3F74D022_C4D36B0F;
    pub const QQ4: u64 = 0x3F215DC9_221C1A10;
    pub const QQ5: u64 = 0xBED09C43_42A26120;
    pub const PA0: u64 = 0xBF6359B8_BEF77538;
    pub const PA1: u64 = 0x3FDA8D00_AD92B34D;
    pub const PA2: u64 = 0xBFD7D240_FBB8C3F1;
    pub const PA3: u64 = 0x3FD45FCA_805120E4;
    pub const PA4: u64 = 0xBFBC6398_3D3E28EC;
    pub const PA5: u64 = 0x3FA22A36_599795EB;
    pub const PA6: u64 = 0xBF61BF38_0A96073F;
    pub const QA1: u64 = 0x3FBB3E66_18EEE323;
    pub const QA2: u64 = 0x3FE14AF0_92EB6F33;
    pub const QA3: u64 = 0x3FB2635C_D99FE9A7;
    pub const QA4: u64 = 0x3FC02660_E763351F;
    pub const QA5: u64 = 0x3F8BEDC2_6B51DD1C;
    pub const QA6: u64 = 0x3F888B54_5735151D;
    pub const RA0: u64 = 0xBF843412_600D6435;
    pub const RA1: u64 = 0xBFE63416_E4BA7360;
    pub const RA2: u64 = 0xC0251E04_41B0E726;
    pub const RA3: u64 = 0xC04F300A_E4CBA38D;
    pub const RA4: u64 = 0xC0644CB1_84282266;
    pub const RA5: u64 = 0xC067135C_EBCCABB2;
    pub const RA6: u64 = 0xC0545265_57E4D2F2;
    pub const RA7: u64 = 0xC023A0EF_C69AC25C;
    pub const SA1: u64 = 0x4033A6B9_BD707687;
    pub const SA2: u64 = 0x4061350C_526AE721;
    pub const SA3: u64 = 0x407B290D_D58A1A71;
    pub const SA4: u64 = 0x40842B19_21EC2868;
    pub const SA5: u64 = 0x407AD021_57700314;
    pub const SA6: u64 = 0x405B28A3_EE48AE2C;
    pub const SA7: u64 = 0x401A47EF_8E484A93;
    pub const SA8: u64 = 0xBFAEEFF2_EE749A62;
    pub const RB0: u64 = 0xBF843412_39E86F4A;
    pub const RB1: u64 = 0xBFE993BA_70C285DE;
    pub const RB2: u64 = 0xC031C209_555F995A;
    pub const RB3: u64 = 0xC064145D_43C5ED98;
    pub const RB4: u64 = 0xC083EC88_1375F228;
    pub const RB5: u64 = 0xC0900461_6A2E5992;
    pub const RB6: u64 = 0xC07E384E_9BDC383F;
    pub const SB1: u64 = 0x403E568B_261D5190;
    pub const SB2: u64 = 0x40745CAE_221B9F0A;
    pub const SB3: u64 = 0x409802EB_189D5118;
    pub const SB4: u64 = 0x40A8FFB7_688C246A;
    pub const SB5: u64 = 0x40A3F219_CEDF3BE6;
    pub const SB6: u64 = 0x407DA874_E79FE763;
    pub const SB7: u64 = 0xC03670E2_42712D62;
}

/// Netlink attribute framing shared by the tc encoders (netem, tbf).
pub(crate) mod wire {
    /// Test input: hex bytes, whitespace ignored, `//` to the end of a line a comment.
    #[cfg(test)]
    pub fn hex(s: &str) -> Vec<u8> {
        let digits: Vec<u8> = s
            .lines()
            .flat_map(|line| line.split("//").next().unwrap_or("").bytes())
            .filter(u8::is_ascii_hexdigit)
            .collect();
        assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
        digits
            .chunks(2)
            .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
            .collect()
    }

    use netlink_packet_core::{DefaultNla, Nla};
    use netlink_packet_route::tc::{TcAttribute, TcHandle, TcHeader, TcMessage, TcOption};
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

    /// Size of `struct nlattr`.
    pub const NLA_HDRLEN: usize = 4;
    /// `NLA_F_NESTED`, set on nests by newer userspace; ignored on parse.
    pub const NLA_F_NESTED: u16 = 0x8000;
    /// Clears `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER` from a type.
    pub const NLA_TYPE_MASK: u16 = 0x3fff;
    /// `TCA_OPTIONS` in enum `TCA_*` (`include/uapi/linux/rtnetlink.h`).
    pub const TCA_OPTIONS: u16 = 2;

    /// Appends one attribute padded to 4 bytes.
    ///
    /// Invariant (upheld by every caller): `value.len() <= 65531`. Callers pass
    /// fixed-size structs or a `DelayDist` of at most 32768 bytes.
    pub fn put(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
        let len = u16::try_from(NLA_HDRLEN + value.len())
            .expect("netlink attribute value over 65531 bytes: a caller broke its size bound");
        out.extend_from_slice(&len.to_ne_bytes());
        out.extend_from_slice(&kind.to_ne_bytes());
        out.extend_from_slice(value);
        out.resize(out.len().next_multiple_of(4), 0);
    }

    /// Why a sequence of attributes is not well framed.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
    pub enum FramingError {
        #[error(
            "{remaining} trailing bytes at byte {offset} cannot hold a 4-byte attribute header"
        )]
        Truncated { offset: usize, remaining: usize },
        #[error("the attribute at byte {offset} declares length {len}, outside 4..={remaining}")]
        BadLength {
            offset: usize,
            len: usize,
            remaining: usize,
        },
    }

    /// One attribute: its type without flag bits, its value without padding,
    /// and the offset of its header in the outermost buffer.
    #[derive(Debug, Clone, Copy)]
    pub struct Attr<'a> {
        pub kind: u16,
        pub value: &'a [u8],
        pub offset: usize,
    }

    /// Iterates over attributes, checking every length. After the first error
    /// it stops. The last attribute may lack its padding (the kernel's own
    /// parser accepts that too).
    pub struct Attrs<'a> {
        buf: &'a [u8],
        pos: usize,
        base: usize,
        failed: bool,
    }

    impl<'a> Attrs<'a> {
        /// `base` is the offset of `buf` in the outermost buffer, for errors.
        pub fn new(buf: &'a [u8], base: usize) -> Self {
            Attrs {
                buf,
                pos: 0,
                base,
                failed: false,
            }
        }
    }

    impl<'a> Iterator for Attrs<'a> {
        type Item = Result<Attr<'a>, FramingError>;

        fn next(&mut self) -> Option<Self::Item> {
            if self.failed {
                return None;
            }
            let rest = self.buf.get(self.pos..).filter(|r| !r.is_empty())?;
            let offset = self.base + self.pos;
            let Some((header, _)) = rest.split_first_chunk::<NLA_HDRLEN>() else {
                self.failed = true;
                return Some(Err(FramingError::Truncated {
                    offset,
                    remaining: rest.len(),
                }));
            };
            let len = usize::from(u16::from_ne_bytes([header[0], header[1]]));
            let kind = u16::from_ne_bytes([header[2], header[3]]) & NLA_TYPE_MASK;
            let Some(value) = rest.get(NLA_HDRLEN..len).filter(|_| len >= NLA_HDRLEN) else {
                self.failed = true;
                return Some(Err(FramingError::BadLength {
                    offset,
                    len,
                    remaining: rest.len(),
                }));
            };
            self.pos = (self.pos + len.next_multiple_of(4)).min(self.buf.len());
            Some(Ok(Attr {
                kind,
                value,
                offset,
            }))
        }
    }

    /// Reads host-order integers off the front of a slice.
    /// Reads a value that must be exactly `N` bytes long with `read`;
    /// `Err(actual length)` otherwise.
    pub fn fixed<const N: usize, T>(
        value: &[u8],
        read: impl FnOnce(&mut Reader) -> Option<T>,
    ) -> Result<T, usize> {
        if value.len() != N {
            return Err(value.len());
        }
        // `read` consumes at most N bytes, so it cannot run short.
        read(&mut Reader::new(value)).ok_or(value.len())
    }

    pub struct Reader<'a> {
        rest: &'a [u8],
    }

    impl<'a> Reader<'a> {
        pub fn new(bytes: &'a [u8]) -> Self {
            Reader { rest: bytes }
        }

        fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
            let (head, rest) = self.rest.split_first_chunk::<N>()?;
            self.rest = rest;
            Some(*head)
        }

        pub fn u32(&mut self) -> Option<u32> {
            self.take().map(u32::from_ne_bytes)
        }

        pub fn i32(&mut self) -> Option<i32> {
            self.take().map(i32::from_ne_bytes)
        }

        pub fn u64(&mut self) -> Option<u64> {
            self.take().map(u64::from_ne_bytes)
        }

        pub fn i64(&mut self) -> Option<i64> {
            self.take().map(i64::from_ne_bytes)
        }

        pub fn u16(&mut self) -> Option<u16> {
            self.take().map(u16::from_ne_bytes)
        }

        pub fn u8(&mut self) -> Option<u8> {
            self.take().map(|[b]: [u8; 1]| b)
        }
    }

    /// An `RTM_NEWQDISC` with `TCA_KIND` and a raw `TCA_OPTIONS` payload.
    /// The ifindex is reinterpreted as the kernel's `int tcm_ifindex`.
    pub fn new_qdisc(
        ifindex: u32,
        handle: TcHandle,
        parent: TcHandle,
        kind: &str,
        options: Vec<u8>,
    ) -> RouteNetlinkMessage {
        let header = TcHeader {
            family: AddressFamily::Unspec,
            index: ifindex as i32,
            handle,
            parent,
            info: 0,
        };
        let attributes = vec![
            TcAttribute::Kind(kind.to_string()),
            TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, options)),
        ];
        RouteNetlinkMessage::NewQueueDiscipline(TcMessage::from_parts(header, attributes))
    }

    /// The qdisc's `TCA_KIND`.
    pub fn qdisc_kind(message: &TcMessage) -> Option<&str> {
        message.attributes.iter().find_map(|a| match a {
            TcAttribute::Kind(kind) => Some(kind.as_str()),
            _ => None,
        })
    }

    /// The raw `TCA_OPTIONS` payload, from either shape it takes: `Other` (as
    /// [`new_qdisc`] builds it) or, for kinds netlink-packet-route 0.34 does
    /// not know (netem, tbf, htb), `Options(vec![Other(the whole nla)])` as its
    /// parser produces (`tc/options.rs`, `VecTcOption::parse_with_param`).
    pub fn raw_options(message: &TcMessage) -> Option<Vec<u8>> {
        message.attributes.iter().find_map(|a| match a {
            TcAttribute::Other(nla) if nla.kind() & NLA_TYPE_MASK == TCA_OPTIONS => {
                Some(nla_value(nla))
            }
            TcAttribute::Options(options) => match options.as_slice() {
                [TcOption::Other(nla)] if nla.kind() & NLA_TYPE_MASK == TCA_OPTIONS => {
                    Some(nla_value(nla))
                }
                _ => None,
            },
            _ => None,
        })
    }

    fn nla_value(nla: &DefaultNla) -> Vec<u8> {
        let mut value = vec![0; nla.value_len()];
        nla.emit_value(&mut value);
        value
    }
}

// The reference bytes are little-endian captures.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use netlink_packet_core::{Emitable, Parseable};
    use netlink_packet_route::tc::{TcAttribute, TcOption};
    use proptest::prelude::*;

    use super::*;
    use wire::hex;

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    // References: TCA_OPTIONS payloads that iproute2 6.1's `tc` (`tc -V`:
    // "tc utility, iproute2-6.1.0") sent for `tc -n NS qdisc add dev lo root
    // netem ...`, captured with `strace -f -e trace=sendmsg -s 70000 -x` in a
    // scratch namespace. The add itself failed with ENOENT (no sch_netem in
    // this kernel), after tc had sent the bytes. Little-endian host.

    /// `delay 50ms 5ms 25% loss 10% duplicate 1% reorder 2% gap 5
    /// corrupt 0.5% rate 10mbit`
    const TC_BASE: &str = "
        c2eb0b00 e8030000 9a999919 05000000 295c8f02 2d310100  // qopt: latency 781250 ticks, limit 1000, loss, gap 5, dup, jitter 78125 ticks
        1000 0100 00000040 00000000 00000000                   // CORR: delay 25%
        0c00 0300 52b81e05 00000000                            // REORDER 2%
        0c00 0400 14ae4701 00000000                            // CORRUPT 0.5%
        1400 0600 d0121300 00000000 00000000 00000000          // RATE 1250000 B/s";

    /// `limit 500 delay 1s 100ms 10% loss 3% 20% duplicate 2% 30%
    /// reorder 25% 50% corrupt 0.1% 40% rate 1mbit 20 100 -4`
    const TC_CORR: &str = "
        286bee00 f4010000 7b14ae07 01000000 52b81e05 84d71700  // gap 1: tc's default with reorder
        1000 0100 9a999919 33333333 cccccc4c                   // CORR 10% 20% 30%
        0c00 0300 00000040 00000080                            // REORDER 25% 50%
        0c00 0400 37894100 66666666                            // CORRUPT 0.1% 40%
        1400 0600 48e80100 14000000 64000000 fcffffff          // RATE 125000, 20, 100, -4";

    /// `delay 10ms loss gemodel 1% 10% 70% 0.1%`
    const TC_GE: &str = "
        5a620200 e8030000 00000000 00000000 00000000 00000000
        1800 0580                                              // LOSS | NLA_F_NESTED
          1400 0200 295c8f02 9a999919 cdcccc4c 37894100        // NETEM_LOSS_GE p r h k1";

    /// `delay 10ms loss state 1% 10% 70% 0.1% 5%` (P13 P31 P32 P23 P14)
    const TC_GI: &str = "
        5a620200 e8030000 00000000 00000000 00000000 00000000
        1c00 0580
          1800 0100 295c8f02 9a999919 323333b3 cdcccc0c 37894100  // p13 p31 p32 p14 p23";

    /// `rate 40gbit`
    const TC_RATE64: &str = "
        00000000 e8030000 00000000 00000000 00000000 00000000
        0c00 0800 00f2052a 01000000                            // RATE64 5e9 B/s
        1400 0600 ffffffff 00000000 00000000 00000000          // RATE saturated";

    /// The tcmsg header and TCA_KIND of those requests (ifindex 1, handle 0,
    /// parent root).
    const TC_HEADER_AND_KIND: &str = "
        00 00 0000 01000000 00000000 ffffffff 00000000
        0a00 0100 6e6574656d00 0000                            // TCA_KIND \"netem\"";

    fn base() -> NetemOptions {
        NetemOptions {
            latency_ns: 50_000_000,
            jitter_ns: 5_000_000,
            delay_corr: percent_to_prob(25.0),
            loss: percent_to_prob(10.0),
            duplicate: percent_to_prob(1.0),
            reorder: percent_to_prob(2.0),
            gap: 5,
            corrupt: percent_to_prob(0.5),
            rate_bytes_per_sec: 10_000_000 / 8,
            ..NetemOptions::default()
        }
    }

    fn corr() -> NetemOptions {
        NetemOptions {
            latency_ns: 1_000_000_000,
            jitter_ns: 100_000_000,
            delay_corr: percent_to_prob(10.0),
            limit: 500,
            loss: percent_to_prob(3.0),
            loss_corr: percent_to_prob(20.0),
            duplicate: percent_to_prob(2.0),
            duplicate_corr: percent_to_prob(30.0),
            reorder: percent_to_prob(25.0),
            reorder_corr: percent_to_prob(50.0),
            gap: 1,
            corrupt: percent_to_prob(0.1),
            corrupt_corr: percent_to_prob(40.0),
            rate_bytes_per_sec: 125_000,
            packet_overhead: 20,
            cell_size: 100,
            cell_overhead: -4,
            ..NetemOptions::default()
        }
    }

    fn ge() -> NetemOptions {
        NetemOptions {
            latency_ns: 10_000_000,
            loss_model: Some(LossModel::GilbertElliott {
                p: percent_to_prob(1.0),
                r: percent_to_prob(10.0),
                h: u32::MAX - percent_to_prob(70.0),
                k1: percent_to_prob(0.1),
            }),
            ..NetemOptions::default()
        }
    }

    fn gi() -> NetemOptions {
        NetemOptions {
            latency_ns: 10_000_000,
            loss_model: Some(LossModel::FourState {
                p13: percent_to_prob(1.0),
                p31: percent_to_prob(10.0),
                p32: percent_to_prob(70.0),
                p23: percent_to_prob(0.1),
                p14: percent_to_prob(5.0),
            }),
            ..NetemOptions::default()
        }
    }

    #[test]
    fn attribute_numbers_match_pkt_sched_h() {
        // enum { TCA_NETEM_UNSPEC, CORR, DELAY_DIST, REORDER, CORRUPT, LOSS,
        // RATE, ECN, RATE64, PAD, LATENCY64, JITTER64, SLOT, SLOT_DIST,
        // PRNG_SEED, __TCA_NETEM_MAX }
        let ordered = [
            attr::CORR,
            attr::DELAY_DIST,
            attr::REORDER,
            attr::CORRUPT,
            attr::LOSS,
            attr::RATE,
            attr::ECN,
            attr::RATE64,
            attr::PAD,
            attr::LATENCY64,
            attr::JITTER64,
            attr::SLOT,
            attr::SLOT_DIST,
            attr::PRNG_SEED,
        ];
        assert_eq!(ordered, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]);
        assert_eq!((attr::LOSS_GI, attr::LOSS_GE), (1, 2));
    }

    #[test]
    fn percent_to_prob_rounds_like_tc() {
        assert_eq!(percent_to_prob(0.0), 0);
        assert_eq!(percent_to_prob(100.0), u32::MAX);
        assert_eq!(percent_to_prob(10.0), 0x1999_999a);
        assert_eq!(percent_to_prob(0.5), 0x0147_ae14);
        assert_eq!(percent_to_prob(25.0), 0x4000_0000);
        // Exact ties go to even, as rint() does: 30 % is ...188.5.
        assert_eq!(percent_to_prob(30.0), 0x4ccc_cccc);
        assert_eq!(percent_to_prob(50.0), 0x8000_0000);
        assert_eq!(percent_to_prob(-1.0), 0);
        assert_eq!(percent_to_prob(250.0), u32::MAX);
        assert_eq!(percent_to_prob(f64::NAN), 0);
        assert_eq!(percent_to_prob(f64::INFINITY), u32::MAX);
        assert!((prob_to_percent(percent_to_prob(12.5)) - 12.5).abs() < 1e-7);
        assert_eq!(prob_to_percent(u32::MAX), 100.0);
    }

    #[test]
    fn encodes_the_representative_config_byte_for_byte() {
        // tc's bytes, with two differences that are the design: the qopt's
        // tick fields are 0 and the delay travels as LATENCY64/JITTER64 ns.
        let expected = hex("
            00000000 e8030000 9a999919 05000000 295c8f02 00000000  // qopt, ticks zeroed
            0c00 0a00 80f0fa02 00000000                            // LATENCY64 50000000 ns
            0c00 0b00 404b4c00 00000000                            // JITTER64 5000000 ns
            1000 0100 00000040 00000000 00000000                   // tc's CORR
            0c00 0300 52b81e05 00000000                            // tc's REORDER
            0c00 0400 14ae4701 00000000                            // tc's CORRUPT
            1400 0600 d0121300 00000000 00000000 00000000          // tc's RATE");
        let ours = encode_options(&base());
        assert_eq!(ours, expected);
        let tc = hex(TC_BASE);
        assert_eq!(ours[4..20], tc[4..20], "limit, loss, gap, duplicate");
        assert_eq!(ours[48..], tc[24..], "CORR, REORDER, CORRUPT, RATE");
    }

    #[test]
    fn encodes_correlations_and_rate_overheads_like_tc() {
        let ours = encode_options(&corr());
        let tc = hex(TC_CORR);
        assert_eq!(ours[..4], [0; 4]);
        assert_eq!(ours[4..20], tc[4..20]);
        assert_eq!(ours[20..24], [0; 4]);
        assert_eq!(
            ours[24..48],
            hex("0c00 0a00 00ca9a3b 00000000  0c00 0b00 00e1f505 00000000")
        );
        assert_eq!(ours[48..], tc[24..]);
    }

    #[test]
    fn encodes_loss_models_like_tc() {
        let zero_attrs = hex("
            1000 0100 00000000 00000000 00000000                   // CORR, always sent
            0c00 0300 00000000 00000000                            // REORDER
            0c00 0400 00000000 00000000                            // CORRUPT");
        let zero_rate = hex("1400 0600 00000000 00000000 00000000 00000000");
        for (options, tc) in [(ge(), TC_GE), (gi(), TC_GI)] {
            let tc = hex(tc);
            let mut expected = tc[..24].to_vec();
            expected[..4].fill(0);
            expected.extend(hex(
                "0c00 0a00 80969800 00000000  0c00 0b00 00000000 00000000",
            ));
            expected.extend(&zero_attrs);
            expected.extend(&tc[24..]); // tc's LOSS nest, flag and all
            expected.extend(&zero_rate);
            assert_eq!(encode_options(&options), expected, "{options:?}");
        }
    }

    #[test]
    fn rate64_only_at_four_gigabytes_per_second() {
        let mut options = NetemOptions {
            rate_bytes_per_sec: 5_000_000_000,
            ..NetemOptions::default()
        };
        // tc's RATE64 then RATE, byte for byte, at the same place.
        let tc = hex(TC_RATE64);
        let ours = encode_options(&options);
        assert!(ours.ends_with(&tc[24..]), "{ours:02x?}");
        assert_eq!(decode_options(&ours), Ok(options.clone()));
        // Just below 2^32: the real rate in the u32 field, no RATE64.
        options.rate_bytes_per_sec = u64::from(u32::MAX);
        let ours = encode_options(&options);
        assert!(ours.ends_with(&hex("1400 0600 ffffffff 00000000 00000000 00000000")));
        assert!(!contains(&ours, &hex("0c00 0800")));
        assert_eq!(decode_options(&ours), Ok(options));
    }

    #[test]
    fn decodes_what_tc_sends() {
        // tc 6.1 sends ticks only; 64 ns per tick recovers the delays exactly.
        assert_eq!(decode_options(&hex(TC_BASE)), Ok(base()));
        assert_eq!(decode_options(&hex(TC_CORR)), Ok(corr()));
        assert_eq!(decode_options(&hex(TC_GE)), Ok(ge()));
        assert_eq!(decode_options(&hex(TC_GI)), Ok(gi()));
        assert_eq!(
            decode_options(&hex(TC_RATE64)),
            Ok(NetemOptions {
                rate_bytes_per_sec: 5_000_000_000,
                ..NetemOptions::default()
            })
        );
    }

    #[test]
    fn decodes_a_kernel_dump() {
        // The shape netem_dump() writes: ticks AND 64-bit delays, every struct
        // attribute, ECN, the loss nest without NLA_F_NESTED, and the seed.
        let dump = hex("
            c2eb0b00 e8030000 9a999919 05000000 295c8f02 2d310100
            0c00 0a00 80f0fa02 00000000                            // LATENCY64
            0c00 0b00 404b4c00 00000000                            // JITTER64
            1000 0100 00000040 00000000 00000000                   // CORR
            0c00 0300 52b81e05 00000000                            // REORDER
            0c00 0400 14ae4701 00000000                            // CORRUPT
            1400 0600 d0121300 00000000 00000000 00000000          // RATE
            0800 0700 01000000                                     // ECN (skipped)
            1800 0500                                              // LOSS, no flag
              1400 0200 295c8f02 9a999919 cdcccc4c 37894100
            0400 0900                                              // PAD (skipped)
            0c00 0e00 efcdab89 67452301                            // PRNG_SEED");
        let mut expected = base();
        expected.loss_model = ge().loss_model;
        expected.prng_seed = Some(0x0123_4567_89ab_cdef);
        assert_eq!(decode_options(&dump), Ok(expected));
    }

    #[test]
    fn gap_without_reorder_means_always_reorder() {
        // What the kernel assumes for `tc ... netem delay 10ms gap 5`.
        let legacy = hex("5a620200 e8030000 00000000 05000000 00000000 00000000");
        let decoded = decode_options(&legacy).unwrap();
        assert_eq!((decoded.gap, decoded.reorder), (5, u32::MAX));
        // We always send REORDER, so gap with reorder 0 stays 0.
        let options = NetemOptions {
            gap: 5,
            ..NetemOptions::default()
        };
        assert_eq!(decode_options(&encode_options(&options)), Ok(options));
    }

    #[test]
    fn seed_and_distribution_travel_last() {
        let options = NetemOptions {
            latency_ns: 50_000_000,
            jitter_ns: 5_000_000,
            prng_seed: Some(42),
            delay_dist: DelayDist::for_distribution(Distribution::Pareto),
            ..NetemOptions::default()
        };
        let bytes = encode_options(&options);
        // qopt 24, LATENCY64 12, JITTER64 12, CORR 16, REORDER 12, CORRUPT 12,
        // RATE 20, then DELAY_DIST and PRNG_SEED.
        let dist_at = 24 + 12 + 12 + 16 + 12 + 12 + 20;
        assert_eq!(bytes[dist_at..dist_at + 4], hex("0420 0200"));
        let first: Vec<u8> = pareto_table()[..2]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(bytes[dist_at + 4..dist_at + 8], first);
        assert_eq!(bytes[dist_at + 8196..], hex("0c00 0e00 2a000000 00000000"));
        assert_eq!(decode_options(&bytes), Ok(options));
    }

    #[test]
    fn decode_errors_name_the_check() {
        let qopt = hex("00000000 e8030000 00000000 00000000 00000000 00000000");
        let with = |attrs: &str| {
            let mut bytes = qopt.clone();
            bytes.extend(hex(attrs));
            decode_options(&bytes)
        };
        assert_eq!(
            decode_options(&[0; 23]),
            Err(NetemDecodeError::TooShort { len: 23 })
        );
        assert_eq!(
            decode_options(&[]),
            Err(NetemDecodeError::TooShort { len: 0 })
        );
        assert_eq!(decode_options(&qopt), Ok(NetemOptions::default()));
        assert_eq!(
            with("0100"),
            Err(wire::FramingError::Truncated {
                offset: 24,
                remaining: 2
            }
            .into())
        );
        assert_eq!(
            with("0300 0100"),
            Err(wire::FramingError::BadLength {
                offset: 24,
                len: 3,
                remaining: 4
            }
            .into())
        );
        assert_eq!(
            with("1000 0100 00000000"),
            Err(wire::FramingError::BadLength {
                offset: 24,
                len: 16,
                remaining: 8
            }
            .into())
        );
        assert_eq!(
            with("0c00 0100 00000000 00000000"),
            Err(NetemDecodeError::WrongLength {
                attr: "TCA_NETEM_CORR",
                expected: 12,
                actual: 8
            })
        );
        assert_eq!(
            with("0800 0a00 00000000"),
            Err(NetemDecodeError::WrongLength {
                attr: "TCA_NETEM_LATENCY64",
                expected: 8,
                actual: 4
            })
        );
        assert_eq!(
            with("1000 0600 00000000 00000000 00000000"),
            Err(NetemDecodeError::WrongLength {
                attr: "TCA_NETEM_RATE",
                expected: 16,
                actual: 12
            })
        );
        assert_eq!(
            with("0c00 0500  0800 0300 00000000"),
            Err(NetemDecodeError::UnknownLossModel { kind: 3 })
        );
        assert_eq!(
            with("1400 0500  1000 0200 00000000 00000000 00000000"),
            Err(NetemDecodeError::WrongLength {
                attr: "NETEM_LOSS_GE",
                expected: 16,
                actual: 12
            })
        );
        // Framing errors inside the loss nest report absolute offsets.
        assert_eq!(
            with("0c00 0500  0900 0200 00000000"),
            Err(wire::FramingError::BadLength {
                offset: 28,
                len: 9,
                remaining: 8
            }
            .into())
        );
        assert_eq!(
            with("0700 0200 000000"),
            Err(DistTableError::OddLength { bytes: 3 }.into())
        );
        assert_eq!(with("0400 0200"), Err(DistTableError::Empty.into()));
        let mut huge = qopt.clone();
        wire::put(
            &mut huge,
            attr::DELAY_DIST,
            &vec![0; 2 * (NETEM_DIST_MAX + 1)],
        );
        assert_eq!(
            decode_options(&huge),
            Err(DistTableError::TooLong {
                entries: NETEM_DIST_MAX + 1
            }
            .into())
        );
        // Errors print as one line.
        let message = with("0300 0100").unwrap_err().to_string();
        assert_eq!(
            message,
            "netem options: the attribute at byte 24 declares length 3, outside 4..=4"
        );
    }

    #[test]
    fn tolerates_unknown_and_unpadded_last_attributes() {
        let bytes = hex("
            00000000 e8030000 00000000 00000000 00000000 00000000
            0800 7f00 01020304                                     // unknown type
            0c00 0c00 00000000 00000000                            // SLOT, too short: not ours to check
            0500 4d00 ff                                           // unknown, last, unpadded");
        assert_eq!(decode_options(&bytes), Ok(NetemOptions::default()));
    }

    #[test]
    fn delay_dist_bounds() {
        assert_eq!(DelayDist::new(vec![]), Err(DistTableError::Empty));
        assert_eq!(
            DelayDist::new(vec![0; NETEM_DIST_MAX + 1]),
            Err(DistTableError::TooLong {
                entries: NETEM_DIST_MAX + 1
            })
        );
        let largest = DelayDist::new(vec![-1; NETEM_DIST_MAX]).unwrap();
        let options = NetemOptions {
            delay_dist: Some(largest),
            ..NetemOptions::default()
        };
        assert_eq!(decode_options(&encode_options(&options)), Ok(options));
        assert_eq!(DelayDist::for_distribution(Distribution::Uniform), None);
        assert_eq!(
            DelayDist::for_distribution(Distribution::Normal).map(DelayDist::into_vec),
            Some(normal_table())
        );
    }

    #[test]
    fn qdisc_message_is_tcs_message() {
        let message = qdisc_message(1, TcHandle::UNSPEC, TcHandle::ROOT, &base());
        let RouteNetlinkMessage::NewQueueDiscipline(tc) = &message else {
            panic!("not a qdisc message: {message:?}");
        };
        let mut bytes = vec![0; tc.buffer_len()];
        tc.emit(&mut bytes);
        let options = encode_options(&base());
        let mut expected = hex(TC_HEADER_AND_KIND);
        expected.extend(hex("7000 0200")); // TCA_OPTIONS, 4 + 108 bytes
        expected.extend(&options);
        assert_eq!(bytes, expected);
        assert_eq!(from_qdisc_message(tc), Ok(Some(base())));

        // Parsed back as a dump is: netlink-packet-route 0.34 does not know
        // netem and keeps TCA_OPTIONS whole inside Options(vec![Other]).
        let parsed = TcMessage::parse(&bytes).unwrap();
        assert!(
            parsed
                .attributes
                .iter()
                .any(|a| matches!(a, TcAttribute::Options(o)
                if matches!(o.as_slice(), [TcOption::Other(_)]))),
            "{parsed:?}"
        );
        assert_eq!(from_qdisc_message(&parsed), Ok(Some(base())));
    }

    #[test]
    fn other_kinds_and_missing_options() {
        let mut tc = TcMessage::with_index(1);
        assert_eq!(from_qdisc_message(&tc), Ok(None));
        tc.attributes.push(TcAttribute::Kind("tbf".into()));
        assert_eq!(from_qdisc_message(&tc), Ok(None));
        let mut tc = TcMessage::with_index(1);
        tc.attributes.push(TcAttribute::Kind(KIND.into()));
        assert_eq!(
            from_qdisc_message(&tc),
            Err(NetemDecodeError::MissingOptions)
        );
    }

    // --- distribution tables --------------------------------------------

    /// Facts about iproute2 6.1's /usr/lib/x86_64-linux-gnu/tc/*.dist,
    /// computed from those files: first 8, middle 8 (from 2044), last 8, sum
    /// and sum of index * value. They keep the comparison hermetic where the
    /// files are not installed.
    struct Known {
        first: [i16; 8],
        middle: [i16; 8],
        last: [i16; 8],
        sum: i64,
        weighted: i64,
    }

    fn check_known(table: &[i16], known: &Known) {
        assert_eq!(table.len(), NETEM_DIST_SIZE);
        assert_eq!(table[..8], known.first);
        assert_eq!(table[2044..2052], known.middle);
        assert_eq!(table[4088..], known.last);
        assert_eq!(table.iter().map(|&v| i64::from(v)).sum::<i64>(), known.sum);
        let weighted: i64 = table
            .iter()
            .enumerate()
            .map(|(i, &v)| i as i64 * i64::from(v))
            .sum();
        assert_eq!(weighted, known.weighted);
    }

    #[test]
    fn normal_table_matches_iproute2() {
        let table = normal_table();
        check_known(
            &table,
            &Known {
                first: [
                    -32768, -28307, -26871, -25967, -25298, -24765, -24320, -23937,
                ],
                middle: [-20, -15, -9, -5, 0, 5, 11, 16],
                last: [23679, 24027, 24424, 24888, 25450, 26164, 27159, 28858],
                sum: -26163,
                weighted: 38_718_219_118,
            },
        );
        assert!(table.windows(2).all(|w| w[0] <= w[1]), "non-decreasing");
        assert_eq!(table[NETEM_DIST_SIZE / 2], 0, "median");
        // Symmetric up to the bucketing (each bucket keeps its largest x),
        // which matters only in the tails.
        for k in 1..NETEM_DIST_SIZE {
            let skew = i32::from(table[k]) + i32::from(table[NETEM_DIST_SIZE - k]);
            assert!(skew.abs() <= 551, "entry {k}: skew {skew}");
        }
        let mean = table.iter().map(|&v| f64::from(v)).sum::<f64>() / table.len() as f64;
        assert!(
            mean.abs() < 0.001 * f64::from(NETEM_DIST_SCALE),
            "mean {mean}"
        );
    }

    #[test]
    fn pareto_table_matches_iproute2() {
        let table = pareto_table();
        check_known(
            &table,
            &Known {
                first: [-5461, -5460, -5460, -5459, -5458, -5457, -5456, -5455],
                middle: [-2631, -2629, -2627, -2625, -2622, -2620, -2618, -2616],
                last: [32767; 8],
                sum: -1_123_786,
                weighted: 22_905_823_651,
            },
        );
        assert!(table.windows(2).all(|w| w[0] <= w[1]), "non-decreasing");
    }

    #[test]
    fn paretonormal_table_matches_iproute2() {
        let table = paretonormal_table();
        check_known(
            &table,
            &Known {
                first: [
                    -12305, -11171, -10812, -10586, -10418, -10284, -10172, -10075,
                ],
                middle: [-1978, -1975, -1972, -1970, -1966, -1963, -1960, -1958],
                last: [30495, 30582, 30681, 30797, 30937, 31116, 31365, 31789],
                sum: -848_968,
                weighted: 26_858_358_858,
            },
        );
        assert!(table.windows(2).all(|w| w[0] <= w[1]), "non-decreasing");
    }

    /// Entry-by-entry comparison with the .dist files tc itself reads, where
    /// iproute2 is installed (text: `#` comment lines, then whitespace
    /// separated integers). On this machine all three match exactly.
    #[test]
    fn tables_equal_installed_dist_files() {
        let dirs = [
            "/usr/lib/x86_64-linux-gnu/tc",
            "/usr/lib/tc",
            "/usr/lib64/tc",
        ];
        type Generator = fn() -> Vec<i16>;
        let tables: [(&str, Generator); 3] = [
            ("normal", normal_table),
            ("pareto", pareto_table),
            ("paretonormal", paretonormal_table),
        ];
        let mut compared = 0;
        for dir in dirs {
            for (name, make) in tables {
                let Ok(text) = std::fs::read_to_string(format!("{dir}/{name}.dist")) else {
                    continue;
                };
                let file: Vec<i16> = text
                    .lines()
                    .filter(|l| !l.trim_start().starts_with('#'))
                    .flat_map(str::split_whitespace)
                    .map(|w| w.parse().unwrap())
                    .collect();
                assert_eq!(make(), file, "{dir}/{name}.dist");
                compared += 1;
            }
        }
        if compared == 0 {
            eprintln!("no iproute2 .dist files installed; compared with embedded facts only");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // fdlibm's decimals, verbatim
    fn erf_constants_are_fdlibms() {
        use erf_consts::*;
        // The decimal values fdlibm prints next to each hex word.
        let pairs: [(u64, f64); 58] = [
            (ERX, 8.45062911510467529297e-01),
            (EFX, 1.28379167095512586316e-01),
            (EFX8, 1.02703333676410069053e+00),
            (PP0, 1.28379167095512558561e-01),
            (PP1, -3.25042107247001499370e-01),
            (PP2, -2.84817495755985104766e-02),
            (PP3, -5.77027029648944159157e-03),
            (PP4, -2.37630166566501626084e-05),
            (QQ1, 3.97917223959155352819e-01),
            (QQ2, 6.50222499887672944485e-02),
            (QQ3, 5.08130628187576562776e-03),
            (QQ4, 1.32494738004321644526e-04),
            (QQ5, -3.96022827877536812320e-06),
            (PA0, -2.36211856075265944077e-03),
            (PA1, 4.14856118683748331666e-01),
            (PA2, -3.72207876035701323847e-01),
            (PA3, 3.18346619901161753674e-01),
            (PA4, -1.10894694282396677476e-01),
            (PA5, 3.54783043256182359371e-02),
            (PA6, -2.16637559486879084300e-03),
            (QA1, 1.06420880400844228286e-01),
            (QA2, 5.40397917702171048937e-01),
            (QA3, 7.18286544141962662868e-02),
            (QA4, 1.26171219808761642112e-01),
            (QA5, 1.36370839120290507362e-02),
            (QA6, 1.19844998467991074170e-02),
            (RA0, -9.86494403484714822705e-03),
            (RA1, -6.93858572707181764372e-01),
            (RA2, -1.05586262253232909814e+01),
            (RA3, -6.23753324503260060396e+01),
            (RA4, -1.62396669462573470355e+02),
            (RA5, -1.84605092906711035994e+02),
            (RA6, -8.12874355063065934246e+01),
            (RA7, -9.81432934416914548592e+00),
            (SA1, 1.96512716674392571292e+01),
            (SA2, 1.37657754143519042600e+02),
            (SA3, 4.34565877475229228821e+02),
            (SA4, 6.45387271733267880336e+02),
            (SA5, 4.29008140027567833386e+02),
            (SA6, 1.08635005541779435134e+02),
            (SA7, 6.57024977031928170135e+00),
            (SA8, -6.04244152148580987438e-02),
            (RB0, -9.86494292470009928597e-03),
            (RB1, -7.99283237680523006574e-01),
            (RB2, -1.77579549177547519889e+01),
            (RB3, -1.60636384855821916062e+02),
            (RB4, -6.37566443368389627722e+02),
            (RB5, -1.02509513161107724954e+03),
            (RB6, -4.83519191608651397019e+02),
            (SB1, 3.03380607434824582924e+01),
            (SB2, 3.25792512996573918826e+02),
            (SB3, 1.53672958608443695994e+03),
            (SB4, 3.19985821950859553908e+03),
            (SB5, 2.55305040643316442583e+03),
            (SB6, 4.74528541206955367215e+02),
            (SB7, -2.24409524465858183362e+01),
            (0x3FF00000_00000000, 1.0),
            (0xBFF00000_00000000, -1.0),
        ];
        for (i, (bits, decimal)) in pairs.iter().enumerate() {
            assert_eq!(f64::from_bits(*bits), *decimal, "constant {i}");
        }
    }

    #[test]
    #[allow(clippy::excessive_precision)] // 19-digit references
    fn erf_values() {
        // Reference values to 19 digits (Abramowitz & Stegun, Wolfram).
        let cases = [
            (0.0, 0.0),
            (1e-10, 1.128379167095512574e-10),
            (-0.1, -0.1124629160182848922),
            (0.5, 0.5204998778130465377),
            (1.0, 0.8427007929497148693),
            (2.0, 0.9953222650189527342),
            (3.0, 0.9999779095030014146),
            (-4.0, -0.9999999845827420997),
            (6.0, 1.0),
            (f64::INFINITY, 1.0),
            (f64::NEG_INFINITY, -1.0),
        ];
        for (x, want) in cases {
            let got = erf(x);
            assert!(
                (got - want).abs() <= 2.0 * f64::EPSILON * want.abs(),
                "erf({x}) = {got}, want {want}"
            );
        }
        assert!(erf(f64::NAN).is_nan());
    }

    // --- properties -------------------------------------------------------

    fn loss_model() -> impl Strategy<Value = Option<LossModel>> {
        prop_oneof![
            Just(None),
            any::<[u32; 5]>().prop_map(|[p13, p31, p32, p23, p14]| Some(LossModel::FourState {
                p13,
                p31,
                p32,
                p23,
                p14
            })),
            any::<[u32; 4]>().prop_map(|[p, r, h, k1]| Some(LossModel::GilbertElliott {
                p,
                r,
                h,
                k1
            })),
        ]
    }

    fn delay_dist() -> impl Strategy<Value = Option<DelayDist>> {
        prop_oneof![
            3 => Just(None),
            1 => proptest::collection::vec(any::<i16>(), 1..64)
                .prop_map(|v| Some(DelayDist::new(v).unwrap())),
        ]
    }

    prop_compose! {
        fn options()(
            (latency_ns, jitter_ns, delay_corr, limit) in any::<(i64, i64, u32, u32)>(),
            (loss, loss_corr, duplicate, duplicate_corr) in any::<(u32, u32, u32, u32)>(),
            (reorder, reorder_corr, gap, corrupt, corrupt_corr) in any::<(u32, u32, u32, u32, u32)>(),
            rate_bytes_per_sec in prop_oneof![any::<u64>(), 0..=u64::from(u32::MAX) + 2],
            (packet_overhead, cell_size, cell_overhead) in any::<(i32, u32, i32)>(),
            prng_seed in any::<Option<u64>>(),
            loss_model in loss_model(),
            delay_dist in delay_dist(),
        ) -> NetemOptions {
            NetemOptions {
                latency_ns, jitter_ns, delay_corr, limit, loss, loss_corr, loss_model,
                duplicate, duplicate_corr, reorder, reorder_corr, gap, corrupt,
                corrupt_corr, rate_bytes_per_sec, packet_overhead, cell_size,
                cell_overhead, prng_seed, delay_dist,
            }
        }
    }

    /// A qopt followed by well-framed attributes of netem's types with
    /// arbitrary contents, to reach the per-attribute checks often.
    fn framed() -> impl Strategy<Value = Vec<u8>> {
        (
            any::<[u8; QOPT_LEN]>(),
            proptest::collection::vec(
                (
                    0u16..16,
                    any::<bool>(),
                    proptest::collection::vec(any::<u8>(), 0..40),
                ),
                0..8,
            ),
        )
            .prop_map(|(qopt, attrs)| {
                let mut bytes = qopt.to_vec();
                for (kind, nested, value) in attrs {
                    let flag = if nested { wire::NLA_F_NESTED } else { 0 };
                    wire::put(&mut bytes, kind | flag, &value);
                }
                bytes
            })
    }

    proptest! {
        #[test]
        fn round_trips(options in options()) {
            let bytes = encode_options(&options);
            prop_assert_eq!(bytes.len() % 4, 0);
            prop_assert_eq!(decode_options(&bytes), Ok(options));
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_options(&bytes);
        }

        #[test]
        fn whatever_decodes_reencodes_to_the_same(bytes in framed()) {
            if let Ok(options) = decode_options(&bytes) {
                prop_assert_eq!(decode_options(&encode_options(&options)), Ok(options));
            }
        }
    }
}
