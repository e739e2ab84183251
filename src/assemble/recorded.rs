//! An assembly's options as the child records them (`splice.options`, see
//! [`record`](crate::plan::record)), and back: `verify CHILD` and `splice --like` re-plan
//! an assembled child from its record. Files (`--imatrix`, a router file) are recorded by
//! name only; re-planning needs them given again.

use std::path::PathBuf;

use super::spec::{ExpertList, RouterSpec};
use super::{AssembleError, AssembleOptions, Selection};
use crate::plan::record::{AssembleRecord, file_name};

impl AssembleOptions {
    /// What the child records of these options.
    pub fn record(&self) -> AssembleRecord {
        let mut r = AssembleRecord {
            base: self.base.clone(),
            experts_used: self.experts_used,
            force_expert_count: self.force_expert_count,
            router: self.router.as_ref().map(|r| match r {
                // By name: a path would carry the user's directories into a shared file.
                RouterSpec::File(p) => format!("file {}", file_name(&p.to_string_lossy())),
                other => other.describe(),
            }),
            ..AssembleRecord::default()
        };
        match &self.selection {
            Selection::All => {}
            Selection::List(l) => r.experts = Some(l.text.clone()),
            Selection::Keep(l) => r.keep = Some(l.text.clone()),
            Selection::Top { n, imatrix } => {
                r.keep_top = Some(*n);
                r.imatrix = Some(file_name(&imatrix.to_string_lossy()));
            }
        }
        r
    }

    /// The options a record describes. The files it names by name only must be given:
    /// `imatrix` for `--keep-top`, `router_file` for a router read from a file.
    pub fn from_record(
        r: &AssembleRecord,
        imatrix: Option<PathBuf>,
        router_file: Option<PathBuf>,
    ) -> Result<AssembleOptions, AssembleError> {
        let list = |option: &'static str, text: &str| {
            ExpertList::parse(text).map_err(|reason| AssembleError::BadOption {
                option,
                text: text.to_string(),
                reason,
            })
        };
        let selection = match (&r.experts, &r.keep, r.keep_top) {
            (Some(e), _, _) => Selection::List(list("--experts", e)?),
            (_, Some(k), _) => Selection::Keep(list("--keep", k)?),
            (_, _, Some(n)) => Selection::Top {
                n,
                imatrix: imatrix.ok_or_else(|| AssembleError::BadOption {
                    option: "--imatrix",
                    text: r.imatrix.clone().unwrap_or_default(),
                    reason: format!(
                        "the child was assembled with --keep-top {n} and this importance matrix, recorded by name only: verify with --assembled, the options it was made with and --imatrix PATH"
                    ),
                })?,
            },
            _ => Selection::All,
        };
        let router = match r.router.as_deref() {
            None => None,
            Some(text) => match text.strip_prefix("file ") {
                Some(name) => Some(RouterSpec::File(router_file.ok_or_else(|| {
                    AssembleError::BadOption {
                        option: "--router",
                        text: name.to_string(),
                        reason: "the child's router rows were read from this file, recorded by name only: verify with --assembled, the options it was made with and --router PATH".into(),
                    }
                })?)),
                None => Some(RouterSpec::parse(text).map_err(|reason| {
                    AssembleError::BadOption {
                        option: "--router",
                        text: text.to_string(),
                        reason,
                    }
                })?),
            },
        };
        Ok(AssembleOptions {
            base: r.base.clone(),
            selection,
            router,
            experts_used: r.experts_used,
            force_expert_count: r.force_expert_count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_survive_their_record_and_files_go_by_name() {
        let o = AssembleOptions {
            base: Some("a".into()),
            selection: Selection::List(ExpertList::parse("a:0-1,b:0").unwrap()),
            router: Some(RouterSpec::File("/home/u/gates.npy".into())),
            experts_used: Some(2),
            force_expert_count: false,
        };
        let r = o.record();
        assert_eq!(r.router.as_deref(), Some("file gates.npy"));
        assert!(matches!(
            AssembleOptions::from_record(&r, None, None),
            Err(AssembleError::BadOption {
                option: "--router",
                ..
            })
        ));
        let back = AssembleOptions::from_record(&r, None, Some("g.npy".into())).unwrap();
        assert_eq!(back.record().experts.as_deref(), Some("a:0-1,b:0"));
        assert_eq!(back.experts_used, Some(2));
    }
}
