//! The CPS application of seed 002: six kinds of sensor send sealed readings
//! to a controller over mutual-TLS QUIC.

pub mod counter;
pub mod model;
pub mod reading;
pub mod seal;
pub mod window;
