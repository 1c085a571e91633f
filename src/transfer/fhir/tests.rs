//! Tests for the FHIR R4 Bundle: the mapping of a realistic record (every
//! part, nulls, empty arrays), what a schema cannot see (references,
//! codes, unique ids), strict structural rules of FHIR JSON, and, when the
//! official R4 JSON schema is at hand, validation against it.

use std::collections::{BTreeSet, HashMap};
use std::io::Read as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::*;

const FQDN: &str = "records.example.org";
const FID: &str = "6f1c2a52-5d0e-4d83-9a57-0f6f2f0f4a11";

fn header(transfer: Uuid) -> BundleHeader {
    BundleHeader {
        transfer,
        source: format!("{FID}@{FQDN}"),
        created: 1_795_500_000_123,
    }
}

fn question(id: i64, kind: Value, text: &str, answered: bool) -> Value {
    json!({"id":id,"creationDate":1_611_000_000_000_i64,"updateDate":1_611_100_000_000_i64,
        "question":text,"type":kind,"answered":answered,
        "answeredOn":if answered { json!(1_611_200_000_000_i64) } else { Value::Null },
        "recurrance":[{"hourOfDay":9,"minuteOfHour":0},{"hourOfDay":21,"minuteOfHour":30}],
        "startDate":1_611_014_400_000_i64,"endDate":Value::Null,"recurring":true})
}

/// A record with every part, nulls and empty arrays, as bundle records
/// (embedded patients already removed).
fn record(sex: Value) -> Vec<(Part, Value)> {
    vec![
        (
            Part::Patient,
            json!({"id":7,"creationDate":1_611_000_000_000_i64,"updateDate":1_611_000_000_000_i64,
                "username":"0790000000","userRole":"ROLE_PATIENT","telephoneNumber":"0790000000",
                "firstName":"Ali","lastName":null}),
        ),
        (
            Part::Profile,
            json!({"id":8,"creationDate":1_611_000_000_000_i64,"updateDate":1_611_050_000_000_i64,
                "age":40,"height":0.0,"weight":80.5,"sex":sex,"g6pdDeficiency":false,
                "respiratoryDiseases":true,"diabetes":true,"cardiovascularDiseases":false,
                "obesity":false,"medications":["metformin 500 mg","  ",""]}),
        ),
        (
            Part::Vitals,
            json!({"id":70,"creationDate":1_611_000_060_000_i64,"updateDate":1_611_000_060_000_i64,
                "heartBeatsPerMinute":72.0,"systolicPressure":120.0,"diastolicPressure":80.0,
                "bloodOxygenation":97.0,"breathingRate":null}),
        ),
        (
            Part::Vitals,
            json!({"id":71,"creationDate":1_611_000_120_000_i64,"updateDate":null,
                "heartBeatsPerMinute":null,"systolicPressure":null,"diastolicPressure":null,
                "bloodOxygenation":null,"breathingRate":null}),
        ),
        (
            Part::Symptom,
            json!({"id":50,"creationDate":1_611_000_200_000_i64,"updateDate":1_611_000_200_000_i64,
                "symptomCode":"A03","replies":[],"note":"since yesterday","archived":false,
                "archiveDate":null}),
        ),
        (
            Part::Symptom,
            json!({"id":51,"creationDate":1_611_000_300_000_i64,"updateDate":1_611_000_300_000_i64,
                "symptomCode":"R05","replies":[],"note":null,"archived":true,
                "archiveDate":1_611_000_400_000_i64}),
        ),
        (
            Part::Answer,
            json!({"id":40,"creationDate":1_611_200_000_000_i64,"updateDate":1_611_200_000_000_i64,
                "question":question(31, json!("Scale"), "How is your fever?", true),"replies":[],
                "answer":"7","archived":false,"archiveDate":null}),
        ),
        (
            Part::Answer,
            json!({"id":41,"creationDate":1_611_200_000_000_i64,"updateDate":1_611_200_000_000_i64,
                "question":question(32, json!("Binary"), "Did you sleep?", true),"replies":[],
                "answer":"Yes","archived":true,"archiveDate":1_611_300_000_000_i64}),
        ),
        (
            Part::Answer,
            json!({"id":42,"creationDate":1_611_200_000_000_i64,"updateDate":1_611_200_000_000_i64,
                "question":question(33, json!("Text"), "Anything else?", true),"replies":[],
                "answer":null,"archived":false,"archiveDate":null}),
        ),
        (
            Part::Question,
            question(31, json!("Scale"), "How is your fever?", true),
        ),
        (
            Part::Question,
            question(32, json!("Binary"), "Did you sleep?", true),
        ),
        (
            Part::Question,
            question(33, json!("Text"), "Anything else?", true),
        ),
        (
            Part::Question,
            question(34, json!("Vitals"), "Please measure", false),
        ),
        (Part::Question, question(35, Value::Null, "Untyped", false)),
    ]
}

fn convert(transfer: Uuid, records: &[(Part, Value)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut writer = FhirWriter::new(&header(transfer), FQDN, &mut out);
    for (part, data) in records {
        writer.push(*part, data, &mut out).expect("push");
    }
    writer.finish(&mut out).expect("finish");
    out
}

fn make_bundle(sex: Value) -> Value {
    let bytes = convert(Uuid::new_v4(), &record(sex));
    serde_json::from_slice(&bytes).expect("the output is one JSON document")
}

fn entries(bundle: &Value) -> &Vec<Value> {
    bundle["entry"].as_array().expect("entry array")
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    entries(bundle)
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// Every value under `key` anywhere in `value`.
fn collect<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a Value>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == key {
                    found.push(v);
                }
                collect(v, key, found);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| collect(v, key, found)),
        _ => {}
    }
}

#[test]
fn the_bundle_has_the_expected_resources() {
    let bundle = make_bundle(json!("Female"));
    assert_eq!(bundle["resourceType"], "Bundle");
    assert_eq!(bundle["type"], "collection");
    assert_eq!(bundle["timestamp"], "2026-11-24T06:00:00.123Z");
    assert_eq!(bundle["identifier"]["system"], "urn:ietf:rfc:3986");
    let kinds: Vec<&str> = entries(&bundle)
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().expect("type"))
        .collect();
    assert_eq!(
        kinds,
        [
            "Patient",
            "Observation",         // weight (height 0.0 is "not entered")
            "Condition",           // respiratoryDiseases
            "Condition",           // diabetes
            "MedicationStatement", // blank medications skipped
            "Observation",
            "Observation",
            "Condition",
            "Condition",
            "QuestionnaireResponse",
            "QuestionnaireResponse",
            "QuestionnaireResponse",
            "Questionnaire",
            "Task",
            "Questionnaire",
            "Task",
            "Questionnaire",
            "Task",
            "Questionnaire",
            "Task",
            "Questionnaire",
            "Task",
        ]
    );
    let patient = resources(&bundle, "Patient")[0];
    assert_eq!(patient["gender"], "female");
    assert_eq!(
        patient["identifier"][0],
        json!({"system":"https://records.example.org/federation/patient","value":FID})
    );
    assert_eq!(patient["name"], json!([{"given":["Ali"]}]));
    assert_eq!(
        patient["telecom"],
        json!([{"system":"phone","value":"0790000000"}])
    );
    let unknown = make_bundle(Value::Null);
    assert_eq!(resources(&unknown, "Patient")[0]["gender"], "unknown");
}

#[test]
fn vitals_become_a_panel_with_loinc_components() {
    let bundle = make_bundle(json!("Male"));
    let observations = resources(&bundle, "Observation");
    let weight = observations[0];
    assert_eq!(weight["code"]["coding"][0]["code"], "29463-7");
    assert_eq!(
        weight["valueQuantity"],
        json!({"value":80.5,"unit":"kg","system":"http://unitsofmeasure.org","code":"kg"})
    );
    let panel = observations[1];
    assert_eq!(panel["status"], "final");
    assert_eq!(panel["code"]["coding"][0]["system"], "http://loinc.org");
    assert_eq!(panel["code"]["coding"][0]["code"], "85353-1");
    assert_eq!(panel["category"][0]["coding"][0]["code"], "vital-signs");
    assert_eq!(panel["effectiveDateTime"], "2021-01-18T20:01:00.000Z");
    let codes: Vec<(&str, &str)> = panel["component"]
        .as_array()
        .expect("components")
        .iter()
        .map(|c| {
            (
                c["code"]["coding"][0]["code"].as_str().expect("code"),
                c["valueQuantity"]["code"].as_str().expect("unit"),
            )
        })
        .collect();
    // breathingRate is null: no 9279-1 component.
    assert_eq!(
        codes,
        [
            ("8867-4", "/min"),
            ("8480-6", "mm[Hg]"),
            ("8462-4", "mm[Hg]"),
            ("2708-6", "%")
        ]
    );
    assert_eq!(panel["component"][0]["valueQuantity"]["value"], json!(72.0));
    let empty = observations[2];
    assert!(empty.get("component").is_none());
    assert_eq!(empty["dataAbsentReason"]["coding"][0]["code"], "unknown");
}

#[test]
fn symptoms_answers_and_questions_map_as_documented() {
    let bundle = make_bundle(json!("Male"));
    let conditions = resources(&bundle, "Condition");
    let symptom = conditions[2];
    assert_eq!(
        symptom["code"]["coding"][0],
        json!({"system":"http://hl7.org/fhir/sid/icpc-2","code":"A03"})
    );
    assert_eq!(symptom["clinicalStatus"]["coding"][0]["code"], "active");
    assert_eq!(symptom["note"], json!([{"text":"since yesterday"}]));
    assert_eq!(
        conditions[3]["clinicalStatus"]["coding"][0]["code"],
        "inactive"
    );
    assert!(conditions[3].get("note").is_none());
    assert_eq!(conditions[0]["code"]["text"], "Respiratory disease");

    let responses = resources(&bundle, "QuestionnaireResponse");
    assert_eq!(responses[0]["status"], "completed");
    assert_eq!(responses[0]["item"][0]["linkId"], "31");
    assert_eq!(
        responses[0]["item"][0]["answer"],
        json!([{"valueInteger":7}])
    );
    assert_eq!(
        responses[1]["item"][0]["answer"],
        json!([{"valueBoolean":true}])
    );
    assert!(responses[2]["item"][0].get("answer").is_none());

    let questionnaires = resources(&bundle, "Questionnaire");
    let types: Vec<&str> = questionnaires
        .iter()
        .map(|q| q["item"][0]["type"].as_str().expect("type"))
        .collect();
    assert_eq!(types, ["integer", "boolean", "text", "string", "string"]);
    assert_eq!(responses[0]["questionnaire"], questionnaires[0]["url"]);
    assert_eq!(
        questionnaires[0]["effectivePeriod"],
        json!({"start":"2021-01-19T00:00:00.000Z"})
    );
    let tasks = resources(&bundle, "Task");
    assert_eq!(tasks[0]["status"], "completed");
    assert_eq!(tasks[3]["status"], "requested");
    let inputs: Vec<&Value> = tasks[0]["input"]
        .as_array()
        .expect("inputs")
        .iter()
        .map(|i| i.get("valueTime").or(i.get("valueBoolean")).expect("value"))
        .collect();
    assert_eq!(
        inputs,
        [&json!("09:00:00"), &json!("21:30:00"), &json!(true)]
    );
}

#[test]
fn references_resolve_and_ids_are_unique_and_valid() {
    let bundle = make_bundle(json!("Female"));
    let mut full_urls = BTreeSet::new();
    let mut ids = BTreeSet::new();
    let mut urls_by_type: HashMap<String, &str> = HashMap::new();
    for entry in entries(&bundle) {
        let full_url = entry["fullUrl"].as_str().expect("fullUrl");
        let uuid = full_url.strip_prefix("urn:uuid:").expect("urn:uuid");
        let parsed = Uuid::parse_str(uuid).expect("a uuid");
        assert_eq!(parsed.get_version_num(), 8);
        assert_eq!(uuid, parsed.as_hyphenated().to_string(), "lower case");
        let id = entry["resource"]["id"].as_str().expect("id");
        assert_eq!(id, uuid);
        assert!(
            id.len() <= 64
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        );
        assert!(full_urls.insert(full_url), "duplicate fullUrl {full_url}");
        assert!(ids.insert(id), "duplicate id {id}");
        urls_by_type.insert(
            full_url.to_owned(),
            entry["resource"]["resourceType"].as_str().expect("type"),
        );
    }
    let mut references = Vec::new();
    collect(&bundle, "reference", &mut references);
    assert!(references.len() > 20);
    for reference in references {
        let target = reference.as_str().expect("string reference");
        assert!(
            urls_by_type.contains_key(target),
            "dangling reference {target}"
        );
    }
    for subject in resources(&bundle, "Observation")
        .iter()
        .chain(&resources(&bundle, "Condition"))
        .map(|r| &r["subject"]["reference"])
    {
        assert_eq!(urls_by_type[subject.as_str().expect("subject")], "Patient");
    }
    // Canonical links from answers name a Questionnaire in the bundle.
    let canonicals: BTreeSet<&str> = resources(&bundle, "Questionnaire")
        .iter()
        .map(|q| q["url"].as_str().expect("url"))
        .collect();
    for response in resources(&bundle, "QuestionnaireResponse") {
        assert!(canonicals.contains(response["questionnaire"].as_str().expect("canonical")));
    }
    for task in resources(&bundle, "Task") {
        assert_eq!(
            urls_by_type[task["focus"]["reference"].as_str().expect("focus")],
            "Questionnaire"
        );
        assert_eq!(
            urls_by_type[task["for"]["reference"].as_str().expect("for")],
            "Patient"
        );
    }
}

#[test]
fn conversion_is_deterministic_per_transfer() {
    let transfer = Uuid::new_v4();
    let records = record(json!("Male"));
    assert_eq!(convert(transfer, &records), convert(transfer, &records));
    assert_ne!(
        convert(transfer, &records),
        convert(Uuid::new_v4(), &records)
    );
}

/// The FHIR JSON rules a schema does not fully check: no nulls, no empty
/// arrays, objects or strings, dates with a time zone, codes without
/// stray white space.
#[test]
fn the_output_follows_fhir_json_rules() {
    fn walk(path: &str, value: &Value) {
        match value {
            Value::Null => panic!("{path}: null"),
            Value::String(s) => {
                assert!(!s.trim().is_empty(), "{path}: empty string");
                assert_eq!(s.trim(), s, "{path}: surrounding white space");
            }
            Value::Array(items) => {
                assert!(!items.is_empty(), "{path}: empty array");
                for (i, item) in items.iter().enumerate() {
                    walk(&format!("{path}[{i}]"), item);
                }
            }
            Value::Object(map) => {
                assert!(!map.is_empty(), "{path}: empty object");
                for (key, item) in map {
                    walk(&format!("{path}.{key}"), item);
                }
            }
            Value::Bool(_) | Value::Number(_) => {}
        }
    }
    let bundle = make_bundle(json!("Male"));
    walk("Bundle", &bundle);
    let date_time = |s: &str| {
        let b = s.as_bytes();
        s.len() == 24
            && s.ends_with('Z')
            && b[4] == b'-'
            && b[7] == b'-'
            && b[10] == b'T'
            && b[13] == b':'
            && b[16] == b':'
            && b[19] == b'.'
    };
    for key in [
        "timestamp",
        "effectiveDateTime",
        "recordedDate",
        "dateAsserted",
        "authored",
        "authoredOn",
        "lastModified",
        "date",
        "start",
        "end",
    ] {
        let mut found = Vec::new();
        collect(&bundle, key, &mut found);
        for value in found {
            let s = value.as_str().expect("date string");
            assert!(date_time(s), "{key}: {s}");
        }
    }
    let mut codes = Vec::new();
    collect(&bundle, "code", &mut codes);
    for code in codes.iter().filter_map(|c| c.as_str()) {
        assert!(valid_code(code), "code {code:?}");
    }
}

#[test]
fn records_out_of_order_or_without_id_are_refused() {
    let records = record(json!("Male"));
    let mut out = Vec::new();
    let mut writer = FhirWriter::new(&header(Uuid::new_v4()), FQDN, &mut out);
    let error = writer
        .push(Part::Vitals, &records[2].1, &mut out)
        .expect_err("no patient");
    assert!(matches!(error, FhirError::MissingPatient(Part::Vitals)));
    writer
        .push(Part::Patient, &records[0].1, &mut out)
        .expect("patient");
    let error = writer
        .push(Part::Patient, &records[0].1, &mut out)
        .expect_err("twice");
    assert!(matches!(error, FhirError::Duplicate(Part::Patient)));
    writer
        .push(Part::Symptom, &records[4].1, &mut out)
        .expect("symptom");
    let before = out.len();
    let error = writer
        .push(Part::Vitals, &records[2].1, &mut out)
        .expect_err("order");
    assert!(matches!(error, FhirError::Order { .. }));
    let error = writer
        .push(Part::Answer, &json!({"answer":"x"}), &mut out)
        .expect_err("no id");
    assert_eq!(error.reason(), "fhir_data");
    assert_eq!(out.len(), before, "nothing written on refusal");
    writer.finish(&mut out).expect("finish");
    let bundle: Value = serde_json::from_slice(&out).expect("JSON");
    // The patient was written without a profile, so its gender is unknown.
    assert_eq!(resources(&bundle, "Patient")[0]["gender"], "unknown");
}

#[test]
fn a_streamed_bundle_converts_end_to_end() {
    use crate::token::SigningKey;
    use crate::transfer::bundle::{BundleReader, BundleWriter, Item};

    let transfer = Uuid::new_v4();
    let fid: Uuid = FID.parse().expect("uuid");
    let mut plain = Vec::new();
    let mut writer = BundleWriter::new(&header(transfer), &mut plain);
    for (part, data) in record(json!("Female")) {
        let bytes = serde_json::to_vec(&data).expect("serialize");
        writer.push(part, &bytes, &mut plain).expect("push");
    }
    let key = SigningKey::generate("sel1").expect("key");
    writer
        .finish(&key, FQDN, fid, std::time::SystemTime::now(), &mut plain)
        .expect("finish");

    let mut reader = BundleReader::new(1 << 16);
    let mut fhir = Vec::new();
    let mut converter: Option<FhirWriter> = None;
    for chunk in plain.chunks(100) {
        reader
            .feed(chunk, &mut |item| {
                match item {
                    Item::Header(h) => converter = Some(FhirWriter::new(&h, FQDN, &mut fhir)),
                    Item::Record { part, data } => {
                        let value: Value = serde_json::from_str(data.get()).expect("data");
                        converter
                            .as_mut()
                            .expect("header first")
                            .push(part, &value, &mut fhir)
                            .expect("convert");
                    }
                }
                Ok(())
            })
            .expect("feed");
    }
    reader.finish().expect("read");
    converter
        .expect("converter")
        .finish(&mut fhir)
        .expect("finish");
    assert_eq!(fhir, convert(transfer, &record(json!("Female"))));
}

/// Where the official R4 schema is: `MDGATE_FHIR_R4_SCHEMA`, or
/// `tests/data/fhir-r4.schema.json.gz` (see `tests/data/README.md`).
fn schema_path() -> PathBuf {
    std::env::var_os("MDGATE_FHIR_R4_SCHEMA").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/fhir-r4.schema.json.gz"),
        PathBuf::from,
    )
}

fn load_schema() -> Value {
    let path = schema_path();
    let file = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (see tests/data/README.md)", path.display()));
    let mut text = Vec::new();
    if file.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&file[..])
            .read_to_end(&mut text)
            .expect("gunzip");
    } else {
        text = file;
    }
    let schema: Value = serde_json::from_slice(&text).expect("schema JSON");
    assert_eq!(
        schema["id"], "http://hl7.org/fhir/json-schema/4.0",
        "not the R4 schema"
    );
    schema
}

/// The schema with its root pointed at one definition.
fn schema_for(schema: &Value, definition: &str) -> jsonschema::Validator {
    let mut rooted = schema.clone();
    let root = rooted.as_object_mut().expect("schema object");
    root.remove("oneOf");
    root.remove("discriminator");
    root.insert(
        "$ref".to_owned(),
        json!(format!("#/definitions/{definition}")),
    );
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft6)
        .build(&rooted)
        .expect("the R4 schema compiles")
}

#[test]
fn the_bundle_validates_against_the_r4_json_schema() {
    // The schema is not vendored: CI fetches it (tests/data/README.md);
    // without it this says why it skips.
    if !schema_path().exists() {
        eprintln!(
            "skipping the FHIR R4 schema check: {} is missing (see tests/data/README.md)",
            schema_path().display()
        );
        return;
    }
    let schema = load_schema();
    let validator = schema_for(&schema, "Bundle");
    for sex in [json!("Female"), json!("Male"), Value::Null] {
        let bundle = make_bundle(sex);
        let errors: Vec<String> = validator
            .iter_errors(&bundle)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect();
        if errors.is_empty() {
            continue;
        }
        // `entry.resource` is a oneOf over every resource type, whose
        // error says little: validate each resource on its own for the
        // precise complaint.
        let mut detail = Vec::new();
        for entry in entries(&bundle) {
            let kind = entry["resource"]["resourceType"].as_str().expect("type");
            let one = schema_for(&schema, kind);
            detail.extend(
                one.iter_errors(&entry["resource"])
                    .map(|e| format!("{kind}: {e} at {}", e.instance_path())),
            );
        }
        panic!("schema errors: {errors:#?}\nper resource: {detail:#?}");
    }
    // The schema is strict enough to notice a wrong resource.
    let mut bad = make_bundle(json!("Male"));
    bad["entry"][0]["resource"]["gender"] = json!(7);
    assert!(!validator.is_valid(&bad));
    let mut bad = make_bundle(json!("Male"));
    bad["entry"][1]["resource"]["valueQty"] = json!({});
    assert!(!validator.is_valid(&bad));
    let mut bad = make_bundle(json!("Male"));
    bad["entry"][5]["resource"]["effectiveDateTime"] = json!("18/01/2021");
    assert!(!validator.is_valid(&bad));
    let mut bad = make_bundle(json!("Male"));
    bad["entry"][0]["resource"]["id"] = json!("not an id");
    assert!(!validator.is_valid(&bad));
}
