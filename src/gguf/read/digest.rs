//! What identifies a GGUF file without reading its tensors: a SHA-256 of its header and
//! tensor-info table, the bytes that say what every tensor is and where it lies. Two quants
//! of one model, or one file re-converted, differ there; a copy of the file does not.

use sha2::{Digest, Sha256};

impl super::GgufFile {
    /// SHA-256 (lowercase hex) of the bytes from the magic to the end of the tensor infos
    /// (the alignment padding after them is left out: a reader need not have read it).
    pub fn header_sha256(&self) -> String {
        let end = (self.info_end as usize).min(self.header.len());
        let digest = Sha256::digest(&self.header[..end]);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::ggml_type::GgmlType;
    use crate::gguf::GgufFile;
    use crate::testkit::GgufBuilder;
    use std::path::Path;

    #[test]
    fn the_digest_covers_metadata_and_tensor_infos_but_not_data() {
        let make = |name: &str, fill: u8| {
            let bytes = GgufBuilder::new()
                .kv_str("general.name", name)
                .tensor("a", &[32], GgmlType::F32, fill)
                .build();
            GgufFile::from_bytes(Path::new("m.gguf"), &bytes).unwrap()
        };
        let a = make("x", 1);
        assert_eq!(a.header_sha256().len(), 64);
        assert_eq!(a.header_sha256(), make("x", 2).header_sha256());
        assert_ne!(a.header_sha256(), make("y", 1).header_sha256());
    }
}
