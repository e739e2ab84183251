//! Remote files read in place with HTTP range requests (blocking ureq over rustls: one
//! thread per connection, see docs/remote.md for why).
//!
//! Every request asks for `Range: bytes=a-b` and accepts only `206` with a `Content-Range`
//! that starts at `a` and a total size and validators (`ETag`, else `Last-Modified`) equal to
//! those seen when the file was opened: a server that ignores ranges (`200`, the whole file)
//! and a file changed since it was planned from are errors, found before a byte is used.
//! Redirects are followed by hand, so the token (`HF_TOKEN`) is only ever sent to the Hub
//! endpoint's origin, and the final (signed CDN) URL is remembered; when it expires (`403` or
//! `410` on the remembered URL) the original URL is resolved again. Errors name the URL as
//! given, and the redirect target without its query ([`url::redact`]): a signature is never
//! shown. `5xx`, `408`, `429`,
//! timeouts and dropped connections are retried with exponential backoff, continuing a
//! broken range from its last byte received; a connection that broke after delivering at
//! least [`RETRY_AT_ONCE_AFTER`] bytes is reopened at once (the server answers; only the
//! connection failed), so a proxy that cuts long responses costs a request, not a delay.
//!
//! One attempt follows redirects here; what each response means (its status, its
//! `Content-Range` and validators, its body) is decided in `http/response.rs`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{RemoteIdentity, SourceError, url};
use response::Next;

mod response;

/// The Hub endpoint when `HF_ENDPOINT` is not set (huggingface_hub's default).
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Environment variable: the Hub endpoint (huggingface_hub's convention).
pub const ENV_ENDPOINT: &str = "HF_ENDPOINT";
/// Environment variable: a Hub access token, sent as `Authorization: Bearer`.
pub const ENV_TOKEN: &str = "HF_TOKEN";
/// Environment variable: the first retry's delay in milliseconds (default 500; doubled per
/// attempt up to 30 s). Tests set it low.
pub const ENV_BACKOFF_MS: &str = "GGUF_SPLICE_HTTP_BACKOFF_MS";
/// Redirects followed per request (the Hub uses one).
pub const MAX_REDIRECTS: u32 = 10;
/// An attempt that delivered at least this many bytes before it failed is retried without
/// waiting. (Less, and it counts as a failure with backoff: a server that breaks every
/// connection after a few bytes must not be hammered.)
pub const RETRY_AT_ONCE_AFTER: u64 = 1 << 20;
/// Bytes read from a response body at once.
const READ_BUF: usize = 256 << 10;

/// How the client talks to servers.
#[derive(Clone)]
pub struct HttpOptions {
    /// Base URL of the Hub for `hf://` names (`HF_ENDPOINT`).
    pub endpoint: String,
    /// Token sent to the endpoint's origin only (`HF_TOKEN`).
    pub token: Option<String>,
    /// Attempts per range before giving up; an attempt that received bytes resets the count.
    pub attempts: u32,
    /// Delay before the first retry, doubled each time.
    pub backoff: Duration,
    /// Longest delay between attempts.
    pub max_backoff: Duration,
    /// Limit for connecting (DNS, TCP, TLS).
    pub connect_timeout: Duration,
    /// Limit for the response headers, and for each read of the body (an idle connection).
    pub read_timeout: Duration,
    /// Go through the proxy of `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (minus
    /// `NO_PROXY`), as ureq does by default. Tests turn it off to stay on 127.0.0.1.
    pub env_proxy: bool,
}

impl std::fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpOptions")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("attempts", &self.attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            endpoint: DEFAULT_ENDPOINT.into(),
            token: None,
            attempts: 8,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
            env_proxy: true,
        }
    }
}

impl HttpOptions {
    /// The defaults, with `HF_ENDPOINT`, `HF_TOKEN` and the test backoff from the environment.
    pub fn from_env() -> HttpOptions {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut o = HttpOptions::default();
        if let Some(e) = var(ENV_ENDPOINT) {
            o.endpoint = e.trim().trim_end_matches('/').to_string();
        }
        o.token = var(ENV_TOKEN).map(|t| t.trim().to_string());
        if let Some(ms) = var(ENV_BACKOFF_MS).and_then(|v| v.parse().ok()) {
            o.backoff = Duration::from_millis(ms);
        }
        o
    }
}

/// The HTTP client: a connection pool shared by every remote file and thread.
#[derive(Debug)]
pub struct Http {
    agent: ureq::Agent,
    opts: HttpOptions,
    /// The origin the token may be sent to: the endpoint's.
    token_origin: Option<String>,
}

impl Http {
    /// A client with these options.
    pub fn new(opts: HttpOptions) -> Http {
        let mut config = ureq::Agent::config_builder();
        if !opts.env_proxy {
            config = config.proxy(None);
        }
        let agent = config
            .max_redirects(0)
            .http_status_as_error(false)
            .timeout_connect(Some(opts.connect_timeout))
            .timeout_recv_response(Some(opts.read_timeout))
            .timeout_per_read(Some(opts.read_timeout))
            .max_idle_connections_per_host(64)
            .user_agent(concat!("gguf-splice/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Http {
            agent,
            token_origin: url::origin(&opts.endpoint),
            opts,
        }
    }

    /// A client configured from the environment ([`HttpOptions::from_env`]).
    pub fn from_env() -> Http {
        Http::new(HttpOptions::from_env())
    }

    /// The Hub endpoint `hf://` names resolve against.
    pub fn endpoint(&self) -> &str {
        &self.opts.endpoint
    }

    pub(super) fn token_for(&self, target: &str) -> Option<&str> {
        let token = self.opts.token.as_deref()?;
        (url::origin(target)? == *self.token_origin.as_ref()?).then_some(token)
    }

    /// The wait before the next attempt, after `failures` failures in a row, the last of
    /// which delivered `progressed` bytes.
    pub(super) fn delay(&self, failures: u32, progressed: u64) -> Duration {
        if progressed >= RETRY_AT_ONCE_AFTER {
            return Duration::ZERO;
        }
        self.backoff(failures)
    }

    pub(super) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32 << failures.saturating_sub(1).min(16);
        self.opts
            .backoff
            .saturating_mul(factor)
            .min(self.opts.max_backoff)
    }
}

/// Why a fetch stopped early.
#[derive(Debug)]
pub enum FetchError {
    /// The server or the network failed (after retries), or the file changed.
    Source(SourceError),
    /// The sink refused the bytes (for example a write error of the output).
    Sink(std::io::Error),
    /// The caller asked to stop.
    Cancelled,
}

/// One attempt's failure.
enum Failure {
    /// Worth another attempt after a delay (5xx, timeouts, dropped connections).
    Retry(String),
    /// The remembered redirect target expired: resolve the original URL again.
    Expired,
    Fatal(FetchError),
}

impl From<SourceError> for Failure {
    fn from(e: SourceError) -> Self {
        Failure::Fatal(FetchError::Source(e))
    }
}

/// A remote file, opened: its URL, the identity seen when it was opened, the redirect
/// target in use, and how many bytes were received.
#[derive(Debug)]
pub struct HttpFile {
    http: Arc<Http>,
    /// The URL requested (before redirects), secrets included.
    given: String,
    /// `url` as it is shown ([`url::redact`]).
    shown: String,
    target: Mutex<Option<String>>,
    identity: RemoteIdentity,
    fetched: AtomicU64,
}

impl HttpFile {
    /// Open `url` by fetching its first `first` bytes (fewer if the file is shorter), which
    /// also tells its size and identity. Returns the file and those bytes.
    pub fn open(
        http: Arc<Http>,
        url: &str,
        first: u64,
    ) -> Result<(HttpFile, Vec<u8>), SourceError> {
        let mut file = HttpFile {
            http,
            given: url.to_string(),
            shown: url::redact(url),
            target: Mutex::new(None),
            identity: RemoteIdentity {
                len: 0,
                etag: None,
                last_modified: None,
                commit: None,
            },
            fetched: AtomicU64::new(0),
        };
        let mut bytes = Vec::new();
        let never = || false;
        let range = 0..first.max(1);
        let seen = file.fetch_inner(
            range,
            &mut |b| {
                bytes.extend_from_slice(b);
                Ok(())
            },
            &never,
            None,
        );
        match seen {
            Ok(Some(identity)) => file.identity = identity,
            Ok(None) => unreachable!("a first fetch reports the identity"),
            Err(FetchError::Source(e)) => return Err(e),
            Err(FetchError::Sink(_) | FetchError::Cancelled) => unreachable!("infallible sink"),
        }
        Ok((file, bytes))
    }

    /// The URL as given (before redirects), as it may be shown: without user info, with
    /// `?…` for its query ([`url::redact`]).
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// What errors name: the URL as given, and where it was redirected to, both redacted.
    fn named(&self, target: &str) -> String {
        if target == self.given {
            self.shown.clone()
        } else {
            format!("{} (redirected to {})", self.shown, url::redact(target))
        }
    }

    /// Size and validators seen when the file was opened.
    pub fn identity(&self) -> &RemoteIdentity {
        &self.identity
    }

    /// Size of the file.
    pub fn len(&self) -> u64 {
        self.identity.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.identity.len == 0
    }

    /// Body bytes received from the network so far, retries included.
    pub fn fetched(&self) -> u64 {
        self.fetched.load(Ordering::Relaxed)
    }

    /// Fill `buf` with the bytes at `offset`.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<(), SourceError> {
        let mut at = 0usize;
        let never = || false;
        let end = offset.saturating_add(buf.len() as u64);
        self.fetch(
            offset..end,
            &mut |b| {
                buf[at..at + b.len()].copy_from_slice(b);
                at += b.len();
                Ok(())
            },
            &never,
        )
        .map_err(|e| match e {
            FetchError::Source(e) => e,
            FetchError::Sink(_) | FetchError::Cancelled => unreachable!("infallible sink"),
        })
    }

    /// Stream the bytes of `range`, in order and each exactly once, into `sink`, retrying and
    /// resuming as the module says. `cancelled` is polled between reads and while waiting.
    pub fn fetch(
        &self,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), FetchError> {
        if range.end > self.identity.len {
            return Err(FetchError::Source(SourceError::BadResponse {
                url: self.shown.clone(),
                range,
                what: "range",
                expected: format!("bytes within the file's {} bytes", self.identity.len),
                found: "a range past its end".into(),
            }));
        }
        if range.is_empty() {
            return Ok(());
        }
        self.fetch_inner(range, sink, cancelled, Some(&self.identity))
            .map(|_| ())
    }

    /// The retry loop. With `expect` None (opening), the range may run past the end of the
    /// file, and the identity seen is returned.
    fn fetch_inner(
        &self,
        range: Range<u64>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        cancelled: &dyn Fn() -> bool,
        expect: Option<&RemoteIdentity>,
    ) -> Result<Option<RemoteIdentity>, FetchError> {
        let mut pos = range.start;
        let mut end = range.end;
        let mut failures = 0u32;
        let mut seen = expect.cloned();
        let mut buf = vec![0u8; READ_BUF];
        while pos < end {
            if cancelled() {
                return Err(FetchError::Cancelled);
            }
            let before = pos;
            let result = self.attempt(&mut pos, &mut end, &mut seen, sink, &mut buf, cancelled);
            let progressed = pos - before;
            if progressed > 0 {
                failures = 0;
            }
            match result {
                Ok(()) => {}
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Expired) => {
                    *self.target.lock().expect("not poisoned") = None;
                }
                Err(Failure::Retry(last)) => {
                    failures += 1;
                    if failures >= self.http.opts.attempts {
                        return Err(FetchError::Source(SourceError::GaveUp {
                            url: self.shown.clone(),
                            range: pos..end,
                            attempts: failures,
                            last,
                        }));
                    }
                    let wait = self.http.delay(failures, progressed);
                    let until = std::time::Instant::now() + wait;
                    while std::time::Instant::now() < until {
                        if cancelled() {
                            return Err(FetchError::Cancelled);
                        }
                        std::thread::sleep(
                            (until - std::time::Instant::now()).min(Duration::from_millis(50)),
                        );
                    }
                }
            }
        }
        Ok(seen)
    }

    /// One request for `pos..end` (following redirects) and its body, advancing `pos` by
    /// the bytes handed to the sink: each response's status says whether to follow a
    /// redirect; a partial response's range and validators are checked, then its body read.
    fn attempt(
        &self,
        pos: &mut u64,
        end: &mut u64,
        seen: &mut Option<RemoteIdentity>,
        sink: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
        buf: &mut [u8],
        cancelled: &dyn Fn() -> bool,
    ) -> Result<(), Failure> {
        let cached = self.target.lock().expect("not poisoned").clone();
        let from_cache = cached.is_some();
        let mut target = cached.unwrap_or_else(|| self.given.clone());
        let range = *pos..*end;
        // The Hub says which commit a revision resolved to on its redirect to the CDN.
        let mut commit = None;
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.request(&target, &range)?;
            let header = |name: &str| {
                resp.headers()
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            if let Some(c) = header("x-repo-commit") {
                commit = Some(c);
            }
            let status = resp.status().as_u16();
            match self.on_status(&target, &range, status, &header, from_cache, seen.is_none())? {
                Next::Redirect(next) => {
                    target = next;
                    continue;
                }
                Next::Empty(identity) => {
                    *seen = Some(identity);
                    *end = 0;
                    return Ok(());
                }
                Next::Partial => {}
            }
            let stop = self.check_partial(&target, &range, &header, commit.take(), seen, end)?;
            if target != self.given {
                *self.target.lock().expect("not poisoned") = Some(target.clone());
            }
            let mut body = resp.into_body().into_reader();
            return self.read_body(&mut body, pos, stop, sink, buf, cancelled);
        }
        Err(SourceError::TooManyRedirects {
            url: self.shown.clone(),
            max: MAX_REDIRECTS,
        }
        .into())
    }
}

/// `bytes START-END/TOTAL` -> (START, END, TOTAL).
pub(super) fn parse_content_range(v: &str) -> Option<(u64, u64, u64)> {
    let rest = v.trim().strip_prefix("bytes")?.trim_start();
    let (span, total) = rest.split_once('/')?;
    let (a, b) = span.split_once('-')?;
    Some((
        a.trim().parse().ok()?,
        b.trim().parse().ok()?,
        total.trim().parse().ok()?,
    ))
}

/// `bytes */TOTAL` -> TOTAL.
pub(super) fn parse_total(v: &str) -> Option<u64> {
    v.trim()
        .strip_prefix("bytes")?
        .trim()
        .strip_prefix("*/")?
        .trim()
        .parse()
        .ok()
}
