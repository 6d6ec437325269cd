//! `edge certs dev|show`: the dev certificates, and what the configured certificate holds.

use crate::config::Config;
use anyhow::bail;
use clap::Subcommand;
use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Subcommand)]
pub(super) enum CertsCommand {
    /// (Re)generate the dev server certificate in the certs dir for localhost, 127.0.0.1, ::1,
    /// `tls.names` and every --name, signed by the dev CA (generated if missing, or anew with
    /// --new-ca). A running server picks the new certificate up within seconds.
    Dev {
        /// An extra DNS name or IP address (repeatable), e.g. --name edge.home.arpa.
        #[arg(long = "name")]
        names: Vec<String>,
        /// Also replace the CA (clients must then trust the new ca.pem).
        #[arg(long)]
        new_ca: bool,
    },
    /// Print the subject, names and expiry of the certificate the config uses (and of the
    /// dev CA, for dev certificates).
    Show,
}

pub(super) fn certs(config: &Config, command: CertsCommand) -> anyhow::Result<ExitCode> {
    let dev = crate::tls::DevPaths::new(&config.certs_dir);
    if let CertsCommand::Dev { names, new_ca } = command {
        if config.tls.cert.is_some() {
            eprintln!(
                "edge: note: the config uses {} (tls.cert), not the dev certificate",
                config
                    .tls
                    .cert
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display()
            );
        }
        if new_ca {
            for path in [&dev.ca_cert, &dev.ca_key] {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => bail!("cannot remove {}: {e}", path.display()),
                }
            }
        }
        let mut all = config.tls.names.clone();
        all.extend(names);
        crate::tls::generate_dev(&dev, &all)?;
        println!("wrote {}", dev.server_cert.display());
    }
    let mut out = std::io::stdout().lock();
    let (cert, ca) = match &config.tls.cert {
        Some(cert) => (cert.clone(), None),
        None => (dev.server_cert.clone(), Some(dev.ca_cert.clone())),
    };
    for (what, path) in std::iter::once(("certificate", cert)).chain(ca.map(|ca| ("dev CA", ca))) {
        let chain = crate::tls::load_chain(&path)?;
        let info = crate::certs::CertInfo::of(&chain[0])
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        writeln!(out, "{what}: {}", path.display())?;
        writeln!(out, "  subject  {}", info.subject)?;
        writeln!(out, "  issuer   {}", info.issuer)?;
        if !info.names.is_empty() {
            writeln!(out, "  names    {}", info.names.join(", "))?;
        }
        writeln!(out, "  expires  {} ({} days)", info.expires, info.days_left)?;
        if let Some(warning) = info.warning() {
            writeln!(out, "  warning  {warning}")?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
