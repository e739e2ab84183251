//! The HTTP client against a canned server on 127.0.0.1: one test per remote error variant,
//! and the recoveries (retry, resume from the last byte, expired target) at the level of
//! single responses. The end-to-end behaviour against nginx is in `tests/remote*.rs`.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::http::{parse_content_range, parse_total};
use super::{Http, HttpFile, HttpOptions, SourceError};

/// What the canned server answers to one request: (status line and headers, body).
type Answer = (String, Vec<u8>);

/// A server that answers each connection's request with `answer(n, request head)` (n from
/// 0), then closes. Returns its URL and the request heads it saw.
fn serve(
    answer: impl Fn(usize, &str) -> Answer + Send + 'static,
) -> (String, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", l.local_addr().unwrap().port());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    std::thread::spawn(move || {
        for (n, conn) in l.incoming().enumerate() {
            let Ok(mut c) = conn else { return };
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if c.read(&mut b).unwrap_or(0) == 0 {
                    break;
                }
                head.push(b[0]);
            }
            let head = String::from_utf8_lossy(&head).into_owned();
            let (status, body) = answer(n, &head);
            log.lock().unwrap().push(head);
            let _ = c.write_all(status.as_bytes());
            let _ = c.write_all(b"Connection: close\r\n\r\n");
            let _ = c.write_all(&body);
        }
    });
    (url, seen)
}

fn http() -> Arc<Http> {
    Arc::new(Http::new(HttpOptions {
        backoff: Duration::from_millis(1),
        attempts: 3,
        env_proxy: false,
        ..HttpOptions::default()
    }))
}

/// The file's bytes: 0, 1, 2, ... (mod 251).
fn content(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

fn requested(head: &str) -> (usize, usize) {
    let r = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("range")
                .then(|| v.trim().strip_prefix("bytes="))
                .flatten()
        })
        .unwrap();
    let (a, b) = r.split_once('-').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// A correct 206 for the requested range of `data`, with `etag`, cut to `cut` body bytes.
fn partial(head: &str, data: &[u8], etag: &str, cut: Option<usize>) -> Answer {
    let (a, b) = requested(head);
    let b = b.min(data.len() - 1);
    let body = data[a..=b].to_vec();
    let status = format!(
        "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nETag: {etag}\r\nContent-Length: {}\r\n",
        data.len(),
        body.len()
    );
    let body = match cut {
        Some(n) => body[..n].to_vec(),
        None => body,
    };
    (status, body)
}

#[test]
fn opening_reads_the_first_bytes_and_the_identity() {
    let data = content(1000);
    let (url, _) = serve(move |_, h| partial(h, &data, "\"v1\"", None));
    let (f, first) = HttpFile::open(http(), &format!("{url}/m.gguf"), 64).unwrap();
    assert_eq!(first, content(64));
    assert_eq!(f.len(), 1000);
    assert_eq!(f.identity().etag.as_deref(), Some("\"v1\""));
    // A first read past the end is cut to the file.
    let data = content(10);
    let (url, _) = serve(move |_, h| partial(h, &data, "\"v1\"", None));
    let (_, first) = HttpFile::open(http(), &format!("{url}/m.gguf"), 64).unwrap();
    assert_eq!(first, content(10));
}

#[test]
fn a_broken_range_resumes_from_its_last_byte_and_503s_are_retried() {
    let data = content(5000);
    let (url, seen) = serve(move |n, h| match n {
        1 => partial(h, &data, "\"v1\"", Some(700)),
        2 => ("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n".into(), vec![]),
        _ => partial(h, &data, "\"v1\"", None),
    });
    let (f, _) = HttpFile::open(http(), &format!("{url}/m.gguf"), 16).unwrap();
    let mut buf = vec![0u8; 3000];
    f.read_exact_at(&mut buf, 1000).unwrap();
    assert_eq!(buf, content(5000)[1000..4000]);
    let heads = seen.lock().unwrap();
    let ranges: Vec<_> = heads.iter().map(|h| requested(h)).collect();
    assert_eq!(ranges, [(0, 15), (1000, 3999), (1700, 3999), (1700, 3999)]);
}

#[test]
fn an_expired_target_is_resolved_again_and_the_token_stays_home() {
    let data = content(100);
    let (cdn, cdn_seen) = serve(move |n, h| match n {
        1 => (
            "HTTP/1.1 403 Expired\r\nContent-Length: 0\r\n".into(),
            vec![],
        ),
        _ => partial(h, &data, "\"v1\"", None),
    });
    let (hub, hub_seen) = serve(move |_, _| {
        let loc =
            format!("HTTP/1.1 302 Found\r\nLocation: {cdn}/blob?sig=1\r\nContent-Length: 0\r\n");
        (loc, vec![])
    });
    let h = Arc::new(Http::new(HttpOptions {
        endpoint: hub.clone(),
        token: Some("tok".into()),
        backoff: Duration::from_millis(1),
        env_proxy: false,
        ..HttpOptions::default()
    }));
    let (f, _) = HttpFile::open(h, &format!("{hub}/o/r/resolve/main/m.gguf"), 10).unwrap();
    let mut buf = vec![0u8; 20];
    f.read_exact_at(&mut buf, 50).unwrap();
    assert_eq!(buf, content(100)[50..70]);
    let hub_heads = hub_seen.lock().unwrap();
    assert_eq!(hub_heads.len(), 2, "resolved twice");
    let auth = |h: &String| h.to_ascii_lowercase().contains("authorization: bearer tok");
    assert!(hub_heads.iter().all(auth));
    let cdn_heads = cdn_seen.lock().unwrap();
    assert_eq!(cdn_heads.len(), 3);
    assert!(!cdn_heads.iter().any(auth));
}

#[test]
fn a_token_with_a_line_break_is_called_malformed_and_never_sent() {
    let (hub, seen) = serve(|_, _| {
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".into(),
            vec![],
        )
    });
    let h = Arc::new(Http::new(HttpOptions {
        endpoint: hub.clone(),
        token: Some("hf_abc\nhf_def".into()),
        backoff: Duration::from_millis(1),
        env_proxy: false,
        ..HttpOptions::default()
    }));
    let e = HttpFile::open(h, &format!("{hub}/o/r/resolve/main/m.gguf"), 10).unwrap_err();
    assert!(matches!(e, SourceError::BadToken), "{e:?}");
    assert!(!e.to_string().contains("hf_abc"), "{e}");
    assert!(seen.lock().unwrap().is_empty());
}

fn open_err(answer: impl Fn(usize, &str) -> Answer + Send + 'static) -> SourceError {
    let (url, _) = serve(answer);
    HttpFile::open(http(), &format!("{url}/m.gguf"), 16).unwrap_err()
}

#[test]
fn each_remote_error_names_the_url_and_what_was_found() {
    let e = open_err(|_, _| {
        (
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n".into(),
            vec![],
        )
    });
    assert!(
        matches!(&e, SourceError::NotFound { url } if url.ends_with("/m.gguf")),
        "{e}"
    );

    let e = open_err(|_, _| ("HTTP/1.1 401 No\r\nContent-Length: 0\r\n".into(), vec![]));
    assert!(matches!(&e, SourceError::Denied { status: 401, .. }), "{e}");
    assert!(e.to_string().contains("set HF_TOKEN"), "{e}");

    let e = open_err(|_, _| {
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n".into(),
            b"whole".to_vec(),
        )
    });
    assert!(
        matches!(&e, SourceError::RangeIgnored { status: 200, range, .. } if *range == (0..16)),
        "{e}"
    );

    let e = open_err(|_, _| ("HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n".into(), vec![]));
    assert!(
        matches!(&e, SourceError::GaveUp { attempts: 3, last, .. } if last == "HTTP 503"),
        "{e}"
    );

    let e = open_err(|_, _| {
        let s = "HTTP/1.1 206 Partial\r\nContent-Range: bytes 5-9/100\r\nContent-Length: 5\r\n";
        (s.into(), b"12345".to_vec())
    });
    assert!(
        matches!(&e, SourceError::BadResponse { what: "Content-Range", found, .. } if found == "bytes 5-9/100"),
        "{e}"
    );

    let e = open_err(|_, _| {
        (
            "HTTP/1.1 302 Found\r\nLocation: /again\r\nContent-Length: 0\r\n".into(),
            vec![],
        )
    });
    assert!(
        matches!(&e, SourceError::TooManyRedirects { max: 10, .. }),
        "{e}"
    );

    let e = open_err(|_, _| {
        (
            "HTTP/1.1 302 Found\r\nLocation: ftp://x/y\r\nContent-Length: 0\r\n".into(),
            vec![],
        )
    });
    assert!(
        matches!(
            &e,
            SourceError::BadResponse {
                what: "redirect",
                ..
            }
        ),
        "{e}"
    );

    // A URL the client refuses to send (a space in the path); no name lookup: tests stay
    // on 127.0.0.1.
    let e = HttpFile::open(http(), "http://127.0.0.1:1/a b.gguf", 16).unwrap_err();
    assert!(matches!(&e, SourceError::Http { .. }), "{e}");
}

#[test]
fn a_file_changed_after_opening_is_refused() {
    let data = content(1000);
    let (url, _) = serve(move |n, h| {
        let etag = if n == 0 { "\"v1\"" } else { "\"v2\"" };
        partial(h, &data, etag, None)
    });
    let (f, _) = HttpFile::open(http(), &format!("{url}/m.gguf"), 16).unwrap();
    let mut buf = vec![0u8; 10];
    let e = f.read_exact_at(&mut buf, 100).unwrap_err();
    assert!(
        matches!(&e, SourceError::Changed { what: "ETag", expected, found, .. } if expected == "\"v1\"" && found == "\"v2\""),
        "{e}"
    );
    // Reading past the end of the file as opened is refused before any request.
    let mut buf = vec![0u8; 10];
    let e = f.read_exact_at(&mut buf, 995).unwrap_err();
    assert!(
        matches!(&e, SourceError::BadResponse { what: "range", .. }),
        "{e}"
    );
}

#[test]
fn content_ranges_parse() {
    assert_eq!(parse_content_range("bytes 0-99/1000"), Some((0, 99, 1000)));
    assert_eq!(parse_content_range("bytes 5-5/6"), Some((5, 5, 6)));
    assert_eq!(parse_content_range("bytes */1000"), None);
    assert_eq!(parse_total("bytes */0"), Some(0));
}

#[test]
fn the_token_goes_only_to_the_endpoint_origin() {
    let h = Http::new(HttpOptions {
        endpoint: "https://hub.example".into(),
        token: Some("t".into()),
        ..HttpOptions::default()
    });
    assert_eq!(
        h.token_for("https://hub.example:443/o/r/resolve/main/f"),
        Some("t")
    );
    assert_eq!(h.token_for("https://cdn.example/f"), None);
    assert_eq!(h.token_for("http://hub.example/f"), None);
    assert_eq!(h.token_for("https://hub.example:8443/f"), None);
    assert!(!format!("{h:?}").contains("\"t\""));
}

#[test]
fn backoff_doubles_up_to_the_cap() {
    let h = Http::new(HttpOptions::default());
    assert_eq!(h.backoff(1), Duration::from_millis(500));
    assert_eq!(h.backoff(3), Duration::from_secs(2));
    assert_eq!(h.backoff(20), Duration::from_secs(30));
}

#[test]
fn a_connection_broken_after_a_long_delivery_is_reopened_at_once() {
    let h = Http::new(HttpOptions::default());
    assert_eq!(h.delay(1, super::http::RETRY_AT_ONCE_AFTER), Duration::ZERO);
    assert_eq!(h.delay(1, 4096), h.backoff(1));
    assert_eq!(h.delay(2, 0), h.backoff(2));

    // End to end: with an hour of backoff, a range whose first response breaks after
    // 2 MiB still completes (a regression would wait, and fail the timeout below).
    let data = content(3 << 20);
    let served = data.clone();
    let (url, seen) = serve(move |n, h| match n {
        1 => partial(h, &served, "\"v1\"", Some(2 << 20)),
        _ => partial(h, &served, "\"v1\"", None),
    });
    let http = Arc::new(Http::new(HttpOptions {
        backoff: Duration::from_secs(3600),
        attempts: 3,
        env_proxy: false,
        ..HttpOptions::default()
    }));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let (f, _) = HttpFile::open(http, &format!("{url}/m.gguf"), 16).unwrap();
        let mut buf = vec![0u8; 3 << 20];
        let _ = tx.send(f.read_exact_at(&mut buf, 0).map(|()| buf));
    });
    let got = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the retry waited for the backoff")
        .unwrap();
    assert!(got == data);
    assert_eq!(seen.lock().unwrap().len(), 3);
}
