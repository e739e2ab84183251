//! Batches: many children from one manifest, for quant farms that make ladders of chimeras.
//! Each parent's header is read once and shared by the plans of every child; every plan is
//! built and checked before anything is written, so one bad child stops the batch before
//! any output.
//!
//! The work is cut into independent jobs, one per output shard of every child, numbered
//! 0..N-1 in manifest order, so that a scheduler (a Slurm job array, a Kubernetes Indexed
//! Job) can run them anywhere, in any order, in parallel or twice: a shard's bytes are fully
//! determined by the plan, and a job whose shard is already complete does nothing. How one
//! shard is written, and what a set of independently written shards guarantees, is the
//! writer's: see [`execute_shard`](crate::execute::execute_shard). A child with a remote
//! parent is written by a whole run only, as `splice` writes one (its shard jobs are refused).
//!
//! - [`manifest`]: the manifest file;
//! - [`jobs`](mod@jobs): the job list, checks before writing, running jobs, status and summaries.

pub mod jobs;
pub mod manifest;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use crate::compare::{self, CompareError, CompareOptions, VerifyReport};
use crate::execute::ExecError;
use crate::gguf::{GgufError, Model};
use crate::input::InputError;
use crate::plan::{self, Parent, Plan, PlanError};
use crate::presets;
use crate::recipe::{self, Recipe, RecipeError};
use crate::source::Http;

pub use jobs::{
    ChildSummary, Job, JobEvent, JobReport, RunOptions, ShardStatus, check_all, check_paths, jobs,
    run_all, run_job, status, summarize,
};
pub use manifest::{ChildSpec, Manifest, RecipeSource};

/// Why a batch cannot be run. Messages name the manifest and the child (`#2 (OUT)`).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The manifest could not be read, or is too large or not UTF-8.
    #[error(transparent)]
    Input(#[from] InputError),
    /// The free space of an output directory could not be had.
    #[error("{path}: {source}")]
    Io {
        /// The output directory.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The manifest is not valid TOML, or has a field of the wrong type; one line, as for a
    /// recipe.
    #[error("{}: {message}{hint}", recipe::at(.path, *.line, *.col))]
    Toml {
        /// The manifest file.
        path: PathBuf,
        /// Line of the error (1-based; 0 when the parser gave no position).
        line: usize,
        /// Column of the error, in characters (1-based; 0 without a position).
        col: usize,
        /// The parser's message, on one line.
        message: String,
        /// How to fix a common cause, or empty.
        hint: &'static str,
    },
    /// A key the manifest format does not have (a typo, most often), said as for a recipe.
    #[error(
        "{}: unknown field '{}' in {table} ({})",
        recipe::at(.path, *.line, *.col),
        recipe::short_pattern(.field),
        recipe::did_you_mean(.suggestion.as_deref(), .valid)
    )]
    UnknownField {
        /// The manifest file.
        path: PathBuf,
        /// Line of the field (1-based; 0 when the parser gave no position).
        line: usize,
        /// Column of the field, in characters (1-based; 0 without a position).
        col: usize,
        /// The field as written.
        field: String,
        /// The table it is in: `[[children]]` or the manifest's top level.
        table: &'static str,
        /// The fields that table has.
        valid: Vec<String>,
        /// The valid field closest to the one written, if one is close enough.
        suggestion: Option<String>,
    },
    /// The manifest's `[parents]` table is missing or empty.
    #[error("{manifest}: no parents; add a [parents] table (NAME = \"PATH\")")]
    NoParents {
        /// The manifest file.
        manifest: PathBuf,
    },
    /// The manifest has no `[[children]]`.
    #[error("{manifest}: no children; add [[children]] entries")]
    NoChildren {
        /// The manifest file.
        manifest: PathBuf,
    },
    /// A field of a child (or a parent's name) has a value the manifest format does not allow.
    #[error("{manifest}: child {child}: {field}: expected {expected}, found {found}")]
    BadField {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`), or `[parents]`.
        child: String,
        /// The field.
        field: String,
        /// What the field must hold.
        expected: String,
        /// What it holds.
        found: String,
    },
    /// A child names a parent that `[parents]` does not have.
    #[error("{manifest}: child {child}: no parent '{name}' in [parents] (there: {known})")]
    UnknownParent {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// The name it used.
        name: String,
        /// The names in `[parents]`, comma-separated.
        known: String,
    },
    /// A child's `recipe` is neither an existing file nor a preset's name.
    #[error(
        "{manifest}: child {child}: recipe '{recipe}' is neither a file ({tried} does not exist) nor a preset ({presets})"
    )]
    RecipeNotFound {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// The `recipe` value as written.
        recipe: String,
        /// The path it was looked for at (relative to the manifest's directory).
        tried: PathBuf,
        /// The presets' names.
        presets: String,
    },
    /// A parent could not be opened or is not a valid GGUF model.
    #[error("{manifest}: parent '{name}': {source}")]
    Parent {
        /// The manifest file.
        manifest: PathBuf,
        /// The parent's name in `[parents]`.
        name: String,
        /// Why it could not be opened.
        #[source]
        source: GgufError,
    },
    /// A child's recipe could not be read or parsed.
    #[error("{manifest}: child {child}: {source}")]
    Recipe {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// What is wrong with the recipe.
        #[source]
        source: RecipeError,
    },
    /// A child's plan could not be made.
    #[error("{manifest}: child {child}: {source}")]
    Plan {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// Why the plan cannot be made.
        #[source]
        source: PlanError,
    },
    /// Two children would write the same output file (as the filesystem resolves their
    /// directories, so `sub/x.gguf` and `lnk/x.gguf` with `lnk -> sub` are one file).
    #[error(
        "{manifest}: children {first} and {second} both write {path} (the file {real}); give them different outputs"
    )]
    SameOutput {
        /// The manifest file.
        manifest: PathBuf,
        /// The earlier child (`#2 (OUT)`).
        first: String,
        /// The later child.
        second: String,
        /// The output file both would write, as the later child names it.
        path: PathBuf,
        /// That file with its directory resolved ([`real_output`]).
        real: PathBuf,
    },
    /// Checking or writing a child's output failed.
    #[error("{manifest}: child {child}: {source}")]
    Exec {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// Why it failed.
        #[source]
        source: ExecError,
    },
    /// A filesystem has less free space than the children's outputs on it need together.
    #[error(
        "{manifest}: not enough free space for the children's outputs on the filesystem of {dir}: {needed} bytes needed, {available} available"
    )]
    NotEnoughSpace {
        /// The manifest file.
        manifest: PathBuf,
        /// An output directory on that filesystem.
        dir: PathBuf,
        /// Bytes the outputs on it need.
        needed: u64,
        /// Bytes free to an unprivileged writer.
        available: u64,
    },
    /// A job number past the manifest's jobs.
    #[error("{manifest}: there is no job {job}: the manifest makes {count} jobs (0 to {last})", last = .count.saturating_sub(1))]
    NoSuchJob {
        /// The manifest file.
        manifest: PathBuf,
        /// The job asked for (0-based).
        job: usize,
        /// Jobs the manifest makes.
        count: usize,
    },
    /// Verifying a finished child against its parents and recipe could not run (a model
    /// could not be read, or the plan to check against could not be made).
    #[error("{manifest}: child {child}: {source}")]
    Compare {
        /// The manifest file.
        manifest: PathBuf,
        /// The child (`#2 (OUT)`).
        child: String,
        /// Why verification could not run.
        #[source]
        source: CompareError,
    },
}

/// One child, ready to plan: its parents (sharing the manifest parents' headers) and recipe.
pub struct Child {
    /// The manifest entry.
    pub spec: ChildSpec,
    /// Its parents, under the names its rules use, in order.
    pub parents: Vec<Parent>,
    /// The recipe with the `take` rules in front.
    pub recipe: Recipe,
}

/// A manifest with every parent opened (each header read once) and every recipe parsed.
pub struct Batch {
    /// The manifest.
    pub manifest: Manifest,
    /// The children, in manifest order.
    pub children: Vec<Child>,
}

impl Batch {
    /// Open every parent the manifest names (each once, as `--parent` opens one: remote
    /// ones through `http`) and parse every child's recipe.
    pub fn open(manifest: Manifest, http: &Arc<Http>) -> Result<Batch, BatchError> {
        let mut models: HashMap<&str, Model> = HashMap::new();
        for (name, path) in &manifest.parents {
            let model = Model::open_arg(path, http, None).map_err(|source| BatchError::Parent {
                manifest: manifest.path.clone(),
                name: name.clone(),
                source,
            })?;
            models.insert(name, model);
        }
        let mut children = Vec::with_capacity(manifest.children.len());
        for spec in &manifest.children {
            let recipe_err = |source| BatchError::Recipe {
                manifest: manifest.path.clone(),
                child: spec.label.clone(),
                source,
            };
            let recipe = presets::load(
                spec.recipe.as_ref(),
                &spec.takes,
                spec.allow_partial_experts,
            )
            .map_err(recipe_err)?;
            let parents = spec
                .parents
                .iter()
                .map(|(name, from)| Parent {
                    name: name.clone(),
                    // Checked when the manifest was read: every binding names a parent.
                    model: models[from.as_str()].clone(),
                })
                .collect();
            children.push(Child {
                spec: spec.clone(),
                parents,
                recipe,
            });
        }
        Ok(Batch { manifest, children })
    }

    /// Read a manifest file and [`open`](Batch::open) it.
    pub fn from_file(path: &std::path::Path, http: &Arc<Http>) -> Result<Batch, BatchError> {
        Batch::open(Manifest::from_file(path)?, http)
    }

    /// Plan every child. Any plan error stops here, naming the child; so do two children
    /// (or shards of them) that would write the same file, told by [`real_output`].
    pub fn plan(&self) -> Result<Vec<Plan<'_>>, BatchError> {
        let mut plans = Vec::with_capacity(self.children.len());
        for c in &self.children {
            let p = plan::build(&c.parents, &c.recipe, &c.spec.output, c.spec.split).map_err(
                |source| BatchError::Plan {
                    manifest: self.manifest.path.clone(),
                    child: c.spec.label.clone(),
                    source,
                },
            )?;
            plans.push(p);
        }
        let mut seen: HashMap<PathBuf, usize> = HashMap::new();
        for (i, p) in plans.iter().enumerate() {
            for s in &p.shards {
                let key = real_output(&s.path);
                if let Some(&first) = seen.get(&key) {
                    return Err(BatchError::SameOutput {
                        manifest: self.manifest.path.clone(),
                        first: self.children[first].spec.label.clone(),
                        second: self.children[i].spec.label.clone(),
                        path: s.path.clone(),
                        real: key,
                    });
                }
                seen.insert(key, i);
            }
        }
        Ok(plans)
    }

    /// Check every finished child against its parents and recipe, byte for byte
    /// ([`compare::verify`]): one verdict per child, in order, whatever the others'. A
    /// child's model is opened from its first shard, so a missing child, a set with a
    /// missing shard or shards of different plans is that child's error.
    pub fn verify(&self, plans: &[Plan]) -> Vec<Result<VerifyReport, BatchError>> {
        self.children
            .iter()
            .zip(plans)
            .map(|(c, p)| {
                let err = |source| BatchError::Compare {
                    manifest: self.manifest.path.clone(),
                    child: c.spec.label.clone(),
                    source,
                };
                let model = Model::open(&p.shards[0].path).map_err(|e| err(e.into()))?;
                compare::verify(
                    &model,
                    &c.parents,
                    Some(&c.recipe),
                    &CompareOptions::default(),
                )
                .map_err(err)
            })
            .collect()
    }
}

/// The file an output path names, for telling equal outputs apart: its directory as the
/// filesystem resolves it (symbolic links followed, `..` applied) joined with its file name.
/// Directories need not exist yet: the longest existing ancestor is resolved and the rest
/// appended as written (`..` applied to the text). The output itself is not followed: a link
/// at an output path is refused when writing.
pub fn real_output(path: &std::path::Path) -> PathBuf {
    let Some(name) = path.file_name() else {
        return normalize(path);
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    };
    for existing in dir.ancestors().filter(|a| !a.as_os_str().is_empty()) {
        if let Ok(real) = existing.canonicalize() {
            let rest = dir.strip_prefix(existing).expect("an ancestor is a prefix");
            return normalize(&real.join(rest).join(name));
        }
    }
    // A relative path whose current directory is gone: the text is all there is.
    normalize(path)
}

/// A path with `.` components dropped and `..` applied, without touching the filesystem.
fn normalize(path: &std::path::Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use crate::source::HttpOptions;
    use crate::testkit::GgufBuilder;

    #[test]
    fn a_recipe_file_that_is_there_but_unreadable_is_an_error_not_a_preset() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let parent = GgufBuilder::new()
            .kv_str("general.architecture", "llama")
            .tensor("token_embd.weight", &[32, 2], GgmlType::F32, 1)
            .build();
        std::fs::write(d.join("p.gguf"), parent).unwrap();
        // Each named like a preset: a directory, and a link to itself (ELOOP, not NotFound).
        std::fs::create_dir(d.join("deepseek-r1t-chimera")).unwrap();
        std::os::unix::fs::symlink("r1t-mix-75.toml", d.join("r1t-mix-75.toml")).unwrap();
        let http = Arc::new(Http::new(HttpOptions::default()));
        for name in ["deepseek-r1t-chimera", "r1t-mix-75.toml"] {
            let text = format!(
                "[parents]\nv3 = 'p.gguf'\n[[children]]\noutput = 'c.gguf'\nrecipe = '{name}'\n"
            );
            let manifest = Manifest::from_toml(&text, &d.join("m.toml")).unwrap();
            let e = Batch::open(manifest, &http).err().unwrap();
            assert!(
                matches!(
                    &e,
                    BatchError::Recipe {
                        source: RecipeError::Input(_),
                        ..
                    }
                ),
                "{name}: {e:?}"
            );
            assert!(e.to_string().contains(name), "{e}");
        }
    }

    #[test]
    fn equal_paths_are_told_apart_without_the_filesystem() {
        assert_eq!(
            normalize("./a/../b/c.gguf".as_ref()),
            normalize("b/c.gguf".as_ref())
        );
        assert_ne!(
            normalize("a/c.gguf".as_ref()),
            normalize("b/c.gguf".as_ref())
        );
    }

    #[test]
    fn outputs_through_a_linked_directory_are_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).unwrap();
        std::os::unix::fs::symlink("sub", d.join("lnk")).unwrap();
        let real = real_output(&d.join("sub/x.gguf"));
        assert_eq!(real_output(&d.join("lnk/x.gguf")), real);
        assert_eq!(real_output(&d.join("lnk/../sub/./x.gguf")), real);
        // Directories that do not exist yet: resolved as far as they exist.
        assert_eq!(
            real_output(&d.join("lnk/new/deeper/x.gguf")),
            real_output(&d.join("sub/new/deeper/x.gguf"))
        );
        assert_eq!(
            real_output(&d.join("lnk/new/../x.gguf")),
            real,
            "`..` inside a missing directory is applied to the text"
        );
        assert_ne!(real_output(&d.join("sub/y.gguf")), real);
        // A link at the file name itself is not followed: it is refused when writing.
        std::os::unix::fs::symlink("x.gguf", d.join("sub/z.gguf")).unwrap();
        assert_ne!(real_output(&d.join("sub/z.gguf")), real);
    }
}
