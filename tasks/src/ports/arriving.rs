//! Ports as they arrive: parsed from the record's bytes with their strings borrowed, the fast
//! path from JSON to the stored form.

use super::codec;
use serde::Deserialize;
use std::borrow::Cow;

/// A port as it arrives, its strings borrowed from the record (copied only when they hold an
/// escape): the fast path from JSON to the stored form, with no allocation per field. Same
/// fields as [`Port`]. A record it refuses is parsed again as a [`Port`], which names what is
/// wrong.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ArrivingPort<'a> {
    #[serde(borrow)]
    name: Text<'a>,
    #[serde(default, borrow)]
    city: Option<Text<'a>>,
    #[serde(default, borrow)]
    country: Option<Text<'a>>,
    #[serde(default, borrow)]
    alias: Vec<Text<'a>>,
    #[serde(default, borrow)]
    regions: Vec<Text<'a>>,
    #[serde(default)]
    coordinates: Option<[f64; 2]>,
    #[serde(default, borrow)]
    province: Option<Text<'a>>,
    #[serde(default, borrow)]
    timezone: Option<Text<'a>>,
    #[serde(default, borrow)]
    unlocs: Vec<Text<'a>>,
    #[serde(default, borrow)]
    code: Option<Text<'a>>,
}

impl<'a> ArrivingPort<'a> {
    pub(super) fn fields(&self) -> codec::Fields<'_, Text<'a>> {
        codec::Fields {
            name: self.name.as_ref(),
            city: self.city.as_ref().map(AsRef::as_ref),
            country: self.country.as_ref().map(AsRef::as_ref),
            alias: &self.alias,
            regions: &self.regions,
            coordinates: self.coordinates,
            province: self.province.as_ref().map(AsRef::as_ref),
            timezone: self.timezone.as_ref().map(AsRef::as_ref),
            unlocs: &self.unlocs,
            code: self.code.as_ref().map(AsRef::as_ref),
        }
    }
}

/// A JSON string borrowed from the record, or decoded into its own buffer when it holds an
/// escape (serde's own `Cow<str>` never borrows inside an `Option` or a `Vec`).
#[derive(Debug)]
pub(super) struct Text<'a>(Cow<'a, str>);

impl AsRef<str> for Text<'_> {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E>(self, text: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(text)))
            }

            fn visit_str<E>(self, text: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text.to_owned())))
            }

            fn visit_string<E>(self, text: String) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(text)))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}
