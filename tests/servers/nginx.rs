//! A real nginx for remote-parent tests, configured here in a temporary directory: it
//! listens on 127.0.0.1 at a free port, serves `root` (ranges, ETags, as any static server),
//! and emulates the Hub's `/ORG/REPO/resolve/main/PATH` -> CDN redirect with a 302 to
//! `/cdn/ORG/REPO/PATH`, saying which commit `main` is as the Hub does (`X-Repo-Commit`).
//! Started by the test, killed when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The commit the Hub emulation says `main` is (`X-Repo-Commit` on its redirects); it also
/// serves `/resolve/REPO_COMMIT/`.
pub const REPO_COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

pub struct Nginx {
    child: Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// A TCP port free on 127.0.0.1 now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn config(dir: &Path, root: &Path, port: u16) -> String {
    let d = dir.display();
    format!(
        r#"worker_processes 1;
daemon off;
master_process off;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 256; }}
http {{
    access_log {d}/access.log;
    client_body_temp_path {d}/tmp;
    proxy_temp_path {d}/tmp;
    fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp;
    scgi_temp_path {d}/tmp;
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port};
        absolute_redirect off;
        location ~ ^/([^/]+)/([^/]+)/resolve/(?:main|{commit})/(.*)$ {{
            add_header X-Repo-Commit {commit} always;
            return 302 /cdn/$1/$2/$3;
        }}
        location /cdn/ {{
            alias {root}/;
        }}
    }}
}}
"#,
        root = root.display(),
        commit = REPO_COMMIT
    )
}

impl Nginx {
    /// Start nginx serving `root`. Panics (with nginx's error log) if it does not come up.
    pub fn start(bin: &Path, root: &Path) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let mut last_log = String::new();
        // A free port can be taken between the probe and nginx's bind: try a few.
        for _ in 0..5 {
            let port = free_port();
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, config(dir.path(), root, port)).unwrap();
            let mut child = Command::new(bin)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("nginx starts");
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Nginx { child, port, dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
            last_log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
        }
        panic!("nginx did not start: {last_log}");
    }

    /// nginx's access log so far (for failure messages).
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
