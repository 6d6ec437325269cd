//! Jobs the server starts itself (a watched folder's file, a feed's URL): the same task start,
//! pipeline, events (kept for watchers), job history and limits as a client's job, run as
//! the folder's or feed's subject, with nobody reading the events as they go.

use super::Opened;
use crate::auth::{write_scope, Grant, SOURCES_READ_SCOPE};
use crate::jobs::{self, Notify};
use crate::limits::Admission;
use crate::service::Service;
use crate::shutdown::Shutdown;
use bytes::Bytes;
use edge_proto::{Event, Format};
use edge_tasks::pipeline::JobSpec;
use serde_json::{Map, Value};
use std::sync::Arc;
use tracing::{warn, Instrument};

/// Who runs a server-started job, and what it runs.
pub(crate) struct Internal<'a> {
    /// The transport the job history names (`watch`, `feed`).
    pub transport: &'static str,
    /// The subject it runs as.
    pub sub: &'a str,
    /// The task.
    pub task: &'a str,
    /// The format, when configured (else the source's, else sniffed).
    pub format: Option<Format>,
    /// Task parameters.
    pub params: &'a Map<String, Value>,
}

impl Internal<'_> {
    /// What the job may do: run its task, and read sources.
    pub(crate) fn grant(&self) -> Grant {
        Grant::internal(
            self.sub,
            vec![write_scope(self.task), SOURCES_READ_SCOPE.into()],
        )
    }

    /// Runs job `job` on `opened` (admitted by `admission`) to its end; its final event
    /// (`None` when it never started).
    pub(crate) async fn run(
        &self,
        service: &Arc<Service>,
        job: String,
        opened: Opened,
        admission: Admission,
        shutdown: &Shutdown,
    ) -> Option<Event> {
        let format = self.format.or(opened.format);
        let info = opened.upload_info(None);
        let grant = self.grant();
        let started = jobs::start_task(&job, self.task, format, self.params, info, &grant, service);
        let (plugin, task) = match started {
            Ok(started) => started,
            Err(refusal) => {
                warn!(
                    job,
                    "a job the server started was refused: {}", refusal.message
                );
                return Some(refusal.event(None));
            }
        };
        let spec = JobSpec {
            job: job.clone(),
            upload_stream: None,
            task: plugin.name.to_owned(),
            format,
            name: Some(opened.name.clone()),
            size: opened.size,
            source: Some(opened.record.clone()),
            unchanged: opened.unchanged,
            sha256: None,
            atomic: false,
        };
        let span = tracing::info_span!("job", job = %job, task = plugin.name, sub = %self.sub);
        let mut body = opened.body;
        let ended = jobs::run(
            self.transport,
            self.sub,
            admission,
            spec,
            plugin,
            task,
            &mut body,
            Bytes::new(),
            Discard,
            service.clone(),
            shutdown.clone(),
            None,
        )
        .instrument(span)
        .await;
        ended.report.map(|report| report.last)
    }
}

/// A job's events with no one to read them (they are kept for watchers and the history).
struct Discard;

impl Notify for Discard {
    async fn send(&mut self, _line: Bytes) -> bool {
        true
    }

    async fn close(self) {}
}
