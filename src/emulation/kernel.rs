//! The kernel backend: a netem qdisc at the root of each impaired interface's
//! egress, built from the same [`DirectionParams`] the userspace engine runs,
//! so a profile means the same on both.

use netlink_packet_route::AddressFamily;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{TcHandle, TcHeader, TcMessage};

use super::netem::{self, DelayDist, NetemOptions};
use super::pipeline::{DirectionParams, LossModel};

/// The kernel's options for one direction.
pub fn netem_options(p: &DirectionParams) -> NetemOptions {
    let prob = netem::percent_to_prob;
    let (loss, loss_corr, loss_model) = match p.loss {
        LossModel::Random {
            percent,
            correlation,
        } => (prob(percent), prob(correlation), None),
        LossModel::GilbertElliott {
            p: gp,
            r,
            one_minus_h,
            one_minus_k,
        } => (
            0,
            0,
            Some(netem::LossModel::GilbertElliott {
                p: prob(gp),
                r: prob(r),
                h: u32::MAX - prob(one_minus_h),
                k1: prob(one_minus_k),
            }),
        ),
        LossModel::FourState {
            p13,
            p31,
            p32,
            p23,
            p14,
        } => (
            0,
            0,
            Some(netem::LossModel::FourState {
                p13: prob(p13),
                p31: prob(p31),
                p32: prob(p32),
                p23: prob(p23),
                p14: prob(p14),
            }),
        ),
    };
    let (rate_bps, packet_overhead, cell_size, cell_overhead) = p.rate.map_or((0, 0, 0, 0), |r| {
        (r.bps, r.packet_overhead, r.cell_size, r.cell_overhead)
    });
    NetemOptions {
        latency_ns: i64::try_from(p.delay_ns).unwrap_or(i64::MAX),
        jitter_ns: i64::try_from(p.jitter_ns).unwrap_or(i64::MAX),
        delay_corr: prob(p.delay_correlation),
        limit: p.limit,
        loss,
        loss_corr,
        loss_model,
        duplicate: prob(p.duplicate),
        duplicate_corr: prob(p.duplicate_correlation),
        reorder: prob(p.reorder),
        reorder_corr: prob(p.reorder_correlation),
        gap: p.reorder_gap,
        corrupt: prob(p.corrupt),
        corrupt_corr: prob(p.corrupt_correlation),
        rate_bytes_per_sec: rate_bps / 8,
        packet_overhead,
        cell_size,
        cell_overhead,
        prng_seed: Some(p.seed),
        // netem reads the table only with jitter; uniform needs none.
        delay_dist: (p.jitter_ns > 0)
            .then(|| DelayDist::for_distribution(p.distribution))
            .flatten(),
    }
}

/// `1:` as the root qdisc.
fn root_handles() -> (TcHandle, TcHandle) {
    (TcHandle { major: 1, minor: 0 }, TcHandle::ROOT)
}

/// Install netem as the root qdisc of `ifindex` (send with create + exclusive).
pub fn root_netem(ifindex: u32, params: &DirectionParams) -> RouteNetlinkMessage {
    root_netem_options(ifindex, &netem_options(params))
}

/// The root netem of `ifindex` with these options: sent with create it
/// installs one, without it changes the one in place (queued packets stay).
pub fn root_netem_options(ifindex: u32, options: &NetemOptions) -> RouteNetlinkMessage {
    let (handle, parent) = root_handles();
    netem::qdisc_message(ifindex, handle, parent, options)
}

/// Remove the root qdisc of `ifindex` (back to the kernel's default).
pub fn delete_root(ifindex: u32) -> RouteNetlinkMessage {
    let header = TcHeader {
        family: AddressFamily::Unspec,
        index: ifindex as i32,
        handle: TcHandle { major: 0, minor: 0 },
        parent: TcHandle::ROOT,
        info: 0,
    };
    RouteNetlinkMessage::DelQueueDiscipline(TcMessage::from_parts(header, Vec::new()))
}

/// Dump every qdisc of the socket's namespace (read back for `status`).
pub fn dump_qdiscs() -> RouteNetlinkMessage {
    RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default())
}
