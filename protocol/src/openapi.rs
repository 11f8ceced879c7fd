//! `update-server/openapi.json` (served at `/openapi.json`) against these
//! types: the schema of each type is derived (schemars, in tests only) and
//! compared with the document's component of the same name, so a field
//! added to a type and not to the document, a required field that is not
//! required, another JSON type or another list of states fails here. The
//! limits the document states are compared with the constants.
//!
//! Not compared: whether `null` is allowed (an `Option` reads `null` as
//! absent; the types never write it), descriptions, formats and
//! `additionalProperties` (requests refuse unknown fields, answers are read
//! leniently so a newer server may add one).

use std::collections::{BTreeMap, BTreeSet};

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value};

use crate::*;

const OPENAPI: &str = include_str!("../../update-server/openapi.json");

/// The device API's components: name in openapi.json, and the Rust type's.
const COMPONENTS: [(&str, &str); 13] = [
    ("ChallengeRequest", "ChallengeRequest"),
    ("ChallengeResponse", "ChallengeResponse"),
    ("LoginRequest", "LoginRequest"),
    ("LoginResponse", "LoginResponse"),
    ("EnrollRequest", "EnrollRequest"),
    ("InventoryItem", "InventoryItem"),
    ("BootMeasurement", "BootMeasurement"),
    ("CheckinRequest", "CheckinRequest"),
    ("BlobRef", "BlobRef"),
    ("Assignment", "Assignment"),
    ("CheckinResponse", "CheckinResponse"),
    ("Report", "Report"),
    ("Error", "ErrorBody"),
];

/// What a property holds, with names and nullability set aside.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Shape {
    /// JSON types (`string`, `integer`...), `null` left out.
    Types(BTreeSet<String>),
    /// A string out of these.
    Enum(BTreeSet<String>),
    /// An array of this.
    Array(Box<Shape>),
    /// An object: the openapi.json component name.
    Object(String),
}

/// One side's schemas, by openapi.json name.
struct Side<'a> {
    defs: &'a Map<String, Value>,
    /// Rust type name → openapi.json name.
    rename: &'a dyn Fn(&str) -> String,
}

impl Side<'_> {
    fn def(&self, reference: &str) -> &Value {
        let name = reference.rsplit('/').next().unwrap();
        self.defs.get(name).unwrap_or_else(|| panic!("{reference}: no such schema"))
    }

    fn shape(&self, s: &Value) -> Shape {
        if let Some(r) = s.get("$ref").and_then(Value::as_str) {
            let target = self.def(r);
            return if target.get("properties").is_some() {
                Shape::Object((self.rename)(r.rsplit('/').next().unwrap()))
            } else {
                self.shape(target)
            };
        }
        if let Some(value) = s.get("const") {
            return Shape::Enum([value.as_str().expect("string const").to_owned()].into());
        }
        if let Some(values) = s.get("enum").and_then(Value::as_array) {
            return Shape::Enum(values.iter().map(|v| v.as_str().expect("string enum").to_owned()).collect());
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(members) = s.get(key).and_then(Value::as_array) {
                let shapes: Vec<Shape> =
                    members.iter().filter(|m| m.get("type") != Some(&"null".into())).map(|m| self.shape(m)).collect();
                // A documented enum is a `oneOf` of `const`s.
                if shapes.len() > 1 && shapes.iter().all(|m| matches!(m, Shape::Enum(_))) {
                    return Shape::Enum(
                        shapes.into_iter().flat_map(|m| if let Shape::Enum(v) = m { v } else { [].into() }).collect(),
                    );
                }
                assert_eq!(shapes.len(), 1, "{key} of more than a type and null: {s}");
                return shapes.into_iter().next().unwrap();
            }
        }
        let types: BTreeSet<String> = match s.get("type") {
            Some(Value::String(t)) => [t.clone()].into(),
            Some(Value::Array(ts)) => ts.iter().map(|t| t.as_str().unwrap().to_owned()).collect(),
            _ => panic!("a schema without a type: {s}"),
        };
        let types: BTreeSet<String> = types.into_iter().filter(|t| t != "null").collect();
        if types.len() == 1 && types.contains("array") {
            return Shape::Array(Box::new(self.shape(&s["items"])));
        }
        Shape::Types(types)
    }

    /// Property name → shape, and the required names, of object `name`.
    fn object(&self, name: &str) -> (BTreeMap<String, Shape>, BTreeSet<String>) {
        let s = self.defs.get(name).unwrap_or_else(|| panic!("{name}: no such schema"));
        let props = s["properties"].as_object().unwrap_or_else(|| panic!("{name}: not an object: {s}"));
        let shapes = props.iter().map(|(k, v)| (k.clone(), self.shape(v))).collect();
        let required = s
            .get("required")
            .and_then(Value::as_array)
            .map_or_else(BTreeSet::new, |r| r.iter().map(|v| v.as_str().unwrap().to_owned()).collect());
        (shapes, required)
    }
}

fn openapi() -> Value {
    serde_json::from_str(OPENAPI).expect("openapi.json is JSON")
}

fn rust_definitions() -> Map<String, Value> {
    let mut g = SchemaSettings::draft2020_12().into_generator();
    g.subschema_for::<ChallengeRequest>();
    g.subschema_for::<ChallengeResponse>();
    g.subschema_for::<LoginRequest>();
    g.subschema_for::<LoginResponse>();
    g.subschema_for::<EnrollRequest>();
    g.subschema_for::<CheckinRequest>();
    g.subschema_for::<CheckinResponse>();
    g.subschema_for::<Report>();
    g.subschema_for::<ErrorBody>();
    g.take_definitions(true)
}

fn to_openapi_name(rust: &str) -> String {
    COMPONENTS.iter().find(|(_, r)| *r == rust).map_or(rust, |(o, _)| o).to_owned()
}

#[test]
fn openapi_json_describes_the_device_api_types() {
    let doc = openapi();
    let api = Side { defs: doc["components"]["schemas"].as_object().unwrap(), rename: &|n| n.to_owned() };
    let defs = rust_definitions();
    let rust = Side { defs: &defs, rename: &to_openapi_name };
    let mut disagreements = Vec::new();
    for (name, rust_name) in COMPONENTS {
        let (api_props, api_required) = api.object(name);
        let (rust_props, rust_required) = rust.object(rust_name);
        let names = |m: &BTreeMap<String, Shape>| m.keys().cloned().collect::<BTreeSet<_>>();
        if names(&api_props) != names(&rust_props) {
            disagreements.push(format!(
                "{name}: openapi.json has properties {:?}, the Rust type {:?}",
                names(&api_props),
                names(&rust_props)
            ));
        }
        if api_required != rust_required {
            disagreements
                .push(format!("{name}: openapi.json requires {api_required:?}, the Rust type {rust_required:?}"));
        }
        for (field, shape) in &rust_props {
            if let Some(documented) = api_props.get(field)
                && documented != shape
            {
                disagreements
                    .push(format!("{name}.{field}: openapi.json says {documented:?}, the Rust type {shape:?}"));
            }
        }
    }
    assert!(disagreements.is_empty(), "openapi.json disagrees with gantry-protocol:\n{}", disagreements.join("\n"));
}

#[test]
fn the_operators_report_record_is_a_report_with_its_time() {
    // `GET /api/v1/devices/{id}/reports` lists what devices sent, plus when
    // the server received it (`update-server/src/store/devices.rs`).
    let doc = openapi();
    let api = Side { defs: doc["components"]["schemas"].as_object().unwrap(), rename: &|n| n.to_owned() };
    let (report, report_required) = api.object("Report");
    let (mut record, mut record_required) = api.object("ReportRecord");
    assert_eq!(record.remove("at"), Some(Shape::Types(["integer".to_owned()].into())));
    assert!(record_required.remove("at"));
    assert_eq!((record, record_required), (report, report_required));
}

/// The keyword `kw` of property `prop` of component `name` (looked up in
/// `anyOf` members too).
fn keyword<'a>(doc: &'a Value, name: &str, prop: &str, kw: &str) -> Option<&'a Value> {
    let p = &doc["components"]["schemas"][name]["properties"][prop];
    p.get(kw).or_else(|| p.get("anyOf")?.as_array()?.iter().find_map(|m| m.get(kw)))
}

#[test]
fn openapi_json_states_the_limits() {
    let doc = openapi();
    let digest = Value::from(format!("^[0-9a-f]{{{DIGEST_HEX_LEN}}}$"));
    let expected: Vec<(&str, &str, &str, Value)> = vec![
        ("Report", "detail", "maxLength", MAX_DETAIL.into()),
        ("Report", "stream", "minLength", 1.into()),
        ("Report", "stream", "maxLength", MAX_STREAM.into()),
        ("Report", "progress", "minimum", 0.into()),
        ("Report", "progress", "maximum", MAX_PROGRESS.into()),
        ("Report", "manifest_digest", "pattern", digest.clone()),
        ("InventoryItem", "stream", "minLength", 1.into()),
        ("InventoryItem", "stream", "maxLength", MAX_STREAM.into()),
        ("InventoryItem", "manifest_digest", "pattern", digest.clone()),
        ("CheckinRequest", "inventory", "maxItems", MAX_INVENTORY.into()),
        ("BootMeasurement", "image_digest", "pattern", digest.clone()),
        ("BootMeasurement", "last_failure", "minLength", 1.into()),
        ("BootMeasurement", "last_failure", "maxLength", MAX_BOOT_REASON.into()),
        ("BootMeasurement", "last_failure", "pattern", "^[a-z0-9-]+$".into()),
        ("Assignment", "manifest_digest", "pattern", digest.clone()),
        ("BlobRef", "sha256", "pattern", digest),
    ];
    for (name, prop, kw, value) in expected {
        assert_eq!(keyword(&doc, name, prop, kw), Some(&value), "{name}.{prop}: {kw}");
    }
    // The poll header, on both answers of a check-in.
    let responses = &doc["paths"]["/api/v1/device/checkin"]["post"]["responses"];
    for status in ["200", "304"] {
        let headers = responses[status]["headers"].as_object().unwrap_or_else(|| panic!("{status}: no headers"));
        assert!(
            headers.keys().any(|h| h.eq_ignore_ascii_case(POLL_AFTER_HEADER)),
            "{status}: no {POLL_AFTER_HEADER} header"
        );
    }
}

#[test]
fn the_comparison_catches_drift() {
    // A field the document lacks, and a state it does not list.
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Report {
        stream: String,
        manifest_digest: String,
        state: ReportState,
        progress: Option<i64>,
        detail: Option<String>,
        signal_strength: i64,
    }
    #[derive(JsonSchema)]
    #[serde(rename_all = "kebab-case")]
    #[allow(dead_code)]
    enum InventoryState {
        Probation,
        Confirmed,
        Reverted,
        Disabled,
        Sleeping,
    }
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct InventoryItem {
        stream: String,
        manifest_digest: String,
        sequence: u64,
        state: Option<InventoryState>,
        boot: Option<crate::BootMeasurement>,
    }
    let mut g = SchemaSettings::draft2020_12().into_generator();
    g.subschema_for::<Report>();
    g.subschema_for::<InventoryItem>();
    let defs = g.take_definitions(true);
    let rust = Side { defs: &defs, rename: &to_openapi_name };
    let doc = openapi();
    let api = Side { defs: doc["components"]["schemas"].as_object().unwrap(), rename: &|n| n.to_owned() };
    let (report, _) = rust.object("Report");
    assert!(report.len() > api.object("Report").0.len(), "the extra field is seen");
    let (item, _) = rust.object("InventoryItem");
    assert_ne!(item["state"], api.object("InventoryItem").0["state"], "the extra state is seen");
}
