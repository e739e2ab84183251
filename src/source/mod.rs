//! Where a model's bytes come from: a local file or a file on an HTTP(S) server (Hugging
//! Face's `/resolve/` URLs and `hf://` names included), read in place by byte range. The
//! reader, the comparison engine and the writer read through [`Source`], so only this layer
//! knows about URLs, redirects, retries and tokens. It knows nothing of GGUF.
//!
//! - [`url`]: `hf://` names, origins, redirect targets;
//! - [`http`]: the client ([`Http`]) and an open remote file ([`HttpFile`]): ranged GETs with
//!   retries, resumption of a broken range, redirect handling and identity checks.

pub mod http;
#[cfg(test)]
mod http_tests;
pub mod url;

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use http::{FetchError, Http, HttpFile, HttpOptions};

/// What a model argument names: a local path or an http(s) URL (`hf://` already resolved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A file on this machine.
    Local(PathBuf),
    /// An `http://` or `https://` URL.
    Remote(String),
}

impl Location {
    /// Read a command-line argument: `https://…`, `http://…`, `hf://ORG/REPO/PATH[@REV]`
    /// (resolved against `endpoint`, see [`url::resolve_hf`]), or else a local path.
    pub fn parse(arg: &Path, endpoint: &str) -> Result<Location, SourceError> {
        let Some(s) = arg.to_str().filter(|s| url::is_remote(s)) else {
            // `hf:/org/repo/x.gguf` is a local path only if there is such a file.
            if let Some(meant) = arg.to_str().and_then(url::near_miss)
                && std::fs::symlink_metadata(arg).is_err()
            {
                return Err(SourceError::BadUrl {
                    url: arg.display().to_string(),
                    reason: format!(
                        "no such file, and not a URL: did you mean '{meant}' (two slashes)?"
                    ),
                });
            }
            return Ok(Location::Local(arg.to_path_buf()));
        };
        // Errors never echo user info or a query: they may hold a password or a signature.
        let resolved = url::resolve_hf(s, endpoint).map_err(|reason| SourceError::BadUrl {
            url: url::redact(s),
            reason,
        })?;
        if !url::is_valid(&resolved) {
            return Err(SourceError::BadUrl {
                url: url::redact(s),
                reason: "expected http(s)://HOST/PATH (no user name or password in the URL)".into(),
            });
        }
        Ok(Location::Remote(resolved))
    }

    /// The path or URL, as errors and reports show it.
    pub fn as_path(&self) -> &Path {
        match self {
            Location::Local(p) => p,
            Location::Remote(u) => Path::new(u),
        }
    }
}

/// What tells a remote file apart from a changed one: its size and the validators the
/// server sends (`ETag`, else `Last-Modified`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteIdentity {
    /// Total size, from `Content-Range`.
    pub len: u64,
    /// The `ETag` header, if the server sends one.
    pub etag: Option<String>,
    /// The `Last-Modified` header, if the server sends one.
    pub last_modified: Option<String>,
    /// The commit a Hub `/resolve/REVISION/` URL resolved to (`X-Repo-Commit`, on the
    /// response or a redirect before it), recorded in children; not compared.
    pub commit: Option<String>,
}

impl RemoteIdentity {
    /// The first difference between the identity a file had when planned (`self`) and one
    /// seen later: (what, expected, found).
    pub fn difference(&self, now: &RemoteIdentity) -> Option<(&'static str, String, String)> {
        if self.len != now.len {
            return Some(("size", self.len.to_string(), now.len.to_string()));
        }
        if let (Some(a), Some(b)) = (&self.etag, &now.etag) {
            return (a != b).then(|| ("ETag", a.clone(), b.clone()));
        }
        match (&self.last_modified, &now.last_modified) {
            (Some(a), Some(b)) if a != b => Some(("Last-Modified", a.clone(), b.clone())),
            _ => None,
        }
    }
}

/// An open source of bytes, read by position from any thread.
#[derive(Debug)]
pub enum Source {
    /// A local file, opened read-only.
    Local {
        /// The open file.
        file: File,
        /// Its path, for errors.
        path: PathBuf,
    },
    /// A remote file, read by HTTP range requests.
    Http(Arc<HttpFile>),
}

impl Source {
    /// Fill `buf` with the bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), SourceError> {
        match self {
            Source::Local { file, path } => {
                file.read_exact_at(buf, offset)
                    .map_err(|source| SourceError::Read {
                        path: path.clone(),
                        range: offset..offset.saturating_add(buf.len() as u64),
                        source,
                    })
            }
            Source::Http(h) => h.read_exact_at(buf, offset),
        }
    }

    /// Where the bytes come from, for messages: the local path, or the URL.
    pub fn path(&self) -> PathBuf {
        match self {
            Source::Local { path, .. } => path.clone(),
            Source::Http(h) => PathBuf::from(h.url()),
        }
    }

    /// The local file, if this is one.
    pub fn as_local(&self) -> Option<&File> {
        match self {
            Source::Local { file, .. } => Some(file),
            Source::Http(_) => None,
        }
    }
}

fn show(r: &Range<u64>) -> String {
    if r.end > r.start {
        format!("{}-{}", r.start, r.end - 1)
    } else {
        format!("{}-", r.start)
    }
}

/// Why bytes could not be had from a source. Remote variants name the URL and, where there
/// is one, the byte range (inclusive, as HTTP writes it).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// A `hf://` or `http(s)://` argument is not a URL that can be read.
    #[error("'{url}': {reason}")]
    BadUrl {
        /// The argument as given, redacted ([`url::redact`]).
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading (or opening) a local file failed.
    #[error("{path}: reading bytes {}: {source}", show(.range))]
    Read {
        /// The file.
        path: PathBuf,
        /// The bytes asked for (empty when opening the file failed).
        range: Range<u64>,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The server answered 404.
    #[error("{url}: not found (HTTP 404); check the organisation, repository, path and revision")]
    NotFound {
        /// The URL asked for (after redirects).
        url: String,
    },
    /// `HF_TOKEN` holds a line break or another control character, which no HTTP header
    /// can carry (the token itself is never shown).
    #[error(
        "HF_TOKEN is malformed: it holds a line break or another control character; set it to the token alone (hf_...)"
    )]
    BadToken,
    /// The server answered 401 or 403.
    #[error("{url}: access denied (HTTP {status}); {fix}")]
    Denied {
        /// The URL asked for (after redirects).
        url: String,
        /// The HTTP status: 401 or 403.
        status: u16,
        /// What to do about `HF_TOKEN`, depending on whether one was sent.
        fix: &'static str,
    },
    /// The server sent the whole file instead of the range asked for.
    #[error(
        "{url}: answered {status} with the whole file to a request for bytes {}: the server ignores Range requests, and reading in place would download everything; download the file and give its local path", show(.range)
    )]
    RangeIgnored {
        /// The URL asked for (after redirects).
        url: String,
        /// The bytes asked for.
        range: Range<u64>,
        /// The HTTP status of the answer (200).
        status: u16,
    },
    /// The remote file's size, ETag or Last-Modified differ from when it was first opened.
    #[error(
        "{url}: changed on the server since it was planned from ({what} {expected} -> {found}); nothing was written; run the command again to plan from the new file"
    )]
    Changed {
        /// The file's URL.
        url: String,
        /// What differs: `size`, `ETag` or `Last-Modified`.
        what: &'static str,
        /// Its value when the file was first opened.
        expected: String,
        /// Its value now.
        found: String,
    },
    /// Network failures went on through every retry of a range.
    #[error(
        "{url}: bytes {}: gave up after {attempts} attempts, the last failed with: {last}; check the network and run the command again", show(.range)
    )]
    GaveUp {
        /// The file's URL.
        url: String,
        /// The bytes not yet received.
        range: Range<u64>,
        /// Attempts in a row that received nothing.
        attempts: u32,
        /// The last failure's message.
        last: String,
    },
    /// An answer that breaks HTTP's rules for range requests (wrong status, bad or missing
    /// `Content-Range`, a redirect without a usable `Location`), or a range past the file.
    #[error(
        "{url}: bytes {}: unexpected {what}: expected {expected}, found {found}; the server does not answer range requests as HTTP says", show(.range)
    )]
    BadResponse {
        /// The URL asked for.
        url: String,
        /// The bytes asked for.
        range: Range<u64>,
        /// The part of the answer at fault: `status`, `Content-Range`, `redirect` or `range`.
        what: &'static str,
        /// What it should have been.
        expected: String,
        /// What it was (`none` when missing).
        found: String,
    },
    /// The server redirected more than [`MAX_REDIRECTS`](http::MAX_REDIRECTS) times for one
    /// request.
    #[error("{url}: more than {max} redirects; check the URL")]
    TooManyRedirects {
        /// The file's URL.
        url: String,
        /// The most redirects followed.
        max: u32,
    },
    /// An HTTP error that retrying will not cure (an unknown host, a TLS failure, a malformed URL).
    #[error("{url}: {message}; check the URL (and HF_ENDPOINT)")]
    Http {
        /// The URL asked for.
        url: String,
        /// The HTTP client's message.
        message: String,
    },
}

impl SourceError {
    /// Whether the error says the file is not there (a missing shard of a set).
    pub fn is_not_found(&self) -> bool {
        match self {
            SourceError::NotFound { .. } => true,
            SourceError::Read { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
            _ => false,
        }
    }

    /// Whether the error says the file is no longer the one planned from.
    pub fn is_changed(&self) -> bool {
        matches!(self, SourceError::Changed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_are_paths_or_urls() {
        let e = "https://hub.example";
        assert_eq!(
            Location::parse(Path::new("m.gguf"), e).unwrap(),
            Location::Local("m.gguf".into())
        );
        assert_eq!(
            Location::parse(Path::new("hf://o/r/m.gguf"), e).unwrap(),
            Location::Remote("https://hub.example/o/r/resolve/main/m.gguf".into())
        );
        assert_eq!(
            Location::parse(Path::new("http://h:1/m.gguf"), e).unwrap(),
            Location::Remote("http://h:1/m.gguf".into())
        );
        for bad in ["hf://o/r", "https://user:pw@h/m.gguf", "http:///m.gguf"] {
            assert!(
                matches!(
                    Location::parse(Path::new(bad), e),
                    Err(SourceError::BadUrl { .. })
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn identities_differ_by_size_then_etag_then_date() {
        let a = RemoteIdentity {
            len: 10,
            etag: Some("\"x\"".into()),
            last_modified: Some("d1".into()),
            commit: None,
        };
        assert_eq!(a.difference(&a.clone()), None);
        let b = RemoteIdentity {
            len: 11,
            ..a.clone()
        };
        assert_eq!(a.difference(&b).unwrap().0, "size");
        let c = RemoteIdentity {
            etag: Some("\"y\"".into()),
            last_modified: Some("d2".into()),
            ..a.clone()
        };
        assert_eq!(a.difference(&c).unwrap().0, "ETag");
        let d = RemoteIdentity {
            etag: None,
            last_modified: Some("d2".into()),
            ..a.clone()
        };
        assert_eq!(a.difference(&d).unwrap().0, "Last-Modified");
    }
}
