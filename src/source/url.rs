//! Just enough URL handling for remote parents: `hf://` names resolved against the Hub
//! endpoint, origins (the token stays on the endpoint's), redirect targets, and the forms of a
//! URL that may be shown or recorded ([`redact`], [`public`]). No query parsing: URLs are
//! requested as the user or the server wrote them, but never shown with their user info,
//! query or fragment, which may hold credentials or signatures (`?X-Amz-Signature=…`).

/// Whether a command-line argument names a remote file rather than a local path.
pub fn is_remote(arg: &str) -> bool {
    ["http://", "https://", "hf://"]
        .iter()
        .any(|s| arg.len() >= s.len() && arg[..s.len()].eq_ignore_ascii_case(s))
}

/// The remote name a local path that does not exist was most likely meant to be: `hf:/ORG/…`
/// or `https:/HOST/…` (one slash, or none) read as `hf://ORG/…`, `https://HOST/…`.
pub fn near_miss(arg: &str) -> Option<String> {
    ["https:", "http:", "hf:"].iter().find_map(|scheme| {
        let rest = arg
            .get(..scheme.len())
            .filter(|s| s.eq_ignore_ascii_case(scheme))
            .map(|_| &arg[scheme.len()..])?;
        let rest = rest.trim_start_matches('/');
        (!rest.is_empty() && !is_remote(arg)).then(|| format!("{}//{rest}", &arg[..scheme.len()]))
    })
}

/// `scheme://authority/rest` -> (scheme lowercased, authority, `/rest` or "").
fn split(url: &str) -> Option<(String, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let scheme = scheme.to_ascii_lowercase();
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    if authority.is_empty() || authority.contains('@') {
        return None;
    }
    Some((scheme, authority, path))
}

/// `scheme://[userinfo@]host/path?query#fragment` -> (`scheme://`, `host`, `/path`, whether
/// there was user info, whether there was a non-empty query); `None` for what is not a URL.
fn parts(url: &str) -> Option<(&str, &str, &str, bool, bool)> {
    let i = url.find("://")?;
    let (scheme, rest) = (&url[..i + 3], &url[i + 3..]);
    let (before_fragment, _) = rest.split_once('#').unwrap_or((rest, ""));
    let (before_query, query) = before_fragment
        .split_once('?')
        .unwrap_or((before_fragment, ""));
    let end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(end);
    let (had_user, host) = match authority.rsplit_once('@') {
        Some((_, host)) => (true, host),
        None => (false, authority),
    };
    Some((scheme, host, path, had_user, !query.is_empty()))
}

/// `url` as it may be recorded in a file people share: without user info, query or fragment
/// (`https://user:pw@host/x.gguf?sig=1#a` -> `https://host/x.gguf`). Anything that is not a
/// `scheme://` URL is returned unchanged.
pub fn public(url: &str) -> String {
    match parts(url) {
        Some((scheme, host, path, _, _)) => format!("{scheme}{host}{path}"),
        None => url.to_string(),
    }
}

/// `url` as messages and reports show it: [`public`], with `***@` where user info was and
/// `?…` where a query was, so the reader sees that something was left out but not what.
pub fn redact(url: &str) -> String {
    match parts(url) {
        Some((scheme, host, path, user, query)) => format!(
            "{scheme}{}{host}{path}{}",
            if user { "***@" } else { "" },
            if query { "?…" } else { "" }
        ),
        None => url.to_string(),
    }
}

/// The last path segment of a URL's [`public`] form (`x.gguf` of `https://h/d/x.gguf?sig=1`).
pub fn file_name(url: &str) -> String {
    let p = public(url);
    p.rsplit('/').next().unwrap_or("").to_string()
}

/// Whether `url` is an absolute http(s) URL with a host (and no user info).
pub fn is_valid(url: &str) -> bool {
    split(url).is_some()
}

/// `scheme://host:port`, lowercased, with the default port made explicit, so that
/// `https://Hub.example` and `https://hub.example:443` are one origin and `:8080` another.
pub fn origin(url: &str) -> Option<String> {
    let (scheme, authority, _) = split(url)?;
    let authority = authority.to_ascii_lowercase();
    let has_port = match authority.rfind(':') {
        // An IPv6 literal's colons are inside brackets.
        Some(i) => !authority[i..].contains(']'),
        None => false,
    };
    let default = if scheme == "https" { 443 } else { 80 };
    Some(if has_port {
        format!("{scheme}://{authority}")
    } else {
        format!("{scheme}://{authority}:{default}")
    })
}

/// The absolute URL a `Location` header points to, from the URL that answered.
pub fn join(base: &str, location: &str) -> Option<String> {
    let location = location.trim();
    if split(location).is_some() {
        return Some(location.to_string());
    }
    // Another scheme (`ftp:`, `file:`): not something to follow.
    if let Some((scheme, _)) = location.split_once(':')
        && !scheme.is_empty()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"+.-".contains(&b))
    {
        return None;
    }
    let (scheme, authority, path) = split(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        let url = format!("{scheme}://{rest}");
        return is_valid(&url).then_some(url);
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{authority}{location}"));
    }
    // Relative to the directory of the base path (query dropped).
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dir = match path.rfind('/') {
        Some(i) => &path[..=i],
        None => "/",
    };
    Some(format!("{scheme}://{authority}{dir}{location}"))
}

/// Percent-encode everything but unreserved characters (and `/` when `keep_slash`).
fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `hf://ORG/REPO/PATH/FILE.gguf[@REVISION]` -> `{endpoint}/ORG/REPO/resolve/{REVISION or
/// main}/PATH/FILE.gguf`, as huggingface_hub's `hf_hub_url` builds it (a revision such as
/// `refs/pr/1` is encoded as one path segment). Other arguments are returned unchanged.
pub fn resolve_hf(arg: &str, endpoint: &str) -> Result<String, String> {
    let Some(spec) = arg
        .get(..5)
        .filter(|s| s.eq_ignore_ascii_case("hf://"))
        .map(|_| &arg[5..])
    else {
        return Ok(arg.to_string());
    };
    // A revision follows the last '@', unless the name itself ends the argument.
    let (path, revision) = match spec.rsplit_once('@') {
        Some((p, r)) if !spec.ends_with(".gguf") => (p, r),
        _ => (spec, "main"),
    };
    if revision.is_empty() {
        return Err("empty revision after '@'".into());
    }
    let parts: Vec<&str> = path.split('/').collect();
    if parts.len() < 3 || parts.iter().any(|p| p.is_empty()) {
        return Err("expected hf://ORG/REPO/PATH/FILE.gguf[@REVISION]".into());
    }
    let endpoint = endpoint.trim_end_matches('/');
    if split(endpoint).is_none() {
        return Err(format!(
            "HF_ENDPOINT '{endpoint}' is not an http(s) URL such as https://huggingface.co"
        ));
    }
    Ok(format!(
        "{endpoint}/{}/{}/resolve/{}/{}",
        encode(parts[0], false),
        encode(parts[1], false),
        encode(revision, false),
        encode(&parts[2..].join("/"), true)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scheme_with_too_few_slashes_is_named() {
        assert_eq!(
            near_miss("hf:/org/repo/x.gguf").as_deref(),
            Some("hf://org/repo/x.gguf")
        );
        assert_eq!(
            near_miss("https:host/x.gguf").as_deref(),
            Some("https://host/x.gguf")
        );
        assert_eq!(
            near_miss("HF:/o/r/x.gguf").as_deref(),
            Some("HF://o/r/x.gguf")
        );
        for fine in [
            "hf://o/r/x.gguf",
            "models/hf/x.gguf",
            "hf:",
            "x.gguf",
            "hfx:/a",
        ] {
            assert_eq!(near_miss(fine), None, "{fine}");
        }
    }

    #[test]
    fn hf_names_resolve_like_hf_hub_url() {
        let e = "https://huggingface.co";
        assert_eq!(
            resolve_hf("hf://unsloth/DeepSeek-R1-GGUF/UD-IQ1_S/R1-00001-of-00003.gguf", e),
            Ok(
                "https://huggingface.co/unsloth/DeepSeek-R1-GGUF/resolve/main/UD-IQ1_S/R1-00001-of-00003.gguf"
                    .into()
            )
        );
        assert_eq!(
            resolve_hf("hf://o/r/m.gguf@refs/pr/1", "http://127.0.0.1:9/"),
            Ok("http://127.0.0.1:9/o/r/resolve/refs%2Fpr%2F1/m.gguf".into())
        );
        assert_eq!(
            resolve_hf("hf://o/r/a b.gguf@v1", e),
            Ok("https://huggingface.co/o/r/resolve/v1/a%20b.gguf".into())
        );
        assert!(resolve_hf("hf://o/r", e).is_err());
        assert!(resolve_hf("hf://o//m.gguf", e).is_err());
        assert!(resolve_hf("hf://o/r/m.gguf@", e).is_err());
        assert!(resolve_hf("hf://o/r/m.gguf", "ftp://x").is_err());
        assert_eq!(resolve_hf("/local/m.gguf", e), Ok("/local/m.gguf".into()));
    }

    #[test]
    fn origins_and_redirect_targets() {
        assert_eq!(
            origin("https://Hub.example/x?y").as_deref(),
            Some("https://hub.example:443")
        );
        assert_eq!(
            origin("http://127.0.0.1:8080/a").as_deref(),
            Some("http://127.0.0.1:8080")
        );
        assert_eq!(origin("http://[::1]/a").as_deref(), Some("http://[::1]:80"));
        assert_eq!(origin("http://u:p@host/a"), None);
        assert_eq!(origin("ftp://host/a"), None);
        let base = "https://h.example/o/r/resolve/main/d/f.gguf";
        assert_eq!(
            join(base, "https://cdn.example/x?sig=1").as_deref(),
            Some("https://cdn.example/x?sig=1")
        );
        assert_eq!(
            join(base, "/cdn/f.gguf").as_deref(),
            Some("https://h.example/cdn/f.gguf")
        );
        assert_eq!(
            join(base, "//cdn.example/f").as_deref(),
            Some("https://cdn.example/f")
        );
        assert_eq!(
            join(base, "g.gguf").as_deref(),
            Some("https://h.example/o/r/resolve/main/d/g.gguf")
        );
        assert_eq!(join(base, "ftp://x/y"), None);
        assert_eq!(join(base, "file:/etc/passwd"), None);
        assert!(is_remote("HTTPS://x") && is_remote("hf://o/r/f") && !is_remote("./x.gguf"));
    }

    #[test]
    fn urls_are_shown_and_recorded_without_secrets() {
        let u = "https://user:pa55w0rd@h.example:8080/d/x.gguf?X-Amz-Signature=abc/def#frag";
        assert_eq!(public(u), "https://h.example:8080/d/x.gguf");
        assert_eq!(redact(u), "https://***@h.example:8080/d/x.gguf?…");
        assert_eq!(file_name(u), "x.gguf");
        // `@` and `/` inside the query are not user info or path.
        let q = "http://h/x.gguf?a=b@c/d";
        assert_eq!(public(q), "http://h/x.gguf");
        assert_eq!(redact(q), "http://h/x.gguf?…");
        assert_eq!(redact("http://h/x.gguf?"), "http://h/x.gguf");
        assert_eq!(public("http://u@h"), "http://h");
        for plain in ["http://h/x.gguf", "hf://o/r/x.gguf@v1", "/local/x?.gguf"] {
            assert_eq!(public(plain), plain);
            assert_eq!(redact(plain), plain);
        }
    }
}
