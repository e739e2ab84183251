//! One response to a range request: what its status means (a redirect to follow, the
//! partial content asked for, or why not), whether its `Content-Range` and validators are
//! the file's, and its body streamed to the sink.

use std::io::Read;
use std::ops::Range;
use std::sync::atomic::Ordering;

use super::{Failure, FetchError, HttpFile, parse_content_range, parse_total};
use crate::source::{RemoteIdentity, SourceError, url};

/// What a response's status says to do.
pub(super) enum Next {
    /// Ask again at this URL.
    Redirect(String),
    /// The partial content asked for: check its range, then read it.
    Partial,
    /// Opening an empty file: its identity; there is nothing to read.
    Empty(RemoteIdentity),
}

impl HttpFile {
    /// The GET of `range` at `target`, with the token if `target` may be sent it.
    pub(super) fn request(
        &self,
        target: &str,
        range: &Range<u64>,
    ) -> Result<ureq::http::Response<ureq::Body>, Failure> {
        let mut req = self
            .http
            .agent
            .get(target)
            .header("Range", format!("bytes={}-{}", range.start, range.end - 1));
        if let Some(token) = self.http.token_for(target) {
            if token.chars().any(|c| c.is_ascii_control() && c != '\t') {
                return Err(SourceError::BadToken.into());
            }
            req = req.header("Authorization", format!("Bearer {token}"));
        }
        req.call()
            .map_err(|e| classify(&self.named(target), target, e))
    }

    /// What `status`, answering a request for `range` at `target`, means. `from_cache`: the
    /// target is a remembered redirect; `opening`: no identity is known yet.
    pub(super) fn on_status(
        &self,
        target: &str,
        range: &Range<u64>,
        status: u16,
        header: &dyn Fn(&str) -> Option<String>,
        from_cache: bool,
        opening: bool,
    ) -> Result<Next, Failure> {
        match status {
            301 | 302 | 303 | 307 | 308 => {
                let loc = header("location").ok_or_else(|| SourceError::BadResponse {
                    url: self.named(target),
                    range: range.clone(),
                    what: "redirect",
                    expected: "a Location header".into(),
                    found: "none".into(),
                })?;
                let next = url::join(target, &loc).ok_or_else(|| SourceError::BadResponse {
                    url: self.named(target),
                    range: range.clone(),
                    what: "redirect",
                    expected: "an http(s) Location".into(),
                    found: url::redact(&loc),
                })?;
                Ok(Next::Redirect(next))
            }
            206 => Ok(Next::Partial),
            // Dropped unread: the connection closes, nothing more is downloaded.
            200 => Err(SourceError::RangeIgnored {
                url: self.named(target),
                range: range.clone(),
                status,
            }
            .into()),
            403 | 410 if from_cache => Err(Failure::Expired),
            401 | 403 => {
                let fix = match (self.http.token_for(&self.given), &self.http.opts.token) {
                    (Some(_), _) => {
                        "the token in HF_TOKEN cannot read this file (gated or private repository?)"
                    }
                    (None, None) => "set HF_TOKEN to a token that can read this repository",
                    (None, Some(_)) => "HF_TOKEN is only sent to HF_ENDPOINT's host; check the URL",
                };
                Err(SourceError::Denied {
                    url: self.named(target),
                    status,
                    fix,
                }
                .into())
            }
            404 => Err(SourceError::NotFound {
                url: self.named(target),
            }
            .into()),
            416 if opening && range.start == 0 => {
                // Opening an empty file: `Content-Range: bytes */0`.
                let total = header("content-range").and_then(|c| parse_total(&c));
                if total == Some(0) {
                    return Ok(Next::Empty(identity_of(0, header)));
                }
                Err(bad_status(&self.named(target), range, status))
            }
            408 | 429 | 500..=599 => Err(Failure::Retry(format!("HTTP {status}"))),
            _ => Err(bad_status(&self.named(target), range, status)),
        }
    }

    /// A partial response to `range`: its `Content-Range` starts at the range, within the
    /// file, and its size and validators are those seen first (when opening, they become
    /// them and `end` is cut to the file's size). Returns where its bytes stop.
    pub(super) fn check_partial(
        &self,
        target: &str,
        range: &Range<u64>,
        header: &dyn Fn(&str) -> Option<String>,
        commit: Option<String>,
        seen: &mut Option<RemoteIdentity>,
        end: &mut u64,
    ) -> Result<u64, Failure> {
        let cr = header("content-range").unwrap_or_default();
        let (start, last, total) =
            parse_content_range(&cr).ok_or_else(|| SourceError::BadResponse {
                url: self.named(target),
                range: range.clone(),
                what: "Content-Range",
                expected: format!("bytes {}-{}/SIZE", range.start, range.end - 1),
                found: if cr.is_empty() {
                    "none".into()
                } else {
                    cr.clone()
                },
            })?;
        let mut now = identity_of(total, header);
        now.commit = now.commit.or(commit);
        match seen {
            Some(then) => {
                if let Some((what, expected, found)) = then.difference(&now) {
                    return Err(SourceError::Changed {
                        url: self.shown.clone(),
                        what,
                        expected,
                        found,
                    }
                    .into());
                }
            }
            None => {
                *end = (*end).min(total);
                *seen = Some(now);
            }
        }
        if start != range.start || last < start || last >= *end {
            return Err(SourceError::BadResponse {
                url: self.named(target),
                range: range.clone(),
                what: "Content-Range",
                expected: format!("bytes {}-{}/{total}", range.start, *end - 1),
                found: cr,
            }
            .into());
        }
        Ok(last + 1)
    }

    /// Stream the body into `sink` until `stop`, advancing `pos`; a body that ends early or
    /// breaks is worth another attempt, from `pos`.
    pub(super) fn read_body(
        &self,
        body: &mut dyn Read,
        pos: &mut u64,
        stop: u64,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        buf: &mut [u8],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), Failure> {
        while *pos < stop {
            if cancelled() {
                return Err(Failure::Fatal(FetchError::Cancelled));
            }
            let want = ((stop - *pos) as usize).min(buf.len());
            let n = match body.read(&mut buf[..want]) {
                Ok(0) => {
                    return Err(Failure::Retry(format!(
                        "the connection closed after byte {} of {}",
                        *pos,
                        stop - 1
                    )));
                }
                Ok(n) => n,
                Err(e) => return Err(Failure::Retry(e.to_string())),
            };
            self.fetched.fetch_add(n as u64, Ordering::Relaxed);
            sink(&buf[..n]).map_err(|e| Failure::Fatal(FetchError::Sink(e)))?;
            *pos += n as u64;
        }
        Ok(())
    }
}

fn bad_status(url: &str, range: &Range<u64>, status: u16) -> Failure {
    SourceError::BadResponse {
        url: url.to_string(),
        range: range.clone(),
        what: "status",
        expected: "206 Partial Content".into(),
        found: status.to_string(),
    }
    .into()
}

fn identity_of(len: u64, header: &dyn Fn(&str) -> Option<String>) -> RemoteIdentity {
    RemoteIdentity {
        len,
        etag: header("etag"),
        last_modified: header("last-modified"),
        commit: header("x-repo-commit"),
    }
}

/// Transport errors: the network's (retried) or the URL's (not). `url` is the URL as shown;
/// the client's message may quote the `requested` one, which is redacted in it.
fn classify(url: &str, requested: &str, e: ureq::Error) -> Failure {
    let message = e.to_string().replace(requested, &url::redact(requested));
    match e {
        ureq::Error::Timeout(_)
        | ureq::Error::Io(_)
        | ureq::Error::ConnectionFailed
        | ureq::Error::Protocol(_) => Failure::Retry(message),
        _ => Failure::Fatal(FetchError::Source(SourceError::Http {
            url: url.to_string(),
            message,
        })),
    }
}
