//! pcapng output on top of the `pcap-file` crate's [`PcapNgWriter`].
//!
//! `pcap-file` 2.0 covers everything needed here: a Section Header Block, one
//! Interface Description Block per target (linktype, snaplen, `if_name`,
//! `if_tsresol`) and Enhanced Packet Blocks with `epb_flags`. It always encodes
//! EPB timestamps in nanoseconds, which is why every interface declares
//! `if_tsresol = 9`: the two must agree.
//!
//! Invariants of an [`Output`]:
//! - the SHB and all IDBs are written by [`Output::new`], before any packet;
//! - interface ids are the indices of the labels given to `new`, so a packet
//!   for interface `i < labels.len()` is always valid;
//! - bytes are buffered and reach the underlying writer only on [`Output::flush`]
//!   or when the buffer fills.

use std::borrow::Cow;
use std::io::{self, BufWriter, Write};
use std::time::Duration;

use pcap_file::pcapng::PcapNgWriter;
use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::{DataLink, Endianness, PcapError};

use super::socket::SNAPLEN;

/// `if_tsresol` value: 10^-9 s per timestamp unit.
pub const TSRESOL_NANOS: u8 = 9;

/// `epb_flags` direction bits (pcapng §4.3.1): inbound.
pub const EPB_INBOUND: u32 = 0b01;
/// `epb_flags` direction bits: outbound.
pub const EPB_OUTBOUND: u32 = 0b10;

/// Longest label that fits the 16-bit option length of `if_name`.
pub const MAX_LABEL_LEN: usize = u16::MAX as usize;

/// Buffered pcapng writer with one interface per capture target.
pub struct Output<W: Write> {
    inner: PcapNgWriter<BufWriter<W>>,
}

impl<W: Write> Output<W> {
    /// Write the SHB and one IDB per label (interface id = index in `labels`).
    ///
    /// Labels must be at most [`MAX_LABEL_LEN`] bytes (checked by the caller).
    pub fn new<S: AsRef<str>>(out: W, labels: &[S]) -> io::Result<Self> {
        let section = SectionHeaderBlock {
            endianness: Endianness::native(),
            options: vec![SectionHeaderOption::UserApplication(Cow::Owned(format!(
                "testbed {}",
                env!("CARGO_PKG_VERSION")
            )))],
            ..Default::default()
        };
        // Large enough for a burst of full-size frames between flushes.
        let buffered = BufWriter::with_capacity(256 * 1024, out);
        let mut inner = PcapNgWriter::with_section_header(buffered, section).map_err(pcap_to_io)?;
        for label in labels {
            let idb = InterfaceDescriptionBlock {
                linktype: DataLink::ETHERNET,
                snaplen: SNAPLEN as u32,
                options: vec![
                    InterfaceDescriptionOption::IfName(Cow::Borrowed(label.as_ref())),
                    InterfaceDescriptionOption::IfTsResol(TSRESOL_NANOS),
                ],
            };
            inner.write_pcapng_block(idb).map_err(pcap_to_io)?;
        }
        Ok(Self { inner })
    }

    /// Append one Enhanced Packet Block. `data` longer than `u32::MAX` cannot
    /// occur (it is at most [`SNAPLEN`]) but would be rejected, not truncated.
    pub fn packet(
        &mut self,
        interface_id: u32,
        timestamp: Duration,
        data: &[u8],
        original_len: usize,
        flags: u32,
    ) -> io::Result<()> {
        if u32::try_from(data.len()).is_err() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame too long for pcapng",
            ));
        }
        let epb = EnhancedPacketBlock {
            interface_id,
            timestamp,
            original_len: u32::try_from(original_len).unwrap_or(u32::MAX),
            data: Cow::Borrowed(data),
            options: vec![EnhancedPacketOption::Flags(flags)],
        };
        self.inner
            .write_pcapng_block(epb)
            .map(drop)
            .map_err(pcap_to_io)
    }

    /// Push everything buffered to the underlying writer and flush it.
    pub fn flush(&mut self) -> io::Result<()> {
        self.inner.get_mut().flush()
    }
}

/// `epb_flags` for a frame with the given `sll_pkttype`: direction in bits 0-1
/// (`PACKET_OUTGOING` → outbound, anything else → inbound) and, for inbound
/// frames, the reception type in bits 2-4 (1 unicast, 2 multicast,
/// 3 broadcast, 4 promiscuous).
pub fn epb_flags(pkttype: u8) -> u32 {
    match pkttype {
        libc::PACKET_OUTGOING => EPB_OUTBOUND,
        libc::PACKET_HOST => EPB_INBOUND | (1 << 2),
        libc::PACKET_MULTICAST => EPB_INBOUND | (2 << 2),
        libc::PACKET_BROADCAST => EPB_INBOUND | (3 << 2),
        libc::PACKET_OTHERHOST => EPB_INBOUND | (4 << 2),
        _ => EPB_INBOUND,
    }
}

fn pcap_to_io(e: PcapError) -> io::Error {
    match e {
        PcapError::IoError(e) => e,
        other => io::Error::other(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pcap_file::pcapng::{Block, PcapNgReader};

    /// Walk the raw blocks: every block length is a multiple of 4, at least 12,
    /// and repeated in the trailer; the blocks tile the buffer exactly.
    fn block_types(buf: &[u8]) -> Vec<u32> {
        let u32_at = |off: usize| u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap());
        let mut off = 0;
        let mut types = Vec::new();
        while off < buf.len() {
            let ty = u32_at(off);
            let len = u32_at(off + 4) as usize;
            assert!(len >= 12, "block at {off} too short: {len}");
            assert_eq!(len % 4, 0, "block at {off} has length {len}");
            assert!(off + len <= buf.len(), "block at {off} overruns buffer");
            assert_eq!(u32_at(off + len - 4) as usize, len, "trailer at {off}");
            types.push(ty);
            off += len;
        }
        assert_eq!(off, buf.len());
        types
    }

    fn sample() -> Vec<u8> {
        let mut out = Output::new(Vec::new(), &["a:eth0", "bb:eth12"]).unwrap();
        // Odd lengths exercise padding, including empty and snaplen-truncated.
        for (i, len) in [0usize, 1, 2, 3, 5, 60, 1514].into_iter().enumerate() {
            let data = vec![0xAB; len];
            out.packet(
                (i % 2) as u32,
                Duration::new(1_700_000_000, 123_456_789 + i as u32),
                &data,
                len + i,
                epb_flags(if i % 2 == 0 {
                    libc::PACKET_OUTGOING
                } else {
                    libc::PACKET_HOST
                }),
            )
            .unwrap();
        }
        out.flush().unwrap();
        out.inner.into_inner().into_inner().unwrap()
    }

    #[test]
    fn blocks_are_aligned_and_trailers_match() {
        let buf = sample();
        let types = block_types(&buf);
        assert_eq!(types[0], 0x0A0D_0D0A, "SHB first");
        assert_eq!(&types[1..3], &[1, 1], "one IDB per target");
        assert!(types[3..].iter().all(|&t| t == 6), "then EPBs only");
        assert_eq!(types.len(), 3 + 7);
    }

    #[test]
    fn round_trips_through_reader() {
        let buf = sample();
        let mut reader = PcapNgReader::new(&buf[..]).unwrap();
        let mut idbs = Vec::new();
        let mut epbs = Vec::new();
        while let Some(block) = reader.next_block() {
            match block.unwrap() {
                Block::InterfaceDescription(idb) => idbs.push(idb.into_owned()),
                Block::EnhancedPacket(epb) => epbs.push(epb.into_owned()),
                other => panic!("unexpected block {other:?}"),
            }
        }
        assert_eq!(idbs.len(), 2);
        for (idb, name) in idbs.iter().zip(["a:eth0", "bb:eth12"]) {
            assert_eq!(idb.linktype, DataLink::ETHERNET);
            assert_eq!(idb.snaplen, 65_535);
            assert!(
                idb.options
                    .contains(&InterfaceDescriptionOption::IfName(name.into()))
            );
            assert!(
                idb.options
                    .contains(&InterfaceDescriptionOption::IfTsResol(9))
            );
        }
        assert_eq!(epbs.len(), 7);
        for (i, epb) in epbs.iter().enumerate() {
            assert_eq!(epb.interface_id, (i % 2) as u32);
            assert_eq!(
                epb.timestamp,
                Duration::new(1_700_000_000, 123_456_789 + i as u32)
            );
            assert_eq!(epb.original_len as usize, epb.data.len() + i);
            let dir = if i % 2 == 0 {
                EPB_OUTBOUND
            } else {
                EPB_INBOUND
            };
            let flags = epb
                .options
                .iter()
                .find_map(|o| match o {
                    EnhancedPacketOption::Flags(f) => Some(*f),
                    _ => None,
                })
                .unwrap();
            assert_eq!(flags & 0b11, dir);
        }
    }

    #[test]
    fn flags_follow_pkttype() {
        assert_eq!(epb_flags(libc::PACKET_OUTGOING), EPB_OUTBOUND);
        assert_eq!(epb_flags(libc::PACKET_HOST), EPB_INBOUND | 0b100);
        assert_eq!(epb_flags(libc::PACKET_BROADCAST), EPB_INBOUND | 0b1100);
        assert_eq!(epb_flags(libc::PACKET_MULTICAST), EPB_INBOUND | 0b1000);
        assert_eq!(epb_flags(libc::PACKET_OTHERHOST), EPB_INBOUND | 0b10000);
        for t in 5..=u8::MAX {
            assert_eq!(epb_flags(t) & 0b11, EPB_INBOUND);
        }
    }
}
