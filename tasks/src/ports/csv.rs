//! Ports from CSV rows: the header names the fields.

use crate::record::{CsvRow, Rejection};
use serde_json::{json, Map, Value};

/// The port fields that hold lists; in CSV their items are separated by `;`.
const LIST_FIELDS: [&str; 3] = ["alias", "regions", "unlocs"];

/// A CSV row as the JSON object of a port: columns name the fields; empty cells are absent;
/// `alias`, `regions` and `unlocs` are `;`-separated lists; `coordinates` is one `"lon,lat"`
/// cell or the two columns `lon` and `lat`. Other columns pass through, so that the port's
/// own checks name them. Text is kept as it is (RFC 4180: spaces are part of a field).
pub(super) fn csv_to_json(row: &CsvRow<'_>) -> Result<Vec<u8>, Rejection> {
    let mut port = Map::new();
    let (mut lon, mut lat) = (None, None);
    for (column, cell) in row.fields() {
        let value = match column {
            _ if cell.is_empty() => continue,
            "lon" => {
                lon = Some(number(column, cell)?);
                continue;
            }
            "lat" => {
                lat = Some(number(column, cell)?);
                continue;
            }
            "coordinates" => {
                let (x, y) = cell.split_once(',').ok_or_else(|| {
                    Rejection::invalid(format!(
                        "field `coordinates`: expected \"lon,lat\", found `{cell}`"
                    ))
                })?;
                json!([
                    number("coordinates", x.trim())?,
                    number("coordinates", y.trim())?
                ])
            }
            list if LIST_FIELDS.contains(&list) => Value::Array(
                cell.split(';')
                    .filter(|item| !item.is_empty())
                    .map(|item| Value::String(item.to_owned()))
                    .collect(),
            ),
            _ => Value::String(cell.to_owned()),
        };
        port.insert(column.to_owned(), value);
    }
    match (lon, lat) {
        (None, None) => {}
        (Some(lon), Some(lat)) if !port.contains_key("coordinates") => {
            port.insert("coordinates".into(), json!([lon, lat]));
        }
        (Some(_), Some(_)) => {
            return Err(Rejection::invalid(
                "give coordinates either as `coordinates` or as `lon` and `lat`, not both",
            ))
        }
        _ => {
            return Err(Rejection::invalid(
                "field `coordinates`: `lon` and `lat` must both be given",
            ))
        }
    }
    Ok(serde_json::to_vec(&port).expect("a map of strings and finite numbers always serializes"))
}

/// A finite number from a CSV cell, or a rejection naming the field.
fn number(field: &str, cell: &str) -> Result<f64, Rejection> {
    let cell = cell.trim();
    match cell.parse::<f64>() {
        Ok(x) if x.is_finite() => Ok(x),
        _ => Err(Rejection::invalid(format!(
            "field `{field}`: expected a finite number, found `{cell}`"
        ))),
    }
}
