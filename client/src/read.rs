//! `edge-client <task> get|list`, `jobs` and `tasks`: the server's read API over HTTP/3,
//! printed as tables for people or as JSON for scripts.

use crate::ServerArgs;
use clap::{Args, FromArgMatches};
use edge_client::api::{Answer, Api};
use edge_client::display::{LineLog, Outcome};
use edge_proto::read_command::{self, ReadRequest};
use edge_proto::reads::ReadsInfo;
use edge_proto::save::Download;
use serde_json::Value;
use std::io::Write;

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub(crate) struct JobsArgs {
    #[command(subcommand)]
    watch: Option<JobsCommand>,
    /// One job's id: print its record as JSON.
    id: Option<String>,
    /// Jobs per page (1-1000).
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Only jobs older than this id (the `next` of the previous page).
    #[arg(long)]
    before: Option<String>,
    /// Print the page as the API's JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, clap::Subcommand)]
enum JobsCommand {
    /// Follow a job's events (its own, or any with `admin`): those already sent, then the
    /// rest as they happen, until its final event (exit code as for `upload`).
    Watch(WatchArgs),
}

#[derive(Debug, Args)]
struct WatchArgs {
    /// The job's id (`edge-client jobs` lists them; an upload's `accepted` event says it).
    id: String,
    /// Start after this event number (the events are numbered from 1).
    #[arg(long, default_value_t = 0)]
    after: u64,
    /// Print the raw events as NDJSON on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Print the API's JSON (with each task's record schema).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

/// `edge-client <task> get KEY` and `edge-client <task> list [--FILTER VALUE].. [--limit N]
/// [--after KEY] [--json]`, for any task of the server with read endpoints: the command is
/// made from what `GET /v1/tasks` says of the task (its filters, page size and columns), so a
/// task added on the server needs nothing new here. `args` are the task and what follows it.
pub(crate) async fn task(args: Vec<String>) -> Outcome {
    let Some(task) = args.first().cloned() else {
        eprintln!("edge-client: name a task, e.g. `edge-client ports list`");
        return Outcome::Failed;
    };
    let server = match server_args(&args) {
        Ok(server) => server,
        Err(e) => return usage_error(e),
    };
    let mut api = match connect(&server).await {
        Ok(api) => api,
        Err(outcome) => return outcome,
    };
    let outcome = read_task(&mut api, &task, &args).await;
    api.close().await;
    outcome
}

async fn read_task(api: &mut Api, task: &str, args: &[String]) -> Outcome {
    let reads = match task_reads(api, task).await {
        Ok(reads) => reads,
        Err(message) => {
            eprintln!("edge-client: {message}");
            return Outcome::Failed;
        }
    };
    let about = format!(
        "Read the {}s of task `{task}` from the server (HTTP/3).",
        reads.item
    );
    // The server options join each subcommand (keeping its own description).
    let with_server = |command: clap::Command| {
        let about = command.get_about().cloned();
        let command = ServerArgs::augment_args(command);
        match about {
            Some(about) => command.about(about),
            None => command,
        }
    };
    let mut command = read_command::command(task, &reads, about)
        .bin_name(format!("edge-client {task}"))
        .mut_subcommand("get", with_server)
        .mut_subcommand("list", with_server);
    if reads.history {
        command = command.mut_subcommand("history", with_server);
    }
    if reads.delete {
        command = command.mut_subcommand("rm", with_server);
    }
    let matches = match command.try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(e) => return usage_error(e),
    };
    let query = |params: &[(String, String)]| {
        params
            .iter()
            .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
            .collect::<Vec<_>>()
            .join("&")
    };
    let (path, shown) = match read_command::request(&reads, &matches) {
        Some(ReadRequest::Get { key }) => (format!("/v1/{task}/{}", encode(&key)), Shown::Item),
        Some(ReadRequest::List { params, json }) => {
            (format!("/v1/{task}?{}", query(&params)), Shown::Page(json))
        }
        Some(ReadRequest::History { key, params, json }) => (
            format!("/v1/{task}/{}/history?{}", encode(&key), query(&params)),
            Shown::History(json),
        ),
        Some(ReadRequest::Download { key, output }) => {
            let path = format!("/v1/{task}/{}", encode(&key));
            return download(api, &path, output.as_deref()).await;
        }
        Some(ReadRequest::Remove { key }) => {
            let answer = api.delete(&format!("/v1/{task}/{}", encode(&key))).await;
            return show(answer, pretty);
        }
        None => {
            eprintln!("edge-client: use `edge-client {task} get KEY` or `edge-client {task} list`");
            return Outcome::Failed;
        }
    };
    show(api.get(&path).await, |body| {
        let (out, more) = match shown {
            Shown::Item => return pretty(body),
            Shown::Page(json) => read_command::show_page(&reads, body, json),
            Shown::History(json) => read_command::show_history(body, json),
        };
        if let Some(more) = more {
            eprintln!("{more}");
        }
        out
    })
}

/// Saves a stored file's bytes to `output` (or standard output), checked against the digest
/// the server sends as its `ETag`.
async fn download(api: &mut Api, path: &str, output: Option<&std::path::Path>) -> Outcome {
    let mut saving = match Download::create(output) {
        Ok(saving) => saving,
        Err(e) => {
            eprintln!("edge-client: {e}");
            return Outcome::Failed;
        }
    };
    let answer = api
        .download(path, &mut |bytes| {
            saving.write(bytes).map_err(|e| e.to_string())
        })
        .await;
    let etag = match answer {
        Ok(Ok(etag)) => etag,
        Ok(Err(refusal)) => return show(Ok(refusal), pretty),
        Err(e) => {
            eprintln!("edge-client: {e}");
            return Outcome::Failed;
        }
    };
    match saving.finish(&etag) {
        Ok(size) => {
            if let Some(output) = output {
                eprintln!("saved {size} bytes to {} (BLAKE3 {etag})", output.display());
            }
            Outcome::Clean
        }
        Err(e) => {
            eprintln!("edge-client: {e}");
            Outcome::Failed
        }
    }
}

/// How a read's answer is printed.
#[derive(Debug, Clone, Copy)]
enum Shown {
    /// One item, as pretty JSON.
    Item,
    /// A page: a table, or the API's JSON with `true`.
    Page(bool),
    /// A history page: a table, or the API's JSON with `true`.
    History(bool),
}

/// What the server says of `task`'s read endpoints, or why there is nothing to read.
async fn task_reads(api: &mut Api, task: &str) -> Result<ReadsInfo, String> {
    let answer = api.get("/v1/tasks").await.map_err(|e| e.to_string())?;
    if answer.status != 200 {
        return Err(answer.error_message());
    }
    let tasks = answer.body["tasks"].as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = tasks.iter().filter_map(|t| t["name"].as_str()).collect();
    let Some(found) = tasks.iter().find(|t| t["name"] == task) else {
        return Err(format!(
            "no task `{task}` on this server (it runs: {}); or did you mean `edge-client upload`, `jobs` or `tasks`?",
            names.join(", ")
        ));
    };
    match &found["reads"] {
        Value::Null => Err(format!("task `{task}` keeps nothing to read")),
        reads => serde_json::from_value(reads.clone()).map_err(|e| {
            format!("the server described task `{task}` in a form this client does not read: {e}")
        }),
    }
}

/// The server options among `args` (`--server`, `--ca`, `--token`, as `--x V` or `--x=V`),
/// with their environment defaults: enough to connect and learn the task's options.
fn server_args(args: &[String]) -> Result<ServerArgs, clap::Error> {
    const NAMES: [&str; 3] = ["--server", "--ca", "--token"];
    let mut picked = vec!["edge-client".to_owned()];
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if NAMES.contains(&arg.as_str()) {
            picked.push(arg.clone());
            picked.extend(rest.next().cloned());
        } else if NAMES
            .iter()
            .any(|name| arg.starts_with(&format!("{name}=")))
        {
            picked.push(arg.clone());
        }
    }
    let command = ServerArgs::augment_args(clap::Command::new("edge-client"));
    let matches = command.try_get_matches_from(picked)?;
    ServerArgs::from_arg_matches(&matches)
}

/// Prints a usage error (or help) as clap does, and says how the command ended.
fn usage_error(e: clap::Error) -> Outcome {
    let _ = e.print();
    if e.use_stderr() {
        Outcome::Failed
    } else {
        Outcome::Clean
    }
}

pub(crate) async fn jobs(args: JobsArgs) -> Outcome {
    if let Some(JobsCommand::Watch(watch)) = args.watch {
        return watch_job(watch).await;
    }
    if let Some(id) = &args.id {
        return fetch(&args.server, &format!("/v1/jobs/{}", encode(id)), pretty).await;
    }
    let mut path = format!("/v1/jobs?limit={}", args.limit);
    if let Some(before) = &args.before {
        path.push_str(&format!("&before={}", encode(before)));
    }
    let json = args.json;
    fetch(&args.server, &path, |body| {
        if json {
            body.to_string()
        } else {
            job_table(body)
        }
    })
    .await
}

pub(crate) async fn tasks(args: TasksArgs) -> Outcome {
    let json = args.json;
    fetch(&args.server, "/v1/tasks", |body| {
        if json {
            body.to_string()
        } else {
            task_table(body)
        }
    })
    .await
}

/// GETs `path` and prints what `show` makes of a 200 answer; a refusal goes to stderr.
async fn fetch(
    server: &ServerArgs,
    path: &str,
    show_body: impl FnOnce(&Value) -> String,
) -> Outcome {
    let mut api = match connect(server).await {
        Ok(api) => api,
        Err(outcome) => return outcome,
    };
    let answer = api.get(path).await;
    api.close().await;
    show(answer, show_body)
}

/// `edge-client jobs watch ID`: prints the job's events as they come (a line each for
/// people, or the raw NDJSON), and ends with the job's outcome.
async fn watch_job(args: WatchArgs) -> Outcome {
    let mut api = match connect(&args.server).await {
        Ok(api) => api,
        Err(outcome) => return outcome,
    };
    let path = format!("/v1/jobs/{}/events?after={}", encode(&args.id), args.after);
    let mut log = LineLog::new(format!("job {}", args.id));
    let mut last = None;
    let json = args.json;
    let answer = api
        .follow(&path, &mut |line| {
            let event = edge_proto::Event::from_line(line).ok();
            let mut out = std::io::stdout().lock();
            if json {
                let _ = out.write_all(line);
                let _ = out.write_all(b"\n");
                let _ = out.flush();
            } else if let Some(text) = event.as_ref().and_then(|e| log.line(e)) {
                eprintln!("{text}");
            }
            if let Some(event) = event.filter(edge_proto::Event::is_final) {
                last = Some(event);
            }
        })
        .await;
    api.close().await;
    match (answer, last) {
        (Ok(Ok(())), Some(last)) => Outcome::of(&last),
        (Ok(Ok(())), None) => {
            eprintln!("edge-client: the server stopped sending the job's events before its end (is it shutting down?)");
            Outcome::Failed
        }
        (Ok(Err(refusal)), _) => show(Ok(refusal), pretty),
        (Err(e), _) => {
            eprintln!("edge-client: {e}");
            Outcome::Failed
        }
    }
}

/// Checks the token as far as the client can, then connects; or says why not.
async fn connect(server: &ServerArgs) -> Result<Api, Outcome> {
    if let Err(e) = edge_client::token::check(server.token.as_deref(), std::time::SystemTime::now())
    {
        eprintln!("edge-client: {e}");
        return Err(Outcome::Failed);
    }
    Api::connect(&server.config())
        .await
        .map_err(|e| Outcome::not_connected(&e))
}

/// Prints what `show_body` makes of a 200 answer; a refusal goes to stderr.
fn show(
    answer: Result<Answer, edge_client::ClientError>,
    show_body: impl FnOnce(&Value) -> String,
) -> Outcome {
    match answer {
        Ok(Answer { status: 200, body }) => {
            // A reader that went away (`| head`) is not an error of ours.
            let _ = writeln!(std::io::stdout().lock(), "{}", show_body(&body));
            Outcome::Clean
        }
        Ok(answer) => {
            eprintln!("edge-client: {}", answer.error_message());
            // Not found is an answer, like `done` with record errors; anything else failed.
            if answer.status == 404 {
                Outcome::RecordErrors
            } else {
                Outcome::Failed
            }
        }
        Err(e) => {
            eprintln!("edge-client: {e}");
            Outcome::Failed
        }
    }
}

fn pretty(body: &Value) -> String {
    serde_json::to_string_pretty(body).unwrap_or_else(|_| body.to_string())
}

fn job_table(page: &Value) -> String {
    let header = [
        "JOB",
        "STARTED",
        "TASK",
        "VIA",
        "OUTCOME",
        "CODE",
        "RECORDS",
        "COMMITTED",
        "ERRORS",
        "NAME",
    ];
    let mut rows = vec![header.map(str::to_owned).to_vec()];
    rows.extend(items(page).iter().map(|job| {
        vec![
            text(&job["job"]).to_owned(),
            text(&job["started"]).to_owned(),
            text(&job["task"]).to_owned(),
            text(&job["transport"]).to_owned(),
            text(&job["outcome"]).to_owned(),
            text(&job["code"]).to_owned(),
            job["records"].to_string(),
            job["committed"].to_string(),
            job["errors"].to_string(),
            text(&job["name"]).to_owned(),
        ]
    }));
    let mut lines = edge_proto::reads::align(rows);
    if let Some(next) = page["next"].as_str() {
        lines.push(format!("more: --before {next}"));
    }
    lines.join("\n")
}

fn task_table(body: &Value) -> String {
    let mut rows = vec![vec![
        "TASK".to_owned(),
        "FORMATS".to_owned(),
        "DESCRIPTION".to_owned(),
    ]];
    rows.extend(
        body["tasks"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|task| {
                let formats: Vec<&str> = task["formats"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                vec![
                    text(&task["name"]).to_owned(),
                    formats.join(","),
                    text(&task["description"]).to_owned(),
                ]
            }),
    );
    edge_proto::reads::align(rows).join("\n")
}

fn items(page: &Value) -> &[Value] {
    page["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or("-")
}

/// Percent-encodes a path segment or query value.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_are_encoded() {
        assert_eq!(encode("United Arab Emirates"), "United%20Arab%20Emirates");
        assert_eq!(encode("a/b&c=d"), "a%2Fb%26c%3Dd");
        assert_eq!(encode("AEAJM"), "AEAJM");
    }

    #[test]
    fn tables() {
        let tasks =
            json!({"tasks":[{"name":"stats","formats":["lines","json"],"description":"d"}]});
        assert_eq!(
            task_table(&tasks),
            "TASK   FORMATS     DESCRIPTION\nstats  lines,json  d"
        );
        let jobs = json!({"items": [
            {"job": "j1", "started": "2026-12-01T09:00:00Z", "task": "ports", "transport": "edge/1",
             "outcome": "failed", "code": "cancelled", "records": 12, "committed": 10, "errors": 0, "name": "a.json"},
            {"job": "j0", "started": "2026-12-01T08:00:00Z", "task": "stats", "transport": "h3",
             "outcome": "done", "records": 3, "committed": 3, "errors": 0, "name": null}
        ], "next": "j0"});
        assert_eq!(
            job_table(&jobs),
            [
                "JOB  STARTED               TASK   VIA     OUTCOME  CODE       RECORDS  COMMITTED  ERRORS  NAME",
                "j1   2026-12-01T09:00:00Z  ports  edge/1  failed   cancelled  12       10         0       a.json",
                "j0   2026-12-01T08:00:00Z  stats  h3      done     -          3        3          0       -",
                "more: --before j0",
            ]
            .join("\n")
        );
    }
}
