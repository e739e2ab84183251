//! Shared helpers of the test binaries (`tests/hand`, `tests/oracles`, `tests/servers`),
//! each of which includes this tree as its `common` module.
//!
//! Every binary uses only a part of it (the hand-built tests no oracle runner, the oracle
//! tests no hand-built `Setup`, the servers neither), and the `Oracle` variants a binary
//! never names are dead there: dead-code warnings of this tree are expected per binary.
#![allow(dead_code)]

pub mod fixtures;
pub mod oracles;
pub mod run;

pub use fixtures::*;
pub use oracles::*;
pub use run::*;
