//! A model: one GGUF file or a complete set of split shards, presented as one list of tensors
//! in which each tensor knows its file and byte range.
//!
//! Shard sets follow llama.cpp's rules: names `PREFIX-%05d-of-%05d.gguf`, metadata read from
//! the first shard, `split.no` checked in each, names unique across shards, and the total
//! checked against `split.tensors.count`. Shards that carry gguf-splice's set identity
//! (`splice.set_id`) must all carry the same one. (A shard without it is not refused: a child
//! merged and split again by llama-gguf-split keeps the key only in its first shard.)

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::FlavourBasis;
use super::GgufError;
use super::read::{GgufFile, TensorInfo};
use super::value::ValueRef;
use crate::ggml_type::Flavour;
use crate::source::{Http, Location};

/// Opens one shard (local or remote) with a flavour, or the detected one.
type OpenShard<'a> = dyn Fn(&Path, Option<Flavour>) -> Result<GgufFile, GgufError> + 'a;

/// The key that holds a shard's number in its set, counted from 0 (the file name counts
/// from 1).
pub const KEY_SPLIT_NO: &str = "split.no";
/// The key that holds the number of shards in the set.
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// The key, in the first shard, that holds the number of tensors in the whole set.
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";
/// Written by gguf-splice into every shard of a sharded output: shards of one run carry the
/// same value, so a set mixed from two runs is refused instead of read as one model.
pub const KEY_SET_ID: &str = "splice.set_id";

/// `PREFIX-00003-of-00005.gguf` -> (`PREFIX`, 3, 5).
pub fn parse_shard_name(path: &Path) -> Option<(String, u64, u64)> {
    let s = path.to_str()?;
    let stem = s.strip_suffix(".gguf")?;
    let (rest, count) = stem.rsplit_once("-of-")?;
    let (prefix, no) = rest.rsplit_once('-')?;
    let digits = |d: &str| d.len() == 5 && d.bytes().all(|b| b.is_ascii_digit());
    if !digits(no) || !digits(count) {
        return None;
    }
    Some((prefix.to_string(), no.parse().ok()?, count.parse().ok()?))
}

/// The file name of shard `no` (1-based) of `count`, as llama.cpp's `llama_split_path`.
pub fn shard_path(prefix: &str, no: u64, count: u64) -> PathBuf {
    PathBuf::from(format!("{prefix}-{no:05}-of-{count:05}.gguf"))
}

/// The errors [`Model::open_with`] makes itself name the URL it was given: shown without
/// user info or query (the errors of each shard's file already are).
fn redact_urls(e: GgufError) -> GgufError {
    let r = |p: PathBuf| PathBuf::from(crate::source::url::redact(&p.to_string_lossy()));
    match e {
        GgufError::ShardMissing {
            path,
            missing,
            expected,
            count,
        } => GgufError::ShardMissing {
            path: r(path),
            missing: r(missing),
            expected,
            count,
        },
        GgufError::ShardMismatch {
            path,
            what,
            expected,
            found,
        } => GgufError::ShardMismatch {
            path: r(path),
            what,
            expected,
            found: crate::source::url::redact(&found),
        },
        e => e,
    }
}

/// Give every shard of a set the flavour one shard's ids show (an id only one program
/// defines): re-read with that table the shards read otherwise and those whose ids could not
/// tell (an id both programs define differently).
fn one_flavour(
    paths: &[PathBuf],
    shards: &mut [Result<GgufFile, GgufError>],
    open: &OpenShard<'_>,
) {
    let Some((flavour, basis)) = shards.iter().find_map(|s| match s {
        Ok(f) if matches!(f.flavour_basis, FlavourBasis::Tensor { .. }) => {
            Some((f.flavour, f.flavour_basis.clone()))
        }
        _ => None,
    }) else {
        return;
    };
    for (path, shard) in paths.iter().zip(shards.iter_mut()) {
        let reread = match shard {
            Ok(f) => f.flavour != flavour,
            Err(e) => matches!(e, GgufError::AmbiguousType { .. }),
        };
        if reread {
            *shard = open(path, Some(flavour)).map(|mut f| {
                f.flavour_basis = basis.clone();
                f
            });
        }
    }
}

/// Where one tensor of a model lives.
#[derive(Clone, Copy, Debug)]
pub struct TensorLoc<'m> {
    /// Index of the shard that holds it in [`Model::shards`] (0 for the first).
    pub shard: usize,
    /// Its tensor info in that shard.
    pub info: &'m TensorInfo,
    /// Absolute offset of the first data byte in the shard file.
    pub file_offset: u64,
}

/// Cloning is cheap: shards share their header bytes.
#[derive(Clone, Debug)]
pub struct Model {
    shards: Vec<GgufFile>,
    /// (shard, index within the shard) in model order: shard by shard, each in file order.
    order: Vec<(usize, usize)>,
    index: HashMap<String, usize>,
}

impl Model {
    /// Open a model given any one of its files, detecting its flavour. A file whose
    /// `split.count` is above 1 pulls in its sibling shards by name.
    pub fn open(path: &Path) -> Result<Model, GgufError> {
        Model::open_as(path, None)
    }

    /// [`Model::open`], reading type ids with `flavour`'s table (`None`: detected). A shard set
    /// has one flavour: a shard whose ids cannot tell takes the one another shard's ids show.
    pub fn open_as(path: &Path, flavour: Option<Flavour>) -> Result<Model, GgufError> {
        Model::open_with(path, flavour, &GgufFile::open_as)
    }

    /// Open a model at a local path or a URL (see [`Location`]); remote shards are read
    /// with `http`, and their siblings found by name as local ones are.
    pub fn open_at(location: &Location, http: &Arc<Http>) -> Result<Model, GgufError> {
        Model::open_at_as(location, http, None)
    }

    /// Open the model a command-line or manifest argument names: a local path, an
    /// `http(s)://` URL or an `hf://` name (see [`Location::parse`]), with `flavour`'s type
    /// table (`None`: detected). The one way a named parent is opened, by `splice`,
    /// `assemble`, `inspect`, `diff`, `verify` and batch manifests alike.
    pub fn open_arg(
        arg: &Path,
        http: &Arc<Http>,
        flavour: Option<Flavour>,
    ) -> Result<Model, GgufError> {
        let location = Location::parse(arg, http.endpoint())?;
        Model::open_at_as(&location, http, flavour)
    }

    /// [`Model::open_at`] with `flavour`'s type table (`None`: detected).
    pub fn open_at_as(
        location: &Location,
        http: &Arc<Http>,
        flavour: Option<Flavour>,
    ) -> Result<Model, GgufError> {
        match location {
            Location::Local(path) => Model::open_as(path, flavour),
            Location::Remote(url) => {
                Model::open_with(Path::new(url), flavour, &|p: &Path, f: Option<Flavour>| {
                    GgufFile::open_url_as(http, &p.to_string_lossy(), f)
                })
                .map_err(redact_urls)
            }
        }
    }

    fn open_with(
        path: &Path,
        flavour: Option<Flavour>,
        open: &OpenShard<'_>,
    ) -> Result<Model, GgufError> {
        let given = open(path, flavour);
        let count = match &given {
            Ok(f) => split_u64(f, KEY_SPLIT_COUNT)?.unwrap_or(1),
            // Another shard may tell the flavour; its name says whether there are others.
            Err(GgufError::AmbiguousType { .. }) if flavour.is_none() => {
                parse_shard_name(path).map_or(1, |(_, _, count)| count)
            }
            // Any other error is returned by `given?` below.
            Err(_) => 1,
        };
        if count <= 1 {
            return Model::from_shards(vec![given?]);
        }
        let (prefix, no, name_count) =
            parse_shard_name(path).ok_or_else(|| GgufError::ShardMismatch {
                path: path.to_path_buf(),
                what: "file name of a split model".into(),
                expected: format!("PREFIX-NNNNN-of-{count:05}.gguf"),
                found: path.display().to_string(),
            })?;
        if name_count != count {
            return Err(GgufError::ShardMismatch {
                path: path.to_path_buf(),
                what: KEY_SPLIT_COUNT.into(),
                expected: format!("{name_count} (from the file name)"),
                found: count.to_string(),
            });
        }
        let mut given = Some((no, given));
        let mut paths = Vec::with_capacity(count as usize);
        let mut shards = Vec::with_capacity(count as usize);
        for i in 1..=count {
            let p = shard_path(&prefix, i, count);
            let shard = match given.take_if(|(n, _)| *n == i) {
                Some((_, f)) => f,
                None => {
                    let missing = || GgufError::ShardMissing {
                        path: path.to_path_buf(),
                        missing: p.clone(),
                        expected: i,
                        count,
                    };
                    match open(&p, flavour) {
                        Err(GgufError::Io { source, .. })
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            return Err(missing());
                        }
                        Err(GgufError::Input(crate::input::InputError::Io { source, .. }))
                            if source.kind() == std::io::ErrorKind::NotFound =>
                        {
                            return Err(missing());
                        }
                        Err(GgufError::Remote(e)) if e.is_not_found() => return Err(missing()),
                        other => other,
                    }
                }
            };
            paths.push(if i == no { path.to_path_buf() } else { p });
            shards.push(shard);
        }
        if flavour.is_none() {
            one_flavour(&paths, &mut shards, open);
        }
        Model::from_shards(shards.into_iter().collect::<Result<_, _>>()?)
    }

    /// Assemble already opened shards (in order) into a model, checking the split keys.
    pub fn from_shards(shards: Vec<GgufFile>) -> Result<Model, GgufError> {
        let count = shards.len() as u64;
        if count > 1 {
            for (i, shard) in shards.iter().enumerate() {
                expect_split_key(shard, KEY_SPLIT_NO, i as u64)?;
                expect_split_key(shard, KEY_SPLIT_COUNT, count)?;
            }
            let mut ids = shards.iter().filter_map(|s| Some((s, s.get(KEY_SET_ID)?)));
            if let Some((first, first_id)) = ids.next()
                && let Some((other, other_id)) = ids.find(|(_, id)| *id != first_id)
            {
                return Err(GgufError::MixedSet {
                    first: first.path.clone(),
                    first_id: first_id.summary(4),
                    other: other.path.clone(),
                    other_id: other_id.summary(4),
                });
            }
        }
        let mut order: Vec<(usize, usize)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (s, shard) in shards.iter().enumerate() {
            for (t, info) in shard.tensors().iter().enumerate() {
                if let Some(&prev) = index.get(&info.name) {
                    return Err(GgufError::DuplicateTensorAcrossShards {
                        name: info.name.clone(),
                        first: shards[order[prev].0].path.clone(),
                        second: shard.path.clone(),
                    });
                }
                index.insert(info.name.clone(), order.len());
                order.push((s, t));
            }
        }
        if count > 1
            && let Some(declared) = split_u64(&shards[0], KEY_SPLIT_TENSORS_COUNT)?
            && declared != order.len() as u64
        {
            return Err(GgufError::ShardMismatch {
                path: shards[0].path.clone(),
                what: KEY_SPLIT_TENSORS_COUNT.into(),
                expected: format!("{} (tensors found in all shards)", order.len()),
                found: declared.to_string(),
            });
        }
        Ok(Model {
            shards,
            order,
            index,
        })
    }

    /// The shard files, first one first.
    pub fn shards(&self) -> &[GgufFile] {
        &self.shards
    }

    /// The type table the model is read with: the one a shard's type ids (or `--flavour`)
    /// decided; mainline when every id means the same to both programs.
    pub fn flavour(&self) -> Flavour {
        self.flavour_shard().flavour
    }

    /// Why the model is read with [`Model::flavour`]'s table.
    pub fn flavour_basis(&self) -> &FlavourBasis {
        &self.flavour_shard().flavour_basis
    }

    fn flavour_shard(&self) -> &GgufFile {
        self.shards
            .iter()
            .find(|s| s.flavour_basis != FlavourBasis::Shared)
            .unwrap_or(&self.shards[0])
    }

    /// The file that holds the model's metadata.
    pub fn first(&self) -> &GgufFile {
        &self.shards[0]
    }

    /// The first shard's file (or URL).
    pub fn path(&self) -> &Path {
        &self.shards[0].path
    }

    /// A metadata value from the first shard.
    pub fn get(&self, key: &str) -> Option<ValueRef<'_>> {
        self.first().get(key)
    }

    /// `general.architecture` (`llama`, `deepseek2`, ...), if present and a string.
    pub fn architecture(&self) -> Option<&str> {
        self.get("general.architecture").and_then(|v| v.as_str())
    }

    /// Tensors in all shards together.
    pub fn tensor_count(&self) -> usize {
        self.order.len()
    }

    fn loc(&self, (s, t): (usize, usize)) -> TensorLoc<'_> {
        let shard = &self.shards[s];
        let info = &shard.tensors()[t];
        TensorLoc {
            shard: s,
            info,
            file_offset: shard.tensor_file_offset(info),
        }
    }

    /// Every tensor in model order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorLoc<'_>> {
        self.order.iter().map(|&st| self.loc(st))
    }

    /// Where the tensor named `name` lives, if the model has it.
    pub fn tensor(&self, name: &str) -> Option<TensorLoc<'_>> {
        self.index.get(name).map(|&i| self.loc(self.order[i]))
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.tensors().map(|t| t.info.n_bytes).sum()
    }
}

/// A split key as an integer, if present; a split key of a non-integer type is an error.
fn split_u64(file: &GgufFile, key: &str) -> Result<Option<u64>, GgufError> {
    match file.get(key) {
        None => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| GgufError::BadKeyValue {
            path: file.path.clone(),
            key: key.into(),
            expected: "a non-negative integer".into(),
            found: v.summary(4),
        }),
    }
}

fn expect_split_key(file: &GgufFile, key: &str, expected: u64) -> Result<(), GgufError> {
    let found = split_u64(file, key)?;
    if found != Some(expected) {
        return Err(GgufError::ShardMismatch {
            path: file.path.clone(),
            what: key.into(),
            expected: expected.to_string(),
            found: found.map_or("no such key".into(), |v| v.to_string()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ggml_type::GgmlType;
    use crate::testkit::GgufBuilder;

    /// Write shard `no` (1-based) of `count` with the given split keys and tensor names.
    fn shard(
        dir: &Path,
        no: u64,
        count: u64,
        split_no: u16,
        total: i32,
        names: &[&str],
    ) -> PathBuf {
        let mut b = GgufBuilder::new()
            .kv_u16(KEY_SPLIT_NO, split_no)
            .kv_u16(KEY_SPLIT_COUNT, count as u16)
            .kv_i32(KEY_SPLIT_TENSORS_COUNT, total);
        for n in names {
            b = b.tensor(n, &[4], GgmlType::F32, no as u8);
        }
        let p = shard_path(dir.join("m").to_str().unwrap(), no, count);
        std::fs::write(&p, b.build()).unwrap();
        p
    }

    #[test]
    fn opens_a_shard_set_from_any_shard() {
        let dir = tempfile::tempdir().unwrap();
        shard(dir.path(), 1, 2, 0, 3, &["a", "b"]);
        let second = shard(dir.path(), 2, 2, 1, 3, &["c"]);
        let m = Model::open(&second).unwrap();
        let names: Vec<_> = m
            .tensors()
            .map(|t| (t.info.name.clone(), t.shard))
            .collect();
        assert_eq!(names, [("a".into(), 0), ("b".into(), 0), ("c".into(), 1)]);
    }

    #[test]
    fn a_shard_set_takes_the_flavour_one_shard_shows() {
        let dir = tempfile::tempdir().unwrap();
        let split = |no: u16| {
            GgufBuilder::new()
                .kv_u16(KEY_SPLIT_NO, no)
                .kv_u16(KEY_SPLIT_COUNT, 2)
                .kv_i32(KEY_SPLIT_TENSORS_COUNT, 2)
        };
        let prefix = dir.path().join("m");
        let path = |no| shard_path(prefix.to_str().unwrap(), no, 2);
        // Shard 1: a Q8_K tensor (id 15: 292 bytes to mainline, 296 to ik); shard 2: IQ4_KS.
        let first = split(0).tensor_raw("a", &[256], 15, vec![0; 296]);
        std::fs::write(path(1), first.build()).unwrap();
        let second = split(1).tensor("b", &[256], GgmlType::IQ4_KS, 2);
        std::fs::write(path(2), second.build()).unwrap();
        for given in [1, 2] {
            let m = Model::open(&path(given)).unwrap();
            assert_eq!(m.flavour(), Flavour::Ik);
            assert!(matches!(
                m.flavour_basis(),
                FlavourBasis::Tensor { id: 144, .. }
            ));
            assert_eq!(m.tensor("a").unwrap().info.n_bytes, 296);
        }
        // A shard with an id only mainline defines (NVFP4) tells the other way.
        let second = split(1).tensor_raw("b", &[64], 40, vec![0; 36]);
        std::fs::write(path(2), second.build()).unwrap();
        for given in [1, 2] {
            let m = Model::open(&path(given)).unwrap();
            assert_eq!(m.flavour(), Flavour::Mainline);
            assert!(matches!(
                m.flavour_basis(),
                FlavourBasis::Tensor {
                    id: 40,
                    flavour: Flavour::Mainline,
                    ..
                }
            ));
            assert_eq!(m.tensor("a").unwrap().info.n_bytes, 292);
        }
        // Without another shard's evidence, the contested id is an error that names the fix.
        let second = split(1).tensor("b", &[256], GgmlType::Q4_K, 2);
        std::fs::write(path(2), second.build()).unwrap();
        let e = Model::open(&path(2)).unwrap_err();
        assert!(matches!(e, GgufError::AmbiguousType { id: 15, .. }), "{e}");
        let m = Model::open_as(&path(2), Some(Flavour::Ik)).unwrap();
        assert_eq!(*m.flavour_basis(), FlavourBasis::Given);
    }

    #[test]
    fn shard_set_errors() {
        let dir = tempfile::tempdir().unwrap();
        let first = shard(dir.path(), 1, 3, 0, 3, &["a"]);
        shard(dir.path(), 2, 3, 1, 3, &["b"]);
        assert!(matches!(
            Model::open(&first),
            Err(GgufError::ShardMissing { expected: 3, .. })
        ));
        // Shard 3 says it is split.no 1.
        shard(dir.path(), 3, 3, 1, 3, &["c"]);
        assert!(
            matches!(Model::open(&first), Err(GgufError::ShardMismatch { what, .. }) if what == KEY_SPLIT_NO)
        );
        // Right numbers, but a tensor name repeated across shards.
        shard(dir.path(), 3, 3, 2, 3, &["a"]);
        assert!(
            matches!(Model::open(&first), Err(GgufError::DuplicateTensorAcrossShards { name, .. }) if name == "a")
        );
        // Wrong total.
        shard(dir.path(), 3, 3, 2, 3, &["c", "d"]);
        assert!(
            matches!(Model::open(&first), Err(GgufError::ShardMismatch { what, .. }) if what == KEY_SPLIT_TENSORS_COUNT)
        );
    }

    #[test]
    fn shards_of_different_runs_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let write = |no: u64, id: Option<&str>, name: &str| {
            let mut b = GgufBuilder::new()
                .kv_u16(KEY_SPLIT_NO, no as u16 - 1)
                .kv_u16(KEY_SPLIT_COUNT, 2)
                .kv_i32(KEY_SPLIT_TENSORS_COUNT, 2);
            if let Some(id) = id {
                b = b.kv_str(KEY_SET_ID, id);
            }
            let p = shard_path(dir.path().join("m").to_str().unwrap(), no, 2);
            std::fs::write(&p, b.tensor(name, &[4], GgmlType::F32, 1).build()).unwrap();
            p
        };
        let first = write(1, Some("aaaa"), "a");
        let second = write(2, Some("aaaa"), "b");
        Model::open(&first).unwrap();
        write(2, Some("bbbb"), "b");
        match Model::open(&first) {
            Err(GgufError::MixedSet {
                first: f,
                first_id,
                other,
                other_id,
            }) => {
                assert_eq!((f, other), (first.clone(), second.clone()));
                assert!(first_id.contains("aaaa") && other_id.contains("bbbb"));
            }
            r => panic!("{r:?}"),
        }
        // Only shards that carry an id are compared: llama-gguf-split copies the key into
        // the first shard only.
        write(2, None, "b");
        Model::open(&second).unwrap();
        write(1, None, "a");
        write(2, Some("bbbb"), "b");
        Model::open(&second).unwrap();
    }

    #[test]
    fn non_utf8_names_are_refused() {
        let b = GgufBuilder::new()
            .tensor("ab", &[1], GgmlType::F32, 0)
            .build();
        let mut bytes = b.clone();
        let at = bytes.windows(2).position(|w| w == b"ab").unwrap();
        bytes[at] = 0xff;
        let e = GgufFile::from_bytes(Path::new("x.gguf"), &bytes).unwrap_err();
        assert!(matches!(e, GgufError::NotUtf8 { .. }), "{e}");
    }

    #[test]
    fn shard_names_parse_like_llama_split_path() {
        let p = Path::new("/m/DeepSeek-R1-UD-IQ1_S-00002-of-00005.gguf");
        assert_eq!(
            parse_shard_name(p),
            Some(("/m/DeepSeek-R1-UD-IQ1_S".into(), 2, 5))
        );
        assert_eq!(
            shard_path("/m/x", 3, 5),
            PathBuf::from("/m/x-00003-of-00005.gguf")
        );
        assert_eq!(parse_shard_name(Path::new("x-1-of-5.gguf")), None);
        assert_eq!(parse_shard_name(Path::new("model.gguf")), None);
    }
}
