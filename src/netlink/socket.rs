//! A synchronous, pipelined rtnetlink client bound to one network namespace.
//!
//! Requests are queued into one buffer and sent together; the kernel processes a
//! batch in order and answers each with an ACK. [`Netlink::flush`] sends the
//! batch and collects every answer, so a thousand requests cost one or a few
//! system calls instead of a round trip each. The socket belongs to the
//! namespace of the thread that opened it, for its whole life, whatever thread
//! uses it later.

use std::io;

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};

/// Largest batch sent in one `send` (well below the default socket send buffer).
const MAX_BATCH_BYTES: usize = 32 * 1024;

/// A netlink request that the kernel refused, with what we were doing.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("{context}: {source}")]
    Refused {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("netlink socket: {0}")]
    Io(#[from] io::Error),
    #[error("netlink: undecodable answer: {0}")]
    Decode(String),
}

impl NetlinkError {
    /// The errno the kernel answered with, if it refused a request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Refused { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}

/// One rtnetlink socket plus a queue of requests awaiting [`Netlink::flush`].
pub struct Netlink {
    socket: Socket,
    seq: u32,
    batch: Vec<u8>,
    /// (sequence number, context for messages) of every queued request, in order.
    pending: Vec<(u32, String)>,
    recv: Vec<u8>,
    /// Unread answers are `recv[recv_off..recv_len]`.
    recv_off: usize,
    recv_len: usize,
}

impl Netlink {
    /// Open a socket in the calling thread's current network namespace.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // Successful ACKs then carry only the request's header, not a copy of it.
        socket.set_cap_ack(true)?;
        socket.set_ext_ack(true)?;
        socket.set_rx_buf_sz(1 << 20)?;
        Ok(Netlink {
            socket,
            seq: 0,
            batch: Vec::with_capacity(MAX_BATCH_BYTES),
            pending: Vec::new(),
            recv: vec![0; 1 << 16],
            recv_off: 0,
            recv_len: 0,
        })
    }

    /// Queue a request that creates or changes something; its ACK is checked by
    /// the next [`flush`](Self::flush). `context` names the object for errors.
    pub fn queue(&mut self, msg: RouteNetlinkMessage, flags: u16, context: impl Into<String>) {
        let seq = self.push(msg, flags | NLM_F_REQUEST | NLM_F_ACK);
        self.pending.push((seq, context.into()));
    }

    /// Number of requests queued and not yet flushed.
    pub fn queued(&self) -> usize {
        self.pending.len()
    }

    fn push(&mut self, msg: RouteNetlinkMessage, flags: u16) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let start = self.batch.len();
        self.batch.resize(start + packet.buffer_len(), 0);
        packet.serialize(&mut self.batch[start..]);
        self.seq
    }

    /// Send every queued request and wait for all answers. Returns the first
    /// refusal, after draining the rest, so the socket stays usable.
    pub fn flush(&mut self) -> Result<(), NetlinkError> {
        let pending = std::mem::take(&mut self.pending);
        let batch = std::mem::take(&mut self.batch);
        let mut first_error = None;
        let mut next = 0;
        let mut offset = 0;
        // Send in chunks that end on message boundaries, then read their ACKs.
        while offset < batch.len() {
            let end = chunk_end(&batch, offset);
            self.socket.send(&batch[offset..end], 0)?;
            let count = count_messages(&batch[offset..end]);
            for _ in 0..count {
                let (seq, result) = self.next_ack()?;
                let (expected, context) = &pending[next];
                next += 1;
                if seq != *expected {
                    return Err(NetlinkError::Decode(format!(
                        "answer for sequence {seq}, expected {expected}"
                    )));
                }
                if let (Err(source), None) = (result, &first_error) {
                    first_error = Some(NetlinkError::Refused {
                        context: context.clone(),
                        source,
                    });
                }
            }
            offset = end;
        }
        self.batch = batch;
        self.batch.clear();
        first_error.map_or(Ok(()), Err)
    }

    /// Queue one request and flush.
    pub fn execute(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        context: impl Into<String>,
    ) -> Result<(), NetlinkError> {
        self.queue(msg, flags, context);
        self.flush()
    }

    /// Run a dump request (`GetLink`, `GetAddress`, ...) and return every answer.
    /// Nothing may be queued.
    pub fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NetlinkError> {
        debug_assert!(self.pending.is_empty());
        let seq = self.push(msg, NLM_F_REQUEST | NLM_F_DUMP);
        let batch = std::mem::take(&mut self.batch);
        self.socket.send(&batch, 0)?;
        self.batch = batch;
        self.batch.clear();
        let mut out = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.recv[..], 0)?;
            let mut off = 0;
            while off < n {
                let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.recv[off..n])
                    .map_err(|e| NetlinkError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 || msg.header.sequence_number != seq {
                    return Err(NetlinkError::Decode("unexpected dump answer".into()));
                }
                off += align4(len);
                match msg.payload {
                    NetlinkPayload::Done(_) => return Ok(out),
                    NetlinkPayload::Error(e) if e.code.is_some() => {
                        return Err(NetlinkError::Refused {
                            context: "dump".into(),
                            source: e.to_io(),
                        });
                    }
                    NetlinkPayload::InnerMessage(m) => out.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Decode the next answer already received, if any.
    fn take_buffered_ack(&mut self) -> Result<Option<(u32, io::Result<()>)>, NetlinkError> {
        while self.recv_off < self.recv_len {
            let buf = &self.recv[self.recv_off..self.recv_len];
            let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(buf)
                .map_err(|e| NetlinkError::Decode(e.to_string()))?;
            let len = msg.header.length as usize;
            if len == 0 {
                return Err(NetlinkError::Decode("zero-length answer".into()));
            }
            self.recv_off += align4(len);
            if let NetlinkPayload::Error(e) = msg.payload {
                let result = match e.code {
                    None => Ok(()),
                    Some(_) => Err(e.to_io()),
                };
                return Ok(Some((msg.header.sequence_number, result)));
            }
        }
        Ok(None)
    }

    /// Read the next ACK or error: (sequence number, result).
    fn next_ack(&mut self) -> Result<(u32, io::Result<()>), NetlinkError> {
        loop {
            if let Some(ack) = self.take_buffered_ack()? {
                return Ok(ack);
            }
            let n = self.socket.recv(&mut &mut self.recv[..], 0)?;
            self.recv_len = n;
            self.recv_off = 0;
        }
    }
}

/// Round up to the netlink alignment.
fn align4(n: usize) -> usize {
    (n + 3) & !3
}

/// Length field of the netlink message starting at `off`.
fn message_len(buf: &[u8], off: usize) -> usize {
    let bytes = [buf[off], buf[off + 1], buf[off + 2], buf[off + 3]];
    align4(u32::from_ne_bytes(bytes) as usize)
}

/// End of the chunk that starts at `start`: whole messages, at most
/// `MAX_BATCH_BYTES` unless one message alone is larger.
fn chunk_end(buf: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < buf.len() {
        let len = message_len(buf, end);
        if end > start && end + len - start > MAX_BATCH_BYTES {
            break;
        }
        end += len;
    }
    end
}

fn count_messages(buf: &[u8]) -> usize {
    let (mut off, mut count) = (0, 0);
    while off < buf.len() {
        off += message_len(buf, off);
        count += 1;
    }
    count
}
