//! Every answer an app under test gives, held against `openapi.yaml`: its status must be one
//! the operation documents, and its body must match that response's schema, as an independent
//! JSON Schema validator (the `jsonschema` crate) reads it. Each app records what it answers
//! (see [`Recorder`]); when the test's app is dropped, every answer is checked, and the test
//! fails naming the ones that break the contract.

use std::{
    collections::HashMap,
    io::Read,
    sync::{Arc, LazyLock, Mutex, PoisonError},
};

use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, endpoint::BoxEndpoint};
use serde_json::{Map, Value, json};
use yaml_rust2::{Yaml, YamlLoader};

/// One answer as the service sent it.
struct Answer {
    method: String,
    path: String,
    status: u16,
    content_type: Option<String>,
    body: Vec<u8>,
}

/// The answers of one test's apps. Cheap to clone: one shared list.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Answer>>>);

impl Recorder {
    /// `endpoint`, recording every answer it gives.
    pub fn around(
        &self,
        endpoint: BoxEndpoint<'static, Response>,
    ) -> BoxEndpoint<'static, Response> {
        let answers = self.clone();
        endpoint
            .around(move |endpoint, request: Request| {
                let answers = answers.clone();
                async move {
                    let method = request.method().to_string();
                    let path = request.uri().path().to_owned();
                    let response = endpoint.call(request).await?.into_response();
                    Ok(answers.record(method, path, response).await)
                }
            })
            .boxed()
    }

    async fn record(&self, method: String, path: String, response: Response) -> Response {
        let (parts, body) = response.into_parts();
        let bytes = body.into_bytes().await.unwrap_or_default();
        // A HEAD's answer says how the GET's body is encoded, and has none.
        let gzipped = !bytes.is_empty()
            && parts
                .headers
                .get("content-encoding")
                .is_some_and(|encoding| encoding == "gzip");
        let body = if gzipped {
            let mut plain = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .read_to_end(&mut plain)
                .expect("a gzipped answer decompresses");
            plain
        } else {
            bytes.to_vec()
        };
        let content_type = parts
            .headers
            .get("content-type")
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or_default()
                    .trim()
                    .to_owned()
            });
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Answer {
                method,
                path,
                status: parts.status.as_u16(),
                content_type,
                body,
            });
        Response::from_parts(parts, bytes.into())
    }

    /// What breaks the contract among the answers recorded so far, one line each.
    pub fn breaches(&self) -> Vec<String> {
        let answers = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        answers.iter().filter_map(breach).collect()
    }

    /// How many answers were recorded.
    pub fn count(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

/// The committed spec, as JSON.
static SPEC: LazyLock<Value> = LazyLock::new(|| {
    let text = include_str!("../../../openapi.yaml");
    let documents = YamlLoader::load_from_str(text).expect("openapi.yaml is YAML");
    yaml_to_json(&documents[0])
});

fn yaml_to_json(yaml: &Yaml) -> Value {
    match yaml {
        Yaml::Real(text) => serde_json::from_str(text).expect("a YAML real is a JSON number"),
        Yaml::Integer(number) => json!(number),
        Yaml::String(text) => json!(text),
        Yaml::Boolean(value) => json!(value),
        Yaml::Array(items) => Value::Array(items.iter().map(yaml_to_json).collect()),
        Yaml::Hash(members) => Value::Object(
            members
                .iter()
                .map(|(key, value)| {
                    let key = match key {
                        Yaml::String(key) => key.clone(),
                        Yaml::Integer(key) => key.to_string(),
                        other => panic!("a mapping key in openapi.yaml: {other:?}"),
                    };
                    (key, yaml_to_json(value))
                })
                .collect::<Map<String, Value>>(),
        ),
        Yaml::Null => Value::Null,
        other => panic!("a YAML node openapi.yaml does not have: {other:?}"),
    }
}

/// Why `answer` breaks the contract, if it does.
fn breach(answer: &Answer) -> Option<String> {
    let said = || {
        format!(
            "{} {} answered {}",
            answer.method, answer.path, answer.status
        )
    };
    // The spec documents the API, not the documents that describe it.
    if matches!(
        answer.path.as_str(),
        "/openapi.json" | "/openapi.yaml" | "/docs"
    ) {
        return None;
    }
    let Some(operation) = operation_of(&answer.method, &answer.path) else {
        // No operation has this path and method: a 404 or 405, in the one problem shape.
        return check_body(answer, &json!({"$ref": "#/components/schemas/Problem"}))
            .map(|problem| format!("{}: {problem}", said()));
    };
    let Some(response) = operation["responses"].get(answer.status.to_string()) else {
        return Some(format!(
            "{}, a status its operation does not document",
            said()
        ));
    };
    // A HEAD's answer has the GET's headers and no body.
    if answer.method == "HEAD" || answer.body.is_empty() && response.get("content").is_none() {
        return None;
    }
    let Some(media_type) = &answer.content_type else {
        return Some(format!("{} without a content type", said()));
    };
    let Some(schema) = response["content"]
        .get(media_type)
        .map(|content| &content["schema"])
    else {
        return Some(format!(
            "{} as {media_type}, which the spec does not document",
            said()
        ));
    };
    check_body(answer, schema).map(|problem| format!("{}: {problem}", said()))
}

/// The operation of `method` on the path template `path` matches, if any (HEAD is GET's).
fn operation_of<'a>(method: &str, path: &str) -> Option<&'a Value> {
    let method = if method == "HEAD" { "get" } else { method };
    let method = method.to_ascii_lowercase();
    // As the router reads a path: an empty segment counts (`/orders/` is not `/orders`), and
    // stands for no parameter.
    let segments: Vec<&str> = path.split('/').collect();
    SPEC["paths"]
        .as_object()?
        .iter()
        .find_map(|(template, item)| {
            let parts: Vec<&str> = template.split('/').collect();
            let matches = parts.len() == segments.len()
                && parts.iter().zip(&segments).all(|(part, segment)| {
                    part == segment || (part.starts_with('{') && !segment.is_empty())
                });
            matches.then(|| item.get(&method)).flatten()
        })
}

/// Why the body does not match `schema` (the spec's components beside it), if it does not. A
/// body of a JSON media type is the JSON it holds; any other (`/metrics`' text) is one string.
fn check_body(answer: &Answer, schema: &Value) -> Option<String> {
    let json = answer
        .content_type
        .as_deref()
        .is_none_or(|media_type| media_type.ends_with("json"));
    let instance: Value = if json {
        match serde_json::from_slice(&answer.body) {
            Ok(instance) => instance,
            Err(error) => return Some(format!("a body that is not JSON ({error})")),
        }
    } else {
        match String::from_utf8(answer.body.clone()) {
            Ok(text) => Value::String(text),
            Err(error) => return Some(format!("a text body that is not UTF-8 ({error})")),
        }
    };
    let validator = validator_for(schema);
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|error| format!("{} at {}", error, error.instance_path()))
        .collect();
    (!errors.is_empty()).then(|| format!("{} in {instance}", errors.join("; ")))
}

/// The validator of `schema` (with the spec's components beside it, for its references), made
/// once for all the answers it checks.
fn validator_for(schema: &Value) -> Arc<jsonschema::Validator> {
    static VALIDATORS: LazyLock<Mutex<HashMap<String, Arc<jsonschema::Validator>>>> =
        LazyLock::new(Mutex::default);
    let key = schema.to_string();
    let mut validators = VALIDATORS.lock().unwrap_or_else(PoisonError::into_inner);
    validators
        .entry(key)
        .or_insert_with(|| {
            // OpenAPI 3.0's schemas are JSON Schema draft 4's, with keywords of their own
            // (`example`, `discriminator`) that a validator passes over.
            let mut document = schema.clone();
            document["components"] = SPEC["components"].clone();
            Arc::new(jsonschema::draft4::new(&document).expect("the spec's schemas compile"))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(method: &str, path: &str, status: u16, body: Value) -> Answer {
        Answer {
            method: method.to_owned(),
            path: path.to_owned(),
            status,
            content_type: Some("application/json".to_owned()),
            body: body.to_string().into_bytes(),
        }
    }

    #[test]
    fn an_answer_off_the_contract_is_named_and_one_on_it_is_not() {
        let problem = json!({
            "type": "urn:problem-type:orders:not-found", "title": "Not found", "status": 404,
            "detail": "no order has the id \"9\"", "code": "NOT_FOUND", "request_id": "r",
        });
        let mut as_problem = answer("GET", "/orders/9", 404, problem.clone());
        as_problem.content_type = Some("application/problem+json".to_owned());
        assert_eq!(breach(&as_problem), None);

        let teapot = answer("GET", "/orders/9", 418, problem.clone());
        assert!(breach(&teapot).unwrap().contains("does not document"));

        let order_without_its_id = answer(
            "GET",
            "/orders/9",
            200,
            json!({"datetime": "2022-11-01T11:11:11.111Z", "totalfee": 100, "services": []}),
        );
        assert!(breach(&order_without_its_id).unwrap().contains("\"id\""));

        let unknown_route_not_a_problem = answer("GET", "/nowhere", 404, json!({"error": 1}));
        assert!(breach(&unknown_route_not_a_problem).is_some());
    }
}
