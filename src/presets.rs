//! The recipes shipped in `mappings/`, built into the library and the binary, so that
//! `--recipe deepseek-r1t-chimera` works after `cargo install`, away from the repository.

use std::path::Path;

use crate::recipe::{Recipe, RecipeError};

/// A recipe shipped with gguf-splice.
#[derive(Clone, Copy, Debug)]
pub struct Preset {
    /// The name `--recipe` accepts: the file name in `mappings/` without `.toml`.
    pub name: &'static str,
    /// The TOML text, comments included (`presets show` prints it for copying).
    pub text: &'static str,
}

macro_rules! preset {
    ($name:literal) => {
        Preset {
            name: $name,
            text: include_str!(concat!("../mappings/", $name, ".toml")),
        }
    };
}

/// Every preset, in the order `presets` lists them.
pub const PRESETS: &[Preset] = &[
    preset!("deepseek-r1t-chimera"),
    preset!("deepseek-r1t-chimera-reverse"),
    preset!("embeddings-output-from-donor"),
    preset!("r1t-mix-75"),
];

impl Preset {
    /// The preset named `name` (a trailing `.toml` is allowed).
    pub fn find(name: &str) -> Option<&'static Preset> {
        let name = name.strip_suffix(".toml").unwrap_or(name);
        PRESETS.iter().find(|p| p.name == name)
    }

    /// The names of all presets, for messages.
    pub fn names() -> String {
        PRESETS
            .iter()
            .map(|p| p.name)
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The one-line `[recipe] description`.
    pub fn description(&self) -> String {
        toml::from_str::<toml::Table>(self.text)
            .ok()
            .and_then(|t| {
                t.get("recipe")?
                    .get("description")?
                    .as_str()
                    .map(str::to_string)
            })
            .unwrap_or_default()
    }

    /// The parsed recipe; messages name it `preset NAME`.
    pub fn recipe(&self) -> Result<Recipe, RecipeError> {
        Recipe::from_toml(self.text, Path::new(&format!("preset {}", self.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mapping_file_is_a_preset_and_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("mappings");
        let mut files: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".toml"))
            .collect();
        files.sort();
        let mut names: Vec<String> = PRESETS.iter().map(|p| format!("{}.toml", p.name)).collect();
        names.sort();
        assert_eq!(
            files, names,
            "mappings/ and PRESETS must list the same recipes"
        );
        for p in PRESETS {
            let r = p.recipe().unwrap_or_else(|e| panic!("{}: {e}", p.name));
            assert!(!r.rules.is_empty(), "{}", p.name);
            assert!(!p.description().is_empty(), "{} has no description", p.name);
            // `presets show` prints the usage comment for an installed binary, which has
            // no mappings/ directory beside it.
            assert!(
                !p.text.contains("--recipe mappings/")
                    && p.text.contains(&format!("--recipe {}", p.name)),
                "{}: its usage must call it by name",
                p.name
            );
        }
    }

    #[test]
    fn found_by_name_with_or_without_extension() {
        assert_eq!(
            Preset::find("deepseek-r1t-chimera").unwrap().name,
            "deepseek-r1t-chimera"
        );
        assert!(Preset::find("deepseek-r1t-chimera.toml").is_some());
        assert!(Preset::find("nope").is_none());
        assert!(Preset::names().contains("embeddings-output-from-donor"));
    }
}
