//! Job bodies the server reads itself instead of the upload (`source=` on an HTTP upload, the
//! `source` field of an `edge/1` header): a file in a folder `[sources] dirs` allows
//! (`file:<folder>/<path>`). Such a job is a job like any other: the same tasks, events, job
//! history and token gate, plus the scope `sources:read`.
//!
//! # Layout
//! - `files`: the allowed folders, opening a file beneath one, listing them.
//! - `watch`: watched folders, whose files become jobs by themselves.
//! - `url`: URLs, fetched safely (`edge-fetch`) while the job decodes them.
//! - `feeds`: URLs fetched as jobs on a schedule.
//! - `internal`: jobs the server starts itself (watched folders, feeds).

pub(crate) mod feeds;
pub(crate) mod files;
mod internal;
pub(crate) mod url;
pub(crate) mod watch;

use crate::auth::{Grant, SOURCES_READ_SCOPE};
use crate::config::{SourcesConfig, WatchConfig};
use crate::jobs::{Body, Broken, Refusal};
use bytes::{Bytes, BytesMut};
use edge_proto::{ErrorCode, Format};
use edge_tasks::fetches::Validators;
use edge_tasks::task::UploadInfo;
use edge_tasks::Store;
use files::{Folder, Folders};
use serde_json::{json, Value};
use std::path::PathBuf;
use tokio::io::AsyncReadExt;

/// How much of a file one read takes.
const READ_BYTES: usize = 256 * 1024;

/// What the server may read job bodies from.
#[derive(Debug, Default)]
pub(crate) struct Sources {
    /// The allowed folders.
    pub folders: Folders,
    /// The folders whose files become jobs by themselves.
    pub watched: Vec<Watched>,
    /// How URLs are fetched.
    pub policy: edge_fetch::Policy,
    /// URLs fetched as jobs on a schedule.
    pub feeds: Vec<crate::config::FeedConfig>,
}

/// A watched folder.
#[derive(Debug, Clone)]
pub(crate) struct Watched {
    /// What jobs call the folder.
    pub name: String,
    /// Where it is.
    pub path: PathBuf,
    /// What its files run.
    pub watch: WatchConfig,
    /// The subject its jobs run as when `watch.sub` does not say: `watch:<name>`.
    pub default_sub: String,
}

impl Watched {
    /// The subject its jobs run as.
    pub(crate) fn subject(&self) -> String {
        self.watch
            .sub
            .clone()
            .unwrap_or_else(|| self.default_sub.clone())
    }
}

/// A source opened for a job.
#[derive(Debug)]
pub(crate) struct Opened {
    /// Its bytes.
    pub body: SourceBody,
    /// Its own name (a file's last segment).
    pub name: String,
    /// Its size, when known.
    pub size: Option<u64>,
    /// The format its name suggests.
    pub format: Option<Format>,
    /// What the `accepted` event and the job history say of it.
    pub record: Value,
    /// The source has not changed since its last fetch (a 304): nothing is read.
    pub unchanged: bool,
}

impl Opened {
    /// What the task is told of the body; `name`: the one the client gave, if any.
    pub(crate) fn upload_info(&self, name: Option<String>) -> UploadInfo {
        UploadInfo {
            name: Some(name.unwrap_or_else(|| self.name.clone())),
            size: self.size,
            content_type: None,
        }
    }
}

/// The bytes of a source.
#[derive(Debug)]
pub(crate) enum SourceBody {
    /// A file beneath an allowed folder.
    File(tokio::fs::File),
    /// A URL's body, as it downloads, and what to keep of its response once its job is
    /// done (for `if_changed`).
    Url(Box<edge_fetch::Body>, Option<(String, Validators)>),
    /// A source that could not be read: the job fails with this at once.
    Failed(Option<Broken>),
}

impl Body for SourceBody {
    async fn chunk(&mut self) -> Result<Option<Bytes>, Broken> {
        match self {
            SourceBody::File(file) => {
                let mut buf = BytesMut::with_capacity(READ_BYTES);
                match file.read_buf(&mut buf).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Ok(Some(buf.freeze())),
                    Err(e) => Err(Broken::aborted(format!("reading the file failed: {e}"))),
                }
            }
            SourceBody::Url(body, _) => url::chunk(body).await,
            SourceBody::Failed(broken) => match broken.take() {
                Some(broken) => Err(broken),
                None => Ok(None),
            },
        }
    }

    async fn ended(&mut self, store: &Store, done: bool) {
        if let (SourceBody::Url(_, validators), true) = (self, done) {
            if let Some((url, validators)) = validators.take() {
                url::remember(store, url, validators).await;
            }
        }
    }
}

impl Sources {
    /// The sources the config allows (reads its CA files), or what is wrong with it.
    pub(crate) fn new(config: &SourcesConfig) -> Result<Sources, String> {
        let folders = config
            .dirs
            .iter()
            .map(|dir| Folder {
                name: dir.name.clone(),
                path: dir.path.clone(),
            })
            .collect();
        let watched = config
            .dirs
            .iter()
            .filter_map(|dir| {
                Some(Watched {
                    name: dir.name.clone(),
                    path: dir.path.clone(),
                    watch: dir.watch.clone()?,
                    default_sub: format!("watch:{}", dir.name),
                })
            })
            .collect();
        Ok(Sources {
            folders: Folders::new(folders),
            watched,
            policy: url::policy(config)?,
            feeds: config.feeds.clone(),
        })
    }

    /// Opens `spec` for a job of `grant`'s, or says why not; `if_changed`: for a URL, ask
    /// its origin whether it changed since the last fetch whose job was done.
    pub(crate) async fn open(
        &self,
        spec: &str,
        grant: &Grant,
        store: &Store,
        if_changed: bool,
    ) -> Result<Opened, Refusal> {
        if !grant.allows(SOURCES_READ_SCOPE) {
            return Err(Refusal {
                code: ErrorCode::Forbidden,
                message: format!(
                    "the token of `{}` does not hold the scope `{SOURCES_READ_SCOPE}`, which a \
                     job needs to read a file on the server or a URL",
                    grant.sub
                ),
                retry_after: None,
            });
        }
        if spec.starts_with("https://") || spec.starts_with("http://") {
            return url::open(&self.policy, store, spec, if_changed).await;
        }
        let Some(name) = spec.strip_prefix("file:") else {
            return Err(bad_source(format!(
                "`source` is `file:<folder>/<path>`, a file in a folder of `sources.dirs`, or \
                 an `https://` URL; `{spec}` is neither"
            )));
        };
        let folders = self.folders.clone();
        let name = name.to_owned();
        let opened = tokio::task::spawn_blocking(move || folders.open(&name).map(|f| (f, name)))
            .await
            .map_err(|e| bad_source(format!("opening the file failed: {e}")))?;
        let (file, name) = opened.map_err(|e| bad_source(e.to_string()))?;
        Ok(Opened {
            format: Format::from_file_name(&file.file_name),
            body: SourceBody::File(tokio::fs::File::from_std(file.file)),
            size: Some(file.size),
            record: json!({ "file": name }),
            name: file.file_name,
            unchanged: false,
        })
    }
}

fn bad_source(message: String) -> Refusal {
    Refusal {
        code: ErrorCode::BadParams,
        message,
        retry_after: None,
    }
}
