//! Opening the files a user names: parents, children, recipes and chat templates.
//!
//! Only regular files are read. A FIFO with no writer would block `open` forever, and a device
//! such as `/dev/zero` never ends, so every input is opened with `O_NONBLOCK` (which returns at
//! once for a FIFO and changes nothing for a regular file on Linux) and checked with `fstat`
//! before a byte is read. Text inputs are read up to a cap that each caller names, so a wrong
//! path costs a one-line error, not the machine's memory.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why an input file could not be used. [`InputError::is_content`] tells a problem with what
/// the file holds (exit code 3) from one with getting at it (exit code 4).
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// Opening, inspecting or reading the file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file being opened or read.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The path names a FIFO, a device, a directory or a socket.
    #[error("{path}: is a {kind}, not a regular file; give the path of a file")]
    NotRegular {
        /// The path as given.
        path: PathBuf,
        /// What it is (`directory`, `named pipe (FIFO)`, `character device`, ...).
        kind: &'static str,
    },
    /// A text input is longer than the cap for its kind.
    #[error(
        "{path}: {what} of {found}{more} bytes is over the {} cap for a {what}; is this the right file?",
        show_cap(*.max)
    )]
    TooLarge {
        /// The text file being read.
        path: PathBuf,
        /// The kind of input (`recipe`, `chat template`, `manifest`).
        what: &'static str,
        /// The cap for that kind, in bytes.
        max: u64,
        /// Bytes the file has (or, when its size is not known in advance, bytes read).
        found: u64,
        /// `"+"` when `found` is only what was read before stopping at the cap.
        more: &'static str,
    },
    /// A text input is not UTF-8.
    #[error("{path}: {what} is not valid UTF-8 (at byte {offset}); save it as UTF-8")]
    NotUtf8 {
        /// The text file being read.
        path: PathBuf,
        /// The kind of input (`recipe`, `chat template`, `manifest`).
        what: &'static str,
        /// Byte offset in the file of the first byte that is not valid UTF-8.
        offset: u64,
    },
}

impl InputError {
    /// Whether the file was read but what it holds is unusable (too large, not UTF-8), as
    /// opposed to a failure to get at it at all.
    pub fn is_content(&self) -> bool {
        matches!(
            self,
            InputError::TooLarge { .. } | InputError::NotUtf8 { .. }
        )
    }
}

/// `1 MiB` for whole MiB, bytes otherwise.
fn show_cap(max: u64) -> String {
    if max >= 1 << 20 && max.is_multiple_of(1 << 20) {
        format!("{} MiB", max >> 20)
    } else {
        format!("{max}-byte")
    }
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "named pipe (FIFO)"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else if t.is_socket() {
        "socket"
    } else {
        "special file"
    }
}

/// Open `path` for reading if it is a regular file (after following symlinks), without ever
/// blocking in `open`; returns the file and its metadata.
pub fn open_regular(path: &Path) -> Result<(File, Metadata), InputError> {
    let io = |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    };
    // O_NONBLOCK: opening a FIFO that has no writer returns at once instead of waiting for
    // one. O_NOCTTY: naming a terminal does not make it ours. For a regular file neither
    // changes how reads behave, so the handle is used as is.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(InputError::NotRegular {
            path: path.to_path_buf(),
            kind: kind_of(meta.file_type()),
        });
    }
    Ok((file, meta))
}

/// Read a regular UTF-8 text file of at most `max` bytes; `what` names it in errors
/// ("recipe", "chat template").
pub fn read_text(path: &Path, what: &'static str, max: u64) -> Result<String, InputError> {
    let (file, meta) = open_regular(path)?;
    let too_large = |found, more| InputError::TooLarge {
        path: path.to_path_buf(),
        what,
        max,
        found,
        more,
    };
    if meta.len() > max {
        return Err(too_large(meta.len(), ""));
    }
    // A file that grows, or reports no size (as /proc files do), still stops at the cap.
    let mut buf = Vec::with_capacity(meta.len() as usize);
    file.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| InputError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    if buf.len() as u64 > max {
        return Err(too_large(buf.len() as u64, "+"));
    }
    String::from_utf8(buf).map_err(|e| InputError::NotUtf8 {
        path: path.to_path_buf(),
        what,
        offset: e.utf8_error().valid_up_to() as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn only_regular_files_are_opened() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        mkfifo(&fifo);
        // Returns at once although nothing writes to the FIFO.
        assert!(matches!(
            open_regular(&fifo),
            Err(InputError::NotRegular { kind, .. }) if kind.contains("FIFO")
        ));
        assert!(matches!(
            open_regular(Path::new("/dev/zero")),
            Err(InputError::NotRegular {
                kind: "character device",
                ..
            })
        ));
        assert!(matches!(
            open_regular(dir.path()),
            Err(InputError::NotRegular {
                kind: "directory",
                ..
            })
        ));
        let e = open_regular(&dir.path().join("missing")).unwrap_err();
        assert!(matches!(e, InputError::Io { .. }) && !e.is_content());
        // A symlink to a regular file is fine.
        let file = dir.path().join("f");
        std::fs::write(&file, "x").unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("link")).unwrap();
        assert!(open_regular(&dir.path().join("link")).is_ok());
    }

    #[test]
    fn text_is_read_up_to_the_cap_and_must_be_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t");
        std::fs::write(&p, "héllo").unwrap();
        assert_eq!(read_text(&p, "recipe", 6).unwrap(), "héllo");
        let e = read_text(&p, "recipe", 5).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::TooLarge {
                    max: 5,
                    found: 6,
                    ..
                }
            ) && e.is_content()
        );
        std::fs::write(&p, b"caf\xe9").unwrap();
        let e = read_text(&p, "recipe", 100).unwrap_err();
        assert!(matches!(e, InputError::NotUtf8 { offset: 3, .. }) && e.is_content());
        // The cap holds for files that report no size, such as those in /proc.
        let e = read_text(Path::new("/proc/self/maps"), "recipe", 8).unwrap_err();
        assert!(
            matches!(
                e,
                InputError::TooLarge {
                    found: 9,
                    more: "+",
                    ..
                }
            ),
            "{e}"
        );
    }
}
