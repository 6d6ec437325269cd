//! The read commands, `<task> get KEY` and `<task> list [--FILTER VALUE].. [--limit N]
//! [--after KEY] [--json]` (and `history KEY`, `get KEY -o FILE` for files, `rm KEY` where
//! the task has them), as `edge` (on the store file) and `edge-client` (over HTTP/3) both
//! offer them for every task with read endpoints, made from the task's [`ReadsInfo`]: one
//! definition, so the two never differ. (Feature `cli`.)

use crate::reads::{table, Column, ReadsInfo, DEFAULT_PAGE};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::Value;

/// What a read command asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadRequest {
    /// One item by key.
    Get {
        /// The key.
        key: String,
    },
    /// A page of an item's history (the versions jobs replaced), newest first.
    History {
        /// The item's key.
        key: String,
        /// The query: `limit`, and `after` when given.
        params: Vec<(String, String)>,
        /// Print the API's JSON rather than a table.
        json: bool,
    },
    /// One item's bytes, for items that are files ([`ReadsInfo::content`]): written to
    /// `output`, or to standard output.
    Download {
        /// The key.
        key: String,
        /// The file to write (`-o`), or `None` for standard output.
        output: Option<std::path::PathBuf>,
    },
    /// Delete one item ([`ReadsInfo::delete`]).
    Remove {
        /// The key.
        key: String,
    },
    /// A page of items.
    List {
        /// The query: the filters given, `limit`, and `after` when given.
        params: Vec<(String, String)>,
        /// Print the API's JSON rather than a table.
        json: bool,
    },
}

/// The command `name` (a task) with `get` and `list`; `about` says where it reads from.
pub fn command(name: &str, reads: &ReadsInfo, about: String) -> Command {
    let item = &reads.item;
    let filters = reads.filters.iter().map(|filter| {
        Arg::new(filter.name.to_string())
            .long(filter.name.to_string())
            .value_name("VALUE")
            .help(filter.help.to_string())
    });
    let list = page_args(
        Command::new("list")
            .about(format!("List {item}s in key order, one page at a time."))
            .args(filters),
        reads.max_page,
        &format!("{item}s"),
        "KEY",
    );
    let get = if reads.content {
        Command::new("get")
            .about(format!(
                "Write one {item}'s bytes to standard output, or to FILE with -o (its BLAKE3 digest checked)."
            ))
            .arg(Arg::new("key").required(true).value_name("KEY"))
            .arg(
                Arg::new("output")
                    .short('o')
                    .long("output")
                    .value_name("FILE")
                    .value_parser(clap::value_parser!(std::path::PathBuf))
                    .help("Write the bytes to FILE (written whole, then renamed into place)"),
            )
    } else {
        Command::new("get")
            .about(format!("Print one {item} as JSON."))
            .arg(Arg::new("key").required(true).value_name("KEY"))
    };
    let mut command = Command::new(name.to_owned())
        .about(about)
        .subcommand_required(true)
        .subcommand(get)
        .subcommand(list);
    if reads.delete {
        command = command.subcommand(
            Command::new("rm")
                .about(format!("Delete one {item}."))
                .arg(Arg::new("key").required(true).value_name("KEY")),
        );
    }
    if !reads.history {
        return command;
    }
    let history = page_args(
        Command::new("history")
            .about(format!(
                "Print the versions of one {item} that jobs replaced, newest first, with the job that replaced each, who ran it and when."
            ))
            .arg(Arg::new("key").required(true).value_name("KEY")),
        reads.max_page,
        "versions",
        "JOB",
    );
    command.subcommand(history)
}

/// `command` with the options of a paged read: `--limit` (`what` per page), `--after CURSOR`
/// and `--json`.
fn page_args(command: Command, max_page: usize, what: &str, cursor: &'static str) -> Command {
    command
        .arg(
            Arg::new("limit")
                .long("limit")
                .value_parser(clap::value_parser!(usize))
                .default_value(DEFAULT_PAGE.min(max_page).to_string())
                .help(format!("{what} per page (1-{max_page})")),
        )
        .arg(
            Arg::new("after")
                .long("after")
                .value_name(cursor)
                .help(format!(
                    "Start after this {} (the `next` of the previous page)",
                    cursor.to_ascii_lowercase()
                )),
        )
        .arg(
            Arg::new("json")
                .long("json")
                .action(ArgAction::SetTrue)
                .help("Print the page as the API's JSON: {\"items\":[..],\"next\":..}"),
        )
}

/// The columns a history page is printed with (every task's history has these fields).
pub const HISTORY_COLUMNS: &[Column] = &[
    Column::new("REPLACED BY JOB", "/job"),
    Column::new("BY", "/sub"),
    Column::new("AT", "/time"),
    Column::new("WAS", "/was"),
];

/// What the matches of a [`command`] ask for (`None`: no subcommand it knows).
pub fn request(reads: &ReadsInfo, matches: &ArgMatches) -> Option<ReadRequest> {
    match matches.subcommand()? {
        ("get", args) if reads.content => Some(ReadRequest::Download {
            key: args.get_one::<String>("key")?.clone(),
            output: args.get_one::<std::path::PathBuf>("output").cloned(),
        }),
        ("get", args) => Some(ReadRequest::Get {
            key: args.get_one::<String>("key")?.clone(),
        }),
        ("rm", args) => Some(ReadRequest::Remove {
            key: args.get_one::<String>("key")?.clone(),
        }),
        ("history", args) => Some(ReadRequest::History {
            key: args.get_one::<String>("key")?.clone(),
            params: page_params(args, Vec::new()),
            json: args.get_flag("json"),
        }),
        ("list", args) => {
            let filters: Vec<(String, String)> = reads
                .filters
                .iter()
                .filter_map(|filter| {
                    let value = args.get_one::<String>(filter.name.as_ref())?;
                    Some((filter.name.to_string(), value.clone()))
                })
                .collect();
            Some(ReadRequest::List {
                params: page_params(args, filters),
                json: args.get_flag("json"),
            })
        }
        _ => None,
    }
}

/// `params` and the `--limit` and `--after` of a paged read's `args`.
fn page_params(args: &ArgMatches, mut params: Vec<(String, String)>) -> Vec<(String, String)> {
    if let Some(limit) = args.get_one::<usize>("limit") {
        params.push(("limit".into(), limit.to_string()));
    }
    if let Some(after) = args.get_one::<String>("after") {
        params.push(("after".into(), after.clone()));
    }
    params
}

/// A page as the command prints it: the API's JSON, or the task's table. The second part,
/// for stderr, names the cursor of the next page when there is one.
pub fn show_page(reads: &ReadsInfo, page: &Value, json: bool) -> (String, Option<String>) {
    show(&reads.columns, page, json)
}

/// A history page as the command prints it: the API's JSON, or a table of
/// [`HISTORY_COLUMNS`]. The second part, for stderr, names the next page's cursor.
pub fn show_history(page: &Value, json: bool) -> (String, Option<String>) {
    show(HISTORY_COLUMNS, page, json)
}

fn show(columns: &[Column], page: &Value, json: bool) -> (String, Option<String>) {
    let more = page["next"]
        .as_str()
        .map(|next| format!("more: --after {next}"));
    if json {
        return (page.to_string(), more);
    }
    let items = page["items"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    (table(columns, items).join("\n"), more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reads::{Column, Filter};
    use std::borrow::Cow;

    fn reads() -> ReadsInfo {
        ReadsInfo {
            scope: "ports:read".into(),
            item: "port".into(),
            filters: Cow::Borrowed(FILTERS),
            max_page: 1000,
            columns: Cow::Borrowed(KEY_COLUMN),
            history: true,
            content: false,
            delete: false,
        }
    }

    const FILTERS: &[Filter] = &[Filter::new("country", "only this country")];
    const KEY_COLUMN: &[Column] = &[Column::new("KEY", "/key")];

    #[test]
    fn the_plugins_filters_become_options() {
        let command = command("ports", &reads(), "read ports".into());
        let matches = command
            .clone()
            .try_get_matches_from([
                "ports",
                "list",
                "--country",
                "Côte d'Ivoire",
                "--limit",
                "5",
            ])
            .unwrap();
        assert_eq!(
            request(&reads(), &matches),
            Some(ReadRequest::List {
                params: vec![
                    ("country".into(), "Côte d'Ivoire".into()),
                    ("limit".into(), "5".into())
                ],
                json: false
            })
        );
        let matches = command
            .clone()
            .try_get_matches_from(["ports", "get", "AEAJM"])
            .unwrap();
        assert_eq!(
            request(&reads(), &matches),
            Some(ReadRequest::Get {
                key: "AEAJM".into()
            })
        );
        let unknown = command.try_get_matches_from(["ports", "list", "--colour", "red"]);
        assert!(unknown.is_err(), "an option the task does not have");
    }

    #[test]
    fn files_are_saved_and_removed() {
        let mut files = reads();
        files.content = true;
        files.delete = true;
        let command = command("blobs", &files, "blobs".into());
        let matches = command
            .clone()
            .try_get_matches_from(["blobs", "get", "cat.jpg", "-o", "out.jpg"])
            .unwrap();
        assert_eq!(
            request(&files, &matches),
            Some(ReadRequest::Download {
                key: "cat.jpg".into(),
                output: Some("out.jpg".into())
            })
        );
        let matches = command
            .clone()
            .try_get_matches_from(["blobs", "rm", "cat.jpg"])
            .unwrap();
        assert_eq!(
            request(&files, &matches),
            Some(ReadRequest::Remove {
                key: "cat.jpg".into()
            })
        );
        let plain = super::command("ports", &reads(), "ports".into());
        assert!(plain
            .clone()
            .try_get_matches_from(["ports", "rm", "X"])
            .is_err());
        assert!(plain
            .try_get_matches_from(["ports", "get", "X", "-o", "f"])
            .is_err());
    }

    #[test]
    fn a_page_prints_as_a_table_with_the_cursor_apart() {
        let page = serde_json::json!({"items": [{"key": "A"}, {"key": "B"}], "next": "B"});
        let (out, more) = show_page(&reads(), &page, false);
        assert_eq!(out, "KEY\nA\nB");
        let empty = serde_json::json!({"items": [], "next": null});
        assert_eq!(
            show_page(&reads(), &empty, false),
            ("KEY".into(), None),
            "the header alone"
        );
        assert_eq!(more.as_deref(), Some("more: --after B"));
        let (out, _) = show_page(&reads(), &page, true);
        assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), page);
    }
}
