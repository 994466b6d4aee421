//! The published spec: what poem-openapi derives from the API traits, finished for the people
//! and the generators that read it.
//!
//! poem-openapi gets the operations and schemas right, but writes a few things its own way and
//! cannot express others. [`finish`] settles both on the spec's JSON form, once, before it is
//! served (`/openapi.json`, `/openapi.yaml`, `/docs`) or committed (`openapi.yaml`):
//! - media types are plain `application/json` and `application/problem+json` (poem-openapi
//!   appends `; charset=utf-8`, which some generators take for a different media type);
//! - response header names are in their usual case (`ETag`, `Location`), not upper-cased;
//! - every error response gets an example body for each problem `code` its description lists;
//! - create, view and update responses get OpenAPI links to the operations on the resource they
//!   return, so that readers and stateful testing tools can chain create → view → update → delete;
//! - the schemas of request bodies say `additionalProperties: false`: bodies are read field by
//!   field and unknown fields refused (`http::input`), which poem-openapi's `deny_unknown_fields`
//!   does not write into the spec;
//! - each protected operation states the scope it needs (OpenAPI 3.0 has scopes only for
//!   OAuth2), in its description and as `x-required-scopes`, from [`super::auth::required_scope`],
//!   the rule the server enforces; each public one says `security: []`, so that no reader
//!   takes it for one whose requirement was forgotten;
//! - responses that a create with an `Idempotency-Key` can replay say `Idempotent-Replayed`;
//! - a `oneOf` whose every member has a `type` of one value (the change feed's events) gets a
//!   `discriminator` on `type` mapping each value to its schema, which poem-openapi writes only
//!   in a form (each member wrapped in an `allOf`) that generators decode poorly.
//!
//! Nothing here changes what the server does; it only says it better.

use poem_openapi::types::ToJSON;
use serde_json::{Map, Value, json};

use super::{
    idempotency::IDEMPOTENT_REPLAYED,
    input::FieldError,
    pipeline::EMPTY_IF_MATCH,
    problem::{
        ApiError, ErrorCode,
        documentation::{EXAMPLE_REQUEST_ID, described_codes},
    },
};
use crate::{
    app::Resource,
    domain::{MoneyError, OrderId, ServiceNameError},
};

/// Finishes the spec as poem-openapi wrote it; see the module docs.
pub fn finish(spec: &mut Value) {
    close_request_schemas(spec);
    add_discriminators(spec);
    let Some(paths) = spec.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for operation in paths.values_mut().filter_map(Value::as_object_mut) {
        for (method, operation) in operation.iter_mut() {
            state_security(method, operation);
            finish_operation(operation);
        }
    }
}

/// States what an operation's caller needs: the scope of a protected one, or no key at all.
fn state_security(method: &str, operation: &mut Value) {
    let protected = operation
        .get("security")
        .and_then(Value::as_array)
        .is_some_and(|requirements| !requirements.is_empty());
    if !protected {
        operation["security"] = json!([]);
        return;
    }
    let method = poem::http::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .expect("the spec's methods are HTTP methods");
    let operation_id = operation["operationId"].as_str().unwrap_or_default();
    let scope = super::auth::required_scope(&method, operation_id);
    let description = operation["description"].as_str().unwrap_or_default();
    operation["description"] = json!(format!(
        "{description}\n\nNeeds an API key with the scope `{scope}`."
    ));
    operation["x-required-scopes"] = json!([scope.as_str()]);
}

/// Marks every object schema a request body uses, directly or through its properties, as
/// allowing no other properties.
fn close_request_schemas(spec: &mut Value) {
    let mut pending = Vec::new();
    for item in spec["paths"].as_object().into_iter().flat_map(Map::values) {
        for operation in item.as_object().into_iter().flat_map(Map::values) {
            collect_schema_refs(&operation["requestBody"], &mut pending);
        }
    }
    let mut closed = Vec::new();
    while let Some(name) = pending.pop() {
        if closed.contains(&name) {
            continue;
        }
        let Some(schema) = spec
            .pointer_mut(&format!("/components/schemas/{name}"))
            .filter(|schema| schema["type"] == "object")
        else {
            continue;
        };
        schema["additionalProperties"] = Value::Bool(false);
        collect_schema_refs(schema, &mut pending);
        closed.push(name);
    }
}

/// Adds a `discriminator` on `type` to each component schema that is a `oneOf` of schemas whose
/// `type` property has a single value; see the module docs.
fn add_discriminators(spec: &mut Value) {
    let Some(schemas) = spec
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    let resolve = |node: &Value| -> Option<Value> {
        let name = node
            .get("$ref")?
            .as_str()?
            .strip_prefix("#/components/schemas/")?;
        schemas.get(name).cloned()
    };
    let mut discriminators = Vec::new();
    for (name, schema) in schemas.iter() {
        let Some(members) = schema.get("oneOf").and_then(Value::as_array) else {
            continue;
        };
        let mapping: Option<Map<String, Value>> = members
            .iter()
            .map(|member| {
                let reference = member.get("$ref")?.clone();
                let type_property = resolve(member)?.pointer("/properties/type")?.clone();
                // A described reference is written as `allOf: [{$ref}]`.
                let type_property = type_property
                    .pointer("/allOf/0")
                    .cloned()
                    .unwrap_or(type_property);
                let type_schema = resolve(&type_property).unwrap_or(type_property);
                match type_schema.get("enum")?.as_array()?.as_slice() {
                    [Value::String(value)] => Some((value.clone(), reference)),
                    _ => None,
                }
            })
            .collect();
        if let Some(mapping) = mapping {
            discriminators.push((name.clone(), mapping));
        }
    }
    for (name, mapping) in discriminators {
        schemas[&name]["discriminator"] = json!({ "propertyName": "type", "mapping": mapping });
    }
}

/// The names of the component schemas that `value` refers to, anywhere inside it.
fn collect_schema_refs(value: &Value, names: &mut Vec<String>) {
    match value {
        Value::Object(members) => {
            for (key, member) in members {
                match (key.as_str(), member.as_str()) {
                    ("$ref", Some(target)) => {
                        if let Some(name) = target.strip_prefix("#/components/schemas/") {
                            names.push(name.to_owned());
                        }
                    }
                    _ => collect_schema_refs(member, names),
                }
            }
        }
        Value::Array(items) => items
            .iter()
            .for_each(|item| collect_schema_refs(item, names)),
        _ => {}
    }
}

fn finish_operation(operation: &mut Value) {
    let operation_id = operation
        .get("operationId")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(content) = operation.pointer_mut("/requestBody/content") {
        plain_media_types(content);
    }
    let Some(responses) = operation
        .get_mut("responses")
        .and_then(Value::as_object_mut)
    else {
        return;
    };
    for (status, response) in responses.iter_mut() {
        if let Some(content) = response.get_mut("content") {
            plain_media_types(content);
        }
        if let Some(headers) = response.get_mut("headers") {
            usual_case_header_names(headers);
        }
        add_problem_examples(response, &operation_id);
        if replayable(&operation_id, status)
            && let Some(headers) = response.as_object_mut()
        {
            let headers = headers.entry("headers").or_insert_with(|| json!({}));
            headers[IDEMPOTENT_REPLAYED] = json!({
                "description": "`true` when this is the first answer to the same request with the same `Idempotency-Key`, replayed; nothing was done again. Absent otherwise.",
                "schema": { "type": "string", "enum": ["true"] },
            });
        }
        if let Some(links) = links(&operation_id, status) {
            response["links"] = links;
        }
    }
}

/// Whether the response `status` of `operation_id` can be a replay: a create's success, and
/// the refusals its write decides (see `app::idempotency`): the 3-hour rule and unknown
/// services for an order, a taken name for a service.
fn replayable(operation_id: &str, status: &str) -> bool {
    match operation_id {
        "order_create" => matches!(status, "201" | "409" | "422"),
        "service_create" => matches!(status, "201" | "409"),
        _ => false,
    }
}

/// Drops media type parameters from the keys of a `content` map.
fn plain_media_types(content: &mut Value) {
    rename_keys(content, |media_type| {
        media_type
            .split(';')
            .next()
            .unwrap_or(media_type)
            .trim()
            .to_owned()
    });
}

fn usual_case_header_names(headers: &mut Value) {
    rename_keys(headers, usual_header_case);
}

/// `ETAG` → `ETag`, `X-REQUEST-ID` → `X-Request-Id`: each word capitalised, as the RFCs
/// spell them. Header names are case-insensitive on the wire; this is for people and generators.
pub fn usual_header_case(name: &str) -> String {
    if name.eq_ignore_ascii_case("etag") {
        return "ETag".to_owned();
    }
    if name.eq_ignore_ascii_case("www-authenticate") {
        return "WWW-Authenticate".to_owned();
    }
    name.split('-')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut letters = lower.chars();
            letters.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + letters.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn rename_keys(map: &mut Value, rename: impl Fn(&str) -> String) {
    if let Some(members) = map.as_object_mut() {
        *members = std::mem::take(members)
            .into_iter()
            .map(|(key, value)| (rename(&key), value))
            .collect();
    }
}

/// Adds `examples` to a problem response: one body per problem code its description lists
/// (see [`super::problem::documentation::describe_codes`]), named by the code, as the
/// operation `operation_id` would return it.
fn add_problem_examples(response: &mut Value, operation_id: &str) {
    let description = response
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let codes = described_codes(description);
    let Some(media_type) = response.pointer_mut("/content/application~1problem+json") else {
        return;
    };
    if codes.is_empty() {
        return;
    }
    let examples: Map<String, Value> = codes
        .into_iter()
        .map(|code| {
            let body = example_error(code, operation_id).to_problem(EXAMPLE_REQUEST_ID.to_owned());
            let example = json!({
                "summary": code.info().title,
                "value": body.to_json().unwrap_or(Value::Null),
            });
            (code.as_str().to_owned(), example)
        })
        .collect();
    media_type["examples"] = Value::Object(examples);
}

/// The links a response offers: the operations on the resource it returns, with the id taken
/// from the body and `If-Match` from the `ETag` header.
fn links(operation_id: &str, status: &str) -> Option<Value> {
    let (resource, targets): (&str, &[&str]) = match (operation_id, status) {
        ("order_create", "201") | ("order_view", "200") => {
            ("Order", &["order_view", "order_update", "order_delete"])
        }
        ("order_update", "200") => ("Order", &["order_view", "order_delete"]),
        ("service_create", "201") | ("service_view", "200") => (
            "Service",
            &["service_view", "service_update", "service_delete"],
        ),
        ("service_update", "200") => ("Service", &["service_view", "service_delete"]),
        _ => return None,
    };
    let links: Map<String, Value> = targets
        .iter()
        .filter(|target| **target != operation_id)
        .map(|target| {
            let (_, action) = target.split_once('_').unwrap_or_default();
            let mut parameters = json!({ "id": "$response.body#/id" });
            let description = match action {
                "view" => format!("Read this {}.", resource.to_lowercase()),
                "update" => {
                    parameters["If-Match"] = json!("$response.header.ETag");
                    format!(
                        "Replace this {}, if it has not changed since this response.",
                        resource.to_lowercase()
                    )
                }
                _ => {
                    parameters["If-Match"] = json!("$response.header.ETag");
                    format!(
                        "Delete this {}, if it has not changed since this response.",
                        resource.to_lowercase()
                    )
                }
            };
            let name = format!("{}{resource}", capitalised(action));
            let link = json!({
                "operationId": target,
                "parameters": parameters,
                "description": description,
            });
            (name, link)
        })
        .collect();
    Some(Value::Object(links))
}

fn capitalised(word: &str) -> String {
    let mut letters = word.chars();
    letters.next().map_or_else(String::new, |first| {
        first.to_ascii_uppercase().to_string() + letters.as_str()
    })
}

/// A typical error with `code` from the operation `operation_id` (`order_update`), for the
/// spec's examples: built as the server builds it, so its text is the server's.
pub fn example_error(code: ErrorCode, operation_id: &str) -> ApiError {
    let resource = match operation_id.split('_').next() {
        Some("service") => Resource::Service,
        _ => Resource::Order,
    };
    match code {
        ErrorCode::MalformedJson => ApiError::not_json("expected value at line 1 column 1"),
        ErrorCode::InvalidBody => ApiError::with_detail(
            code,
            match resource {
                Resource::Service => FieldError::new("name", ServiceNameError::Empty).to_string(),
                Resource::Order => FieldError::new("totalfee", MoneyError::TooPrecise).to_string(),
            },
        ),
        ErrorCode::InvalidParameter if operation_id.ends_with("_create") => {
            ApiError::invalid_idempotency_key()
        }
        ErrorCode::InvalidParameter if operation_id == "event_list" => {
            ApiError::with_detail(code, "limit: must be at least 1")
        }
        ErrorCode::InvalidParameter if operation_id.ends_with("_list") => {
            ApiError::with_detail(code, "page_size: must be at least 1")
        }
        ErrorCode::InvalidParameter => {
            ApiError::with_detail(code, format!("If-Match: {EMPTY_IF_MATCH}"))
        }
        ErrorCode::NotFound => ApiError::not_found(resource, "999"),
        ErrorCode::MethodNotAllowed => ApiError::method_not_allowed("POST, GET, HEAD".to_owned()),
        ErrorCode::OrderTimeConflict => ApiError::order_time_conflict(Some(OrderId::from_db(223))),
        ErrorCode::UnknownService => ApiError::unknown_services(vec!["999".to_owned()]),
        ErrorCode::Forbidden => {
            // Operation ids end in their action; reads are the ones that list or view.
            let method = if operation_id.ends_with("_list") || operation_id.ends_with("_view") {
                poem::http::Method::GET
            } else {
                poem::http::Method::POST
            };
            ApiError::forbidden(super::auth::required_scope(&method, operation_id))
        }
        ErrorCode::IdempotencyKeyInUse => ApiError::idempotency_key_in_use(),
        ErrorCode::RateLimited => ApiError::rate_limited(
            "billing-sync",
            &crate::app::rate_limit::RateLimited {
                limit: crate::domain::RateLimit::new(
                    std::num::NonZeroU32::new(10).expect("10 is not zero"),
                    std::num::NonZeroU32::new(20),
                ),
                wait: std::time::Duration::from_millis(100),
            },
        ),
        ErrorCode::Overloaded => ApiError::overloaded(),
        // Codes whose detail never depends on the request.
        code => ApiError::new(code),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_names_take_their_usual_case() {
        assert_eq!(usual_header_case("ETAG"), "ETag");
        assert_eq!(usual_header_case("LOCATION"), "Location");
        assert_eq!(usual_header_case("X-REQUEST-ID"), "X-Request-Id");
        assert_eq!(usual_header_case("retry-after"), "Retry-After");
        assert_eq!(usual_header_case("WWW-AUTHENTICATE"), "WWW-Authenticate");
    }

    #[test]
    fn media_type_parameters_are_dropped() {
        let mut content = json!({ "application/json; charset=utf-8": { "schema": {} } });
        plain_media_types(&mut content);
        assert_eq!(content, json!({ "application/json": { "schema": {} } }));
    }

    #[test]
    fn a_problem_response_gets_one_example_per_listed_code() {
        let mut response = json!({
            "description": "Conflict.\n\nThe problem `code` is one of:\n- `ORDER_TIME_CONFLICT`: too close.",
            "content": { "application/problem+json": { "schema": {} } },
        });
        add_problem_examples(&mut response, "order_create");
        let examples = &response["content"]["application/problem+json"]["examples"];
        let names: Vec<&String> = examples.as_object().unwrap().keys().collect();
        assert_eq!(names, ["ORDER_TIME_CONFLICT"]);
        let body = &examples["ORDER_TIME_CONFLICT"]["value"];
        assert_eq!(body["status"], 409);
        assert_eq!(body["code"], "ORDER_TIME_CONFLICT");
        assert_eq!(body["conflicting_order_id"], "223");
    }

    #[test]
    fn request_body_schemas_and_those_they_use_allow_no_other_properties() {
        let ref_to = |name: &str| json!({ "$ref": format!("#/components/schemas/{name}") });
        let mut spec = json!({
            "paths": { "/orders": { "post": {
                "requestBody": { "content": { "application/json": { "schema": ref_to("OrderInput") } } },
                "responses": { "201": { "content": { "application/json": { "schema": ref_to("Order") } } } },
            } } },
            "components": { "schemas": {
                "OrderInput": { "type": "object", "properties": {
                    "services": { "type": "array", "items": ref_to("ServiceRef") },
                } },
                "ServiceRef": { "type": "object", "properties": {} },
                "Order": { "type": "object", "properties": {} },
            } },
        });
        close_request_schemas(&mut spec);
        let schemas = &spec["components"]["schemas"];
        assert_eq!(schemas["OrderInput"]["additionalProperties"], false);
        assert_eq!(schemas["ServiceRef"]["additionalProperties"], false);
        assert!(
            schemas["Order"].get("additionalProperties").is_none(),
            "responses may grow new fields"
        );
    }

    #[test]
    fn a_create_response_links_to_the_other_operations_on_what_it_created() {
        let links = links("order_create", "201").expect("create has links");
        let names: Vec<&String> = links.as_object().unwrap().keys().collect();
        assert_eq!(names, ["ViewOrder", "UpdateOrder", "DeleteOrder"]);
        assert_eq!(links["UpdateOrder"]["operationId"], "order_update");
        assert_eq!(
            links["UpdateOrder"]["parameters"]["id"],
            "$response.body#/id"
        );
        assert_eq!(
            links["UpdateOrder"]["parameters"]["If-Match"],
            "$response.header.ETag"
        );
        assert!(super::links("order_list", "200").is_none());
    }

    /// Every protected operation states one scope, and its 403 example names that scope; every
    /// other operation says it needs no key.
    #[test]
    fn each_operation_states_its_scope_and_its_forbidden_example_agrees() {
        let spec = crate::http::published_spec(&crate::http::api_service());
        let mut protected = 0;
        for item in spec["paths"].as_object().unwrap().values() {
            for (method, operation) in item.as_object().unwrap() {
                let id = operation["operationId"].as_str().unwrap();
                let security = operation["security"].as_array().unwrap();
                if security.is_empty() {
                    // The probes and the metrics, which tell nothing of any order or caller.
                    assert!(
                        id.starts_with("health_") || id == "metrics_view",
                        "{id} needs no key"
                    );
                    assert!(operation.get("x-required-scopes").is_none(), "{id}");
                    continue;
                }
                protected += 1;
                assert_eq!(security, &vec![json!({ "ApiKey": [] })], "{id}");
                let scopes = operation["x-required-scopes"].as_array().unwrap();
                let [scope] = scopes.as_slice() else {
                    panic!("{id}: one scope, not {scopes:?}")
                };
                let scope = scope.as_str().unwrap();
                let expected = match (method.as_str(), id.split('_').next()) {
                    ("get", _) => "orders:read",
                    (_, Some("service")) => "services:write",
                    _ => "orders:write",
                };
                assert_eq!(scope, expected, "{id}");
                assert!(
                    operation["description"]
                        .as_str()
                        .unwrap()
                        .ends_with(&format!("Needs an API key with the scope `{scope}`.")),
                    "{id}"
                );
                let example = &operation["responses"]["403"]["content"]["application/problem+json"]
                    ["examples"]["FORBIDDEN"]["value"]["detail"];
                assert!(example.as_str().unwrap().contains(scope), "{id}: {example}");
            }
        }
        assert_eq!(
            protected, 12,
            "every order, free-slots and service operation is protected"
        );
    }
}
