//! The GGUF container: reading, validating and writing files, and shard sets. Knows nothing of
//! recipes or plans.

mod error;
mod flavour;
pub mod model;
pub mod read;
pub mod value;
pub mod write;

pub use error::GgufError;
pub use flavour::FlavourBasis;
pub use model::{Model, TensorLoc};
pub use read::{FileIdentity, GgufFile, KeyValue, TensorInfo};
pub use value::{OwnedValue, Scalar, ValueRef, ValueType};
