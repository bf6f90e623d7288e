//! `/openapi.json`: an OpenAPI 3.1 document of the REST surface, generated — never written by
//! hand — from the two things the routes themselves come from: the RPC table (`rpc/mod.rs`:
//! verb, path, success status, permission) and the protobuf descriptors of the one wire model
//! (`proto.rs`: the request and response messages, their fields' JSON names and types). A route
//! added to the table is in the document; a field added to a message is in its schema.
//!
//! Schemas follow protojson: 64-bit integers are strings, enums their value names, Timestamps
//! RFC 3339 strings, Durations strings like `"900s"`. Messages allow no properties beyond their
//! fields, so a live answer with an undocumented field fails the tests (`api/tests/openapi.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, EnumDescriptorProto, FileDescriptorSet};
use serde_json::{json, Map, Value};

use crate::rpc::{for_each, MethodInfo, Routed, Verb, Visitor};

/// The route.
pub const PATH: &str = "/openapi.json";

/// The answer, built once.
pub async fn serve() -> Response {
    static DOCUMENT: OnceLock<String> = OnceLock::new();
    let body = DOCUMENT.get_or_init(|| document().to_string());
    ([(header::CONTENT_TYPE, "application/json")], body.as_str()).into_response()
}

/// Every message and enum of the descriptor set, by full name (no leading dot).
struct Types {
    messages: BTreeMap<String, DescriptorProto>,
    enums: BTreeMap<String, EnumDescriptorProto>,
    /// Service → method → (input, output) full names.
    methods: BTreeMap<String, BTreeMap<String, (String, String)>>,
}

impl Types {
    fn load() -> Types {
        let set = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        let mut types = Types {
            messages: BTreeMap::new(),
            enums: BTreeMap::new(),
            methods: BTreeMap::new(),
        };
        for file in set.file {
            let package = file.package.clone().unwrap_or_default();
            for message in &file.message_type {
                types.add_message(&package, message);
            }
            for en in &file.enum_type {
                types
                    .enums
                    .insert(format!("{package}.{}", en.name()), en.clone());
            }
            for service in &file.service {
                let methods = types
                    .methods
                    .entry(format!("{package}.{}", service.name()))
                    .or_default();
                for method in &service.method {
                    methods.insert(
                        method.name().to_owned(),
                        (
                            method.input_type().trim_start_matches('.').to_owned(),
                            method.output_type().trim_start_matches('.').to_owned(),
                        ),
                    );
                }
            }
        }
        types
    }

    fn add_message(&mut self, scope: &str, message: &DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.add_message(&name, nested);
        }
        for en in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", en.name()), en.clone());
        }
        self.messages.insert(name, message.clone());
    }
}

/// Schemas of well-known types, as protojson writes them.
fn well_known(name: &str) -> Option<Value> {
    Some(match name {
        "google.protobuf.Timestamp" => json!({"type": "string", "format": "date-time"}),
        "google.protobuf.Duration" => {
            json!({"type": "string", "pattern": "^-?[0-9]+(\\.[0-9]+)?s$"})
        }
        "google.protobuf.Struct" => json!({"type": "object"}),
        "google.protobuf.Value" => json!({}),
        "google.protobuf.ListValue" => json!({"type": "array"}),
        "google.protobuf.Empty" => json!({"type": "object", "additionalProperties": false}),
        "google.protobuf.Any" => {
            json!({"type": "object", "properties": {"@type": {"type": "string"}}})
        }
        "google.protobuf.BoolValue" => json!({"type": "boolean"}),
        "google.protobuf.StringValue" => json!({"type": "string"}),
        "google.protobuf.BytesValue" => json!({"type": "string", "format": "byte"}),
        "google.protobuf.Int32Value" | "google.protobuf.UInt32Value" => json!({"type": "integer"}),
        "google.protobuf.Int64Value" | "google.protobuf.UInt64Value" => {
            json!({"type": "string", "format": "int64"})
        }
        "google.protobuf.DoubleValue" | "google.protobuf.FloatValue" => json!({"type": "number"}),
        _ => return None,
    })
}

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

/// Builds component schemas for messages on demand, following references.
struct Schemas<'t> {
    types: &'t Types,
    done: BTreeMap<String, Value>,
    pending: BTreeSet<String>,
}

impl Schemas<'_> {
    /// The schema of a message by name: inline for well-known types, else a reference (queued).
    fn message(&mut self, name: &str) -> Value {
        if let Some(schema) = well_known(name) {
            return schema;
        }
        if !self.done.contains_key(name) {
            self.pending.insert(name.to_owned());
        }
        reference(name)
    }

    fn field(&mut self, field: &prost_types::FieldDescriptorProto) -> Value {
        let type_name = field.type_name().trim_start_matches('.');
        let scalar = match field.r#type() {
            Type::String => json!({"type": "string"}),
            Type::Bytes => json!({"type": "string", "format": "byte"}),
            Type::Bool => json!({"type": "boolean"}),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 | Type::Uint32 | Type::Fixed32 => {
                json!({"type": "integer", "format": "int32"})
            }
            Type::Int64 | Type::Sint64 | Type::Sfixed64 | Type::Uint64 | Type::Fixed64 => {
                json!({"type": "string", "format": "int64"})
            }
            Type::Double | Type::Float => json!({"type": "number"}),
            Type::Enum => {
                let values: Vec<Value> = self
                    .types
                    .enums
                    .get(type_name)
                    .map(|e| e.value.iter().map(|v| json!(v.name())).collect())
                    .unwrap_or_default();
                json!({"type": "string", "enum": values})
            }
            Type::Message | Type::Group => {
                // A map field: a repeated entry message with key and value.
                if let Some(entry) = self
                    .types
                    .messages
                    .get(type_name)
                    .filter(|m| m.options.as_ref().is_some_and(|o| o.map_entry()))
                {
                    let value = entry.field.iter().find(|f| f.number() == 2).cloned();
                    let values = value.map(|v| self.field(&v)).unwrap_or(json!({}));
                    return json!({"type": "object", "additionalProperties": values});
                }
                self.message(type_name)
            }
        };
        if field.label() == Label::Repeated {
            json!({"type": "array", "items": scalar})
        } else {
            scalar
        }
    }

    /// Builds every queued schema (and whatever those reference).
    fn finish(mut self) -> BTreeMap<String, Value> {
        while let Some(name) = self.pending.pop_first() {
            let Some(message) = self.types.messages.get(&name) else {
                self.done.insert(name, json!({"type": "object"}));
                continue;
            };
            let mut properties = Map::new();
            for field in &message.field {
                let schema = self.field(field);
                properties.insert(field.json_name().to_owned(), schema);
            }
            let schema = json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            });
            self.done.insert(name, schema);
        }
        self.done
    }
}

/// Collects each table row with its messages.
struct Rows(Vec<(MethodInfo, String, String)>, &'static Types);

impl Visitor for Rows {
    fn visit<R: Routed>(&mut self) {
        let info = R::INFO;
        let (input, output) = self
            .1
            .methods
            .get(info.service)
            .and_then(|methods| methods.get(info.method))
            .cloned()
            .unwrap_or_default();
        self.0.push((info, input, output));
    }
}

fn types() -> &'static Types {
    static TYPES: OnceLock<Types> = OnceLock::new();
    TYPES.get_or_init(Types::load)
}

/// The whole document.
pub fn document() -> Value {
    let types = types();
    let mut rows = Rows(Vec::new(), types);
    for_each(&mut rows);
    let mut schemas = Schemas {
        types,
        done: BTreeMap::new(),
        pending: BTreeSet::new(),
    };
    let mut paths: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    for (info, input, output) in &rows.0 {
        let verb = info.verb.as_str().to_ascii_lowercase();
        let parameters: Vec<Value> = info
            .path_params()
            .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        let mut operation = json!({
            // Unique: admin and management v1 both have GetLockoutPolicy.
            "operationId": format!("{}_{}", info.service.rsplit('.').next().unwrap_or(""), info.method),
            "tags": [info.service],
            "summary": format!("{}.{} (permission: {})", info.service, info.method, info.permission),
            "parameters": parameters,
            "security": [{"bearer": []}],
            "responses": {
                info.rest_status.to_string(): {
                    "description": "success",
                    "content": {"application/json": {"schema": schemas.message(output)}},
                },
                "default": {
                    "description": "an error (ZITADEL's gateway shape: code, message, details)",
                    "content": {"application/json": {"schema": reference("Error")}},
                },
            },
        });
        if info.verb != Verb::Get {
            operation["requestBody"] = json!({
                "required": false,
                "content": {"application/json": {"schema": schemas.message(input)}},
            });
        }
        paths
            .entry(info.rest.to_owned())
            .or_default()
            .insert(verb, operation);
    }
    let mut components = schemas.finish();
    components.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": {
                "code": {"type": "integer"},
                "message": {"type": "string"},
                "details": {"type": "array", "items": {"type": "object"}},
            },
            "required": ["code", "message"],
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Latchkey REST API",
            "version": crate::VERSION,
            "description": "ZITADEL v2-compatible user lifecycle engine: the REST surface, generated from the RPC table and the protobuf descriptors. The same methods are served over Connect, gRPC and gRPC-web at /<service>/<method>.",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    })
}
