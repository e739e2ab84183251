//! The batch manifest: parents named once, and the children to make from them, each with a
//! recipe (a file or a built-in preset), `--take`-style rules, an output and split options.
//! Parsed and checked here; nothing is opened but the manifest itself. Paths (parents,
//! outputs, recipe files) are relative to the manifest's directory; a parent may also be an
//! `http(s)://` URL or an `hf://` name, read in place for whole runs (shard jobs refuse it,
//! as `splice --shard` does).
//!
//! ```toml
//! [parents]                      # in this order: the first is the base unless a recipe says
//! v3 = "V3-0324-00001-of-00005.gguf"
//! r1 = "R1-00001-of-00005.gguf"
//!
//! [[children]]
//! output = "late/chimera-late.gguf"
//! recipe = "deepseek-r1t-chimera"       # a preset name or a recipe file
//! parents = ["v3", "r1"]                # optional: NAME or NAME=PARENT; default: all, in order
//! take = ['blk\.1\.ffn_(gate|up|down)_exps=v3']   # before the recipe's rules
//! split_max_tensors = 40                # and/or split_max_size = "48G"
//! allow_partial_experts = false
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::BatchError;
use crate::input;
use crate::plan::{self, PlanError, SplitOptions, parse_size};
use crate::presets::Preset;
pub use crate::presets::RecipeSource;
use crate::recipe;
use crate::source::url;

/// The largest manifest read: a ladder of a thousand children is a few hundred KB.
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// A parsed, checked manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The manifest file, as given.
    pub path: PathBuf,
    /// `[parents]`: (name, path resolved against the manifest's directory, or an
    /// `http(s)://` URL or `hf://` name as written), in file order.
    pub parents: Vec<(String, PathBuf)>,
    /// `[[children]]`, in file order.
    pub children: Vec<ChildSpec>,
}

/// One `[[children]]` entry.
#[derive(Clone, Debug)]
pub struct ChildSpec {
    /// How messages and reports name it: `#2 (late/chimera-late.gguf)`.
    pub label: String,
    /// `output` as written in the manifest.
    pub output_text: String,
    /// The output path (the prefix of the shard names when split), resolved.
    pub output: PathBuf,
    /// The recipe, if any (without one, only `take` rules and the base).
    pub recipe: Option<RecipeSource>,
    /// (name the child's rules use, manifest parent it binds), in order: the first is the
    /// base unless the recipe names one.
    pub parents: Vec<(String, String)>,
    /// `take` rules, as `--take` takes them; they come before the recipe's rules.
    pub takes: Vec<String>,
    /// `split_max_size` and `split_max_tensors`.
    pub split: SplitOptions,
    /// `allow_partial_experts`, as the command-line flag.
    pub allow_partial_experts: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ManifestFile {
    #[serde(default)]
    parents: toml::Table,
    #[serde(default)]
    children: Vec<ChildFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChildFile {
    output: String,
    recipe: Option<String>,
    parents: Option<Vec<String>>,
    #[serde(default)]
    take: Vec<String>,
    split_max_size: Option<SizeValue>,
    split_max_tensors: Option<i64>,
    #[serde(default)]
    allow_partial_experts: bool,
}

/// `split_max_size = "48G"` or a plain byte count.
#[derive(Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(i64),
    Text(String),
}

/// A TOML error of the manifest, on one line with its position, as a recipe's: an unknown
/// field names the closest valid one.
fn toml_error(path: &Path, text: &str, e: &toml::de::Error) -> BatchError {
    let (line, col) = recipe::toml_position(text, e);
    let message = recipe::toml_message(e);
    if let Some((field, valid, suggestion)) = recipe::unknown_field(&message) {
        return BatchError::UnknownField {
            path: path.to_path_buf(),
            line,
            col,
            table: if valid.iter().any(|v| v == "output") {
                "[[children]]"
            } else {
                "the manifest's top level"
            },
            field,
            valid,
            suggestion,
        };
    }
    let (message, hint) = recipe::explain(text, e, message);
    BatchError::Toml {
        path: path.to_path_buf(),
        line,
        col,
        message,
        hint,
    }
}

impl Manifest {
    /// Read and check a manifest file (a regular UTF-8 file of at most
    /// [`MAX_MANIFEST_BYTES`]).
    pub fn from_file(path: &Path) -> Result<Manifest, BatchError> {
        let text = input::read_text(path, "manifest", MAX_MANIFEST_BYTES)?;
        Manifest::from_toml(&text, path)
    }

    /// Parse and check manifest text; `path` is where it was read from (paths in it are
    /// relative to its directory).
    pub fn from_toml(text: &str, path: &Path) -> Result<Manifest, BatchError> {
        let file: ManifestFile = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        // Empty for a manifest in the current directory: its paths stay as written.
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let bad = |child: &str, field: &str, expected: &str, found: String| BatchError::BadField {
            manifest: path.to_path_buf(),
            child: child.to_string(),
            field: field.to_string(),
            expected: expected.to_string(),
            found,
        };
        let mut parents = Vec::with_capacity(file.parents.len());
        for (name, value) in &file.parents {
            let p = value.as_str().ok_or_else(|| {
                bad(
                    "[parents]",
                    name,
                    "a path to a GGUF file (any shard)",
                    value.to_string(),
                )
            })?;
            if name.is_empty() {
                return Err(bad("[parents]", "name", "a non-empty name", "\"\"".into()));
            }
            // A URL is a remote parent (read as `--parent` reads one), not a relative path.
            let path = if url::is_remote(p) {
                PathBuf::from(p)
            } else {
                dir.join(p)
            };
            parents.push((name.clone(), path));
        }
        if parents.is_empty() {
            return Err(BatchError::NoParents {
                manifest: path.to_path_buf(),
            });
        }
        if file.children.is_empty() {
            return Err(BatchError::NoChildren {
                manifest: path.to_path_buf(),
            });
        }
        let names: Vec<&str> = parents.iter().map(|(n, _)| n.as_str()).collect();
        let mut children = Vec::with_capacity(file.children.len());
        for (i, c) in file.children.into_iter().enumerate() {
            let label = format!("#{} ({})", i + 1, c.output);
            if c.output.is_empty() {
                return Err(bad(&label, "output", "a file name", "\"\"".into()));
            }
            let recipe = match &c.recipe {
                None => None,
                Some(r) => Some(find_recipe(path, &dir, &label, r)?),
            };
            let bindings = bindings(path, &label, &names, c.parents.as_deref(), &bad)?;
            if bindings.is_empty() {
                return Err(bad(&label, "parents", "at least one parent", "[]".into()));
            }
            let max_bytes =
                match c.split_max_size {
                    None => None,
                    Some(SizeValue::Bytes(n)) if n > 0 => Some(n as u64),
                    Some(SizeValue::Bytes(n)) => {
                        return Err(bad(
                            &label,
                            "split_max_size",
                            "a positive size",
                            n.to_string(),
                        ));
                    }
                    Some(SizeValue::Text(t)) => Some(parse_size(&t).map_err(|e| {
                        bad(&label, "split_max_size", "a size such as 48G or 500M", e)
                    })?),
                };
            let max_tensors = match c.split_max_tensors {
                None => None,
                Some(n) if n >= 1 => Some(n as usize),
                Some(n) => {
                    return Err(bad(
                        &label,
                        "split_max_tensors",
                        "a count of 1 or more",
                        n.to_string(),
                    ));
                }
            };
            children.push(ChildSpec {
                label,
                output: dir.join(&c.output),
                output_text: c.output,
                recipe,
                parents: bindings,
                takes: c.take,
                split: SplitOptions {
                    max_bytes,
                    max_tensors,
                },
                allow_partial_experts: c.allow_partial_experts,
            });
        }
        Ok(Manifest {
            path: path.to_path_buf(),
            parents,
            children,
        })
    }
}

/// The child's parents as (name its rules use, manifest parent it binds): `list` as written
/// (`NAME` or `NAME=PARENT`), each bound parent one of `names`; without a list, every
/// manifest parent under its own name.
fn bindings(
    manifest: &Path,
    child: &str,
    names: &[&str],
    list: Option<&[String]>,
    bad: &dyn Fn(&str, &str, &str, String) -> BatchError,
) -> Result<Vec<(String, String)>, BatchError> {
    let Some(list) = list else {
        return Ok(names
            .iter()
            .map(|n| (n.to_string(), n.to_string()))
            .collect());
    };
    let unknown = |e: PlanError| match e {
        PlanError::UnknownParent { name, known, .. } => BatchError::UnknownParent {
            manifest: manifest.to_path_buf(),
            child: child.to_string(),
            name,
            known,
        },
        source => BatchError::Plan {
            manifest: manifest.to_path_buf(),
            child: child.to_string(),
            source,
        },
    };
    list.iter()
        .map(|spec| {
            let (name, from) = spec.split_once('=').unwrap_or((spec, spec));
            if name.is_empty() || from.is_empty() {
                return Err(bad(child, "parents", "NAME or NAME=PARENT", spec.clone()));
            }
            plan::parents::index_of_name(names, from, child).map_err(unknown)?;
            Ok((name.to_string(), from.to_string()))
        })
        .collect()
}

/// A recipe file (relative to the manifest) unless nothing is there, else a preset by name,
/// as `--recipe` decides ([`RecipeSource::find`]).
fn find_recipe(
    manifest: &Path,
    dir: &Path,
    child: &str,
    text: &str,
) -> Result<RecipeSource, BatchError> {
    let file = dir.join(text);
    RecipeSource::find(&file, text).ok_or_else(|| BatchError::RecipeNotFound {
        manifest: manifest.to_path_buf(),
        child: child.to_string(),
        recipe: text.to_string(),
        tried: file,
        presets: Preset::names(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, BatchError> {
        Manifest::from_toml(text, Path::new("farm/m.toml"))
    }

    const PARENTS: &str = "[parents]\nr1 = 'R1.gguf'\nv3 = 'sub/V3.gguf'\n";

    #[test]
    fn parents_keep_file_order_and_paths_are_relative_to_the_manifest() {
        let m = parse(&format!(
            "{PARENTS}[[children]]\noutput = 'out/c.gguf'\nrecipe = 'deepseek-r1t-chimera'\n\
             take = ['x=v3']\nsplit_max_size = '48G'\nsplit_max_tensors = 40\n\
             [[children]]\noutput = 'd.gguf'\nparents = ['v3', 'r1=v3']\nsplit_max_size = 1000\n"
        ))
        .unwrap();
        assert_eq!(
            m.parents,
            vec![
                ("r1".to_string(), PathBuf::from("farm/R1.gguf")),
                ("v3".to_string(), PathBuf::from("farm/sub/V3.gguf"))
            ]
        );
        let c = &m.children[0];
        assert_eq!(c.label, "#1 (out/c.gguf)");
        assert_eq!(c.output, PathBuf::from("farm/out/c.gguf"));
        assert!(
            matches!(c.recipe, Some(RecipeSource::Preset(p)) if p.name == "deepseek-r1t-chimera")
        );
        assert_eq!(c.parents[0], ("r1".to_string(), "r1".to_string()));
        assert_eq!(c.takes, vec!["x=v3".to_string()]);
        assert_eq!(c.split.max_bytes, Some(48_000_000_000));
        assert_eq!(c.split.max_tensors, Some(40));
        let d = &m.children[1];
        assert!(d.recipe.is_none());
        assert_eq!(
            d.parents,
            vec![
                ("v3".to_string(), "v3".to_string()),
                ("r1".to_string(), "v3".to_string())
            ]
        );
        assert_eq!(d.split.max_bytes, Some(1000));
    }

    #[test]
    fn remote_parents_are_kept_as_written() {
        let m = parse(
            "[parents]\nv3 = 'hf://org/repo/V3.gguf@main'\nr1 = 'HTTPS://host/R1.gguf'\n\
             l = 'local.gguf'\n[[children]]\noutput = 'c.gguf'\n",
        )
        .unwrap();
        let paths: Vec<&str> = m.parents.iter().map(|(_, p)| p.to_str().unwrap()).collect();
        assert_eq!(
            paths,
            [
                "hf://org/repo/V3.gguf@main",
                "HTTPS://host/R1.gguf",
                "farm/local.gguf"
            ]
        );
    }

    #[test]
    fn recipe_files_are_found_beside_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("mine.toml"), "").unwrap();
        let m = Manifest::from_toml(
            &format!("{PARENTS}[[children]]\noutput = 'c.gguf'\nrecipe = 'mine.toml'\n"),
            &dir.path().join("m.toml"),
        )
        .unwrap();
        assert!(
            matches!(&m.children[0].recipe, Some(RecipeSource::File(f)) if *f == dir.path().join("mine.toml"))
        );
    }

    #[test]
    fn each_mistake_is_named() {
        let child = |extra: &str| format!("{PARENTS}[[children]]\noutput = 'c.gguf'\n{extra}\n");
        let field = |e: BatchError| match e {
            BatchError::BadField { child, field, .. } => format!("{child} {field}"),
            e => panic!("{e:?}"),
        };
        assert_eq!(
            field(parse(&child("split_max_size = '12T'")).unwrap_err()),
            "#1 (c.gguf) split_max_size"
        );
        assert_eq!(
            field(parse(&child("split_max_size = 0")).unwrap_err()),
            "#1 (c.gguf) split_max_size"
        );
        assert_eq!(
            field(parse(&child("split_max_tensors = 0")).unwrap_err()),
            "#1 (c.gguf) split_max_tensors"
        );
        assert_eq!(
            field(parse(&child("parents = ['=v3']")).unwrap_err()),
            "#1 (c.gguf) parents"
        );
        assert_eq!(
            field(parse(&child("parents = []")).unwrap_err()),
            "#1 (c.gguf) parents"
        );
        assert_eq!(
            field(parse("[parents]\nv3 = 3\n[[children]]\noutput = 'c'\n").unwrap_err()),
            "[parents] v3"
        );
        assert!(matches!(
            parse(&child("parents = ['v3', 'r9']")).unwrap_err(),
            BatchError::UnknownParent { name, known, .. } if name == "r9" && known == "r1, v3"
        ));
        assert!(matches!(
            parse(&child("recipe = 'no-such-recipe'")).unwrap_err(),
            BatchError::RecipeNotFound { recipe, presets, .. }
                if recipe == "no-such-recipe" && presets.contains("deepseek-r1t-chimera")
        ));
        // A typo reads as in a recipe: one line, its position, the closest field.
        let e = parse(&child("recipie = 'x'")).unwrap_err();
        assert!(
            matches!(&e, BatchError::UnknownField { field, suggestion: Some(s), table: "[[children]]", line: 6, col: 1, .. }
                if field == "recipie" && s == "recipe"),
            "{e:?}"
        );
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        let e = parse(&format!("parent = 1\n{PARENTS}")).unwrap_err();
        assert!(
            matches!(&e, BatchError::UnknownField { suggestion: Some(s), table: "the manifest's top level", .. } if s == "parents"),
            "{e:?}"
        );
        let e = parse(&child("take = [\"blk\\.1=r1\"]")).unwrap_err();
        assert!(
            matches!(&e, BatchError::Toml { hint, .. } if hint.contains("single quotes")),
            "{e:?}"
        );
        assert_eq!(e.to_string().lines().count(), 1, "{e}");
        assert!(matches!(
            parse(PARENTS).unwrap_err(),
            BatchError::NoChildren { .. }
        ));
        assert!(matches!(
            parse("[[children]]\noutput = 'c'\n").unwrap_err(),
            BatchError::NoParents { .. }
        ));
    }
}
