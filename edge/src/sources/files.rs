//! Files in the folders `[sources] dirs` allows: a job names one as `<folder>/<path inside>`.
//!
//! Nothing outside those folders is ever read. A name is checked as text first (no absolute
//! path, no `..` or `.`, no empty segment, no NUL), then opened relative to the folder with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`: the kernel refuses any resolution that
//! leaves the folder (a `..` or an absolute symlink, a symlink that leads out, `/proc` magic
//! links), atomically, so a file swapped for a symlink while it is opened cannot lead out
//! either. Where the kernel has no `openat2` (before Linux 5.6), each segment is opened with
//! `O_NOFOLLOW` instead, so no symlink is followed at all. The file opened is then checked to
//! be a regular file (not a FIFO, socket or device; it is opened non-blocking, so a FIFO
//! cannot hang the open). Every refusal reads the same to the client, so that it cannot tell
//! whether a path it may not read exists; the log says why.

use rustix::fd::OwnedFd;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The longest file name a job may give.
const MAX_NAME_BYTES: usize = 4096;
/// The most entries a listing reads from one folder.
const MAX_LISTED: usize = 100_000;

/// The folders jobs may read from.
#[derive(Debug, Clone, Default)]
pub(crate) struct Folders {
    folders: Vec<Folder>,
}

/// One allowed folder.
#[derive(Debug, Clone)]
pub(crate) struct Folder {
    /// What jobs call it.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
}

/// A file a job may read, opened.
#[derive(Debug)]
pub(crate) struct OpenedFile {
    /// The open file (a regular file beneath its folder).
    pub file: std::fs::File,
    /// Its size when opened.
    pub size: u64,
    /// Its own name (the last segment).
    pub file_name: String,
}

/// Why a file could not be read or listed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    /// Not in an allowed folder, not there, not a regular file, or not readable: the client
    /// is not told which.
    #[error(
        "`{name}` is not a file this server lets jobs read: name one as <folder>/<path> in a \
         folder of `sources.dirs` ({folders})"
    )]
    NotAllowed {
        /// The name asked for.
        name: String,
        /// The folders there are.
        folders: String,
    },
}

/// An entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Entry {
    /// The name to run it by: `<folder>/<path>`.
    pub name: String,
    /// `file` or `dir`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Its size (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// When it last changed, RFC 3339 (files).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified: Option<String>,
}

impl Folders {
    /// The folders of the config.
    pub(crate) fn new(folders: Vec<Folder>) -> Folders {
        Folders { folders }
    }

    /// Opens the regular file `name` (`<folder>/<path>`) for reading (blocking).
    pub(crate) fn open(&self, name: &str) -> Result<OpenedFile, FileError> {
        let (folder, inside) = self.split(name)?;
        if inside.is_empty() {
            return Err(self.refused(name, "names a folder, not a file"));
        }
        let fd =
            open_beneath(&folder.path, inside, false).map_err(|why| self.refused(name, &why))?;
        let stat = rustix::fs::fstat(&fd).map_err(|e| self.refused(name, &e.to_string()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(self.refused(name, "not a regular file"));
        }
        let file_name = inside.rsplit('/').next().unwrap_or(inside).to_owned();
        Ok(OpenedFile {
            file: std::fs::File::from(fd),
            size: u64::try_from(stat.st_size).unwrap_or(0),
            file_name,
        })
    }

    /// The entries of folder `dir` (`<folder>[/<path>]`; empty: the allowed folders), in
    /// name order (blocking). Symbolic links, FIFOs, sockets and devices are not listed.
    pub(crate) fn list(&self, dir: &str) -> Result<Vec<Entry>, FileError> {
        let dir = dir.trim_end_matches('/');
        if dir.is_empty() {
            let mut entries: Vec<Entry> = self
                .folders
                .iter()
                .map(|f| Entry {
                    name: f.name.clone(),
                    kind: "dir",
                    size: None,
                    modified: None,
                })
                .collect();
            entries.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(entries);
        }
        let (folder, inside) = self.split(dir)?;
        let fd = open_beneath(&folder.path, inside, true).map_err(|why| self.refused(dir, &why))?;
        let mut entries = Vec::new();
        let mut listing =
            rustix::fs::Dir::read_from(&fd).map_err(|e| self.refused(dir, &e.to_string()))?;
        for entry in listing.by_ref() {
            let Ok(entry) = entry else { break };
            let Ok(name) = entry.file_name().to_str() else {
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let Ok(stat) = rustix::fs::statat(&fd, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            else {
                continue;
            };
            let full = format!("{dir}/{name}");
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::RegularFile => entries.push(Entry {
                    name: full,
                    kind: "file",
                    size: Some(u64::try_from(stat.st_size).unwrap_or(0)),
                    modified: Some(rfc3339(stat.st_mtime)),
                }),
                FileType::Directory => entries.push(Entry {
                    name: full,
                    kind: "dir",
                    size: None,
                    modified: None,
                }),
                _ => {}
            }
            if entries.len() == MAX_LISTED {
                break;
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// The folder a name starts with, and the rest of the name, after checking it as text.
    fn split<'n>(&self, name: &'n str) -> Result<(&Folder, &'n str), FileError> {
        if name.len() > MAX_NAME_BYTES || name.contains('\0') || name.starts_with('/') {
            return Err(self.refused(name, "absolute, too long, or holds a NUL"));
        }
        let (first, rest) = name.split_once('/').unwrap_or((name, ""));
        let bad_segment = rest
            .split('/')
            .any(|s| s == ".." || s == "." || (s.is_empty() && !rest.is_empty()));
        if bad_segment {
            return Err(self.refused(name, "a `..`, `.` or empty segment"));
        }
        let folder = self
            .folders
            .iter()
            .find(|f| f.name == first)
            .ok_or_else(|| self.refused(name, "no such folder"))?;
        Ok((folder, rest))
    }

    /// The refusal of `name`, logged with its reason.
    fn refused(&self, name: &str, why: &str) -> FileError {
        tracing::debug!(name, why, "server file refused");
        let folders: Vec<&str> = self.folders.iter().map(|f| f.name.as_str()).collect();
        FileError::NotAllowed {
            name: name.to_owned(),
            folders: if folders.is_empty() {
                "none are".into()
            } else {
                folders.join(", ")
            },
        }
    }
}

/// Opens `inside` (a relative path, checked as text; empty: the folder itself) beneath
/// `root`, refusing anything that resolves outside it; `dir`: a folder, else a file.
fn open_beneath(root: &Path, inside: &str, dir: bool) -> Result<OwnedFd, String> {
    let root = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| format!("the folder itself: {e}"))?;
    let path = if inside.is_empty() { "." } else { inside };
    let mut flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK;
    if dir {
        flags |= OFlags::DIRECTORY;
    }
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS;
    match rustix::fs::openat2(&root, path, flags, Mode::empty(), resolve) {
        Ok(fd) => Ok(fd),
        Err(Errno::NOSYS) => open_without_links(root, inside, flags),
        Err(Errno::XDEV) => Err("it resolves outside the folder".into()),
        Err(Errno::LOOP) => Err("a symbolic link where none may be".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// [`open_beneath`] on a kernel without `openat2`: each segment opened with `O_NOFOLLOW`, so
/// no symbolic link is followed at all.
fn open_without_links(root: OwnedFd, inside: &str, flags: OFlags) -> Result<OwnedFd, String> {
    let mut current = root;
    let mut segments = inside.split('/').filter(|s| !s.is_empty()).peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        let segment_flags = if last {
            flags | OFlags::NOFOLLOW
        } else {
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        current = rustix::fs::openat(&current, segment, segment_flags, Mode::empty())
            .map_err(|e| e.to_string())?;
    }
    Ok(current)
}

/// Seconds since the epoch as RFC 3339.
fn rfc3339(secs: i64) -> String {
    let at = UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0));
    humantime::format_rfc3339_seconds(at.max(SystemTime::UNIX_EPOCH)).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::fs::symlink;

    fn folders(root: &Path) -> Folders {
        Folders::new(vec![Folder {
            name: "exports".into(),
            path: root.to_owned(),
        }])
    }

    fn read(folders: &Folders, name: &str) -> Result<String, FileError> {
        let mut opened = folders.open(name)?;
        let mut text = String::new();
        opened.file.read_to_string(&mut text).unwrap();
        Ok(text)
    }

    #[test]
    fn files_inside_are_read_and_every_way_out_is_refused_alike() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/ports.json"), "inside").unwrap();
        symlink("sub/ports.json", root.join("inner-link")).unwrap();
        symlink(outside.path().join("secret"), root.join("out-abs")).unwrap();
        symlink("../../../../../../../../etc/hostname", root.join("out-rel")).unwrap();
        symlink("/proc/self/environ", root.join("proc")).unwrap();
        symlink(outside.path(), root.join("out-dir")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let folders = folders(root);
        assert_eq!(read(&folders, "exports/sub/ports.json").unwrap(), "inside");
        assert_eq!(read(&folders, "exports/inner-link").unwrap(), "inside");
        let refusals = [
            "exports/../exports/sub/ports.json",
            "exports/sub/../sub/ports.json",
            "exports/./sub/ports.json",
            "exports//sub/ports.json",
            "/etc/hostname",
            "exports/out-abs",
            "exports/out-rel",
            "exports/out-dir/secret",
            "exports/proc",
            "exports/fifo",
            "exports/sub",
            "exports",
            "exports/missing.json",
            "other/ports.json",
            "exports/sub/ports.json\0",
        ];
        let mut messages = std::collections::BTreeSet::new();
        for name in refusals {
            let refused = read(&folders, name).expect_err(name);
            messages.insert(refused.to_string().replacen(name, "NAME", 1));
        }
        assert_eq!(messages.len(), 1, "every refusal reads alike: {messages:?}");
    }

    #[test]
    fn a_file_swapped_for_a_link_out_while_it_is_opened_never_leads_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "secret").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        std::fs::write(root.join("real"), "inside").unwrap();
        symlink(outside.path().join("secret"), root.join("evil")).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut flip = false;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let from = if flip { "real" } else { "evil" };
                    // Atomically replace `target` with the real file or the link out.
                    let _ = std::fs::hard_link(root.join(from), root.join("tmp"));
                    let _ = std::fs::rename(root.join("tmp"), root.join("target"));
                    flip = !flip;
                }
            })
        };
        let folders = folders(&root);
        let (mut read_inside, mut refused) = (0, 0);
        for _ in 0..2000 {
            match read(&folders, "exports/target") {
                Ok(text) => {
                    assert_eq!(text, "inside", "a read must never see the file outside");
                    read_inside += 1;
                }
                Err(_) => refused += 1,
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        swapper.join().unwrap();
        assert!(read_inside + refused == 2000);
    }

    #[test]
    fn listings_show_files_and_folders_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("b-dir")).unwrap();
        std::fs::write(root.join("c.csv"), "a,b\n").unwrap();
        std::fs::write(root.join("a.json"), "[]").unwrap();
        symlink("a.json", root.join("link")).unwrap();
        let folders = folders(root);
        let names: Vec<(String, &str)> = folders
            .list("exports")
            .unwrap()
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect();
        assert_eq!(
            names,
            [
                ("exports/a.json".to_owned(), "file"),
                ("exports/b-dir".to_owned(), "dir"),
                ("exports/c.csv".to_owned(), "file"),
            ]
        );
        assert_eq!(folders.list("").unwrap()[0].name, "exports");
        assert!(folders.list("exports/../..").is_err());
        assert!(folders.list("nope").is_err());
    }
}
