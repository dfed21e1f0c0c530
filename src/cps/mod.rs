//! The CPS application of seed 002: six kinds of sensor send sealed readings
//! to a controller over mutual-TLS QUIC.
