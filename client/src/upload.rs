//! One job: the header and the body out on a new unidirectional stream, the events back.

use crate::connect::{Client, Transport};
use crate::digest::{resume_body, Body, HeldBody, PrefixHashes, SeekableBody};
use crate::error::ClientError;
use edge_proto::{AppCode, Event, JobHeader};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// The read buffer: the client holds at most this much of a file at once (plus QUIC's send
/// window).
const BUFFER_BYTES: usize = 64 * 1024;

/// A job to upload.
pub struct UploadJob {
    /// The job header (the client's token is added if it has none).
    pub header: JobHeader,
    /// The body, read with a fixed buffer as it is sent. For a resume (`header.resume`),
    /// the whole body again: its bytes before the server's offset are checked, not sent (a
    /// [`Body::Seekable`] body goes to the SHA-256 state nearest the offset and hashes at
    /// most a few MiB; another is read and hashed from its start).
    pub body: Body,
}

impl std::fmt::Debug for UploadJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadJob")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl UploadJob {
    /// A job with this header and body.
    pub fn new(header: JobHeader, body: Box<dyn AsyncRead + Send + Unpin>) -> UploadJob {
        UploadJob {
            header,
            body: Body::Stream(body),
        }
    }

    /// A job whose body holds what a resume needs itself (standard input).
    pub fn held(header: JobHeader, body: Box<dyn HeldBody>) -> UploadJob {
        UploadJob {
            header,
            body: Body::Held(body),
        }
    }

    /// A job whose body is a file (or anything seekable) with the SHA-256 states `prefix`.
    pub fn seekable(
        header: JobHeader,
        body: Box<dyn SeekableBody>,
        prefix: Arc<PrefixHashes>,
    ) -> UploadJob {
        UploadJob {
            header,
            body: Body::Seekable(body, prefix),
        }
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq)]
pub struct JobResult {
    /// The final event: `done`, `failed` or `rejected`.
    pub last: Event,
    /// Body bytes the client sent (the server may have stopped reading earlier).
    pub bytes_sent: u64,
}

/// How long a cancelled job waits for the server's final event (the server ends a cancelled
/// job at once; this bounds a server or network that does not answer).
pub const CANCEL_WAIT: Duration = Duration::from_secs(2);

impl Client {
    /// Uploads one job, calling `on_event` for every event as it arrives; returns once the
    /// final event has come.
    pub async fn upload(
        &self,
        job: UploadJob,
        mut on_event: impl FnMut(&Event) + Send,
    ) -> Result<JobResult, ClientError> {
        self.upload_lines(job, |event, _line| on_event(event)).await
    }

    /// Like [`Client::upload`], also handing over each event's raw NDJSON line.
    pub async fn upload_lines(
        &self,
        job: UploadJob,
        on_event: impl FnMut(&Event, &[u8]) + Send,
    ) -> Result<JobResult, ClientError> {
        self.upload_until(job, &CancellationToken::new(), on_event)
            .await
    }

    /// Like [`Client::upload_lines`], until `cancel` is cancelled: then the upload stream is
    /// reset with `cancelled` (0x30), and the server's final event (`failed` / `cancelled`,
    /// with the committed count) is awaited for at most [`CANCEL_WAIT`]. Without it the job
    /// ends in [`ClientError::Cancelled`], with the last committed count the server sent.
    pub async fn upload_until(
        &self,
        mut job: UploadJob,
        cancel: &CancellationToken,
        mut on_event: impl FnMut(&Event, &[u8]) + Send,
    ) -> Result<JobResult, ClientError> {
        if job.header.token.is_none() {
            job.header.token = self.token.clone();
        }
        let (connection, router) = match &self.transport {
            Transport::Quic { connection, router } => (connection, router),
            Transport::Tcp(tcp) => {
                return tcp
                    .upload(job, self.token.as_deref(), cancel, &mut on_event)
                    .await
            }
        };
        let mut stream = connection
            .open_uni()
            .await
            .map_err(|e| crate::error::lost(&e))?;
        let delivery = router.expect(u64::from(stream.id()));
        let name = job
            .header
            .name
            .clone()
            .unwrap_or_else(|| "the upload".into());
        // A resume sends its body from the offset the server answers (`resumed`).
        let (resumed_tx, resumed_rx) = tokio::sync::oneshot::channel();
        let resumed = job.header.resume.is_some().then_some(resumed_rx);
        let send = async {
            let body = Outgoing {
                header: &job.header,
                body: &mut job.body,
                name: &name,
                resumed,
            };
            let sent = tokio::select! {
                sent = send_body(&mut stream, body) => Some(sent),
                _ = cancel.cancelled() => None,
            };
            match sent {
                Some(sent) => sent,
                None => {
                    let _ = stream.reset(quinn::VarInt::from_u32(AppCode::Cancelled.value()));
                    Err(Sent::Cancelled)
                }
            }
        };
        let committed = AtomicU64::new(0);
        let receive = async {
            // Owned here: once the events end without `resumed`, the sender learns it.
            let mut resumed_tx = Some(resumed_tx);
            let mut notifications = delivery
                .await
                .map_err(|_| ClientError::ConnectionLost("the connection closed".into()))??;
            let (first, line) = notifications.first.clone();
            on_event(&first, &line);
            if first.is_final() {
                return Ok(first);
            }
            while let Some((event, line)) = notifications.next().await? {
                if let Event::Committed { records, .. } = &event {
                    committed.store(*records, Ordering::Relaxed);
                }
                if let Event::Resumed {
                    offset,
                    prefix_sha256,
                    ..
                } = &event
                {
                    if let Some(tx) = resumed_tx.take() {
                        let _ = tx.send((*offset, prefix_sha256.clone()));
                    }
                }
                on_event(&event, &line);
                if event.is_final() {
                    return Ok(event);
                }
            }
            Err(ClientError::Protocol(
                "the notification stream ended without a final event".into(),
            ))
        };
        // Once cancelled, the final event has CANCEL_WAIT to come.
        let receive = async {
            tokio::select! {
                last = receive => last,
                _ = async {
                    cancel.cancelled().await;
                    tokio::time::sleep(CANCEL_WAIT).await;
                } => Err(ClientError::Cancelled {
                    committed: committed.load(Ordering::Relaxed),
                }),
            }
        };
        let (sent, last) = tokio::join!(send, receive);
        let bytes_sent = match sent {
            Ok(n) => n,
            // The server stopped reading because the job ended (refused or failed): the final
            // event says why.
            Err(Sent::Stopped(n)) => n,
            Err(Sent::Failed(e @ ClientError::Input { .. })) => return Err(e),
            Err(Sent::Failed(e @ ClientError::PrefixMismatch { .. })) => return Err(e),
            // The final event is what counts: sending may break because the job ended.
            Err(Sent::Failed(e)) => match &last {
                Ok(_) => 0,
                Err(_) => return Err(e),
            },
            Err(Sent::Cancelled) => 0,
        };
        let last = last?;
        Ok(JobResult { last, bytes_sent })
    }
}

/// Why sending stopped early.
enum Sent {
    /// The server stopped the stream after this many body bytes.
    Stopped(u64),
    /// Reading the input or the connection failed.
    Failed(ClientError),
    /// The job was cancelled: the stream was reset.
    Cancelled,
}

/// What goes out on a job's upload stream.
struct Outgoing<'a> {
    header: &'a JobHeader,
    body: &'a mut Body,
    name: &'a str,
    /// For a resume: the server's `resumed` offset and prefix digest, once it came.
    resumed: Option<tokio::sync::oneshot::Receiver<(u64, String)>>,
}

/// Writes the header, then the body through a fixed buffer, then FIN. A resume waits for
/// the server's offset, checks that the body's bytes before it are the ones the server has
/// (their SHA-256), and sends the body from there.
async fn send_body(stream: &mut quinn::SendStream, out: Outgoing<'_>) -> Result<u64, Sent> {
    let Outgoing {
        header,
        body,
        name,
        resumed,
    } = out;
    let mut sent = 0u64;
    let write_error = |e: quinn::WriteError, sent: u64| match e {
        quinn::WriteError::Stopped(_) => Sent::Stopped(sent),
        quinn::WriteError::ConnectionLost(e) => Sent::Failed(crate::error::lost(&e)),
        other => Sent::Failed(ClientError::ConnectionLost(other.to_string())),
    };
    stream
        .write_all(&header.encode())
        .await
        .map_err(|e| write_error(e, 0))?;
    let mut buf = vec![0u8; BUFFER_BYTES];
    if let Some(resumed) = resumed {
        // No `resumed`: the job was refused; its final event says why.
        let Ok((offset, prefix)) = resumed.await else {
            return Err(Sent::Stopped(0));
        };
        let read = resume_body(body, offset, &mut buf).await;
        let matches = match read {
            Ok(digest) => digest == prefix,
            Err(source) => {
                let _ = stream.reset(quinn::VarInt::from_u32(AppCode::PrefixMismatch.value()));
                return Err(Sent::Failed(ClientError::Input {
                    name: name.to_owned(),
                    source,
                }));
            }
        };
        if !matches {
            let _ = stream.reset(quinn::VarInt::from_u32(AppCode::PrefixMismatch.value()));
            return Err(Sent::Failed(ClientError::PrefixMismatch {
                name: name.to_owned(),
                job: header.resume.clone().unwrap_or_default(),
                offset,
            }));
        }
    }
    loop {
        let n = match body.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(source) => {
                let _ = stream.reset(quinn::VarInt::from_u32(AppCode::Cancelled.value()));
                return Err(Sent::Failed(ClientError::Input {
                    name: name.to_owned(),
                    source,
                }));
            }
        };
        stream
            .write_all(&buf[..n])
            .await
            .map_err(|e| write_error(e, sent))?;
        sent += n as u64;
    }
    let _ = stream.finish();
    Ok(sent)
}
