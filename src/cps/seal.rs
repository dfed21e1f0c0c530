//! AES-256-GCM frames between one sensor and the controller.
//!
//! A frame is `b"TB" | version | kind | nonce[12] | ciphertext ‖ tag[16]`; the
//! 16-byte header is the associated data, so it cannot be altered either.
//!
//! Each direction has its own key, derived per sensor, so the two directions
//! never share a (key, nonce) pair: a reading's nonce is
//! `sensor_id ‖ counter` (unique as long as the sensor's counter never
//! repeats, see [`super::counter`]), an ack's nonce is 12 random bytes.

use std::fmt;

use aes::Aes256;
use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use ctr::cipher::{InnerIvInit, StreamCipher};
use hkdf::Hkdf;
use p256::{PublicKey, SecretKey};
use sha2::{Digest, Sha256};

use super::reading::{Ack, Reading};

/// Bytes of header before the ciphertext: magic, version, kind and nonce.
pub const HEADER_LEN: usize = 16;
/// Longest frame [`Frame::parse`] accepts.
pub const MAX_FRAME: usize = 256;
/// Bytes of authentication tag at the end of every frame.
pub const TAG_LEN: usize = 16;
/// First two bytes of every frame.
pub const MAGIC: [u8; 2] = *b"TB";
/// Frame format version.
pub const VERSION: u8 = 1;

const INFO_S2C: &[u8] = b"testbed-cps-v1 s2c";
const INFO_C2S: &[u8] = b"testbed-cps-v1 c2s";

/// The two direction keys of one sensor's session. `Debug` shows no key.
#[derive(Clone)]
pub struct SessionKeys {
    /// Sensor → controller: seals readings.
    s2c: Aes256Gcm,
    /// The same key as plain AES, for [`decrypt_unauthenticated`] (a
    /// controller whose `authenticate` defence is off).
    s2c_block: Aes256,
    /// Controller → sensor: seals acks.
    c2s: Aes256Gcm,
}

impl SessionKeys {
    /// Keys of a session between `sensor_id` and the controller, the same on
    /// both sides: the sensor passes its secret and the controller's public
    /// key, the controller its secret and the sensor's public key.
    ///
    /// Static-static ECDH on P-256, then HKDF-SHA256 with
    /// salt = SHA-256(sensor cert DER ‖ controller cert DER), ikm = the shared
    /// x-coordinate, info = `"testbed-cps-v1 s2c"` or `"… c2s"` ‖ sensor_id (BE).
    pub fn derive(
        own: &SecretKey,
        peer: &PublicKey,
        sensor_cert_der: &[u8],
        controller_cert_der: &[u8],
        sensor_id: u32,
    ) -> SessionKeys {
        let shared = p256::ecdh::diffie_hellman(own.to_nonzero_scalar(), peer.as_affine());
        let salt = Sha256::new()
            .chain_update(sensor_cert_der)
            .chain_update(controller_cert_der)
            .finalize();
        let hkdf = Hkdf::<Sha256>::new(Some(&salt), shared.raw_secret_bytes());
        let id = sensor_id.to_be_bytes();
        let key = |info: &[u8]| {
            let mut okm = [0u8; 32];
            hkdf.expand_multi_info(&[info, &id], &mut okm)
                .expect("32 bytes is within HKDF-SHA256's 8160-byte limit");
            okm
        };
        SessionKeys::from_bytes(key(INFO_S2C), key(INFO_C2S))
    }

    /// Keys from raw bytes (tests and fuzzing).
    pub fn from_bytes(s2c: [u8; 32], c2s: [u8; 32]) -> SessionKeys {
        SessionKeys {
            s2c: Aes256Gcm::new(&s2c.into()),
            s2c_block: Aes256::new(&s2c.into()),
            c2s: Aes256Gcm::new(&c2s.into()),
        }
    }

    fn cipher(&self, kind: FrameKind) -> &Aes256Gcm {
        match kind {
            FrameKind::Reading => &self.s2c,
            FrameKind::Ack => &self.c2s,
        }
    }
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys").finish_non_exhaustive()
    }
}

/// What a frame carries, and so which direction key seals it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A [`Reading`], sensor → controller (wire code 1).
    Reading,
    /// An [`Ack`], controller → sensor (wire code 2).
    Ack,
}

impl FrameKind {
    fn code(self) -> u8 {
        match self {
            FrameKind::Reading => 1,
            FrameKind::Ack => 2,
        }
    }
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Longer than [`MAX_FRAME`].
    #[error("frame is {len} bytes, expected at most {max}")]
    Oversize {
        /// Bytes received.
        len: usize,
        /// [`MAX_FRAME`].
        max: usize,
    },
    /// Shorter than the header.
    #[error("frame is {len} bytes, expected at least {HEADER_LEN}")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// Not starting with [`MAGIC`].
    #[error("frame does not start with \"TB\"")]
    BadMagic,
    /// A version other than [`VERSION`].
    #[error("frame version is {0}, expected {VERSION}")]
    Version(u8),
    /// A kind code other than 1 (reading) or 2 (ack).
    #[error("frame kind is {0}, expected 1 (reading) or 2 (ack)")]
    Kind(u8),
    /// Too few bytes after the header to hold the tag.
    #[error("frame has {len} bytes after the header, expected at least {TAG_LEN}")]
    NoTag {
        /// Bytes after the header.
        len: usize,
    },
}

/// A frame whose header is well formed; nothing is authenticated yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// What the frame says it carries.
    pub kind: FrameKind,
    /// The AES-GCM nonce.
    pub nonce: [u8; 12],
    /// The header as received: the associated data.
    header: [u8; HEADER_LEN],
    /// Ciphertext followed by the tag: at least [`TAG_LEN`] bytes.
    pub ciphertext: &'a [u8],
}

impl<'a> Frame<'a> {
    /// Splits a frame into header fields and ciphertext, checking in order:
    /// length at most [`MAX_FRAME`], a whole header, magic, version, kind, and
    /// room for the tag.
    pub fn parse(bytes: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        if bytes.len() > MAX_FRAME {
            return Err(FrameError::Oversize {
                len: bytes.len(),
                max: MAX_FRAME,
            });
        }
        let Some((header, ciphertext)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(FrameError::Short { len: bytes.len() });
        };
        let [m0, m1, version, kind, nonce @ ..] = *header;
        if [m0, m1] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let kind = match kind {
            1 => FrameKind::Reading,
            2 => FrameKind::Ack,
            other => return Err(FrameError::Kind(other)),
        };
        if ciphertext.len() < TAG_LEN {
            return Err(FrameError::NoTag {
                len: ciphertext.len(),
            });
        }
        Ok(Frame {
            kind,
            nonce,
            header: *header,
            ciphertext,
        })
    }

    /// The sensor id in a reading's nonce (meaningless for an ack).
    pub fn sender_id(&self) -> u32 {
        let [a, b, c, d, ..] = self.nonce;
        u32::from_be_bytes([a, b, c, d])
    }

    /// The counter in a reading's nonce (meaningless for an ack).
    pub fn counter(&self) -> u64 {
        let [_, _, _, _, counter @ ..] = self.nonce;
        u64::from_be_bytes(counter)
    }
}

/// A frame failed authentication: wrong key, or altered on the way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("frame failed authentication, expected one sealed with this session's key")]
pub struct OpenError;

/// Seals a reading under the sensor → controller key, with nonce
/// `sensor_id ‖ counter`. The caller must never seal two readings with the
/// same (sensor_id, counter).
pub fn seal_reading(keys: &SessionKeys, reading: &Reading) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    nonce[..4].copy_from_slice(&reading.sensor_id.to_be_bytes());
    nonce[4..].copy_from_slice(&reading.counter.to_be_bytes());
    seal(keys, FrameKind::Reading, nonce, &reading.encode())
}

/// Seals an ack under the controller → sensor key, with a random nonce.
pub fn seal_ack(keys: &SessionKeys, ack: &Ack) -> Vec<u8> {
    seal(keys, FrameKind::Ack, rand::random(), &ack.encode())
}

fn seal(keys: &SessionKeys, kind: FrameKind, nonce: [u8; 12], plaintext: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(HEADER_LEN + plaintext.len() + TAG_LEN);
    frame.extend_from_slice(&MAGIC);
    frame.extend_from_slice(&[VERSION, kind.code()]);
    frame.extend_from_slice(&nonce);
    frame.extend_from_slice(plaintext);
    let (header, body) = frame.split_at_mut(HEADER_LEN);
    let tag = keys
        .cipher(kind)
        .encrypt_inout_detached(&Nonce::from(nonce), header, body.into())
        .expect("a reading or ack is far below AES-GCM's length limits");
    frame.extend_from_slice(&tag);
    frame
}

/// Authenticates and decrypts a frame with the key its kind names, returning
/// the plaintext (an encoded [`Reading`] or [`Ack`], not yet decoded).
pub fn open(keys: &SessionKeys, frame: &Frame) -> Result<Vec<u8>, OpenError> {
    let Some((body, tag)) = frame.ciphertext.split_last_chunk::<TAG_LEN>() else {
        return Err(OpenError);
    };
    let mut plaintext = body.to_vec();
    keys.cipher(frame.kind)
        .decrypt_inout_detached(
            &Nonce::from(frame.nonce),
            &frame.header,
            plaintext.as_mut_slice().into(),
            &Tag::from(*tag),
        )
        .map_err(|_| OpenError)?;
    Ok(plaintext)
}

/// Decrypts a reading frame WITHOUT checking its tag: AES-GCM's own CTR
/// keystream (J0 = nonce ‖ 0x00000001; the payload starts at counter 2,
/// 32-bit big-endian), so an untampered frame yields what [`open`] yields and
/// a flipped ciphertext bit flips the same plaintext bit. Only for a
/// controller whose `authenticate` defence is switched off (negative
/// controls); never use it to trust anything. Acks are never opened this way.
pub fn decrypt_unauthenticated(keys: &SessionKeys, frame: &Frame) -> Vec<u8> {
    let body_len = frame.ciphertext.len().saturating_sub(TAG_LEN);
    let mut plaintext = frame.ciphertext[..body_len].to_vec();
    let mut iv = [0u8; 16];
    iv[..12].copy_from_slice(&frame.nonce);
    iv[15] = 2;
    let core = ctr::CtrCore::<Aes256, ctr::flavors::Ctr32BE>::inner_iv_init(
        keys.s2c_block.clone(),
        &iv.into(),
    );
    let mut ctr = ctr::Ctr32BE::from_core(core);
    ctr.apply_keystream(&mut plaintext);
    plaintext
}
