//! The CPS application of seed 002: six kinds of sensor send sealed readings
//! to a controller over mutual-TLS QUIC, or as plain UDP datagrams where the
//! seal is the only protection (seed 002's setup, for attack scenarios).

pub mod controller;
pub mod counter;
pub mod defence;
pub mod model;
pub mod reading;
pub mod seal;
pub mod sensor;
pub mod window;

use crate::agent::identity::{self, Identity, IdentityError};
use rustls::pki_types::CertificateDer;
use seal::SessionKeys;

/// The controller's port for readings as plain UDP datagrams (no TLS); QUIC
/// stays on [`crate::agent::transport::AGENT_PORT`].
pub const CPS_UDP_PORT: u16 = 4434;

/// A sensor's id on the wire (in every nonce): FNV-1a of its node name, so
/// the controller knows which id a certificate's node must use without any
/// table, and a sender cannot claim another node's id.
pub fn sensor_id(node: &str) -> u32 {
    node.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// The session keys between the sensor `sensor` and the controller, derived
/// on either side from this node's key and the peer's certificate.
pub fn session_keys(
    own: &Identity,
    peer_cert: &CertificateDer,
    own_is_sensor: bool,
    sensor: &str,
) -> Result<SessionKeys, IdentityError> {
    let secret = own.secret_key()?;
    let peer = identity::public_key(peer_cert)?;
    let (sensor_cert, controller_cert) = if own_is_sensor {
        (own.cert.as_ref(), peer_cert.as_ref())
    } else {
        (peer_cert.as_ref(), own.cert.as_ref())
    };
    Ok(SessionKeys::derive(
        &secret,
        &peer,
        sensor_cert,
        controller_cert,
        sensor_id(sensor),
    ))
}
