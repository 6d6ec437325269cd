//! Upload formats: how the bytes of a job are cut into records.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// How an upload is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON document: a top-level object whose values are records (the key is the record
    /// id), or a top-level array of records.
    Json,
    /// Newline-delimited JSON: one record per line.
    Ndjson,
    /// One value per line (plain text), e.g. a list of numbers.
    Lines,
    /// Comma-separated values with a header row naming the columns (RFC 4180 quoting).
    Csv,
    /// The body as it is, not cut into records: for a task that stores files (`blobs`).
    /// Never sniffed: a task that reads it takes every body this way.
    Raw,
}

impl Format {
    /// Every format, in the order they are documented.
    pub const ALL: [Format; 5] = [
        Format::Json,
        Format::Ndjson,
        Format::Lines,
        Format::Csv,
        Format::Raw,
    ];

    /// The name used in headers, query strings and events.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Json => "json",
            Format::Ndjson => "ndjson",
            Format::Lines => "lines",
            Format::Csv => "csv",
            Format::Raw => "raw",
        }
    }

    /// The format a file name suggests by its extension, if any.
    pub fn from_file_name(name: &str) -> Option<Format> {
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        match ext.as_str() {
            "json" => Some(Format::Json),
            "ndjson" | "jsonl" => Some(Format::Ndjson),
            "txt" | "lines" => Some(Format::Lines),
            "csv" => Some(Format::Csv),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is not one of [`Format::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format `{0}` (expected one of: json, ndjson, lines, csv, raw)")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "json" => Ok(Format::Json),
            "ndjson" | "jsonl" => Ok(Format::Ndjson),
            "lines" => Ok(Format::Lines),
            "csv" => Ok(Format::Csv),
            "raw" => Ok(Format::Raw),
            other => Err(UnknownFormat(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for f in Format::ALL {
            assert_eq!(f.as_str().parse::<Format>(), Ok(f));
            assert_eq!(serde_json::to_string(&f).unwrap(), format!("\"{f}\""));
        }
        assert!("xml".parse::<Format>().is_err());
    }

    #[test]
    fn file_extensions() {
        assert_eq!(Format::from_file_name("ports.JSON"), Some(Format::Json));
        assert_eq!(Format::from_file_name("a.jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::from_file_name("numbers.txt"), Some(Format::Lines));
        assert_eq!(Format::from_file_name("README"), None);
    }
}
