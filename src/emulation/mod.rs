//! Link emulation: the impairment model shared by every backend.

mod impairment;

pub use impairment::*;
