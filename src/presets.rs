//! The recipes shipped in `mappings/`, built into the library and the binary, so that
//! `--recipe deepseek-r1t-chimera` works after `cargo install`, away from the repository.
//! Also the one rule that turns what a user named as a recipe into one, for the command line
//! and for batch manifests alike: a recipe file, or else a preset ([`RecipeSource::find`]),
//! with the `--take` rules in front and `allow_partial_experts` ([`load`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

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

/// Where a recipe comes from: a file the user named, or a preset.
#[derive(Clone, Debug)]
pub enum RecipeSource {
    /// A recipe built into gguf-splice (`mappings/`).
    Preset(&'static Preset),
    /// A recipe file.
    File(PathBuf),
}

impl RecipeSource {
    /// The recipe file at `file` unless nothing is there, else the preset called `name`;
    /// `None` when neither. A file of that name wins, as a path is what the user typed; and
    /// anything but "not there" (a directory, a FIFO, a path that cannot be looked at:
    /// permissions, a loop of links, a path through a file) is the file, so that reading it
    /// says what stopped it, rather than a preset being taken in its place.
    pub fn find(file: &Path, name: &str) -> Option<RecipeSource> {
        match std::fs::metadata(file) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                Preset::find(name).map(RecipeSource::Preset)
            }
            _ => Some(RecipeSource::File(file.to_path_buf())),
        }
    }

    /// The parsed recipe.
    pub fn recipe(&self) -> Result<Recipe, RecipeError> {
        match self {
            RecipeSource::Preset(p) => p.recipe(),
            RecipeSource::File(f) => Recipe::from_file(f),
        }
    }
}

/// The recipe a child is made by: `source`'s (an empty recipe without one), with the `take`
/// rules (`--take`) in front of its rules, and partial experts allowed when either the recipe
/// or `allow_partial_experts` allows them.
pub fn load(
    source: Option<&RecipeSource>,
    takes: &[String],
    allow_partial_experts: bool,
) -> Result<Recipe, RecipeError> {
    let mut recipe = match source {
        Some(s) => s.recipe()?,
        None => Recipe::default(),
    };
    recipe.prepend_takes(takes)?;
    recipe.allow_partial_experts |= allow_partial_experts;
    Ok(recipe)
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

    /// A file that is there but cannot be read as a recipe: a directory, and a link to
    /// itself (whose metadata fails with ELOOP, not NotFound), each named like a preset.
    fn unreadable_recipes(dir: &Path) -> [PathBuf; 2] {
        let folder = dir.join("deepseek-r1t-chimera");
        std::fs::create_dir(&folder).unwrap();
        let looped = dir.join("r1t-mix-75.toml");
        std::os::unix::fs::symlink("r1t-mix-75.toml", &looped).unwrap();
        [folder, looped]
    }

    #[test]
    fn a_file_wins_and_a_preset_is_looked_up_only_when_nothing_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("deepseek-r1t-chimera");
        assert!(matches!(
            RecipeSource::find(&missing, "deepseek-r1t-chimera"),
            Some(RecipeSource::Preset(p)) if p.name == "deepseek-r1t-chimera"
        ));
        assert!(RecipeSource::find(&dir.path().join("nope"), "nope").is_none());
        let file = dir.path().join("embeddings-output-from-donor.toml");
        std::fs::write(&file, "").unwrap();
        assert!(matches!(
            RecipeSource::find(&file, "embeddings-output-from-donor.toml"),
            Some(RecipeSource::File(f)) if f == file
        ));
        for path in unreadable_recipes(dir.path()) {
            let name = path.file_name().unwrap().to_str().unwrap();
            let source = RecipeSource::find(&path, name);
            assert!(
                matches!(&source, Some(RecipeSource::File(f)) if *f == path),
                "{name}: {source:?}"
            );
            let e = load(source.as_ref(), &[], false).unwrap_err();
            assert!(matches!(e, RecipeError::Input(_)), "{name}: {e:?}");
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn takes_come_first_and_partial_experts_can_only_be_allowed() {
        let preset = RecipeSource::Preset(Preset::find("deepseek-r1t-chimera").unwrap());
        let from_preset = preset.recipe().unwrap();
        let r = load(Some(&preset), &["x=v3".into()], true).unwrap();
        assert_eq!(r.rules.len(), from_preset.rules.len() + 1);
        assert_eq!(r.rules[0].from, "v3");
        assert!(r.allow_partial_experts);
        let r = load(None, &[], false).unwrap();
        assert!(r.rules.is_empty() && !r.allow_partial_experts);
        let e = load(None, &["no-parent-given".into()], false).unwrap_err();
        assert!(matches!(e, RecipeError::BadTake { .. }), "{e:?}");
    }
}
