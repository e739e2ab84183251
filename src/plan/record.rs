//! The child's record of how it was made, in `splice.*` keys, so that whoever holds the child
//! can check it against its parents (`verify CHILD`) or make it again (`splice --like`)
//! without being told how it was made:
//!
//! - `splice.version`: the gguf-splice that made it;
//! - `splice.options` (JSON): the recipe text and `--take` rules, or the assemble options,
//!   and the split options;
//! - `splice.parents` (JSON): each parent's name and, per shard, its file name, size and a
//!   SHA-256 of its header and tensor infos; for a remote shard its URL (without query, user
//!   information or fragment) and the commit the Hub resolved it to.
//!
//! No absolute local path is recorded: shared files must not carry user or directory names.

use serde::{Deserialize, Serialize};

use super::{Parent, PlanValue, SplitOptions, metadata::set_kv};
use crate::gguf::{Model, OwnedValue};
use crate::recipe::{Recipe, RecipeError};
use crate::source::url;

/// `splice.version`: the gguf-splice version that made the child.
pub const KEY_VERSION: &str = "splice.version";
/// `splice.options`: how the child was made (JSON, see [`Options`]).
pub const KEY_OPTIONS: &str = "splice.options";
/// `splice.parents`: who the parents were (JSON, an array of [`ParentRecord`]).
pub const KEY_PARENTS: &str = "splice.parents";

/// Whether `key` is part of the record (compared by identity, not as metadata).
pub fn is_record_key(key: &str) -> bool {
    [
        KEY_VERSION,
        KEY_OPTIONS,
        KEY_PARENTS,
        super::KEY_SPLICE_RECIPE,
        crate::ggml_lib::RECORD_KEY,
    ]
    .contains(&key)
}

/// One shard of a parent, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardRecord {
    /// The file's name (no directory; for a URL, its last path segment).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// SHA-256 of its header and tensor infos ([`GgufFile::header_sha256`](crate::gguf::GgufFile::header_sha256)).
    pub header_sha256: String,
    /// For a remote shard: its URL, without query, user information or fragment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// For a Hub file: the commit its revision resolved to (`X-Repo-Commit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// A parent, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentRecord {
    /// The name the recipe or options call it by.
    pub name: String,
    /// Its shards, in order.
    pub shards: Vec<ShardRecord>,
}

impl ParentRecord {
    /// The record of `parent` as it is now.
    pub fn of(parent: &Parent) -> ParentRecord {
        ParentRecord {
            name: parent.name.clone(),
            shards: parent
                .model
                .shards()
                .iter()
                .map(|s| {
                    let remote = s.remote.as_ref();
                    ShardRecord {
                        file: file_name(&s.path.to_string_lossy()),
                        size: s.file_len,
                        header_sha256: s.header_sha256(),
                        url: remote.map(|r| public_url(r.url())),
                        commit: remote.and_then(|r| r.identity().commit.clone()),
                    }
                })
                .collect(),
        }
    }

    /// Whether every shard was read from a server (then `verify` can fetch it again).
    pub fn is_remote(&self) -> bool {
        !self.shards.is_empty() && self.shards.iter().all(|s| s.url.is_some())
    }

    /// The first shard's file name, which `--parent` and `--parents-dir` look for.
    pub fn first_file(&self) -> &str {
        self.shards.first().map_or("", |s| s.file.as_str())
    }

    /// Where to fetch the first shard: its URL at the recorded commit when the Hub gave
    /// one (`/resolve/main/` becomes `/resolve/COMMIT/`: the bytes the child was made from).
    pub fn fetch_url(&self) -> Option<String> {
        let s = self.shards.first()?;
        let url = s.url.clone()?;
        Some(match &s.commit {
            Some(c) => at_commit(&url, c),
            None => url,
        })
    }

    /// How `given` differs from this record (shard count, then each shard's size and
    /// header digest): `None` if it is the same file, whatever its name.
    pub fn difference(&self, given: &Parent) -> Option<IdentityDifference> {
        let now = ParentRecord::of(given);
        let same = now.shards.len() == self.shards.len()
            && now
                .shards
                .iter()
                .zip(&self.shards)
                .all(|(a, b)| a.size == b.size && a.header_sha256 == b.header_sha256);
        (!same).then(|| IdentityDifference {
            parent: self.name.clone(),
            recorded: self.clone(),
            given: now,
        })
    }
}

/// A given parent that is not the file the child was made from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityDifference {
    /// The parent's name.
    pub parent: String,
    /// What the child records.
    pub recorded: ParentRecord,
    /// What was given.
    pub given: ParentRecord,
}

impl std::fmt::Display for IdentityDifference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |r: &ParentRecord| match r.shards.as_slice() {
            [one] => format!(
                "{}, {} bytes, header sha256 {}",
                one.file, one.size, one.header_sha256
            ),
            many => format!(
                "{} ({} shards), header sha256 {}",
                r.first_file(),
                many.len(),
                many.first().map_or("", |s| s.header_sha256.as_str())
            ),
        };
        write!(
            f,
            "{} is not the file the child was made from (recorded {}; given {})",
            self.parent,
            show(&self.recorded),
            show(&self.given)
        )
    }
}

/// How the child was made: a splice's recipe, or an assembly's options.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Made {
    /// `splice` (and `batch`): the recipe as written (a preset's full text) and the
    /// `--take` rules put in front of it.
    Splice {
        /// The recipe's text, without the `--take` lines.
        recipe: String,
        /// The `--take` rules, in order.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        takes: Vec<String>,
        /// `--allow-partial-experts` (or the recipe's own).
        #[serde(default)]
        allow_partial_experts: bool,
    },
    /// `assemble`: its options as given on the command line.
    Assemble(AssembleRecord),
}

/// An assembly's options, as their command-line text.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssembleRecord {
    /// `--base`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `--experts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts: Option<String>,
    /// `--keep`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep: Option<String>,
    /// `--keep-top`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_top: Option<u64>,
    /// `--imatrix`'s file name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imatrix: Option<String>,
    /// `--router` (`random:SEED`, `uniform`, or `file NAME`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub router: Option<String>,
    /// `--experts-used`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub experts_used: Option<u64>,
    /// `--force-expert-count`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force_expert_count: bool,
}

/// `splice.options`: how the child was made and how it was cut into shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// The recipe or the assembly.
    #[serde(flatten)]
    pub made: Made,
    /// `--split-max-size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_max_size: Option<u64>,
    /// `--split-max-tensors`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split_max_tensors: Option<usize>,
}

impl Options {
    /// The split options recorded.
    pub fn split(&self) -> SplitOptions {
        SplitOptions {
            max_bytes: self.split_max_size,
            max_tensors: self.split_max_tensors,
        }
    }

    /// The recipe recorded, as it was when the child was made (`None` for an assembly).
    pub fn recipe(&self) -> Option<Result<Recipe, RecipeError>> {
        let Made::Splice {
            recipe,
            takes,
            allow_partial_experts,
        } = &self.made
        else {
            return None;
        };
        Some(
            Recipe::from_toml(recipe, std::path::Path::new(KEY_OPTIONS)).and_then(|mut r| {
                r.prepend_takes(takes)?;
                r.allow_partial_experts |= allow_partial_experts;
                Ok(r)
            }),
        )
    }
}

impl Made {
    /// What a splice by `recipe` records.
    pub fn splice(recipe: &Recipe) -> Made {
        Made::Splice {
            recipe: recipe.file_text().to_string(),
            takes: recipe.takes.clone(),
            allow_partial_experts: recipe.allow_partial_experts,
        }
    }
}

/// The record a child carries, read back from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChildRecord {
    /// `splice.version`, if recorded.
    pub version: Option<String>,
    /// `splice.options`, if recorded (older children have only `splice.recipe`).
    pub options: Option<Options>,
    /// `splice.parents` (empty if not recorded).
    pub parents: Vec<ParentRecord>,
}

/// A record that cannot be read: the key and why.
#[derive(Debug, thiserror::Error)]
#[error(
    "{key} in the child is not a record gguf-splice can read ({reason}); pass the parents, recipe or options on the command line"
)]
pub struct RecordError {
    /// The key.
    pub key: &'static str,
    /// What is wrong with it.
    pub reason: String,
}

impl ChildRecord {
    /// The record in `child`'s metadata; keys it lacks are left empty.
    pub fn read(child: &Model) -> Result<ChildRecord, RecordError> {
        fn json<T: serde::de::DeserializeOwned>(
            child: &Model,
            key: &'static str,
        ) -> Result<Option<T>, RecordError> {
            let Some(v) = child.get(key) else {
                return Ok(None);
            };
            let text = v.as_str().ok_or_else(|| RecordError {
                key,
                reason: format!("a {:?}, not a string", v.ty()),
            })?;
            serde_json::from_str(text)
                .map(Some)
                .map_err(|e| RecordError {
                    key,
                    reason: e.to_string(),
                })
        }
        Ok(ChildRecord {
            version: child
                .get(KEY_VERSION)
                .and_then(|v| v.as_str())
                .map(str::to_string),
            options: json(child, KEY_OPTIONS)?,
            parents: json(child, KEY_PARENTS)?.unwrap_or_default(),
        })
    }
}

/// Set the record keys: version, options (with `split`) and parents.
pub(crate) fn set(
    kvs: &mut Vec<(String, PlanValue<'_>)>,
    parents: &[Parent],
    made: &Made,
    split: SplitOptions,
) {
    let options = Options {
        made: made.clone(),
        split_max_size: split.max_bytes,
        split_max_tensors: split.max_tensors,
    };
    let records: Vec<ParentRecord> = parents.iter().map(ParentRecord::of).collect();
    let string = |s: &str| PlanValue::Owned(OwnedValue::string(s));
    set_kv(kvs, KEY_VERSION, string(env!("CARGO_PKG_VERSION")));
    set_kv(
        kvs,
        KEY_OPTIONS,
        string(&serde_json::to_string(&options).expect("serialises")),
    );
    set_kv(
        kvs,
        KEY_PARENTS,
        string(&serde_json::to_string(&records).expect("serialises")),
    );
}

/// `url` without user information, query or fragment: what may be written into a file
/// that is shared (a signed CDN URL's query is a credential). See [`url::public`].
pub fn public_url(url: &str) -> String {
    url::public(url)
}

/// The file name of a local path or a URL (a URL's last path segment, without query or
/// fragment: [`url::file_name`]).
pub fn file_name(path_or_url: &str) -> String {
    if url::is_remote(path_or_url) {
        return url::file_name(path_or_url);
    }
    std::path::Path::new(path_or_url)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A Hub `/resolve/REVISION/` URL at `commit` instead; other URLs unchanged.
fn at_commit(url: &str, commit: &str) -> String {
    let hex = !commit.is_empty() && commit.bytes().all(|b| b.is_ascii_alphanumeric());
    let Some(i) = url.find("/resolve/").filter(|_| hex) else {
        return url.to_string();
    };
    let start = i + "/resolve/".len();
    match url[start..].find('/') {
        Some(j) => format!("{}{commit}{}", &url[..start], &url[start + j..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_query_user_and_fragment() {
        assert_eq!(
            public_url("https://u:p@cdn.example/a/b.gguf?sig=1&x=2#f"),
            "https://cdn.example/a/b.gguf"
        );
        assert_eq!(public_url("http://h:80/x"), "http://h:80/x");
        assert_eq!(
            file_name("https://h/a/m-00001-of-00002.gguf?t=1"),
            "m-00001-of-00002.gguf"
        );
        assert_eq!(file_name("/home/someone/models/m.gguf"), "m.gguf");
    }

    #[test]
    fn a_recorded_commit_pins_the_revision() {
        assert_eq!(
            at_commit("http://h/o/r/resolve/main/d/f.gguf", "abc"),
            "http://h/o/r/resolve/abc/d/f.gguf"
        );
        assert_eq!(at_commit("http://h/f.gguf", "abc"), "http://h/f.gguf");
    }

    #[test]
    fn options_round_trip_through_json() {
        let o = Options {
            made: Made::Assemble(AssembleRecord {
                base: Some("a".into()),
                router: Some("random:7".into()),
                experts_used: Some(2),
                ..AssembleRecord::default()
            }),
            split_max_size: None,
            split_max_tensors: Some(3),
        };
        let text = serde_json::to_string(&o).unwrap();
        assert!(text.contains("\"kind\":\"assemble\""), "{text}");
        assert_eq!(serde_json::from_str::<Options>(&text).unwrap(), o);
        let s = Options {
            made: Made::Splice {
                recipe: "[[rules]]\nmatch = 'x'\nfrom = 'a'\n".into(),
                takes: vec!["exps=b".into()],
                allow_partial_experts: false,
            },
            split_max_size: None,
            split_max_tensors: None,
        };
        let back: Options = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        let r = back.recipe().unwrap().unwrap();
        assert_eq!(r.rules.len(), 2);
        assert_eq!(r.takes, vec!["exps=b".to_string()]);
    }
}
