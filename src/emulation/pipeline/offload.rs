//! Offload state of a frame: a checksum the kernel has not computed yet and a
//! TCP super-frame the kernel will cut into segments, as the kernel describes
//! them to packet sockets with `PACKET_VNET_HDR` (`struct virtio_net_hdr`).
//!
//! The engine reads frames with this header and writes them back with it, so
//! offloaded frames cross it as the kernel made them: a 64 KiB TCP
//! super-frame is one frame, as it is one packet for netem on a veth. Only a
//! stage that changes bytes needs real frames: [`Offload::finalize_checksum`]
//! computes a pending checksum and [`segment`] cuts a TCP super-frame into
//! MSS-sized segments with full checksums (netem's `netem_segment()` and
//! `skb_checksum_help()` before it corrupts a packet).
//!
//! Everything here parses bytes that came from the network: no panics, and
//! anything it does not understand is an error, never a guess.

use std::ops::Range;

/// Length of `struct virtio_net_hdr` (without `num_buffers`).
pub const VNET_HDR_LEN: usize = 10;

const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// `struct virtio_net_hdr` in host order. `Offload::default()` is a plain
/// frame: complete checksums, no segmentation pending.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Offload {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

/// Why a frame could not be completed or segmented.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    #[error("checksum field at {start}+{offset} is outside the {len}-byte frame")]
    ChecksumOutside { start: u16, offset: u16, len: usize },
    #[error("super-frame of GSO type {0:#04x} (only TCP over IPv4/IPv6 is segmented)")]
    UnsupportedGso(u8),
    #[error("super-frame headers are malformed: {0}")]
    Malformed(&'static str),
}

impl Offload {
    /// Decodes the 10-byte header (little-endian, as on x86 and ARM hosts).
    pub fn decode(b: &[u8; VNET_HDR_LEN]) -> Offload {
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Offload {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16_at(2),
            gso_size: u16_at(4),
            csum_start: u16_at(6),
            csum_offset: u16_at(8),
        }
    }

    pub fn encode(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }

    /// A checksum is still to be computed (`CHECKSUM_PARTIAL`).
    pub fn needs_csum(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0
    }

    /// The frame is a super-frame the kernel will segment.
    pub fn is_gso(&self) -> bool {
        self.gso_type & !GSO_ECN != GSO_NONE && self.gso_size > 0
    }

    /// Bytes the frame takes on the wire once segmented, the kernel's
    /// `qdisc_pkt_len()`: its length plus one copy of the headers per extra
    /// segment. A plain frame (or one whose headers do not parse) is its length.
    pub fn wire_len(&self, frame: &[u8]) -> usize {
        if !self.is_gso() {
            return frame.len();
        }
        let Ok(h) = Headers::parse(frame, self) else {
            return frame.len();
        };
        let payload = frame.len() - h.end;
        let segs = payload.div_ceil(usize::from(self.gso_size)).max(1);
        frame.len() + (segs - 1) * h.end
    }

    /// Computes the pending checksum of a non-GSO frame in place (the
    /// kernel's `skb_checksum_help()`): the one's complement sum from
    /// `csum_start` to the end, stored at `csum_start + csum_offset`, whose
    /// field holds the pseudo-header sum. The frame is then plain.
    pub fn finalize_checksum(&mut self, frame: &mut [u8]) -> Result<(), OffloadError> {
        if !self.needs_csum() {
            return Ok(());
        }
        let (start, offset) = (usize::from(self.csum_start), usize::from(self.csum_offset));
        let at = start + offset;
        if start > frame.len() || at + 2 > frame.len() {
            return Err(OffloadError::ChecksumOutside {
                start: self.csum_start,
                offset: self.csum_offset,
                len: frame.len(),
            });
        }
        let sum = fold(sum16(0, &frame[start..]));
        let mut check = !sum;
        if check == 0 && offset == 6 {
            check = 0xffff; // UDP: 0 means "no checksum"
        }
        frame[at..at + 2].copy_from_slice(&check.to_be_bytes());
        *self = Offload::default();
        Ok(())
    }
}

/// The one's complement sum of `bytes` as big-endian 16-bit words, added to
/// `acc` (not folded).
fn sum16(mut acc: u64, bytes: &[u8]) -> u64 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        acc += u64::from(*last) << 8;
    }
    acc
}

fn fold(mut acc: u64) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

/// Where the headers of a TCP super-frame are.
struct Headers {
    v4: bool,
    l3: usize,
    l4: usize,
    /// End of the TCP header: payload starts here.
    end: usize,
}

impl Headers {
    fn parse(frame: &[u8], o: &Offload) -> Result<Headers, OffloadError> {
        let bad = OffloadError::Malformed;
        let v4 = match o.gso_type & !GSO_ECN {
            GSO_TCPV4 => true,
            GSO_TCPV6 => false,
            other => return Err(OffloadError::UnsupportedGso(other)),
        };
        let ethertype = u16::from_be_bytes(
            frame
                .get(12..14)
                .ok_or(bad("shorter than an Ethernet header"))?
                .try_into()
                .map_err(|_| bad("Ethernet header"))?,
        );
        let (want, l3) = if v4 {
            (ETHERTYPE_IPV4, ETH_HLEN)
        } else {
            (ETHERTYPE_IPV6, ETH_HLEN)
        };
        if ethertype != want {
            return Err(bad("ethertype does not match the GSO type"));
        }
        let l4 = usize::from(o.csum_start);
        let proto_ok = if v4 {
            let ihl = usize::from(frame.get(l3).ok_or(bad("no IPv4 header"))? & 0x0f) * 4;
            ihl >= 20 && l3 + ihl == l4 && frame.get(l3 + 9) == Some(&IPPROTO_TCP)
        } else {
            // No extension headers: the kernel's TCPv6 GSO frames have none.
            l3 + 40 == l4 && frame.get(l3 + 6) == Some(&IPPROTO_TCP)
        };
        if !proto_ok {
            return Err(bad("not a TCP segment right after the IP header"));
        }
        let doff = usize::from(frame.get(l4 + 12).ok_or(bad("no TCP header"))? >> 4) * 4;
        let end = l4 + doff;
        if doff < 20 || end > frame.len() {
            return Err(bad("TCP header length"));
        }
        Ok(Headers { v4, l3, l4, end })
    }
}

/// Cuts a TCP super-frame into segments of at most `gso_size` payload bytes,
/// each a plain frame with its own IP length (and IPv4 id and header
/// checksum), TCP sequence number and full TCP checksum; FIN and PSH stay
/// on the last segment only, CWR on the first only (the kernel's
/// `tcp_gso_segment()`). A frame that is not a super-frame comes back as is.
pub fn segment(frame: &[u8], o: &Offload) -> Result<Vec<Vec<u8>>, OffloadError> {
    if !o.is_gso() {
        return Ok(vec![frame.to_vec()]);
    }
    let h = Headers::parse(frame, o)?;
    let mss = usize::from(o.gso_size);
    let payload = &frame[h.end..];
    let chunks: Vec<Range<usize>> = (0..payload.len().div_ceil(mss).max(1))
        .map(|i| i * mss..((i + 1) * mss).min(payload.len()))
        .collect();
    let seq0 = u32::from_be_bytes(read4(frame, h.l4 + 4)?);
    let id0 = if h.v4 {
        u16::from_be_bytes(read2(frame, h.l3 + 4)?)
    } else {
        0
    };
    let flags = frame[h.l4 + 13];
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(chunks.len());
    for (i, chunk) in chunks.into_iter().enumerate() {
        let mut seg = Vec::with_capacity(h.end + chunk.len());
        seg.extend_from_slice(&frame[..h.end]);
        seg.extend_from_slice(&payload[chunk.clone()]);
        let l4_len = seg.len() - h.l4;
        if h.v4 {
            let total = u16::try_from(seg.len() - h.l3)
                .map_err(|_| OffloadError::Malformed("IPv4 length"))?;
            seg[h.l3 + 2..h.l3 + 4].copy_from_slice(&total.to_be_bytes());
            let id = id0.wrapping_add(i as u16);
            seg[h.l3 + 4..h.l3 + 6].copy_from_slice(&id.to_be_bytes());
            seg[h.l3 + 10..h.l3 + 12].fill(0);
            let check = !fold(sum16(0, &seg[h.l3..h.l4]));
            seg[h.l3 + 10..h.l3 + 12].copy_from_slice(&check.to_be_bytes());
        } else {
            let plen = u16::try_from(seg.len() - h.l4)
                .map_err(|_| OffloadError::Malformed("IPv6 length"))?;
            seg[h.l3 + 4..h.l3 + 6].copy_from_slice(&plen.to_be_bytes());
        }
        let seq = seq0.wrapping_add((i * mss) as u32);
        seg[h.l4 + 4..h.l4 + 8].copy_from_slice(&seq.to_be_bytes());
        let mut f = flags;
        if i != last {
            f &= !(TCP_FIN | TCP_PSH);
        }
        if i != 0 {
            f &= !TCP_CWR;
        }
        seg[h.l4 + 13] = f;
        seg[h.l4 + 16..h.l4 + 18].fill(0);
        let check = !fold(sum16(pseudo_header(&seg, &h, l4_len), &seg[h.l4..]));
        seg[h.l4 + 16..h.l4 + 18].copy_from_slice(&check.to_be_bytes());
        out.push(seg);
    }
    Ok(out)
}

/// The TCP pseudo-header sum of a segment whose IP header is at `h.l3`.
fn pseudo_header(seg: &[u8], h: &Headers, l4_len: usize) -> u64 {
    let addrs = if h.v4 {
        &seg[h.l3 + 12..h.l3 + 20]
    } else {
        &seg[h.l3 + 8..h.l3 + 40]
    };
    sum16(u64::from(IPPROTO_TCP) + l4_len as u64, addrs)
}

fn read2(b: &[u8], at: usize) -> Result<[u8; 2], OffloadError> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .ok_or(OffloadError::Malformed("truncated header"))
}

fn read4(b: &[u8], at: usize) -> Result<[u8; 4], OffloadError> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(OffloadError::Malformed("truncated header"))
}

/// Whether the TCP or UDP checksum of a plain IPv4/IPv6 frame is right
/// (tests and fuzzing: the receiver's view).
pub fn l4_checksum_ok(frame: &[u8]) -> Option<bool> {
    let ethertype = u16::from_be_bytes(frame.get(12..14)?.try_into().ok()?);
    let l3 = ETH_HLEN;
    let (proto, l4, pseudo_addrs) = match ethertype {
        ETHERTYPE_IPV4 => {
            let ihl = usize::from(frame.get(l3)? & 0x0f) * 4;
            (*frame.get(l3 + 9)?, l3 + ihl, frame.get(l3 + 12..l3 + 20)?)
        }
        ETHERTYPE_IPV6 => (*frame.get(l3 + 6)?, l3 + 40, frame.get(l3 + 8..l3 + 40)?),
        _ => return None,
    };
    let body = frame.get(l4..)?;
    let sum = sum16(u64::from(proto) + body.len() as u64, pseudo_addrs);
    Some(fold(sum16(sum, body)) == 0xffff)
}

/// A TCP super-frame as the kernel hands one to a packet socket: Ethernet,
/// IPv4 (`v4`) or IPv6, a TCP header with `flags` and sequence number `seq`,
/// then `payload`, with the TCP checksum field holding the pseudo-header sum
/// and the header asking for `mss`-byte segments. For tests and fuzzing.
pub fn tcp_super_frame(
    v4: bool,
    seq: u32,
    flags: u8,
    mss: u16,
    payload: &[u8],
) -> (Vec<u8>, Offload) {
    let l3 = ETH_HLEN;
    let l4 = l3 + if v4 { 20 } else { 40 };
    let end = l4 + 20;
    let mut f = vec![0u8; end];
    f[0..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
    f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
    let ethertype = if v4 { ETHERTYPE_IPV4 } else { ETHERTYPE_IPV6 };
    f[12..14].copy_from_slice(&ethertype.to_be_bytes());
    if v4 {
        f[l3] = 0x45;
        f[l3 + 8] = 64;
        f[l3 + 9] = IPPROTO_TCP;
        f[l3 + 12..l3 + 16].copy_from_slice(&[10, 0, 0, 1]);
        f[l3 + 16..l3 + 20].copy_from_slice(&[10, 0, 0, 2]);
    } else {
        f[l3] = 0x60;
        f[l3 + 6] = IPPROTO_TCP;
        f[l3 + 7] = 64;
        f[l3 + 8] = 0xfd;
        f[l3 + 23] = 1;
        f[l3 + 24] = 0xfd;
        f[l3 + 39] = 2;
    }
    f[l4..l4 + 2].copy_from_slice(&40000u16.to_be_bytes());
    f[l4 + 2..l4 + 4].copy_from_slice(&5201u16.to_be_bytes());
    f[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
    f[l4 + 12] = 5 << 4;
    f[l4 + 13] = flags;
    f[l4 + 14..l4 + 16].copy_from_slice(&64240u16.to_be_bytes());
    f.extend_from_slice(payload);
    let total = f.len() - l3;
    if v4 {
        let total = u16::try_from(total).unwrap_or(u16::MAX);
        f[l3 + 2..l3 + 4].copy_from_slice(&total.to_be_bytes());
    } else {
        let plen = u16::try_from(f.len() - l4).unwrap_or(u16::MAX);
        f[l3 + 4..l3 + 6].copy_from_slice(&plen.to_be_bytes());
    }
    let h = Headers { v4, l3, l4, end };
    let pseudo = fold(pseudo_header(&f, &h, f.len() - l4));
    f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
    let offload = Offload {
        flags: F_NEEDS_CSUM,
        gso_type: if v4 { GSO_TCPV4 } else { GSO_TCPV6 },
        hdr_len: end as u16,
        gso_size: mss,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    (f, offload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let o = Offload {
            flags: 1,
            gso_type: GSO_TCPV6 | GSO_ECN,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 54,
            csum_offset: 16,
        };
        assert_eq!(Offload::decode(&o.encode()), o);
        assert!(o.needs_csum() && o.is_gso());
        assert!(!Offload::default().is_gso());
    }

    #[test]
    fn checksum_outside_the_frame_is_an_error() {
        let mut o = Offload {
            flags: F_NEEDS_CSUM,
            csum_start: 30,
            csum_offset: 16,
            ..Offload::default()
        };
        let mut frame = vec![0u8; 40];
        assert!(o.finalize_checksum(&mut frame).is_err());
        assert!(o.needs_csum(), "left unchanged on error");
    }
}
