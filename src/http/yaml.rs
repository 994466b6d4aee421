//! A YAML writer for the spec: JSON values in block style, as people read and review them.
//!
//! The spec is a JSON value; YAML is only its committed and served form, so a writer for that
//! one shape is all that is needed (no reader, no serde). Strings are written plain where no
//! YAML reader could take them for anything else, else quoted; YAML 1.1 readers (which take
//! `2022-11-01`, `yes` or `on` for a date or a boolean) are readers too. Multi-line strings
//! are literal blocks.

use serde_json::Value;

/// `value` as a YAML document, ending in a newline.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(members) if !members.is_empty() => write_mapping(&mut out, value, 0),
        Value::Array(items) if !items.is_empty() => write_sequence(&mut out, value, 0),
        scalar => {
            out.push_str(&scalar_text(scalar, 0));
            out.push('\n');
        }
    }
    out
}

/// Writes the members of a non-empty mapping, each on its own line at `indent`.
fn write_mapping(out: &mut String, mapping: &Value, indent: usize) {
    let Value::Object(members) = mapping else {
        unreachable!("called with a mapping")
    };
    for (index, (key, value)) in members.iter().enumerate() {
        // The first key of a mapping inside a sequence follows its `- ` on the same line.
        if index > 0 || out.is_empty() || out.ends_with('\n') {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&key_text(key));
        out.push(':');
        write_value(out, value, indent, true);
    }
}

/// Writes the items of a non-empty sequence, each on its own line at `indent`.
fn write_sequence(out: &mut String, sequence: &Value, indent: usize) {
    let Value::Array(items) = sequence else {
        unreachable!("called with a sequence")
    };
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        write_value(out, item, indent, false);
    }
}

/// Writes `value` after a `key:` or a `-` at `indent`, and ends the line.
fn write_value(out: &mut String, value: &Value, indent: usize, after_key: bool) {
    match value {
        Value::Object(members) if !members.is_empty() => {
            if after_key {
                out.push('\n');
                write_mapping(out, value, indent + 2);
            } else {
                out.push(' ');
                write_mapping(out, value, indent + 2);
            }
        }
        // A sequence under a key sits at the key's own indentation, as is usual in YAML.
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_sequence(out, value, if after_key { indent } else { indent + 2 });
        }
        scalar => {
            out.push(' ');
            out.push_str(&scalar_text(scalar, indent + 2));
            out.push('\n');
        }
    }
}

fn scalar_text(value: &Value, indent: usize) -> String {
    match value {
        Value::Null => "null".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => number.to_string(),
        Value::String(text) => string_text(text, indent),
        Value::Array(_) => "[]".to_owned(),
        Value::Object(_) => "{}".to_owned(),
    }
}

/// A string as a scalar: a literal block when it has several lines and reads back exactly so,
/// plain when that is unambiguous, else single-quoted, or double-quoted with escapes when it
/// holds characters that YAML does not let stand as they are.
fn string_text(text: &str, indent: usize) -> String {
    if text.chars().any(must_be_escaped) {
        return double_quoted(text);
    }
    if text.contains('\n') {
        return match literal_block(text, indent) {
            Some(block) => block,
            None => double_quoted(text),
        };
    }
    if is_plain_safe(text) {
        return text.to_owned();
    }
    format!("'{}'", text.replace('\'', "''"))
}

/// A mapping key: never a block, which cannot be a key.
fn key_text(key: &str) -> String {
    if key.contains('\n') || key.chars().any(must_be_escaped) {
        return double_quoted(key);
    }
    string_text(key, 0)
}

/// Characters that YAML 1.1 or 1.2 readers do not take as printable text in a scalar, or
/// take for line breaks (NEL, the line and paragraph separators), or may drop (a BOM).
fn must_be_escaped(c: char) -> bool {
    (c.is_control() && c != '\n')
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{feff}' | '\u{fffe}' | '\u{ffff}'
        )
}

fn double_quoted(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            '\n' => quoted.push_str("\\n"),
            '\t' => quoted.push_str("\\t"),
            c if must_be_escaped(c) => match u32::from(c) {
                code @ 0..=0xff => quoted.push_str(&format!("\\x{code:02X}")),
                code => quoted.push_str(&format!("\\u{code:04X}")),
            },
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

/// `text` as a `|-` literal block at `indent`, when it reads back exactly: it does not end
/// with a line break (which `-` would drop), and its first line with text does not start
/// with a space (which would be taken for the block's indentation).
fn literal_block(text: &str, indent: usize) -> Option<String> {
    let first_with_text = text.split('\n').find(|line| !line.is_empty())?;
    if text.ends_with('\n') || first_with_text.starts_with(' ') || indent == 0 {
        return None;
    }
    let pad = " ".repeat(indent);
    let mut block = "|-".to_owned();
    for line in text.split('\n') {
        block.push('\n');
        if !line.is_empty() {
            block.push_str(&pad);
            block.push_str(line);
        }
    }
    Some(block)
}

/// Whether `text` reads back as this same string when written plain, in YAML 1.1 and 1.2.
fn is_plain_safe(text: &str) -> bool {
    const RESERVED: &[&str] = &[
        "null", "Null", "NULL", "~", "true", "True", "TRUE", "false", "False", "FALSE", "y", "Y",
        "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off", "OFF",
        ".nan", ".NaN", ".NAN", ".inf", ".Inf", ".INF",
    ];
    let Some(first) = text.chars().next() else {
        return false;
    };
    let starts_plainly = !(first.is_ascii_digit()
        || first.is_whitespace()
        || "-?:,[]{}#&*!|>'\"%@`+.=<".contains(first));
    starts_plainly
        && !text.ends_with(char::is_whitespace)
        && !text.contains(": ")
        && !text.ends_with(':')
        && !text.contains(" #")
        && !RESERVED.contains(&text)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn mappings_and_sequences_are_written_in_block_style() {
        let value = json!({
            "info": { "title": "Orders service", "version": "0.1.0" },
            "tags": [{ "name": "Health", "description": "Probes." }, { "name": "Orders" }],
            "required": ["id", "name"],
            "empty": {},
            "none": [],
        });
        assert_eq!(
            to_yaml(&value),
            "info:\n  title: Orders service\n  version: '0.1.0'\n\
             tags:\n- name: Health\n  description: Probes.\n- name: Orders\n\
             required:\n- id\n- name\nempty: {}\nnone: []\n"
        );
    }

    #[test]
    fn strings_a_reader_could_take_for_something_else_are_quoted() {
        for (text, written) in [
            ("2022-11-01T11:11:11.111Z", "'2022-11-01T11:11:11.111Z'"),
            ("2022-11-01", "'2022-11-01'"),
            ("201", "'201'"),
            ("yes", "'yes'"),
            ("null", "'null'"),
            ("#/components/schemas/Order", "'#/components/schemas/Order'"),
            ("detail: it's wrong", "'detail: it''s wrong'"),
            ("", "''"),
            ("tab\there", "\"tab\\there\""),
            ("a\u{7f}b", "\"a\\x7Fb\""),
            ("x\u{85}y", "\"x\\x85y\""),
            ("x\u{2028}y", "\"x\\u2028y\""),
            ("The new order's URL.", "The new order's URL."),
            ("application/json", "application/json"),
        ] {
            assert_eq!(string_text(text, 0), written, "{text}");
        }
    }

    #[test]
    fn multi_line_strings_are_literal_blocks() {
        let value = json!({ "description": "First.\n\n- `CODE`: meaning." });
        assert_eq!(
            to_yaml(&value),
            "description: |-\n  First.\n\n  - `CODE`: meaning.\n"
        );
    }

    /// Reads YAML back with an independent reader, as JSON.
    fn read_back(yaml: &str) -> Value {
        use yaml_rust2::{Yaml, YamlLoader};
        fn convert(yaml: &Yaml) -> Value {
            match yaml {
                Yaml::Null => Value::Null,
                Yaml::Boolean(flag) => Value::Bool(*flag),
                Yaml::Integer(integer) => Value::from(*integer),
                Yaml::Real(text) => Value::Number(text.parse().expect("a YAML real is a number")),
                Yaml::String(text) => Value::String(text.clone()),
                Yaml::Array(items) => Value::Array(items.iter().map(convert).collect()),
                Yaml::Hash(members) => Value::Object(
                    members
                        .iter()
                        .map(|(key, value)| {
                            let Yaml::String(key) = key else {
                                panic!("keys are strings, got {key:?}")
                            };
                            (key.clone(), convert(value))
                        })
                        .collect(),
                ),
                other => panic!("unexpected YAML node {other:?}"),
            }
        }
        let documents = YamlLoader::load_from_str(yaml).expect("the YAML parses");
        convert(&documents[0])
    }

    #[test]
    fn the_published_spec_reads_back_as_the_same_value() {
        let spec = crate::http::published_spec(&crate::http::api_service());
        assert_eq!(read_back(&to_yaml(&spec)), spec);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(2000))]

        /// Any string, as a key or a value, at any depth, reads back as itself.
        #[test]
        fn any_string_reads_back_as_itself(
            text in "(?s)[ -~\\t\\n\\r\\x00-\\x1f\\x7f-\\xa0\\u{2028}\\u{feff}é #:'\"|>-]{0,12}",
        ) {
            let value = json!({ "key": text.clone(), text.clone(): [text.clone(), { "deeper": text.clone() }] });
            proptest::prop_assert_eq!(read_back(&to_yaml(&value)), value);
        }
    }
}
