//! HTTP/3 on the same UDP port as `edge/1` (ALPN `h3`): uploads as jobs, with the job's
//! events streamed back as the response body while the request body is still arriving, and
//! a JSON read API.
//!
//! | request | answer |
//! |---|---|
//! | `PUT` or `POST /v1/jobs/{task}` | `200`, `application/x-ndjson`: the job's events |
//! | `GET /v1/<task>/{key}` | one item of a plugin with read endpoints (`ports`: a port), or `404`; for items that are files (`blobs`), the file's bytes (`Range`, `If-None-Match`) |
//! | `DELETE /v1/<task>/{key}` | deletes an item, for a plugin whose items can be (`blobs`; scope `<task>:delete`) |
//! | `GET /v1/<task>?<filters>&limit=&after=` | a page of its items, `{"items":[..],"next"}` |
//! | `GET /v1/jobs?limit=&before=` | job history, most recent first |
//! | `GET /v1/jobs/{id}` | one job's record, or `404` |
//! | `GET /v1/jobs/{id}/events?after=N` | the job's events, replayed then live (NDJSON, or SSE by `Accept`) |
//! | `HEAD /v1/uploads/{id}` | a cut-off job's `Upload-Offset` (where its body goes on), `204` |
//! | `PATCH /v1/uploads/{id}` | the rest of its body from `Upload-Offset`: the job goes on, `200` NDJSON; `409` on another offset |
//! | `DELETE /v1/uploads/{id}` | cancels it (`204`) |
//! | `GET /v1/tasks` | every task with its formats and record schema |
//! | `POST /v1/login` | a name and a password (JSON or form) for a token with the user's scopes |
//! | `GET /healthz` | `200 {"status":"ok"}`, `503` while draining |
//! | `GET /`, `/app.js`, `/app.css`, `/icon.svg`, `/file.svg` | the web page (`web/`, embedded; no token) |
//!
//! Refusals are plain statuses with `{"error":{"code","message"}}`.

mod content;
mod events;
mod exchange;
mod login;
mod page;
mod read;
mod respond;
mod resumable;
mod routes;
mod upload;

use crate::server::IntoVarInt;
use crate::service::Service;
use crate::shutdown::Shutdown;
use crate::window::ConnectionWindow;
use bytes::Bytes;
use edge_proto::AppCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

/// The largest request header block accepted (RFC 9114 §4.2.2, SETTINGS_MAX_FIELD_SECTION_SIZE).
const MAX_FIELD_SECTION: u64 = 16 * 1024;

/// How long a draining connection with no request left waits for the client to close it.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

pub(crate) use exchange::Stream;
pub(crate) use exchange::{TcpExchange, TcpFrame};
pub(crate) use routes::{route, Connection};

type Resolver = h3::server::RequestResolver<Guarded, Bytes>;
type H3Stream = h3::server::RequestStream<GuardedBidi, Bytes>;
type Guarded = crate::h3guard::Connection;
type GuardedBidi = crate::h3guard::Guarded<h3_quinn::BidiStream<Bytes>>;
type SendHalf = h3::server::RequestStream<h3_quinn::SendStream<Bytes>, Bytes>;
type RecvHalf = h3::server::RequestStream<crate::h3guard::Guarded<h3_quinn::RecvStream>, Bytes>;

/// Runs one HTTP/3 connection until the client closes it or the server shuts down.
pub(crate) async fn serve(
    connection: quinn::Connection,
    service: Arc<Service>,
    window: Arc<ConnectionWindow>,
    authorised: CancellationToken,
    shutdown: Shutdown,
) {
    debug!("h3 connection");
    let guarded = crate::h3guard::Connection::new(connection.clone());
    let gate = guarded.gate();
    let built = h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build(guarded)
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            debug!("h3 setup failed: {e}");
            return;
        }
    };
    let requests = TaskTracker::new();
    let mut draining = false;
    loop {
        tokio::select! {
            _ = shutdown.draining(), if !draining => {
                draining = true;
                requests.close();
                // GOAWAY with the id above the last request accepted (RFC 9114 §5.2): those
                // below it are answered; the gate refuses every later one with
                // H3_REQUEST_REJECTED, unprocessed, so a client may retry them elsewhere.
                let goaway = gate.close();
                debug!(goaway, "draining: GOAWAY");
                // h3 sends the id above its last accepted request (the same one: the gate
                // sees each stream just before h3 accepts it), or 0 when there was none.
                if let Err(e) = h3.shutdown(1).await {
                    debug!("GOAWAY not sent: {e}");
                    break;
                }
            }
            _ = requests.wait(), if draining => break,
            // Accepting goes on while draining: it is what refuses late requests at once.
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    let connection = routes::Connection {
                        service: service.clone(),
                        window: Some(window.clone()),
                        authorised: authorised.clone(),
                        shutdown: shutdown.clone(),
                        peer: connection.remote_address().ip(),
                    };
                    requests.spawn(routes::handle(resolver, connection).in_current_span());
                }
                Ok(None) => break,
                Err(e) => {
                    debug!("h3 connection ended: {e}");
                    break;
                }
            },
        }
    }
    requests.close();
    requests.wait().await;
    if shutdown.is_draining() {
        // The last responses may still be in flight, and closing discards what is unsent:
        // a client that has read its answers closes first (it has GOAWAY); wait for that a
        // moment.
        let _ = tokio::time::timeout(CLOSE_WAIT, connection.closed()).await;
        connection.close(AppCode::Shutdown.into_varint(), b"server shutting down");
    }
}
