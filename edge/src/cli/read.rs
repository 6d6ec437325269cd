//! `edge <task> get|list`: a plugin's items read from the store file while the server is
//! stopped, one command per plugin with read endpoints, made from what the plugin declares
//! (the same commands `edge-client` offers over HTTP/3). They answer exactly as the HTTP/3
//! API does, through the same [`Reads`](edge_tasks::reads::Reads).

use crate::config::Config;
use crate::config::StoreBackend;
use anyhow::bail;
use clap::{ArgMatches, Command};
use edge_proto::read_command::{self, ReadRequest};
use edge_proto::save::Download;
use edge_tasks::reads::ReadError;
use edge_tasks::task::JobRef;
use edge_tasks::{history, Context, Registry};
use std::io::Write;
use std::process::ExitCode;

/// One subcommand per plugin of `registry` that has read endpoints.
pub(crate) fn commands(registry: &Registry) -> Vec<Command> {
    registry
        .plugins()
        .filter_map(|plugin| {
            let reads = plugin.reads?.info();
            let about = format!(
                "Read the {}s of task `{}` from the store (the redb file while the server is stopped, or the PostgreSQL store at any time).",
                reads.item, plugin.name
            );
            let command = read_command::command(plugin.name, &reads, about);
            Some(match plugin.revert {
                Some(_) => command.subcommand(revert_command(plugin.name)),
                None => command,
            })
        })
        .collect()
}

/// `edge <task> revert --job JOB`, for a plugin that can undo its jobs.
fn revert_command(task: &str) -> Command {
    Command::new("revert")
        .about(format!(
            "Undo a `{task}` job in the store file (while the server is stopped): restore what it replaced and remove what it inserted, leaving alone (and listing) what a later job changed again. With the server running: POST /v1/jobs/{{id}}/revert (scope admin)."
        ))
        .arg(
            clap::Arg::new("job")
                .long("job")
                .required(true)
                .value_name("JOB")
                .help("The id of the job to undo (`edge-client jobs` lists them)"),
        )
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
    let revert = match matches.subcommand() {
        Some(("revert", args)) => args.get_one::<String>("job").cloned(),
        _ => None,
    };
    let request = read_command::request(&info, matches);
    let path = config.store_path();
    if config.store.backend == StoreBackend::Redb && !path.is_file() {
        bail!(
            "no store at {}: run `edge serve` and upload {}s first, or pass --data-dir",
            path.display(),
            reads.item
        );
    }
    let store = config.open_store(registry.clone())?;
    let mut context = Context::new(store);
    context.limits = config.task_limits();
    let answer = match (request, revert) {
        (_, Some(job)) => {
            let by = offline_job(task, "revert");
            history::revert(&context, &job, &by)
                .map(|report| serde_json::to_string_pretty(&report).unwrap_or_default())
        }
        (Some(ReadRequest::History { key, params, json }), None) => reads
            .read_history(&context, &key, &params)
            .map(|page| with_more(read_command::show_history(&page, json))),
        (Some(ReadRequest::Get { key }), None) => reads
            .read_one(&context, &key)
            .map(|item| serde_json::to_string_pretty(&item).unwrap_or_default()),
        (Some(ReadRequest::Download { key, output }), None) => {
            return save(&context, &reads, &key, output.as_deref(), &path);
        }
        (Some(ReadRequest::Remove { key }), None) => {
            let by = offline_job(task, "rm");
            let delete = reads
                .delete
                .ok_or_else(|| anyhow::anyhow!("{task} keeps no files"))?;
            delete(&context, &key, &by)
                .and_then(|found| {
                    found.ok_or_else(|| ReadError::NotFound(format!("no {} `{key}`", reads.item)))
                })
                .map(|report| serde_json::to_string_pretty(&report).unwrap_or_default())
        }
        (Some(ReadRequest::List { params, json }), None) => reads
            .read_page(&context, &params)
            .map(|page| with_more(read_command::show_page(&info, &page, json))),
        (None, None) => bail!("use `edge {task} get KEY` or `edge {task} list`"),
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

/// Who changes the store offline: `edge <task> <command> (<user>)`, as a job of its own.
fn offline_job(task: &str, command: &str) -> JobRef {
    JobRef {
        id: crate::jobs::new_job_id(0),
        sub: format!(
            "edge {task} {command} ({})",
            std::env::var("USER").unwrap_or_else(|_| "offline".into())
        ),
    }
}

/// `edge <task> get KEY [-o FILE]` for items that are files: their bytes, checked against
/// their digest, to FILE or standard output.
fn save(
    context: &Context,
    reads: &edge_tasks::reads::Reads,
    key: &str,
    output: Option<&std::path::Path>,
    store: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let open = reads
        .content
        .ok_or_else(|| anyhow::anyhow!("these items are not files"))?;
    let Some(mut content) = open(context, key)? else {
        eprintln!("edge: no {} `{key}` in {}", reads.item, store.display());
        return Ok(ExitCode::from(1));
    };
    let digest = content.info().etag.clone();
    let mut download = Download::create(output)?;
    let mut failed = None;
    content.read(
        0..content.info().size,
        &mut |piece| match download.write(&piece) {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        },
    )?;
    if let Some(e) = failed {
        return Err(e.into());
    }
    let size = download.finish(&digest)?;
    if let Some(output) = output {
        eprintln!(
            "saved {size} bytes to {} (BLAKE3 {digest})",
            output.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A page's text, after telling stderr where the next page starts (if one does).
fn with_more((out, more): (String, Option<String>)) -> String {
    if let Some(more) = more {
        eprintln!("{more}");
    }
    out
}
