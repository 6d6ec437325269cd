//! `edge-client ports`, `jobs` and `tasks`: the server's read API over HTTP/3, printed as
//! tables for people or as JSON for scripts.

use crate::ServerArgs;
use clap::{Args, Subcommand};
use edge_client::api::{Answer, Api};
use edge_client::display::Outcome;
use serde_json::Value;

#[derive(Debug, Subcommand)]
pub(crate) enum PortsCommand {
    /// Print one port as JSON.
    Get {
        /// The UN/LOCODE, e.g. AEAJM.
        code: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// List ports in key order, one page at a time.
    List {
        /// Only ports of this country (case-insensitive).
        #[arg(long)]
        country: Option<String>,
        /// Ports per page (1-1000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Start after this key (the `next` of the previous page).
        #[arg(long)]
        after: Option<String>,
        /// Print the page as the API's JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
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

#[derive(Debug, Args)]
pub(crate) struct TasksArgs {
    /// Print the API's JSON (with each task's record schema).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) async fn ports(command: PortsCommand) -> Outcome {
    match command {
        PortsCommand::Get { code, server } => {
            let path = format!("/v1/ports/{}", encode(&code));
            fetch(&server, &path, pretty).await
        }
        PortsCommand::List {
            country,
            limit,
            after,
            json,
            server,
        } => {
            let mut query = vec![format!("limit={limit}")];
            query.extend(country.map(|c| format!("country={}", encode(&c))));
            query.extend(after.map(|a| format!("after={}", encode(&a))));
            let path = format!("/v1/ports?{}", query.join("&"));
            fetch(&server, &path, |body| {
                if json {
                    body.to_string()
                } else {
                    port_table(body)
                }
            })
            .await
        }
    }
}

pub(crate) async fn jobs(args: JobsArgs) -> Outcome {
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
async fn fetch(server: &ServerArgs, path: &str, show: impl FnOnce(&Value) -> String) -> Outcome {
    let mut api = match Api::connect(&server.config()).await {
        Ok(api) => api,
        Err(e) => {
            eprintln!("edge-client: {e}");
            return if e.is_connect() {
                Outcome::NoConnection
            } else {
                Outcome::Failed
            };
        }
    };
    let answer = api.get(path).await;
    api.close().await;
    match answer {
        Ok(Answer { status: 200, body }) => {
            println!("{}", show(&body));
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

fn port_table(page: &Value) -> String {
    let mut lines: Vec<String> = items(page)
        .iter()
        .map(|item| {
            let port = &item["port"];
            let coordinates = match port["coordinates"].as_array() {
                Some(c) if c.len() == 2 => format!("{},{}", c[0], c[1]),
                _ => "-".into(),
            };
            format!(
                "{}\t{}\t{}\t{coordinates}",
                text(&item["key"]),
                text(&port["name"]),
                text(&port["country"])
            )
        })
        .collect();
    if let Some(next) = page["next"].as_str() {
        lines.push(format!("more: --after {next}"));
    }
    lines.join("\n")
}

fn job_table(page: &Value) -> String {
    let mut lines =
        vec!["JOB\tSTARTED\tTASK\tVIA\tOUTCOME\tRECORDS\tCOMMITTED\tERRORS\tNAME".to_owned()];
    lines.extend(items(page).iter().map(|job| {
        format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            text(&job["job"]),
            text(&job["started"]),
            text(&job["task"]),
            text(&job["transport"]),
            text(&job["outcome"]),
            job["records"],
            job["committed"],
            job["errors"],
            text(&job["name"]),
        )
    }));
    if let Some(next) = page["next"].as_str() {
        lines.push(format!("more: --before {next}"));
    }
    lines.join("\n")
}

fn task_table(body: &Value) -> String {
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
            format!(
                "{}\t{}\t{}",
                text(&task["name"]),
                formats.join(","),
                text(&task["description"])
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
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
        let page = json!({"items":[{"key":"AEAJM","port":{"name":"Ajman","country":"UAE","coordinates":[55.5,25.4]}}],"next":"AEAJM"});
        assert_eq!(
            port_table(&page),
            "AEAJM\tAjman\tUAE\t55.5,25.4\nmore: --after AEAJM"
        );
        let tasks =
            json!({"tasks":[{"name":"stats","formats":["lines","json"],"description":"d"}]});
        assert_eq!(task_table(&tasks), "stats\tlines,json\td");
    }
}
