//! Tests that start servers: nginx serving remote parents (behind a fault-injecting proxy)
//! and a single-node Slurm running batch shard jobs. `have` skips a test whose server is not
//! installed, or fails it under GGUF_SPLICE_REQUIRE_ORACLES=1 (`scripts/test.sh` installs
//! them from Debian's packages).
//!
//! One test binary (`cargo test --test servers`), one module per theme.

#[path = "../common/mod.rs"]
mod common;

mod nginx;
mod proxy;
mod server;

mod fit_remote;
mod remote;
mod remote_faults;
mod remote_provenance;
mod slurm;
