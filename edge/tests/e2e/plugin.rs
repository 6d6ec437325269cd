//! The plugin contract, proved by a plugin that lives only in this file: registered with the
//! server's registry, it gets its table created, its layout version recorded, its jobs run,
//! its read routes served over HTTP/3 with their scope enforced, and its table backed up and
//! restored, with no other file of the project naming it.

use crate::util::{done, mint, upload, TestServer};
use edge_client::api::{Answer, Api};
use edge_client::ClientConfig;
use edge_proto::reads::{Column, Filter};
use edge_proto::{Event, Format, Summary};
use edge_tasks::reads::{Page, PageRequest, ReadError, Reads};
use edge_tasks::table::Storage;
use edge_tasks::{Body, Context, ParamError, Plugin, Record, Registry, Rejection, Store};
use edge_tasks::{StoreError, Task, TaskError};
use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableHandle};
use serde_json::{json, Map, Value};

/// The test plugin's one table: note text by key.
const NOTES: TableDefinition<&str, &str> = TableDefinition::new("notes");

static PLUGIN: Plugin = Plugin {
    name: "notes",
    description: "Keeps short notes by key (a test plugin).",
    formats: &[Format::Json, Format::Ndjson],
    schema: r#"{"type": "object", "required": ["text"]}"#,
    csv_columns: None,
    create,
    storage: Storage {
        version: 1,
        tables: &[&NOTES],
        migrate: None,
        postgres: &[],
        copy: None,
    },
    reads: Some(Reads {
        scope: "notes:read",
        item: "note",
        filters: &[Filter::new(
            "prefix",
            "only notes whose text starts with this",
        )],
        max_page: 50,
        columns: &[Column::new("KEY", "/key"), Column::new("TEXT", "/text")],
        one: read_one,
        page: read_page,
        history: None,
        content: None,
        delete: None,
    }),
    revert: None,
    prune: None,
};

fn create(_params: &Map<String, Value>, context: &Context) -> Result<Box<dyn Task>, ParamError> {
    Ok(Box::new(NotesTask {
        store: context.store.clone(),
        pending: Vec::new(),
        stored: 0,
    }))
}

struct NotesTask {
    store: Store,
    pending: Vec<(String, String)>,
    stored: u64,
}

impl Task for NotesTask {
    fn record(&mut self, record: &Record<'_>) -> Result<(), Rejection> {
        let Body::Json(bytes) = record.body else {
            return Err(Rejection::invalid("a note is a JSON object"));
        };
        let note: Value =
            serde_json::from_slice(bytes).map_err(|e| Rejection::invalid(e.to_string()))?;
        let key = record
            .key
            .map(str::to_owned)
            .or_else(|| note["key"].as_str().map(str::to_owned))
            .ok_or_else(|| Rejection::invalid("a note needs a key"))?;
        let text = note["text"]
            .as_str()
            .ok_or_else(|| Rejection::invalid("a note needs a `text`"))?;
        self.pending.push((key, text.to_owned()));
        Ok(())
    }

    fn commit(&mut self) -> Result<(), TaskError> {
        let txn = self.store.write()?;
        {
            let mut table = txn
                .open_table(NOTES)
                .map_err(StoreError::redb("open notes"))?;
            for (key, text) in &self.pending {
                table
                    .insert(key.as_str(), text.as_str())
                    .map_err(StoreError::redb("write note"))?;
            }
        }
        txn.commit().map_err(StoreError::redb("commit"))?;
        self.stored += self.pending.len() as u64;
        self.pending.clear();
        Ok(())
    }

    fn summary(&self) -> Summary {
        json!({ "stored": self.stored })
    }
}

fn read_one(context: &Context, key: &str) -> Result<Option<Value>, ReadError> {
    let txn = context.store.read()?;
    let table = txn
        .open_table(NOTES)
        .map_err(StoreError::redb("open notes"))?;
    let text = table.get(key).map_err(StoreError::redb("read note"))?;
    Ok(text.map(|text| json!({ "text": text.value() })))
}

fn read_page(context: &Context, request: &PageRequest<'_>) -> Result<Page, ReadError> {
    let txn = context.store.read()?;
    let table = txn
        .open_table(NOTES)
        .map_err(StoreError::redb("open notes"))?;
    let prefix = request.filter("prefix").unwrap_or("");
    let mut items = Vec::new();
    for entry in table.iter().map_err(StoreError::redb("list notes"))? {
        let (key, text) = entry.map_err(StoreError::redb("list notes"))?;
        let after = request.after.is_none_or(|after| key.value() > after);
        if after && text.value().starts_with(prefix) {
            items.push(json!({"key": key.value(), "text": text.value()}));
        }
    }
    let next = (items.len() > request.limit)
        .then(|| items[request.limit - 1]["key"].as_str().map(str::to_owned))
        .flatten();
    items.truncate(request.limit);
    Ok(Page { items, next })
}

fn client(server: &TestServer, scope: &str) -> ClientConfig {
    ClientConfig {
        server: format!("https://127.0.0.1:{}", server.addr.port()),
        ca: Some(server.ca()),
        token: Some(mint(&server.dir.path().join("certs"), "tester", scope)),
    }
}

async fn get(config: &ClientConfig, path: &str) -> Answer {
    let mut api = Api::connect(config).await.unwrap();
    let answer = api.get(path).await.unwrap();
    api.close().await;
    answer
}

fn notes_in(path: &std::path::Path) -> Vec<(String, String)> {
    let db = redb::Database::open(path).unwrap();
    let txn = db.begin_read().unwrap();
    assert!(
        txn.list_tables().unwrap().any(|t| t.name() == "notes"),
        "the store holds the plugin's table"
    );
    let table = txn.open_table(NOTES).unwrap();
    table
        .iter()
        .unwrap()
        .map(|e| {
            let (k, v) = e.unwrap();
            (k.value().to_owned(), v.value().to_owned())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_defined_in_a_test_gets_its_table_routes_scope_and_backups() {
    let registry = Registry::builtin().with(&PLUGIN).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_with_plugins(dir, registry.clone(), |_| {}).await;

    // Its jobs run and store into its table.
    let writer = edge_client::Client::connect(&client(&server, "notes:write"))
        .await
        .unwrap();
    let body =
        br#"{"a1": {"text": "apples"}, "b2": {"text": "bananas"}, "a3": {"text": "avocados"}}"#;
    let (_, events) = upload(&writer, "notes", Some(Format::Json), body.to_vec()).await;
    assert!(
        matches!(done(&events), Event::Done { committed: 3, .. }),
        "{events:?}"
    );
    writer.close().await;

    // Its routes, with its scope.
    let reader = client(&server, "notes:read");
    let answer = get(&reader, "/v1/notes/b2").await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({"text": "bananas"}))
    );
    let answer = get(&reader, "/v1/notes/zz").await;
    assert_eq!(answer.status, 404);
    assert_eq!(answer.body["error"]["message"], "no note `zz`");
    let answer = get(&reader, "/v1/notes?prefix=a&limit=1").await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(
        answer.body,
        json!({"items": [{"key": "a1", "text": "apples"}], "next": "a1"})
    );
    let answer = get(&reader, "/v1/notes?colour=red").await;
    assert_eq!(answer.status, 400);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("prefix, limit, after"), "{message}");
    let answer = get(&client(&server, "notes:write ports:read"), "/v1/notes/b2").await;
    assert_eq!(answer.status, 403, "the plugin's read scope is enforced");
    assert!(answer.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("notes:read"));
    let tasks = get(&reader, "/v1/tasks").await.body;
    let notes = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "notes")
        .unwrap();
    assert_eq!(notes["reads"]["scope"], "notes:read");

    // Backed up with everything else (through the running server's control socket, as
    // `edge backup` does), and restored: a server on the copy serves the same notes.
    let backup = tempfile::tempdir().unwrap();
    let copy = backup.path().join("edge.redb");
    let request = edge::control::Request::Backup { path: copy.clone() };
    let reply = edge::control::send(&server.dir.path().join("data"), &request)
        .unwrap()
        .expect("the server answers on its control socket");
    assert!(reply.ok, "{:?}", reply.error);
    let dir = server.stop().await;
    let stored = notes_in(&dir.path().join("data/edge.redb"));
    assert_eq!(stored.len(), 3);
    assert_eq!(notes_in(&copy), stored);

    let restored = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(restored.path().join("data")).unwrap();
    std::fs::copy(&copy, restored.path().join("data/edge.redb")).unwrap();
    let server = TestServer::start_with_plugins(restored, registry, |_| {}).await;
    let answer = get(&client(&server, "notes:read"), "/v1/notes/a3").await;
    assert_eq!(
        (answer.status, &answer.body),
        (200, &json!({"text": "avocados"}))
    );
    let store_path = server.store_path();
    let _dir = server.stop().await;
    let store = Store::open_with(
        &store_path,
        &edge_tasks::store::StoreOptions::default(),
        Registry::builtin().with(&PLUGIN).unwrap(),
    )
    .unwrap();
    assert_eq!(
        edge_tasks::store::plugin_version(&store, &PLUGIN).unwrap(),
        Some(1),
        "the plugin's layout version is recorded, and kept by the backup"
    );
}
