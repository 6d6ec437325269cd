//! `edge store copy`: moves a deployment's data from its redb file into a PostgreSQL database,
//! once, before its config switches to `backend = "postgres"`.

use crate::config::Config;
use anyhow::{bail, Context as _};
use clap::Subcommand;
use edge_tasks::store::{PgOptions, StoreOptions};
use edge_tasks::{Registry, Store};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum StoreCommand {
    /// Copy everything of a redb store into a PostgreSQL database (stop `edge serve` on that
    /// data dir first). Entries already in the database under the same key are replaced, so a
    /// copy cut off can run again.
    Copy {
        /// The redb store: `redb:<data dir>` (the folder holding edge.redb).
        #[arg(long)]
        from: String,
        /// The database: `postgres://USER:PASSWORD@HOST:PORT/DATABASE` (its tables are made if
        /// missing).
        #[arg(long)]
        to: String,
    },
}

pub(super) fn store(
    config: &Config,
    registry: &Registry,
    command: StoreCommand,
) -> anyhow::Result<ExitCode> {
    let StoreCommand::Copy { from, to } = command;
    let Some(dir) = from.strip_prefix("redb:") else {
        bail!("--from names a redb store as redb:<data dir> (e.g. redb:data), not `{from}`");
    };
    let path = PathBuf::from(dir).join(crate::config::STORE_FILE);
    if !path.is_file() {
        bail!(
            "no redb store at {}: --from redb:<the data dir that holds edge.redb>",
            path.display()
        );
    }
    let source = Store::open_with(&path, &StoreOptions::default(), registry.clone()).map_err(
        |e| match e {
            edge_tasks::OpenError::InUse { path } => anyhow::anyhow!(
                "the store {} is in use: stop `edge serve` on that data dir first, so that \
                 nothing is written after the copy",
                path.display()
            ),
            e => e.into(),
        },
    )?;
    let mut options = PgOptions::new(to.clone());
    options.ca_files = config.store.ca_files.clone();
    let target = Store::open_postgres(&options, &config.node_name(), registry.clone())
        .context("cannot open the target database")?;
    eprintln!(
        "edge: copying {} into {}",
        path.display(),
        target.describe()
    );
    let report = source.copy_to_postgres(&target, &mut |what, n| {
        eprintln!("edge: {what}: {n} copied so far");
    })?;
    for (what, n) in &report.copied {
        println!("copied {n:>10}  {what}");
    }
    for (what, n, why) in &report.left {
        println!("left   {n:>10}  {what}: {why}");
    }
    println!(
        "done: set [store] backend = \"postgres\" and url (or EDGE_STORE_URL) to serve from {}",
        target.describe()
    );
    Ok(ExitCode::SUCCESS)
}
