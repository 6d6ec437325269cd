//! HTTP/3 on the same UDP port as `edge/1` (ALPN `h3`): uploads as jobs, with the job's
//! events streamed back as the response body while the request body is still arriving, and
//! a JSON read API.
//!
//! | request | answer |
//! |---|---|
//! | `PUT` or `POST /v1/jobs/{task}` | `200`, `application/x-ndjson`: the job's events |
//! | `GET /v1/<task>/{key}` | one item of a plugin with read endpoints (`ports`: a port), or `404` |
//! | `GET /v1/<task>?<filters>&limit=&after=` | a page of its items, `{"items":[..],"next"}` |
//! | `GET /v1/jobs?limit=&before=` | job history, most recent first |
//! | `GET /v1/jobs/{id}` | one job's record, or `404` |
//! | `GET /v1/tasks` | every task with its formats and record schema |
//! | `GET /healthz` | `200 {"status":"ok"}`, `503` while draining |
//!
//! Refusals are plain statuses with `{"error":{"code","message"}}`.

mod read;
mod respond;
mod routes;
mod upload;

use crate::server::{IntoVarInt, Service};
use crate::window::ConnectionWindow;
use bytes::Bytes;
use edge_proto::AppCode;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, Instrument};

/// The largest request header block accepted (RFC 9114 §4.2.2, SETTINGS_MAX_FIELD_SECTION_SIZE).
const MAX_FIELD_SECTION: u64 = 16 * 1024;

type Resolver = h3::server::RequestResolver<Guarded, Bytes>;
type Stream = h3::server::RequestStream<GuardedBidi, Bytes>;
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
    shutdown: CancellationToken,
) {
    debug!("h3 connection");
    let built = h3::server::builder()
        .max_field_section_size(MAX_FIELD_SECTION)
        .build(crate::h3guard::Connection::new(connection.clone()))
        .await;
    let mut h3 = match built {
        Ok(h3) => h3,
        Err(e) => {
            debug!("h3 setup failed: {e}");
            return;
        }
    };
    let requests = TaskTracker::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                // GOAWAY: no new requests; those running finish.
                let _ = h3.shutdown(0).await;
                break;
            }
            accepted = h3.accept() => match accepted {
                Ok(Some(resolver)) => {
                    requests.spawn(routes::handle(resolver, service.clone(), window.clone(), authorised.clone(), shutdown.clone()).in_current_span());
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
    if shutdown.is_cancelled() {
        connection.close(AppCode::Shutdown.into_varint(), b"server shutting down");
    }
}
