//! Generates the client from the service's committed `openapi.yaml` at every build, so the
//! client can never drift from the contract.
//!
//! The spec is handed to progenitor with one change, made here in memory and never to the
//! committed file: every JSON media type key (`application/json`, `application/problem+json`,
//! with or without parameters such as `; charset=utf-8`) becomes plain `application/json`.
//! Progenitor decodes only `application/json` bodies; without this, error responses would arrive
//! as untyped byte streams instead of `types::Problem`.

use std::{env, fs, path::Path};

use serde_json::{Map, Value};

/// The committed contract, relative to this crate's folder.
const SPEC: &str = "../openapi.yaml";

fn main() {
    println!("cargo:rerun-if-changed={SPEC}");
    println!("cargo:rerun-if-changed=build.rs");

    let manifest_dir = env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let spec_path = Path::new(&manifest_dir).join(SPEC);
    let text = fs::read_to_string(&spec_path)
        .unwrap_or_else(|error| panic!("read {}: {error}", spec_path.display()));
    let mut spec: Value = serde_yaml::from_str(&text)
        .unwrap_or_else(|error| panic!("parse {} as YAML: {error}", spec_path.display()));

    normalise_media_types(&mut spec);

    let spec: openapiv3::OpenAPI = serde_json::from_value(spec).unwrap_or_else(|error| {
        panic!(
            "{} is not an OpenAPI 3.0 document: {error}",
            spec_path.display()
        )
    });
    let mut settings = progenitor::GenerationSettings::new();
    settings
        // Builder calls name each argument, and adding an optional parameter to the spec
        // does not break existing callers.
        .with_interface(progenitor::InterfaceStyle::Builder)
        .with_tag(progenitor::TagStyle::Merged)
        // Whole representations compare with `==`, as callers and tests want to.
        .with_derive("PartialEq");
    let tokens = progenitor::Generator::new(&settings)
        .generate_tokens(&spec)
        .unwrap_or_else(|error| panic!("generate the client from {SPEC}: {error}"));
    let file = syn::parse2(tokens).expect("progenitor emits valid Rust");

    let out = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("generated.rs");
    fs::write(&out, prettyplease::unparse(&file))
        .unwrap_or_else(|error| panic!("write {}: {error}", out.display()));
}

/// Renames every JSON media type key of every request body and response to `application/json`.
fn normalise_media_types(spec: &mut Value) {
    if let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) {
        for item in paths.values_mut().filter_map(Value::as_object_mut) {
            for operation in item.values_mut().filter_map(Value::as_object_mut) {
                normalise_body(operation.get_mut("requestBody"));
                if let Some(responses) = operation
                    .get_mut("responses")
                    .and_then(Value::as_object_mut)
                {
                    responses.values_mut().for_each(|r| normalise_body(Some(r)));
                }
            }
        }
    }
    if let Some(components) = spec.get_mut("components").and_then(Value::as_object_mut) {
        for section in ["requestBodies", "responses"] {
            if let Some(bodies) = components.get_mut(section).and_then(Value::as_object_mut) {
                bodies.values_mut().for_each(|b| normalise_body(Some(b)));
            }
        }
    }
}

/// Renames the JSON media type keys of one request body or response's `content`.
fn normalise_body(body: Option<&mut Value>) {
    let Some(content) = body
        .and_then(|body| body.get_mut("content"))
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let mut renamed = Map::new();
    for (media_type, value) in std::mem::take(content) {
        let key = if is_json(&media_type) {
            "application/json".to_owned()
        } else {
            media_type.clone()
        };
        // Progenitor allows one body type per response; two JSON media types in one response
        // would need a choice this script cannot make.
        if renamed.insert(key, value).is_some() {
            panic!("{SPEC}: more than one JSON media type in one body (second: {media_type})");
        }
    }
    *content = renamed;
}

/// `application/json` or `application/problem+json`, with any parameters.
fn is_json(media_type: &str) -> bool {
    let essence = media_type.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence.eq_ignore_ascii_case("application/problem+json")
}
