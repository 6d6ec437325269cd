//! `edge <task> get|list`: a plugin's items read from the store file while the server is
//! stopped, one command per plugin with read endpoints, made from what the plugin declares
//! (the same commands `edge-client` offers over HTTP/3). They answer exactly as the HTTP/3
//! API does, through the same [`Reads`](edge_tasks::reads::Reads).

use crate::config::Config;
use anyhow::bail;
use clap::{ArgMatches, Command};
use edge_proto::read_command::{self, ReadRequest};
use edge_tasks::reads::ReadError;
use edge_tasks::store::StoreOptions;
use edge_tasks::{Context, Registry, Store};
use std::io::Write;
use std::process::ExitCode;

/// One subcommand per plugin of `registry` that has read endpoints.
pub(crate) fn commands(registry: &Registry) -> Vec<Command> {
    registry
        .plugins()
        .filter_map(|plugin| {
            let reads = plugin.reads?.info();
            let about = format!(
                "Read the {}s of task `{}` from the store file (while the server is stopped).",
                reads.item, plugin.name
            );
            Some(read_command::command(plugin.name, &reads, about))
        })
        .collect()
}

/// Runs `edge <task> get|list` for the plugin named `task`.
pub(crate) fn run(
    config: &Config,
    registry: &Registry,
    task: &str,
    matches: &ArgMatches,
) -> anyhow::Result<ExitCode> {
    let Some(reads) = registry.find(task).and_then(|plugin| plugin.reads) else {
        bail!("task `{task}` has nothing to read");
    };
    let info = reads.info();
    let Some(request) = read_command::request(&info, matches) else {
        bail!("use `edge {task} get KEY` or `edge {task} list`");
    };
    let path = config.store_path();
    if !path.is_file() {
        bail!(
            "no store at {}: run `edge serve` and upload {}s first, or pass --data-dir",
            path.display(),
            reads.item
        );
    }
    let store = Store::open_with(&path, &StoreOptions::default(), registry.clone())?;
    let mut context = Context::new(store);
    context.limits = config.limits.task_limits();
    let answer = match request {
        ReadRequest::Get { key } => reads
            .read_one(&context, &key)
            .map(|item| serde_json::to_string_pretty(&item).unwrap_or_default()),
        ReadRequest::List { params, json } => reads.read_page(&context, &params).map(|page| {
            let (out, more) = read_command::show_page(&info, &page, json);
            if let Some(more) = more {
                eprintln!("{more}");
            }
            out
        }),
    };
    match answer {
        Ok(text) => {
            // A reader that went away (`| head`) is not an error of ours.
            let _ = writeln!(std::io::stdout().lock(), "{text}");
            Ok(ExitCode::SUCCESS)
        }
        Err(ReadError::NotFound(message)) => {
            eprintln!("edge: {message} in {}", path.display());
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
