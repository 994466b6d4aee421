//! Request bodies, read field by field so that every error names its field.
//!
//! poem-openapi's derived parsers report a bad field by its type's name, not the field's,
//! and a missing field as `Type "string_date-time" expects an input value`. A caller needs
//! `totalfee: at most 2 decimal places`. So a body type derives `Object` for its schema (the
//! spec stays derived from the code) and implements [`ReadJson`], which reads the JSON straight
//! into validated values; `Body<T>` joins the two for the request payload.

use std::{borrow::Cow, fmt::Display};

use poem_openapi::{
    registry::{MetaSchemaRef, Registry},
    types::{ParseError, ParseFromJSON, ParseResult, Type},
};
use serde_json::{Map, Value};

/// What is wrong with a request body, and where: shown as `services[2].id: must be a string`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Where in the body, as `field`, `field[index]` or `field[index].field`; empty for the
    /// body as a whole.
    pub path: String,
    pub problem: String,
}

impl FieldError {
    pub fn new(path: &str, problem: impl Display) -> Self {
        Self {
            path: path.to_owned(),
            problem: problem.to_string(),
        }
    }

    /// The same error, seen from the value that contains this one at `parent`.
    fn within(mut self, parent: &str) -> Self {
        self.path = if self.path.is_empty() {
            parent.to_owned()
        } else if self.path.starts_with('[') {
            format!("{parent}{}", self.path)
        } else {
            format!("{parent}.{}", self.path)
        };
        self
    }
}

impl Display for FieldError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.problem)
        } else {
            write!(f, "{}: {}", self.path, self.problem)
        }
    }
}

/// A body schema type, and how to read its JSON into validated values with field-named errors.
pub trait ReadJson: Type {
    /// What a body of this schema is read into.
    type Value;

    /// The fields the body may have; any other is refused, so a typo cannot be silently dropped.
    const FIELDS: &'static [&'static str];

    fn read(fields: &Fields) -> Result<Self::Value, FieldError>;
}

/// The members of a JSON object, read one by one.
pub struct Fields<'a>(&'a Map<String, Value>);

impl Fields<'_> {
    /// Reads a required member with `read`, naming the field in any error.
    pub fn required<T>(
        &self,
        name: &str,
        read: impl FnOnce(&Value) -> Result<T, FieldError>,
    ) -> Result<T, FieldError> {
        match self.0.get(name) {
            None | Some(Value::Null) => Err(FieldError::new(name, "is required")),
            Some(value) => read(value).map_err(|error| error.within(name)),
        }
    }
}

/// Adapts a scalar reader whose error is just a problem (`at most 2 decimal places`).
pub fn scalar<T, E: Display>(
    read: impl FnOnce(&Value) -> Result<T, E>,
) -> impl FnOnce(&Value) -> Result<T, FieldError> {
    move |value| read(value).map_err(|problem| FieldError::new("", problem))
}

/// Reads a JSON string.
pub fn string(value: &Value) -> Result<&str, FieldError> {
    value
        .as_str()
        .ok_or_else(|| FieldError::new("", "must be a string"))
}

/// Reads an array member's items with `read_item`, naming the item in any error
/// (`services[2].id: must be a string`).
pub fn read_array<T>(
    value: &Value,
    read_item: impl Fn(&Value) -> Result<T, FieldError>,
) -> Result<Vec<T>, FieldError> {
    let Value::Array(items) = value else {
        return Err(FieldError::new("", "must be an array"));
    };
    items
        .iter()
        .enumerate()
        .map(|(index, item)| read_item(item).map_err(|error| error.within(&format!("[{index}]"))))
        .collect()
}

/// Reads `value` as an object with only `T::FIELDS`, then lets `T` read the members.
pub fn read_object<T: ReadJson>(value: &Value) -> Result<T::Value, FieldError> {
    let Value::Object(members) = value else {
        return Err(FieldError::new("", "must be a JSON object"));
    };
    if let Some(unknown) = members
        .keys()
        .find(|key| !T::FIELDS.contains(&key.as_str()))
    {
        return Err(FieldError::new(
            unknown,
            format!(
                "is not a known field (known fields: {})",
                T::FIELDS.join(", ")
            ),
        ));
    }
    T::read(&Fields(members))
}

/// A request payload with `T`'s schema, read with `T`'s [`ReadJson`].
pub struct Body<T: ReadJson>(pub T::Value);

impl<T: ReadJson> Type for Body<T>
where
    T::Value: Send + Sync,
{
    const IS_REQUIRED: bool = true;
    // Validators and raw-value access are for derived types; this one validates as it reads.
    type RawValueType = ();
    type RawElementValueType = ();

    fn name() -> Cow<'static, str> {
        T::name()
    }

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn as_raw_value(&self) -> Option<&Self::RawValueType> {
        None
    }

    fn raw_element_iter<'a>(
        &'a self,
    ) -> Box<dyn Iterator<Item = &'a Self::RawElementValueType> + 'a> {
        Box::new(std::iter::empty())
    }
}

/// Marks the start of a field error in the payload error's text, so the request pipeline can
/// tell it from a JSON syntax error and strip the framework's wording around it.
pub const FIELD_ERROR_MARKER: &str = "invalid body: ";

impl<T: ReadJson> ParseFromJSON for Body<T>
where
    T::Value: Send + Sync,
{
    fn parse_from_json(value: Option<Value>) -> ParseResult<Self> {
        let value = value.unwrap_or_default();
        if !value.is_object() {
            return Err(ParseError::custom(format!(
                "{FIELD_ERROR_MARKER}the request body must be a JSON object"
            )));
        }
        read_object::<T>(&value)
            .map(Body)
            .map_err(|error| ParseError::custom(format!("{FIELD_ERROR_MARKER}{error}")))
    }
}
