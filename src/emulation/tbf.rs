//! Kernel TBF (token bucket filter): the `TCA_OPTIONS` of an `RTM_NEWQDISC`
//! of kind `tbf`, encoded and decoded byte by byte. Pure functions.
//!
//! # Wire format
//!
//! From the kernel's `include/uapi/linux/pkt_sched.h` (enum `TCA_TBF_*`,
//! `struct tc_tbf_qopt`, `struct tc_ratespec`) and `net/sched/sch_tbf.c`
//! (`tbf_change`, `tbf_dump`). Unlike netem, the options are a plain nest:
//!
//! ```text
//! TCA_OPTIONS (2) nest:
//!   TCA_TBF_PARMS  1  struct tc_tbf_qopt (36 bytes) {
//!       struct tc_ratespec rate { u8 cell_log; u8 linklayer; u16 overhead;
//!                                 s16 cell_align; u16 mpu; u32 rate /* B/s */ };
//!       struct tc_ratespec peakrate;        all zero: no peak rate
//!       u32 limit;                          queue size, bytes
//!       u32 buffer;                         burst as psched ticks (64 ns)
//!       u32 mtu;                            peak bucket, ticks: 0
//!   }
//!   TCA_TBF_BURST  6  u32 bytes
//!   TCA_TBF_RATE64 4  u64 B/s, only when the rate is >= 2^32 B/s
//! ```
//!
//! - `rate.linklayer = TC_LINKLAYER_ETHERNET` (1), so the kernel computes
//!   transmit times itself and needs no `TCA_TBF_RTAB` rate table: `tbf_change`
//!   reads the table only for `TC_LINKLAYER_UNAWARE`. `cell_log`, `cell_align`
//!   and `mpu` belong to that table and are sent as 0.
//! - With `TCA_TBF_BURST` the kernel derives its buffer time from the burst and
//!   ignores the `buffer` field; it is still filled (burst / rate in ticks, as
//!   the kernel itself computes and dumps it).
//! - The kernel takes `max(rate.rate, RATE64)`, as for netem: the u32 field
//!   carries the rate saturated at `u32::MAX`.
//! - Dumps (`tbf_dump`) carry no `TCA_TBF_BURST`: the burst read back is
//!   derived from `buffer` ticks and is exact only while one tick (64 ns) at
//!   the rate is under one byte, i.e. below 15.6 MB/s (125 Mbit/s); above, it
//!   may read low by up to `rate * 64 ns` bytes.

use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::tc::{TcHandle, TcMessage};

use super::netem::wire;

/// `TCA_TBF_*` attribute types (`include/uapi/linux/pkt_sched.h`).
pub mod attr {
    pub const PARMS: u16 = 1;
    pub const RTAB: u16 = 2;
    pub const PTAB: u16 = 3;
    pub const RATE64: u16 = 4;
    pub const PRATE64: u16 = 5;
    pub const BURST: u16 = 6;
    pub const PBURST: u16 = 7;
    pub const PAD: u16 = 8;
}

/// The qdisc kind string.
pub const KIND: &str = "tbf";

/// `sizeof(struct tc_tbf_qopt)`.
pub const QOPT_LEN: usize = 36;

/// `TC_LINKLAYER_ETHERNET` in `enum tc_link_layer`.
const TC_LINKLAYER_ETHERNET: u8 = 1;

/// One psched tick is `1 << 6` ns.
const PSCHED_TICK_SHIFT: u32 = 6;

const NSEC_PER_SEC: u128 = 1_000_000_000;

/// An Ethernet header, added to the MTU to get the largest frame.
const ETH_HLEN: u64 = 14;

/// A token bucket in kernel terms.
///
/// Valid for the kernel (checked by [`TbfOptions::check`] before encoding):
/// all three fields above zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TbfOptions {
    /// Sustained rate, bytes per second.
    pub rate_bytes_per_sec: u64,
    /// Bucket size, bytes: the most sent at line rate after an idle spell, and
    /// the largest packet that can pass (larger non-GSO packets are dropped).
    pub burst_bytes: u32,
    /// Queue size, bytes (tail drop beyond it).
    pub limit_bytes: u32,
}

/// Why TBF options cannot be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TbfError {
    #[error("tbf rate is 0 bytes/s; TBF needs at least 8 bit/s")]
    ZeroRate,
    #[error("tbf burst is 0 bytes; the kernel refuses a bucket that holds no packet")]
    ZeroBurst,
    #[error("tbf limit is 0 bytes; such a queue drops every packet")]
    ZeroLimit,
}

/// Why TBF options read back from the kernel were rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TbfDecodeError {
    #[error("tbf options: {0}")]
    Framing(#[from] wire::FramingError),
    #[error("tbf options carry no TCA_TBF_PARMS")]
    MissingParms,
    #[error("tbf attribute {attr} is {actual} bytes, expected {expected}")]
    WrongLength {
        attr: &'static str,
        expected: usize,
        actual: usize,
    },
    #[error("the tbf qdisc message carries no TCA_OPTIONS")]
    MissingOptions,
}

impl TbfOptions {
    /// A bucket for `rate_bps` bits per second on a link of this MTU, with
    /// [`default_burst`] and [`default_limit`].
    pub fn for_rate(rate_bps: u64, mtu: u32) -> Result<TbfOptions, TbfError> {
        let rate = rate_bps / 8;
        let burst = default_burst(rate, mtu);
        let options = TbfOptions {
            rate_bytes_per_sec: rate,
            burst_bytes: burst,
            limit_bytes: default_limit(rate, burst),
        };
        options.check()?;
        Ok(options)
    }

    /// Checks what the kernel needs: rate, burst and limit above zero.
    pub fn check(&self) -> Result<(), TbfError> {
        if self.rate_bytes_per_sec == 0 {
            Err(TbfError::ZeroRate)
        } else if self.burst_bytes == 0 {
            Err(TbfError::ZeroBurst)
        } else if self.limit_bytes == 0 {
            Err(TbfError::ZeroLimit)
        } else {
            Ok(())
        }
    }

    /// The burst as psched ticks: `burst / rate` seconds, saturating.
    fn buffer_ticks(&self) -> u32 {
        if self.rate_bytes_per_sec == 0 {
            return u32::MAX;
        }
        let ns = u128::from(self.burst_bytes) * NSEC_PER_SEC / u128::from(self.rate_bytes_per_sec);
        u32::try_from(ns >> PSCHED_TICK_SHIFT).unwrap_or(u32::MAX)
    }
}

/// The bucket size used when none is given: the larger of
/// - two full frames, `2 * (mtu + 14)`: the kernel drops a non-GSO packet
///   longer than the bucket (GSO ones it splits), so one frame must always
///   fit, and a second lets the next one leave while the bucket refills; and
/// - 4 ms worth of the rate, `rate / 250`: tc-tbf(8)'s rule `burst >= rate /
///   HZ` for CONFIG_HZ = 250 (Debian's), so that late timer or softirq runs
///   do not cost throughput.
///
/// Saturates at `u32::MAX`.
pub fn default_burst(rate_bytes_per_sec: u64, mtu: u32) -> u32 {
    let frames = 2 * (u64::from(mtu) + ETH_HLEN);
    u32::try_from(frames.max(rate_bytes_per_sec / 250)).unwrap_or(u32::MAX)
}

/// The queue size used when none is given: the burst plus 50 ms at the rate
/// (tc's `latency 50ms`), saturating at `u32::MAX`.
pub fn default_limit(rate_bytes_per_sec: u64, burst_bytes: u32) -> u32 {
    let queued = rate_bytes_per_sec / 20;
    u32::try_from(queued.saturating_add(u64::from(burst_bytes))).unwrap_or(u32::MAX)
}

/// Encodes the nested `TCA_OPTIONS` payload (see the module docs).
pub fn encode_options(options: &TbfOptions) -> Result<Vec<u8>, TbfError> {
    options.check()?;
    let rate32 = u32::try_from(options.rate_bytes_per_sec).unwrap_or(u32::MAX);
    let mut qopt = Vec::with_capacity(QOPT_LEN);
    // struct tc_ratespec rate
    qopt.push(0); // cell_log
    qopt.push(TC_LINKLAYER_ETHERNET);
    qopt.extend_from_slice(&0u16.to_ne_bytes()); // overhead
    qopt.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
    qopt.extend_from_slice(&0u16.to_ne_bytes()); // mpu
    qopt.extend_from_slice(&rate32.to_ne_bytes());
    // struct tc_ratespec peakrate: none
    qopt.extend_from_slice(&[0; 12]);
    qopt.extend_from_slice(&options.limit_bytes.to_ne_bytes());
    qopt.extend_from_slice(&options.buffer_ticks().to_ne_bytes());
    qopt.extend_from_slice(&0u32.to_ne_bytes()); // mtu
    let mut out = Vec::with_capacity(64);
    wire::put(&mut out, attr::PARMS, &qopt);
    wire::put(&mut out, attr::BURST, &options.burst_bytes.to_ne_bytes());
    if options.rate_bytes_per_sec > u64::from(u32::MAX) {
        wire::put(
            &mut out,
            attr::RATE64,
            &options.rate_bytes_per_sec.to_ne_bytes(),
        );
    }
    Ok(out)
}

/// Decodes a `tbf` `TCA_OPTIONS` payload as the kernel dumps it, or as `tc`
/// or [`encode_options`] sends it: rate `max(rate, RATE64)`, limit from the
/// qopt, burst from `TCA_TBF_BURST` or else derived from the `buffer` ticks
/// (rounded up; see the module docs for its precision). Peak-rate fields and
/// unknown attributes are ignored. Never panics.
pub fn decode_options(payload: &[u8]) -> Result<TbfOptions, TbfDecodeError> {
    let mut parms = None;
    let mut burst = None;
    let mut rate64 = None;
    for attribute in wire::Attrs::new(payload, 0) {
        let attribute = attribute?;
        let value = attribute.value;
        match attribute.kind {
            attr::PARMS => {
                parms = Some(fixed::<QOPT_LEN, _>("TCA_TBF_PARMS", value, |r| {
                    let _cell_log = r.u8()?;
                    let _linklayer = r.u8()?;
                    let _overhead = r.u16()?;
                    let _cell_align = r.u16()?;
                    let _mpu = r.u16()?;
                    let rate = r.u32()?;
                    for _ in 0..3 {
                        r.u32()?; // peakrate
                    }
                    let limit = r.u32()?;
                    let buffer = r.u32()?;
                    let _mtu = r.u32()?;
                    Some((rate, limit, buffer))
                })?);
            }
            attr::BURST => burst = Some(fixed::<4, _>("TCA_TBF_BURST", value, |r| r.u32())?),
            attr::RATE64 => rate64 = Some(fixed::<8, _>("TCA_TBF_RATE64", value, |r| r.u64())?),
            _ => {}
        }
    }
    let (rate32, limit, buffer) = parms.ok_or(TbfDecodeError::MissingParms)?;
    let rate = rate64.map_or(u64::from(rate32), |r| r.max(u64::from(rate32)));
    let burst = burst.unwrap_or_else(|| burst_from_ticks(buffer, rate));
    Ok(TbfOptions {
        rate_bytes_per_sec: rate,
        burst_bytes: burst,
        limit_bytes: limit,
    })
}

/// Bytes sent at `rate` during `ticks` psched ticks, rounded up (the kernel
/// rounds the buffer time down twice: in `psched_l2t_ns` and to ticks).
fn burst_from_ticks(ticks: u32, rate_bytes_per_sec: u64) -> u32 {
    let ns = u128::from(ticks) << PSCHED_TICK_SHIFT;
    let bytes = (ns * u128::from(rate_bytes_per_sec)).div_ceil(NSEC_PER_SEC);
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

fn fixed<const N: usize, T>(
    name: &'static str,
    value: &[u8],
    read: impl FnOnce(&mut wire::Reader) -> Option<T>,
) -> Result<T, TbfDecodeError> {
    wire::fixed::<N, T>(value, read).map_err(|actual| TbfDecodeError::WrongLength {
        attr: name,
        expected: N,
        actual,
    })
}

/// An `RTM_NEWQDISC` request for a TBF qdisc. The caller chooses the netlink
/// flags (`NLM_F_CREATE|NLM_F_EXCL` to add, `|NLM_F_REPLACE` to change).
pub fn qdisc_message(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    options: &TbfOptions,
) -> Result<RouteNetlinkMessage, TbfError> {
    Ok(wire::new_qdisc(
        ifindex,
        handle,
        parent,
        KIND,
        encode_options(options)?,
    ))
}

/// An `RTM_NEWQDISC` request for a TBF qdisc of `rate_bps` bits per second
/// (rounded down to whole bytes per second), `burst_bytes` and
/// `limit_bytes`. See [`default_burst`] and [`default_limit`] for sensible
/// values.
pub fn tbf_message(
    ifindex: u32,
    handle: TcHandle,
    parent: TcHandle,
    rate_bps: u64,
    burst_bytes: u32,
    limit_bytes: u32,
) -> Result<RouteNetlinkMessage, TbfError> {
    let options = TbfOptions {
        rate_bytes_per_sec: rate_bps / 8,
        burst_bytes,
        limit_bytes,
    };
    qdisc_message(ifindex, handle, parent, &options)
}

/// The TBF options of a qdisc message read back from the kernel (or built by
/// [`qdisc_message`]): `Ok(None)` when the qdisc is not tbf.
pub fn from_qdisc_message(message: &TcMessage) -> Result<Option<TbfOptions>, TbfDecodeError> {
    if wire::qdisc_kind(message) != Some(KIND) {
        return Ok(None);
    }
    let raw = wire::raw_options(message).ok_or(TbfDecodeError::MissingOptions)?;
    decode_options(&raw).map(Some)
}

// The reference bytes are little-endian captures.
#[cfg(all(test, target_endian = "little"))]
mod tests {
    use netlink_packet_core::{Emitable, Parseable};
    use proptest::prelude::*;

    use super::*;
    use wire::hex;

    fn ten_mbit() -> TbfOptions {
        TbfOptions {
            rate_bytes_per_sec: 1_250_000,
            burst_bytes: 32 * 1024,
            limit_bytes: 100 * 1024,
        }
    }

    /// `tc qdisc add dev lo root tbf rate 10mbit burst 32kb limit 100kb`,
    /// iproute2 6.1 (`tc -V`: iproute2-6.1.0), captured with
    /// `strace -e trace=sendmsg`: the TCA_OPTIONS payload up to the 1024-byte
    /// TCA_TBF_RTAB, which is left out here.
    const TC_10MBIT_SENT: &str = "
        2800 0100                                  // TCA_TBF_PARMS, 36 bytes
          03 01 0000 ffff 0000 d0121300            // rate: cell_log 3, linklayer 1, cell_align -1, 1250000 B/s
          00 00 0000 0000 0000 00000000            // peakrate: none
          00900100 f93f0600 00000000               // limit 102400, buffer 409593 ticks, mtu 0
        0800 0600 00800000                         // TCA_TBF_BURST 32768";

    /// The kernel's dump of that qdisc (6.18.44 here), read with
    /// `strace -e trace=recvmsg tc qdisc show`: TCA_OPTIONS payload.
    const KERNEL_10MBIT_DUMP: &str = "
        2800 0100
          00 01 0000 0000 0000 d0121300
          00 00 0000 0000 0000 00000000
          00900100 00400600 00000000               // buffer 409600 ticks = 26.2144 ms";

    /// The dump after `tc qdisc replace ... tbf rate 40gbit burst 1mb limit 2mb`.
    const KERNEL_40GBIT_DUMP: &str = "
        2800 0100
          00 01 0000 0000 0000 ffffffff            // rate32 saturated
          00 00 0000 0000 0000 00000000
          00002000 cc0c0000 00000000               // limit 2097152, buffer 3276 ticks
        0c00 0400 00f2052a01000000                 // TCA_TBF_RATE64 5e9 B/s";

    #[test]
    fn encodes_ten_mbit_byte_for_byte() {
        // Against tc: rate, linklayer, limit and burst are the same bytes; the
        // rate table's cell_log/cell_align and the RTAB itself are not sent,
        // and the buffer is the kernel's own value (its dump), not tc's.
        let expected = hex("
            2800 0100
              00 01 0000 0000 0000 d0121300
              00 00 0000 0000 0000 00000000
              00900100 00400600 00000000
            0800 0600 00800000");
        assert_eq!(encode_options(&ten_mbit()).unwrap(), expected);
        let tc = hex(TC_10MBIT_SENT);
        let ours = encode_options(&ten_mbit()).unwrap();
        assert_eq!(ours[..4], tc[..4], "PARMS header");
        assert_eq!(ours[5], tc[5], "linklayer");
        assert_eq!(ours[12..16], tc[12..16], "rate");
        assert_eq!(ours[16..32], tc[16..32], "peakrate, limit");
        assert_eq!(ours[40..], tc[40..], "TCA_TBF_BURST");
        // The buffer equals what the kernel stores and dumps.
        assert_eq!(ours[..40], hex(KERNEL_10MBIT_DUMP)[..]);
    }

    #[test]
    fn decodes_what_tc_sends_and_the_kernel_dumps() {
        assert_eq!(decode_options(&hex(TC_10MBIT_SENT)), Ok(ten_mbit()));
        assert_eq!(decode_options(&hex(KERNEL_10MBIT_DUMP)), Ok(ten_mbit()));
        // 1 MiB at 40 Gbit/s: one tick is 320 bytes, so the derived burst
        // reads low (the kernel itself dumps 3276 ticks = 1048320 bytes).
        assert_eq!(
            decode_options(&hex(KERNEL_40GBIT_DUMP)),
            Ok(TbfOptions {
                rate_bytes_per_sec: 5_000_000_000,
                burst_bytes: 1_048_320,
                limit_bytes: 2 * 1024 * 1024,
            })
        );
    }

    #[test]
    fn rate64_only_from_four_gigabytes_per_second() {
        let mut options = ten_mbit();
        options.rate_bytes_per_sec = u64::from(u32::MAX);
        let bytes = encode_options(&options).unwrap();
        assert_eq!(bytes.len(), 40 + 8, "no RATE64 at 2^32 - 1");
        assert_eq!(bytes[12..16], [0xff; 4]);
        options.rate_bytes_per_sec = 5_000_000_000;
        let bytes = encode_options(&options).unwrap();
        assert_eq!(bytes[48..], hex("0c00 0400 00f2052a01000000"));
        assert_eq!(bytes[12..16], [0xff; 4], "rate32 saturates");
        assert_eq!(decode_options(&bytes), Ok(options));
    }

    #[test]
    fn message_bytes_and_readback() {
        let message = tbf_message(
            1,
            TcHandle { major: 1, minor: 0 },
            TcHandle::ROOT,
            10_000_000,
            32 * 1024,
            100 * 1024,
        )
        .unwrap();
        let RouteNetlinkMessage::NewQueueDiscipline(tc) = &message else {
            panic!("not a qdisc message: {message:?}");
        };
        let mut bytes = vec![0; tc.buffer_len()];
        tc.emit(&mut bytes);
        let mut expected = hex("
            00 00 0000 01000000 00000100 ffffffff 00000000   // tcmsg: ifindex 1, handle 1:, parent root
            0800 0100 74626600                                // TCA_KIND \"tbf\"
            3400 0200                                         // TCA_OPTIONS, 48 bytes");
        expected.extend(encode_options(&ten_mbit()).unwrap());
        assert_eq!(bytes, expected);
        // Parsed back the way a dump is parsed.
        let parsed = TcMessage::parse(&bytes).unwrap();
        assert_eq!(from_qdisc_message(&parsed), Ok(Some(ten_mbit())));
        assert_eq!(from_qdisc_message(tc), Ok(Some(ten_mbit())));
    }

    #[test]
    fn other_kinds_are_not_tbf() {
        let netem = super::super::netem::qdisc_message(
            1,
            TcHandle::UNSPEC,
            TcHandle::ROOT,
            &Default::default(),
        );
        let RouteNetlinkMessage::NewQueueDiscipline(tc) = &netem else {
            unreachable!()
        };
        assert_eq!(from_qdisc_message(tc), Ok(None));
    }

    #[test]
    fn refuses_zero_fields() {
        let base = ten_mbit();
        let zero_rate = TbfOptions {
            rate_bytes_per_sec: 0,
            ..base
        };
        assert_eq!(encode_options(&zero_rate), Err(TbfError::ZeroRate));
        let zero_burst = TbfOptions {
            burst_bytes: 0,
            ..base
        };
        assert_eq!(encode_options(&zero_burst), Err(TbfError::ZeroBurst));
        let zero_limit = TbfOptions {
            limit_bytes: 0,
            ..base
        };
        assert_eq!(encode_options(&zero_limit), Err(TbfError::ZeroLimit));
        assert_eq!(
            tbf_message(1, TcHandle::ROOT, TcHandle::ROOT, 7, 1, 1).unwrap_err(),
            TbfError::ZeroRate
        );
    }

    #[test]
    fn defaults() {
        // 10 Mbit/s: 4 ms is 5000 bytes, more than two 1514-byte frames.
        assert_eq!(default_burst(1_250_000, 1500), 5000);
        // 1 Mbit/s: two frames (3028 bytes) are more than 4 ms (500).
        assert_eq!(default_burst(125_000, 1500), 3028);
        assert_eq!(default_burst(u64::MAX, 1500), u32::MAX);
        assert_eq!(default_limit(1_250_000, 5000), 62_500 + 5000);
        assert_eq!(default_limit(u64::MAX, 1), u32::MAX);
        let options = TbfOptions::for_rate(10_000_000, 1500).unwrap();
        assert_eq!(
            options,
            TbfOptions {
                rate_bytes_per_sec: 1_250_000,
                burst_bytes: 5000,
                limit_bytes: 67_500,
            }
        );
        assert_eq!(TbfOptions::for_rate(7, 1500), Err(TbfError::ZeroRate));
    }

    #[test]
    fn decode_errors_name_the_check() {
        assert_eq!(decode_options(&[]), Err(TbfDecodeError::MissingParms));
        assert_eq!(
            decode_options(&hex("0800 0600 00800000")),
            Err(TbfDecodeError::MissingParms)
        );
        let mut short = hex(KERNEL_10MBIT_DUMP);
        short[0] = 0x24; // 32-byte PARMS
        short.truncate(36);
        assert_eq!(
            decode_options(&short),
            Err(TbfDecodeError::WrongLength {
                attr: "TCA_TBF_PARMS",
                expected: 36,
                actual: 32
            })
        );
        assert!(matches!(
            decode_options(&[1, 2]),
            Err(TbfDecodeError::Framing(
                wire::FramingError::Truncated { .. }
            ))
        ));
        assert!(matches!(
            decode_options(&hex("ff00 0100 00000000")),
            Err(TbfDecodeError::Framing(wire::FramingError::BadLength {
                len: 255,
                ..
            }))
        ));
        let mut burst3 = hex(KERNEL_10MBIT_DUMP);
        burst3.extend(hex("0700 0600 008000 00"));
        assert_eq!(
            decode_options(&burst3),
            Err(TbfDecodeError::WrongLength {
                attr: "TCA_TBF_BURST",
                expected: 4,
                actual: 3
            })
        );
    }

    #[test]
    fn skips_unknown_attributes() {
        let mut bytes = hex(KERNEL_10MBIT_DUMP);
        bytes.extend(hex("0800 0800 00000000 0500 7f00 01000000"));
        assert_eq!(decode_options(&bytes), Ok(ten_mbit()));
    }

    fn valid_options() -> impl Strategy<Value = TbfOptions> {
        (1..=u64::MAX, 1..=u32::MAX, 1..=u32::MAX).prop_map(|(rate, burst, limit)| TbfOptions {
            rate_bytes_per_sec: rate,
            burst_bytes: burst,
            limit_bytes: limit,
        })
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode_options(&bytes);
        }

        #[test]
        fn round_trips(options in valid_options()) {
            let bytes = encode_options(&options).unwrap();
            prop_assert_eq!(decode_options(&bytes), Ok(options));
        }

        #[test]
        fn burst_from_the_kernel_buffer_is_close(options in valid_options()) {
            // What the dump gives back when only the buffer ticks survive.
            let ticks = options.buffer_ticks();
            prop_assume!(ticks < u32::MAX);
            let derived = burst_from_ticks(ticks, options.rate_bytes_per_sec);
            // Flooring to ns and then to 64 ns ticks loses under 65 ns.
            let tick_bytes = (u128::from(options.rate_bytes_per_sec) * 65).div_ceil(NSEC_PER_SEC);
            prop_assert!(derived <= options.burst_bytes);
            prop_assert!(u128::from(options.burst_bytes - derived) <= tick_bytes);
        }
    }
}
