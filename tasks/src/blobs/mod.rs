//! The `blobs` plugin: files stored as they are (pictures, documents) under a name, and served
//! back. A job's body is hashed (BLAKE3) and staged in chunks as it arrives, never held whole;
//! the blob becomes visible, or replaces the old version, in one transaction once the upload
//! completed and its digest is known (see [`stored`]).
//!
//! A cut-off upload can be resumed: the job's cursor, written in the transaction that stages
//! its chunks, holds where they are, how many, and the BLAKE3 state after them
//! ([`BlobState`]); a resumed job goes on after its last staged chunk. A base64 body cannot
//! be resumed (its offsets are the text's, not the blob's).
//!
//! Parameters: `name` (default: the upload's file name, made safe), `content_type` (default:
//! the HTTP `Content-Type`, else sniffed), `encoding=base64`, `if_absent`, `digest` (the
//! BLAKE3 the client expects).

mod base64;
pub mod media;
mod postgres;
pub mod stored;

use crate::reads::{Content, Page, PageRequest, ReadError, Reads};
use crate::record::{Record, Rejection};
use crate::resume::blake3::{Blake3, SavedBlake3};
use crate::resume::sha256::hex;
use crate::resume::{Fence, Save};
use crate::store::{Store, Sync, Ticket};
use crate::table::Storage;
use crate::task::{Context, JobRef, ParamError, Plugin, Task, TaskError};
use base64::{Base64Decoder, NotBase64};
use edge_proto::reads::{Column, Filter};
use edge_proto::{ErrorCode, Format, Summary};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use stored::{Meta, Publish, Published, Stage, Staged, CHUNK_BYTES};

/// The default of `limits.blob_bytes_per_sub`: 10 GiB per token subject.
pub const DEFAULT_BYTES_PER_SUB: u64 = 10 * 1024 * 1024 * 1024;

/// The largest page of the list.
pub const MAX_PAGE: usize = 1000;

/// Ready chunks are staged once this many bytes of them wait (see `BlobTask::stage_if_due`).
const STAGE_BYTES: usize = 2 * 1024 * 1024;

/// The plugin's registration.
pub const PLUGIN: Plugin = Plugin {
    name: "blobs",
    description: "Stores the body as it is (a picture, a document) under a name, with its size, media type and BLAKE3 digest; visible once the upload completed, served back by GET /v1/blobs/{name}. Parameters: name, content_type, encoding=base64, if_absent, digest.",
    formats: &[Format::Raw],
    schema: SCHEMA,
    csv_columns: None,
    create,
    storage: Storage {
        version: 1,
        tables: &[&stored::BLOBS, &stored::CHUNKS, &stored::STAGING, &stored::USAGE],
        migrate: None,
        postgres: postgres::SCHEMA,
        copy: Some(stored::copy),
    },
    reads: Some(Reads {
        scope: "blobs:read",
        item: "blob",
        filters: &[Filter::new("prefix", "only blobs whose name starts with this")],
        max_page: MAX_PAGE,
        columns: &[
            Column::new("NAME", "/name"),
            Column::new("SIZE", "/size"),
            Column::new("TYPE", "/content_type"),
            Column::new("CREATED", "/created"),
            Column::new("BY", "/sub"),
        ],
        one: read_one,
        page: read_page,
        history: None,
        content: Some(open_content),
        delete: Some(delete),
    }),
    revert: None,
    prune: Some(prune),
};

const SCHEMA: &str = r#"{
  "description": "Any bytes: the body is stored as it is, not cut into records. Parameters (edge/1 `params`, or the query string): name (A-Z a-z 0-9 . _ -, default: the file name), content_type (default: the Content-Type header, else sniffed), encoding (`base64`: the body is base64 text, or a data: URL), if_absent (true: fail `already_exists` rather than replace), digest (the BLAKE3 hex the body must have, else `digest_mismatch`).",
  "type": "string",
  "contentEncoding": "binary"
}"#;

/// What a job asked for, from its parameters and its upload.
#[derive(Debug)]
struct Params {
    name: String,
    content_type: Option<String>,
    base64: bool,
    if_absent: bool,
    digest: Option<String>,
}

fn params(params: &Map<String, Value>, context: &Context) -> Result<Params, ParamError> {
    let text = |key: &str| -> Result<Option<&str>, ParamError> {
        match params.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(other) => Err(ParamError(format!(
                "`{key}` must be a string (got {other})"
            ))),
        }
    };
    if let Some(unknown) = params.keys().find(|k| {
        !["name", "content_type", "encoding", "if_absent", "digest"].contains(&k.as_str())
    }) {
        return Err(ParamError(format!(
            "task `blobs` takes name, content_type, encoding, if_absent and digest (got `{unknown}`)"
        )));
    }
    let name = match text("name")?.or(context.upload.name.as_deref()) {
        Some(given) if text("name")?.is_some() => {
            media::check_name(given).map_err(|e| ParamError(e.0))?;
            given.to_owned()
        }
        Some(file) => media::name_from_file(file).ok_or_else(|| {
            ParamError(format!(
                "the file name `{}` makes no blob name; pass name=... (A-Z a-z 0-9 . _ -)",
                file.escape_debug()
            ))
        })?,
        None => {
            return Err(ParamError(
                "name the blob: `?name=photo.jpg` (or params.name, or upload a named file)".into(),
            ))
        }
    };
    let mut base64 = match text("encoding")? {
        None | Some("identity" | "binary") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ParamError(format!(
                "`encoding` is `base64` or `identity` (got `{other}`)"
            )))
        }
    };
    // The HTTP Content-Type counts unless it says nothing (curl's defaults).
    let header_type = context.upload.content_type.as_deref().filter(|t| {
        let essence = t
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        !matches!(
            essence.as_str(),
            "" | "application/octet-stream" | "application/x-www-form-urlencoded"
        )
    });
    let content_type = match text("content_type")?.or(header_type) {
        Some(given) => {
            let (kind, is_base64) = media::check_type(given).map_err(|e| ParamError(e.0))?;
            base64 |= is_base64;
            Some(kind)
        }
        None => None,
    };
    let if_absent = match params.get("if_absent") {
        None | Some(Value::Bool(false)) => false,
        Some(Value::Bool(true)) => true,
        Some(Value::String(s)) if matches!(s.as_str(), "true" | "1" | "yes" | "") => true,
        Some(Value::String(s)) if matches!(s.as_str(), "false" | "0" | "no") => false,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 1) => n.as_u64() == Some(1),
        Some(other) => {
            return Err(ParamError(format!(
                "`if_absent` is true or false (got {other})"
            )))
        }
    };
    let digest = match text("digest")? {
        None => None,
        Some(given) => {
            let hex = given.strip_prefix("blake3:").unwrap_or(given);
            if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(ParamError(format!(
                    "`digest` is the body's BLAKE3 as 64 hex digits (`b3sum FILE` prints it); got `{}`",
                    given.escape_debug()
                )));
            }
            Some(hex.to_ascii_lowercase())
        }
    };
    Ok(Params {
        name,
        content_type,
        base64,
        if_absent,
        digest,
    })
}

fn create(
    params_given: &Map<String, Value>,
    context: &Context,
) -> Result<Box<dyn Task>, ParamError> {
    let params = params(params_given, context)?;
    let job = context.job.clone().unwrap_or_else(|| JobRef {
        id: String::new(),
        sub: String::new(),
    });
    let store = &context.store;
    let quota = context.limits.blob_bytes_per_sub;
    // What the store says before the body: the version this would replace, what the subject
    // uses besides it, and an id for the chunks. A store that fails here (a PostgreSQL store
    // away) fails the job with its error, at the first byte.
    let looked_up = (|| {
        let existing = stored::meta(store, &params.name)?;
        let mut used = stored::usage(store, &job.sub)?;
        if let Some(old) = existing.as_ref().filter(|old| old.sub == job.sub) {
            used = used.saturating_sub(old.size);
        }
        Ok::<_, crate::StoreError>((existing, used, stored::new_id(store)?))
    })();
    let (early, used, id) = match looked_up {
        // Refusals known before the body: the job fails at its first byte, having stored
        // nothing.
        Ok((Some(_), used, id)) if params.if_absent => (
            Some(TaskError::Refused {
                code: ErrorCode::AlreadyExists,
                message: format!(
                    "a blob named `{}` exists and the job asked not to replace it (if_absent); delete it first, or upload without if_absent",
                    params.name
                ),
            }),
            used,
            id,
        ),
        Ok((_, used, id)) => match context.upload.size {
            Some(size) if quota > 0 && used.saturating_add(size) > quota => (
                Some(TaskError::Refused {
                    code: ErrorCode::LimitExceeded,
                    message: stored::quota_message(&job.sub, used, size, quota),
                }),
                used,
                id,
            ),
            _ => (None, used, id),
        },
        // No id: the job fails before it stages anything.
        Err(e) => (Some(TaskError::Store(e)), 0, 0),
    };
    // Enough buffers for the chunks of two stage writes (see `stage_if_due`).
    let (recycle, spare) = std::sync::mpsc::sync_channel(2 * STAGE_BYTES / CHUNK_BYTES + 2);
    Ok(Box::new(BlobTask {
        store: store.clone(),
        id,
        decoder: params.base64.then(Base64Decoder::new),
        params,
        job,
        quota,
        used,
        early,
        hasher: Blake3::new(),
        spare,
        recycle,
        size: 0,
        head: Vec::new(),
        filling: Vec::new(),
        ready: Vec::new(),
        next_index: 0,
        staged: false,
        in_flight: None,
        started_ms: crate::time::now_ms(),
        published: None,
        abandoned: false,
        fenced: false,
        fence: None,
    }))
}

/// One `blobs` job.
struct BlobTask {
    store: Store,
    params: Params,
    job: JobRef,
    /// Where its chunks go.
    id: u64,
    decoder: Option<Base64Decoder>,
    /// The subject's quota (0: none), and what it uses besides this blob.
    quota: u64,
    used: u64,
    /// A refusal known before the body.
    early: Option<TaskError>,
    /// The BLAKE3 of the sealed chunks.
    hasher: Blake3,
    /// Bytes taken so far (decoded).
    size: u64,
    /// The first bytes, for sniffing the media type.
    head: Vec<u8>,
    /// The chunk being filled.
    filling: Vec<u8>,
    /// Full chunks for the next commit.
    ready: Vec<stored::Chunk>,
    /// Chunk buffers the store's writer is done with, to fill again (see [`Stage`]), and
    /// their way back.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    recycle: std::sync::mpsc::SyncSender<Vec<u8>>,
    next_index: u64,
    /// Whether its staging entry went to the store.
    staged: bool,
    in_flight: Option<Ticket<()>>,
    started_ms: u64,
    /// The summary, once published.
    published: Option<Value>,
    /// The job failed: nothing more is staged.
    abandoned: bool,
    /// The job keeps a cursor: chunks staged between its commits are checked against this
    /// run of the job ([`Fence`], from its last commit), so that a run a resume took over
    /// cannot write after the cursor's epoch moved on; before the first commit of a resumed
    /// run, they wait for it.
    fenced: bool,
    fence: Option<Fence>,
}

/// What a resumable blob job keeps in its cursor: where its staged chunks are, how many, and
/// what it knew of them.
#[derive(Debug, Serialize, Deserialize)]
struct BlobState {
    /// The id its chunks are staged under.
    id: u64,
    /// The bytes staged (whole chunks).
    size: u64,
    /// The chunks staged.
    chunks: u64,
    /// The BLAKE3 state after them.
    blake3: SavedBlake3,
    /// The first bytes, in hex, for sniffing the media type.
    head: String,
    /// The media type the job was given (by a parameter, or the HTTP `Content-Type`).
    content_type: Option<String>,
    /// When the upload started (ms since the Unix epoch).
    started_ms: u64,
}

impl From<NotBase64> for TaskError {
    fn from(e: NotBase64) -> TaskError {
        TaskError::Refused {
            code: ErrorCode::SyntaxError,
            message: format!("{e} (encoding=base64)"),
        }
    }
}

impl BlobTask {
    /// Takes decoded bytes: hashes them and cuts them into chunks.
    fn take(&mut self, mut bytes: &[u8]) -> Result<(), TaskError> {
        self.size += bytes.len() as u64;
        if self.quota > 0 && self.used.saturating_add(self.size) > self.quota {
            return Err(TaskError::Refused {
                code: ErrorCode::LimitExceeded,
                message: stored::quota_message(&self.job.sub, self.used, self.size, self.quota),
            });
        }
        if self.head.len() < media::SNIFF_BYTES {
            let room = media::SNIFF_BYTES - self.head.len();
            self.head.extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        while !bytes.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = match self.spare.try_recv() {
                    Ok(mut buffer) => {
                        buffer.clear();
                        buffer
                    }
                    Err(_) => Vec::with_capacity(CHUNK_BYTES),
                };
            }
            let room = CHUNK_BYTES - self.filling.len();
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            self.filling.extend_from_slice(now);
            bytes = rest;
            if self.filling.len() == CHUNK_BYTES {
                self.seal();
                self.stage_if_due()?;
            }
        }
        Ok(())
    }

    /// Moves the chunk being filled to the next commit (hashed: a whole chunk at once lets
    /// BLAKE3 hash many of its parts side by side).
    fn seal(&mut self) {
        if self.filling.is_empty() {
            return;
        }
        let chunk = std::mem::take(&mut self.filling);
        self.hasher.update(&chunk);
        self.ready.push((self.next_index, chunk));
        self.next_index += 1;
    }

    fn staging_entry(&mut self) -> Option<Staged> {
        if self.staged {
            return None;
        }
        self.staged = true;
        Some(Staged {
            name: self.params.name.clone(),
            job: self.job.id.clone(),
            sub: self.job.sub.clone(),
            started_ms: self.started_ms,
            node: self.store.node().to_owned(),
        })
    }

    /// Stages the full chunks once [`STAGE_BYTES`] of them are ready, one write at a time:
    /// while the last write runs, the next batch grows to twice that, then waits for it. So
    /// a blob job holds a few MiB whatever the size of the upload, and the store writes
    /// while the body arrives.
    fn stage_if_due(&mut self) -> Result<(), TaskError> {
        let ready: usize = self.ready.iter().map(|(_, c)| c.len()).sum();
        if ready < STAGE_BYTES || (self.fenced && self.fence.is_none()) {
            return Ok(());
        }
        if let Some(ticket) = &mut self.in_flight {
            match ticket.try_wait() {
                Some(answer) => {
                    self.in_flight = None;
                    answer?;
                }
                None if ready < 2 * STAGE_BYTES => return Ok(()),
                None => self.wait_in_flight()?,
            }
        }
        self.stage_ready(None).map(drop)
    }

    /// Hands the full chunks (and the staging entry, the first time) to the store's writer,
    /// with the job's cursor after them if given; no write may be running. A job refused
    /// before its body (or whose store failed before it had an id) stages nothing. Returns
    /// the cursor when it was not written.
    fn stage_ready(&mut self, cursor: Option<Save>) -> Result<Option<Save>, TaskError> {
        if self.abandoned || self.early.is_some() || (self.ready.is_empty() && self.staged) {
            return Ok(cursor);
        }
        // Staged chunks need not reach the disk before the blob is published: publishing
        // commits durably, which makes every earlier commit durable too. Unless they come
        // with the job's cursor: a resume after a crash goes on after them.
        let sync = match cursor {
            Some(_) => Sync::Now,
            None => Sync::WithNextCommit,
        };
        let change = Stage {
            id: self.id,
            staged: self.staging_entry(),
            chunks: std::mem::take(&mut self.ready),
            recycle: Some(self.recycle.clone()),
            fence: self.fence.clone().filter(|_| cursor.is_none()),
            cursor,
        };
        self.in_flight = Some(self.store.submit(change, sync));
        Ok(None)
    }

    fn wait_in_flight(&mut self) -> Result<(), TaskError> {
        match self.in_flight.take() {
            Some(ticket) => ticket.wait().map_err(TaskError::from),
            None => Ok(()),
        }
    }

    /// The media type: the client's, a `data:` URL's, else sniffed.
    fn content_type(&self) -> String {
        if let Some(given) = &self.params.content_type {
            return given.clone();
        }
        let from_data_url = self
            .decoder
            .as_ref()
            .and_then(Base64Decoder::data_type)
            .and_then(|t| media::check_type(t).ok())
            .map(|(kind, _)| kind);
        from_data_url.unwrap_or_else(|| media::sniff(&self.head, &self.params.name).to_owned())
    }
}

impl Task for BlobTask {
    fn record(&mut self, _record: &Record<'_>) -> Result<(), Rejection> {
        Err(Rejection::invalid(
            "task `blobs` stores bodies as they are; it takes no records",
        ))
    }

    fn bytes(&mut self, bytes: &[u8]) -> Result<(), TaskError> {
        if let Some(refused) = self.early.take() {
            return Err(refused);
        }
        match self.decoder.take() {
            Some(mut decoder) => {
                let fed = decoder.feed(bytes, &mut |decoded| self.take(decoded));
                self.decoder = Some(decoder);
                fed
            }
            None => self.take(bytes),
        }
    }

    /// Stages the chunks sealed so far, with the job's cursor (and this task's state after
    /// them) in the same transaction.
    fn start_commit(&mut self, cursor: Option<Save>) -> Result<Option<Save>, TaskError> {
        self.wait_in_flight()?;
        if let Some(save) = &cursor {
            self.fenced = true;
            self.fence = Some(save.fence());
        }
        let cursor = cursor.map(|save| save.with_task(self.state()));
        self.stage_ready(cursor)
    }

    /// Whole chunks, unless the body is base64 (whose offsets are not the blob's).
    fn raw_unit(&self) -> Option<usize> {
        (!self.params.base64).then_some(CHUNK_BYTES)
    }

    fn state(&self) -> Option<Value> {
        if self.params.base64 {
            return None;
        }
        let state = BlobState {
            id: self.id,
            size: self.size,
            chunks: self.next_index,
            blake3: self.hasher.save(),
            head: hex(&self.head),
            content_type: self.params.content_type.clone(),
            started_ms: self.started_ms,
        };
        Some(serde_json::to_value(state).expect("a blob's state always serializes"))
    }

    /// Goes on with the chunks an earlier run of the job staged: their id (adopted from
    /// that run), count, size and BLAKE3, once the store confirms they are still staged.
    fn restore(&mut self, state: &Value) -> Result<(), TaskError> {
        let not_resumable = |why: String| TaskError::Refused {
            code: ErrorCode::NotResumable,
            message: format!("the blob upload cannot go on: {why}; send it again as a new job"),
        };
        let state = BlobState::deserialize(state)
            .map_err(|e| not_resumable(format!("its cursor holds no blob state ({e})")))?;
        let consistent = state.size == state.chunks * CHUNK_BYTES as u64
            && self.hasher.is_empty()
            && self.size == 0;
        let hasher = Blake3::restore(&state.blake3)
            .filter(|hasher| consistent && hasher.len() == state.size)
            .ok_or_else(|| not_resumable("its cursor's blob state is damaged".into()))?;
        let head = crate::resume::sha256::unhex(&state.head)
            .ok_or_else(|| not_resumable("its cursor's blob state is damaged".into()))?;
        match stored::staged(&self.store, state.id)? {
            Some(staged) if staged.job == self.job.id => {}
            _ => {
                return Err(not_resumable(format!(
                    "the {} bytes it had staged are gone (pruned, or the store was restored from a backup)",
                    state.size
                )))
            }
        }
        stored::release(self.id);
        stored::adopt(state.id);
        self.id = state.id;
        self.size = state.size;
        self.next_index = state.chunks;
        self.hasher = hasher;
        self.head = head;
        self.started_ms = state.started_ms;
        if self.params.content_type.is_none() {
            self.params.content_type = state.content_type;
        }
        // The staging entry is written again by the first commit: it names this node.
        self.staged = false;
        self.fenced = true;
        Ok(())
    }

    fn finish_commit(&mut self, wait: bool) -> Option<Result<(), TaskError>> {
        let Some(ticket) = self.in_flight.as_mut() else {
            return Some(Ok(()));
        };
        let answer = if wait { None } else { Some(ticket.try_wait()?) };
        let ticket = self.in_flight.take()?;
        Some(
            answer
                .unwrap_or_else(|| ticket.wait())
                .map_err(TaskError::from),
        )
    }

    fn pending_bytes(&self) -> usize {
        self.ready.iter().map(|(_, c)| c.len()).sum::<usize>() + self.filling.len()
    }

    fn finish(&mut self) -> Result<u64, TaskError> {
        if let Some(refused) = self.early.take() {
            return Err(refused);
        }
        if let Some(mut decoder) = self.decoder.take() {
            let finished = decoder.finish(&mut |decoded| self.take(decoded));
            self.decoder = Some(decoder);
            finished?;
        }
        self.seal();
        self.wait_in_flight()?;
        let digest = self.hasher.hex();
        if let Some(expected) = &self.params.digest {
            if *expected != digest {
                return Err(TaskError::Refused {
                    code: ErrorCode::DigestMismatch,
                    message: format!(
                        "the body's BLAKE3 digest is {digest}, not the {expected} the job expected; nothing was stored{}",
                        if stored::meta(&self.store, &self.params.name).ok().flatten().is_some() {
                            " (the old version stays)"
                        } else {
                            ""
                        }
                    ),
                });
            }
        }
        let meta = Meta {
            id: self.id,
            size: self.size,
            content_type: self.content_type(),
            digest,
            created_ms: crate::time::now_ms(),
            sub: self.job.sub.clone(),
            job: self.job.id.clone(),
        };
        let publish = Publish {
            name: self.params.name.clone(),
            meta: meta.clone(),
            chunks: std::mem::take(&mut self.ready),
            if_absent: self.params.if_absent,
            quota: self.quota,
        };
        match self.store.submit(publish, Sync::Now).wait()? {
            Published::Stored { replaced } => {
                let mut summary = meta.describe(&self.params.name);
                summary["replaced"] = json!(replaced.is_some());
                self.published = Some(summary);
                Ok(1)
            }
            Published::Refused { code, message } => Err(TaskError::Refused { code, message }),
        }
    }

    fn abandon(&mut self) {
        if self.published.is_some() {
            return;
        }
        self.abandoned = true;
        self.ready.clear();
        self.filling = Vec::new();
        let _ = self.wait_in_flight();
        if self.staged {
            if let Err(e) = self
                .store
                .submit(stored::Discard(self.id), Sync::WithNextCommit)
                .wait()
            {
                tracing::warn!("cannot drop a cut-off blob upload (pruned at the next start): {e}");
            }
        }
    }

    fn progress(&self) -> Option<Value> {
        Some(json!({"stored_bytes": self.size}))
    }

    fn summary(&self) -> Summary {
        self.published.clone().unwrap_or(Value::Null)
    }
}

impl Drop for BlobTask {
    fn drop(&mut self) {
        stored::release(self.id);
    }
}

fn read_one(context: &Context, name: &str) -> Result<Option<Value>, ReadError> {
    Ok(stored::meta(&context.store, name)?.map(|meta| meta.describe(name)))
}

fn read_page(context: &Context, request: &PageRequest<'_>) -> Result<Page, ReadError> {
    let prefix = request.filter("prefix").unwrap_or("");
    let (items, more) = stored::list(&context.store, prefix, request.after, request.limit)?;
    let next = more
        .then(|| items.last().map(|(name, _)| name.clone()))
        .flatten();
    Ok(Page {
        items: items
            .iter()
            .map(|(name, meta)| meta.describe(name))
            .collect(),
        next,
    })
}

fn open_content(context: &Context, name: &str) -> Result<Option<Box<dyn Content>>, ReadError> {
    Ok(stored::open(&context.store, name)?.map(|c| Box::new(c) as Box<dyn Content>))
}

fn delete(context: &Context, name: &str, by: &JobRef) -> Result<Option<Value>, ReadError> {
    let removed = context
        .store
        .submit(stored::Remove(name.to_owned()), Sync::Now)
        .wait()?;
    Ok(removed.map(|meta| {
        tracing::info!(blob = name, size = meta.size, by = %by.sub, "blob deleted");
        json!({"deleted": name, "size": meta.size, "digest": meta.digest})
    }))
}

fn prune(
    context: &Context,
    _now: std::time::SystemTime,
    stop: &dyn Fn() -> bool,
) -> Result<u64, crate::StoreError> {
    stored::prune_orphans(&context.store, stop)
}

/// How many chunks the store holds, for tests.
#[cfg(test)]
fn chunk_count(store: &Store) -> u64 {
    use redb::ReadableTableMetadata;
    let txn = store.read().unwrap();
    txn.open_table(stored::CHUNKS).unwrap().len().unwrap()
}

#[cfg(test)]
mod tests;
