//! A sea port: the record type, and the checks its type cannot make.

use super::codec;
use serde::{Deserialize, Serialize};

/// One sea port.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// The port's name (required).
    pub name: String,
    /// City.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Country.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Other names.
    #[serde(default)]
    pub alias: Vec<String>,
    /// Regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// `[longitude, latitude]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinates: Option<[f64; 2]>,
    /// Province or state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub province: Option<String>,
    /// IANA time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// UN/LOCODEs of the port.
    #[serde(default)]
    pub unlocs: Vec<String>,
    /// A numeric code, as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

/// Checks what the type cannot: a non-blank name and coordinates in range.
pub(super) fn validate(name: &str, coordinates: Option<[f64; 2]>) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("field `name` must not be empty".into());
    }
    if let Some([lon, lat]) = coordinates {
        if !lon.is_finite() || !(-180.0..=180.0).contains(&lon) {
            return Err(format!(
                "field `coordinates`: longitude {lon} is outside [-180, 180]"
            ));
        }
        if !lat.is_finite() || !(-90.0..=90.0).contains(&lat) {
            return Err(format!(
                "field `coordinates`: latitude {lat} is outside [-90, 90]"
            ));
        }
    }
    Ok(())
}

impl Port {
    /// Its fields, borrowed, for the encoder.
    pub(super) fn fields(&self) -> codec::Fields<'_, String> {
        codec::Fields {
            name: &self.name,
            city: self.city.as_deref(),
            country: self.country.as_deref(),
            alias: &self.alias,
            regions: &self.regions,
            coordinates: self.coordinates,
            province: self.province.as_deref(),
            timezone: self.timezone.as_deref(),
            unlocs: &self.unlocs,
            code: self.code.as_deref(),
        }
    }
}
