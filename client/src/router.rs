//! Pairs the server's notification streams with the uploads they answer: the first event of
//! each notification stream names the client's upload stream id.

use crate::error::{lost, ClientError};
use edge_proto::Event;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::sync::oneshot;

/// The longest event line accepted.
const MAX_LINE: u64 = 1024 * 1024;

/// One job's notification stream, its first event already read.
#[derive(Debug)]
pub(crate) struct Notifications {
    /// The first event and its line.
    pub first: (Event, Vec<u8>),
    reader: BufReader<quinn::RecvStream>,
}

impl Notifications {
    /// The next event and its raw line; `None` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<(Event, Vec<u8>)>, ClientError> {
        read_event(&mut self.reader).await
    }
}

type Delivery = Result<Notifications, ClientError>;

#[derive(Debug, Default)]
struct Routes {
    /// Uploads waiting for their notification stream.
    waiting: HashMap<u64, oneshot::Sender<Delivery>>,
    /// Notification streams that came before their upload registered.
    early: HashMap<u64, Notifications>,
    /// Why the connection ended, once it has.
    closed: Option<String>,
}

/// Routes notification streams to uploads by upload stream id.
#[derive(Debug, Default)]
pub(crate) struct Router {
    routes: Mutex<Routes>,
}

impl Router {
    /// Starts accepting the connection's notification streams.
    pub(crate) fn start(connection: quinn::Connection) -> Arc<Router> {
        let router = Arc::new(Router::default());
        tokio::spawn(accept(connection, router.clone()));
        router
    }

    /// Registers upload stream `id`; the receiver gets its notification stream.
    pub(crate) fn expect(&self, id: u64) -> oneshot::Receiver<Delivery> {
        let (tx, rx) = oneshot::channel();
        let mut routes = self.lock();
        if let Some(notifications) = routes.early.remove(&id) {
            let _ = tx.send(Ok(notifications));
        } else if let Some(reason) = &routes.closed {
            let _ = tx.send(Err(ClientError::ConnectionLost(reason.clone())));
        } else {
            routes.waiting.insert(id, tx);
        }
        rx
    }

    fn deliver(&self, id: u64, notifications: Notifications) {
        let mut routes = self.lock();
        match routes.waiting.remove(&id) {
            Some(tx) => {
                let _ = tx.send(Ok(notifications));
            }
            None => {
                routes.early.insert(id, notifications);
            }
        }
    }

    fn close(&self, error: &quinn::ConnectionError) {
        let mut routes = self.lock();
        let message = lost(error).to_string();
        for (_, tx) in routes.waiting.drain() {
            let _ = tx.send(Err(lost(error)));
        }
        routes.early.clear();
        routes.closed = Some(message);
    }

    fn lock(&self) -> MutexGuard<'_, Routes> {
        // A panic while holding this lock leaves the maps consistent (single inserts/removes).
        self.routes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

async fn accept(connection: quinn::Connection, router: Arc<Router>) {
    loop {
        match connection.accept_uni().await {
            Ok(stream) => {
                tokio::spawn(route(stream, router.clone()));
            }
            Err(e) => {
                router.close(&e);
                return;
            }
        }
    }
}

/// Reads a notification stream's first event and hands the stream to its upload.
async fn route(stream: quinn::RecvStream, router: Arc<Router>) {
    let mut reader = BufReader::new(stream);
    let Ok(Some(first)) = read_event(&mut reader).await else {
        return;
    };
    let id = match &first.0 {
        Event::Accepted {
            upload_stream: Some(id),
            ..
        }
        | Event::Rejected {
            upload_stream: Some(id),
            ..
        } => *id,
        _ => return,
    };
    router.deliver(id, Notifications { first, reader });
}

async fn read_event(
    reader: &mut BufReader<quinn::RecvStream>,
) -> Result<Option<(Event, Vec<u8>)>, ClientError> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| ClientError::ConnectionLost(format!("notification stream broke: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') && n as u64 == MAX_LINE {
        return Err(ClientError::Protocol(
            "an event line is longer than 1 MiB".into(),
        ));
    }
    let event = Event::from_line(line.trim_ascii_end())
        .map_err(|e| ClientError::Protocol(format!("the server sent an unreadable event ({e})")))?;
    Ok(Some((event, line)))
}
