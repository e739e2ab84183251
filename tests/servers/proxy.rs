//! A fault-injecting HTTP proxy in front of nginx (std::net, a thread per connection, one
//! request per connection). Two listeners on 127.0.0.1 play the Hub and its CDN: a `302` from
//! nginx's `/resolve/` emulation, asked through the hub port, is rewritten to point at the cdn
//! port with a signature (`?sig=N`), so a test can expire signed targets and see which host a
//! token was sent to. It counts the body bytes it serves per file.
//!
//! Faults fire at the k-th *data* request (a range starting at or after the file's data
//! offset, registered with [`Proxy::data_from`]), so planning's header reads never trigger
//! them: answer 503; drop the connection after n body bytes; expire every target issued so
//! far (their next use gets 403); forward without `Range` (nginx answers 200 with the whole
//! file); change the file on disk (new contents and mtime, hence a new ETag) before serving.
//! It can also strip the validators (`ETag`, `Last-Modified`) from every answer, as some
//! servers send none.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer `503 Service Unavailable`.
    Status503,
    /// Forward the response head and this many body bytes, then close the connection.
    DropAfter(u64),
    /// Every redirect target issued so far expires: this and later uses get 403.
    ExpireTargets,
    /// Forward without the Range header: nginx answers 200 with the whole file.
    IgnoreRange,
    /// Rewrite this file (one byte flipped, mtime moved) before serving the request.
    Change(PathBuf),
}

/// One request as the proxy saw and answered it.
#[derive(Clone, Debug)]
pub struct Record {
    pub listener: &'static str,
    pub file: String,
    pub range: Option<(u64, u64)>,
    pub data: bool,
    pub status: u16,
    /// Body bytes written to the client.
    pub body: u64,
    pub auth: Option<String>,
}

#[derive(Default)]
struct State {
    faults: Vec<(u32, Fault)>,
    ignore_range_always: bool,
    strip_validators: bool,
    data_from: HashMap<String, u64>,
    data_requests: u32,
    next_sig: u64,
    expired_below: u64,
    log: Vec<Record>,
}

pub struct Proxy {
    pub hub: u16,
    pub cdn: u16,
    upstream: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    /// Listen on two free ports of 127.0.0.1, forwarding to nginx at `upstream`.
    pub fn start(upstream: u16) -> Proxy {
        let state = Arc::new(Mutex::new(State::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let hub_l = TcpListener::bind("127.0.0.1:0").unwrap();
        let cdn_l = TcpListener::bind("127.0.0.1:0").unwrap();
        let (hub, cdn) = (
            hub_l.local_addr().unwrap().port(),
            cdn_l.local_addr().unwrap().port(),
        );
        for (name, l) in [("hub", hub_l), ("cdn", cdn_l)] {
            let (state, stop) = (Arc::clone(&state), Arc::clone(&stop));
            std::thread::spawn(move || {
                for conn in l.incoming() {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let Ok(conn) = conn else { continue };
                    let state = Arc::clone(&state);
                    std::thread::spawn(move || {
                        let _ = handle(conn, name, upstream, cdn, &state);
                    });
                }
            });
        }
        Proxy {
            hub,
            cdn,
            upstream,
            state,
            stop,
        }
    }

    /// The Hub endpoint (`HF_ENDPOINT`).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.hub)
    }

    /// Requests of `file` starting at or after `offset` are data requests.
    pub fn data_from(&self, file: &str, offset: u64) {
        self.state
            .lock()
            .unwrap()
            .data_from
            .insert(file.into(), offset);
    }

    /// Inject `fault` at the k-th data request (counted from 1 since the last reset).
    pub fn on_data_request(&self, k: u32, fault: Fault) {
        self.state.lock().unwrap().faults.push((k, fault));
    }

    /// Ignore Range in every request.
    pub fn ignore_range_always(&self, on: bool) {
        self.state.lock().unwrap().ignore_range_always = on;
    }

    /// Send no `ETag` or `Last-Modified` in any answer.
    pub fn strip_validators(&self, on: bool) {
        self.state.lock().unwrap().strip_validators = on;
    }

    /// Forget requests and faults.
    pub fn reset(&self) {
        let mut s = self.state.lock().unwrap();
        s.log.clear();
        s.faults.clear();
        s.data_requests = 0;
        s.ignore_range_always = false;
    }

    pub fn log(&self) -> Vec<Record> {
        self.state.lock().unwrap().log.clone()
    }

    /// Body bytes served for `file` (all requests, or only data requests).
    pub fn served(&self, file: &str, data_only: bool) -> u64 {
        self.log()
            .iter()
            .filter(|r| r.file == file && (r.data || !data_only))
            .map(|r| r.body)
            .sum()
    }

    /// Body bytes served in all.
    pub fn served_total(&self) -> u64 {
        self.log().iter().map(|r| r.body).sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.hub));
        let _ = TcpStream::connect(("127.0.0.1", self.cdn));
        let _ = self.upstream;
    }
}

/// Read up to the end of an HTTP head; returns (head, bytes read past it).
fn read_head(s: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn change_file(p: &PathBuf) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
    let len = f.metadata().unwrap().len();
    f.write_all_at(&[0xA5], len - 1).unwrap();
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(1000);
    f.set_modified(later).unwrap();
}

fn simple(client: &mut TcpStream, status: &str) -> std::io::Result<()> {
    write!(
        client,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

fn handle(
    mut client: TcpStream,
    listener: &'static str,
    upstream: u16,
    cdn: u16,
    state: &Mutex<State>,
) -> std::io::Result<()> {
    let (head, _) = read_head(&mut client)?;
    let target = head.split(' ').nth(1).unwrap_or("/").to_string();
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let file = path.rsplit('/').next().unwrap_or("").to_string();
    let range = header(&head, "range").and_then(|r| {
        let (a, b) = r.strip_prefix("bytes=")?.split_once('-')?;
        Some((a.parse().ok()?, b.parse().ok()?))
    });
    let auth = header(&head, "authorization").map(str::to_string);
    let sig: Option<u64> = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("sig=")?.parse().ok());

    let (faults, ignore_range, expired, data, strip) = {
        let mut s = state.lock().unwrap();
        let data =
            range.is_some_and(|(a, _): (u64, u64)| s.data_from.get(&file).is_some_and(|&d| a >= d));
        let mut now = Vec::new();
        if data {
            s.data_requests += 1;
            let k = s.data_requests;
            s.faults.retain(|(at, f)| {
                if *at == k {
                    now.push(f.clone());
                    false
                } else {
                    true
                }
            });
        }
        if now.iter().any(|f| matches!(f, Fault::ExpireTargets)) {
            s.expired_below = s.next_sig;
        }
        let expired = listener == "cdn" && sig.is_none_or(|g| g < s.expired_below);
        (
            now,
            s.ignore_range_always,
            expired,
            data,
            s.strip_validators,
        )
    };
    let mut record = Record {
        listener,
        file: file.clone(),
        range,
        data,
        status: 0,
        body: 0,
        auth,
    };
    let log = |r: Record| state.lock().unwrap().log.push(r);

    for f in &faults {
        if let Fault::Change(p) = f {
            change_file(p);
        }
    }
    if faults.iter().any(|f| matches!(f, Fault::Status503)) {
        record.status = 503;
        log(record);
        return simple(&mut client, "503 Service Unavailable");
    }
    if expired {
        record.status = 403;
        log(record);
        return simple(&mut client, "403 Forbidden");
    }
    let ignore = ignore_range || faults.iter().any(|f| matches!(f, Fault::IgnoreRange));
    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let (Some((a, b)), false) = (range, ignore) {
        req.push_str(&format!("Range: bytes={a}-{b}\r\n"));
    }
    req.push_str("\r\n");
    up.write_all(req.as_bytes())?;
    let (resp_head, mut pending) = read_head(&mut up)?;
    record.status = resp_head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut out_head = String::new();
    for (i, line) in resp_head.trim_end().split("\r\n").enumerate() {
        let key = line
            .split_once(':')
            .map(|(k, _)| k.trim().to_ascii_lowercase());
        if i > 0 && strip && matches!(key.as_deref(), Some("etag" | "last-modified")) {
            continue;
        }
        let rewritten = match line.split_once(':') {
            Some((k, v)) if i > 0 && k.eq_ignore_ascii_case("location") && listener == "hub" => {
                let mut s = state.lock().unwrap();
                let n = s.next_sig;
                s.next_sig += 1;
                format!("Location: http://127.0.0.1:{cdn}{}?sig={n}", v.trim())
            }
            _ => line.to_string(),
        };
        out_head.push_str(&rewritten);
        out_head.push_str("\r\n");
    }
    out_head.push_str("\r\n");
    client.write_all(out_head.as_bytes())?;
    let limit = faults
        .iter()
        .find_map(|f| match f {
            Fault::DropAfter(n) => Some(*n),
            _ => None,
        })
        .unwrap_or(u64::MAX);
    let mut buf = vec![0u8; 64 << 10];
    while record.body < limit {
        let n = if pending.is_empty() {
            match up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            }
        } else {
            let n = pending.len();
            buf[..n].copy_from_slice(&pending);
            pending.clear();
            n
        };
        let take = (n as u64).min(limit - record.body) as usize;
        if client.write_all(&buf[..take]).is_err() {
            break;
        }
        record.body += take as u64;
    }
    let _ = client.shutdown(Shutdown::Both);
    log(record);
    Ok(())
}
