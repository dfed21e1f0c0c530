//! Link emulation: the impairment model shared by every backend.

mod impairment;
pub mod kernel;
pub mod netem;
pub mod pipeline;
pub mod relay;
pub mod tbf;

pub use impairment::*;
