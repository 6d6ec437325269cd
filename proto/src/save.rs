//! Saving a stored file (`<task> get KEY [-o FILE]`, for items that are files): the bytes go
//! to standard output, or to `FILE.partial`, renamed to `FILE` only once every byte arrived
//! and their BLAKE3 digest is the one the server holds. A cut-off or corrupted download never
//! leaves a file that looks complete. (Feature `cli`.)

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why a download was not saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SaveError {
    /// Writing failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// Where.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The bytes are not the ones stored.
    #[error(
        "the bytes received ({size} bytes, BLAKE3 {got}) are not the stored file (BLAKE3 {expected}); nothing was saved"
    )]
    Corrupt {
        /// Bytes received.
        size: u64,
        /// Their digest.
        got: String,
        /// The stored file's digest.
        expected: String,
    },
}

/// A download being saved.
#[derive(Debug)]
pub struct Download {
    out: Out,
    hasher: blake3::Hasher,
    size: u64,
}

#[derive(Debug)]
enum Out {
    Stdout(BufWriter<io::Stdout>),
    File {
        file: BufWriter<File>,
        partial: PathBuf,
        target: PathBuf,
        done: bool,
    },
}

impl Download {
    /// Starts saving to `output` (through `output.partial`), or to standard output.
    pub fn create(output: Option<&Path>) -> Result<Download, SaveError> {
        let out = match output {
            None => Out::Stdout(BufWriter::with_capacity(256 * 1024, io::stdout())),
            Some(target) => {
                let mut partial = target.as_os_str().to_owned();
                partial.push(".partial");
                let partial = PathBuf::from(partial);
                let file = File::create(&partial).map_err(|source| SaveError::Write {
                    path: partial.display().to_string(),
                    source,
                })?;
                Out::File {
                    file: BufWriter::with_capacity(256 * 1024, file),
                    partial,
                    target: target.to_owned(),
                    done: false,
                }
            }
        };
        Ok(Download {
            out,
            hasher: blake3::Hasher::new(),
            size: 0,
        })
    }

    /// Writes the next bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), SaveError> {
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        let (written, path) = match &mut self.out {
            Out::Stdout(out) => (out.write_all(bytes), "standard output".to_owned()),
            Out::File { file, partial, .. } => {
                (file.write_all(bytes), partial.display().to_string())
            }
        };
        written.map_err(|source| SaveError::Write { path, source })
    }

    /// Ends the download: checks that its BLAKE3 is `digest` (hex), then puts the file in
    /// place; returns the bytes saved. A file whose digest differs is removed.
    pub fn finish(mut self, digest: &str) -> Result<u64, SaveError> {
        let got = self.hasher.finalize().to_hex().to_string();
        if !got.eq_ignore_ascii_case(digest) {
            return Err(SaveError::Corrupt {
                size: self.size,
                got,
                expected: digest.to_owned(),
            });
        }
        match &mut self.out {
            Out::Stdout(out) => out.flush().map_err(|source| SaveError::Write {
                path: "standard output".into(),
                source,
            })?,
            Out::File {
                file,
                partial,
                target,
                done,
            } => {
                let error = |source| SaveError::Write {
                    path: target.display().to_string(),
                    source,
                };
                file.flush().map_err(error)?;
                file.get_ref().sync_all().map_err(error)?;
                std::fs::rename(&*partial, &*target).map_err(error)?;
                *done = true;
            }
        }
        Ok(self.size)
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Out::File { partial, done, .. } = &self.out {
            if !done {
                let _ = std::fs::remove_file(partial);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_appears_only_whole_and_checked() {
        let dir = std::env::temp_dir().join(format!("edge-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("cat.jpg");
        let digest = blake3::hash(b"hello world").to_hex().to_string();

        let mut download = Download::create(Some(&target)).unwrap();
        download.write(b"hello ").unwrap();
        assert!(!target.exists(), "not before it is whole");
        download.write(b"world").unwrap();
        assert_eq!(download.finish(&digest).unwrap(), 11);
        assert_eq!(std::fs::read(&target).unwrap(), b"hello world");

        let other = dir.join("other.jpg");
        let mut download = Download::create(Some(&other)).unwrap();
        download.write(b"hello there").unwrap();
        let err = download.finish(&digest).unwrap_err();
        assert!(matches!(err, SaveError::Corrupt { size: 11, .. }), "{err}");
        assert!(!other.exists());
        assert!(
            !dir.join("other.jpg.partial").exists(),
            "no partial file left"
        );

        let cut = dir.join("cut.jpg");
        let mut download = Download::create(Some(&cut)).unwrap();
        download.write(b"hel").unwrap();
        drop(download);
        assert!(!cut.exists() && !dir.join("cut.jpg.partial").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
