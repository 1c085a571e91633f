//! The record as a FHIR R4 `Bundle` (type `collection`), written as a
//! stream: one entry per resource, serialized as its record arrives, so a
//! record of 100,000 vitals never sits in memory whole.
//!
//! ```text
//! Item::Record (from BundleReader) ──FhirWriter::push──▶ entries appended to `out`
//! {"resourceType":"Bundle","type":"collection","timestamp":…,"identifier":…,"entry":[ … ]}
//!  └─ FhirWriter::new writes up to "entry":[          FhirWriter::finish writes ]} ─┘
//! ```
//!
//! The writer keeps one thing between calls: the Patient, from its record
//! until the profile arrives (the profile's `sex` gives the Patient's
//! `gender`). Records must come in bundle order (patient first), which
//! [`BundleReader`](super::bundle::BundleReader) guarantees.
//!
//! # Identity
//!
//! Every entry's `fullUrl` is `urn:uuid:<u>` and its resource `id` is the
//! same `<u>` (R4 ids are `[A-Za-z0-9\-\.]{1,64}`; a UUID fits). `<u>` is
//! derived, not random: the first 16 bytes of SHA-256(transfer id ‖ kind ‖
//! 0x00 ‖ upstream id), with the RFC 9562 version 8 (custom) and variant
//! bits set. The same record therefore always converts to the same
//! Bundle, and entries can reference each other before both are written.
//! The Patient's `<u>` comes from the patient's federation uuid, so it is
//! known from the header. References between entries use those fullUrls.
//! Upstream ids are kept as `identifier`s in the namespace
//! `https://<fqdn>/accessmd/<kind>` (a name, not an address to fetch).
//!
//! All times are epoch milliseconds upstream and become UTC instants with
//! milliseconds (`2021-01-18T20:00:00.000Z`), which satisfy both `instant`
//! and `dateTime`; a time outside years 1-9999 is left out.
//!
//! # Mapping
//!
//! * Patient → `Patient`: `identifier` (system
//!   `https://<fqdn>/federation/patient`, value the federation uuid, and
//!   the upstream id), `name` (`given` = firstName, `family` = lastName),
//!   `telecom` (phone), `gender` from the profile's `sex`
//!   (`Female`/`Male` → `female`/`male`, anything else → `unknown`). The
//!   login name (a phone number again) and the role are not carried.
//! * MedicalProfile → body height (LOINC 8302-2, `cm`) and body weight
//!   (29463-7, `kg`) vital-sign `Observation`s when not zero (zero is the
//!   upstream's "not entered"), effective at the profile's `updateDate`; a
//!   `Condition` (text-coded, clinicalStatus active, category
//!   problem-list-item) per true flag (g6pdDeficiency,
//!   respiratoryDiseases, diabetes, cardiovascularDiseases, obesity); a
//!   `MedicationStatement` (status active, `medicationCodeableConcept.text`)
//!   per medication. `age` is not carried: a bare age without the date it
//!   was true is not a FHIR fact.
//! * VitalsMeasurment → one `Observation`: status final, category
//!   vital-signs, code LOINC 85353-1 (vital signs panel), effective at
//!   `creationDate`, with a `component` per non-null value: heart rate
//!   8867-4 (`/min`), systolic 8480-6 and diastolic 8462-4 (`mm[Hg]`),
//!   oxygen saturation 2708-6 (`%`), respiratory rate 9279-1 (`/min`), each
//!   a UCUM `valueQuantity`. With no value at all, `dataAbsentReason`
//!   says so (R4 vital signs need a value, a component or that reason).
//! * Symptom → `Condition`: code ICPC-2 (`http://hl7.org/fhir/sid/icpc-2`,
//!   code = symptomCode), category problem-list-item (the patient reports
//!   it, outside an encounter), clinicalStatus active, or inactive when
//!   archived, `recordedDate` = creationDate, the note as `note`. `replies`
//!   are always empty upstream (no route creates one) and are not carried.
//! * Answer → `QuestionnaireResponse`: status completed, `authored` =
//!   creationDate, `questionnaire` = the canonical URL of the question's
//!   `Questionnaire` (below), one `item` {linkId = question id, text =
//!   question text, answer}. The answer is typed by the question's type
//!   where the text allows (Scale → `valueInteger`, Binary yes/no →
//!   `valueBoolean`), otherwise `valueString`, so that it agrees with the
//!   Questionnaire item's type whenever it can.
//! * Question → `Questionnaire` + `Task`. The Questionnaire holds what is
//!   asked: one item (linkId = question id, type Scale → integer, Binary →
//!   boolean, Text → text, Vitals and none → string), `url`
//!   `urn:uuid:<u>` (what answers point to), `effectivePeriod` =
//!   startDate..endDate. A Questionnaire has no subject and no schedule,
//!   and an upstream question is a prompt scheduled for one patient; the
//!   `Task` carries that: `for` the Patient, `focus` the Questionnaire,
//!   status completed once answered (requested before), `restriction.period`
//!   = startDate..endDate, and one `input` per daily time of `recurrance`
//!   (`valueTime`) and whether it recurs (`valueBoolean`). Task is the R4
//!   resource for "this person should do this", as the Structured Data
//!   Capture guide uses it for questionnaires to fill; ServiceRequest and
//!   CommunicationRequest describe services and messages, not a form.
//!
//! Values of the wrong JSON type (a string where a number belongs) are
//! skipped like nulls; a record without a numeric `id` is refused, since
//! its identity could not be derived.

use serde::Serialize;
use serde_json::{Number, Value};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;

use super::bundle::{BundleHeader, Part};
use crate::audit::rfc3339_millis;
use crate::federation::access::code::parse_address;

const LOINC: &str = "http://loinc.org";
const UCUM: &str = "http://unitsofmeasure.org";
const ICPC2: &str = "http://hl7.org/fhir/sid/icpc-2";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const CONDITION_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
const DATA_ABSENT: &str = "http://terminology.hl7.org/CodeSystem/data-absent-reason";
/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z, in epoch millis:
/// the years a FHIR instant can write.
const FIRST_MS: i64 = -62_135_596_800_000;
const LAST_MS: i64 = 253_402_300_799_999;

/// A vital sign: upstream key, LOINC code and display, UCUM unit.
struct Vital {
    key: &'static str,
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    ucum: &'static str,
}

/// The vitals components, in the order they are written.
const VITALS: [Vital; 5] = [
    Vital {
        key: "heartBeatsPerMinute",
        loinc: "8867-4",
        display: "Heart rate",
        unit: "beats/minute",
        ucum: "/min",
    },
    Vital {
        key: "systolicPressure",
        loinc: "8480-6",
        display: "Systolic blood pressure",
        unit: "mmHg",
        ucum: "mm[Hg]",
    },
    Vital {
        key: "diastolicPressure",
        loinc: "8462-4",
        display: "Diastolic blood pressure",
        unit: "mmHg",
        ucum: "mm[Hg]",
    },
    Vital {
        key: "bloodOxygenation",
        loinc: "2708-6",
        display: "Oxygen saturation in Arterial blood",
        unit: "%",
        ucum: "%",
    },
    Vital {
        key: "breathingRate",
        loinc: "9279-1",
        display: "Respiratory rate",
        unit: "breaths/minute",
        ucum: "/min",
    },
];

/// The profile's flags, as Condition texts.
const FLAGS: [(&str, &str); 5] = [
    ("g6pdDeficiency", "G6PD deficiency"),
    ("respiratoryDiseases", "Respiratory disease"),
    ("diabetes", "Diabetes mellitus"),
    ("cardiovascularDiseases", "Cardiovascular disease"),
    ("obesity", "Obesity"),
];

/// Why a record could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum FhirError {
    #[error("a {part} record after {after} records (records must come in bundle order)")]
    Order { part: Part, after: Part },
    #[error("a second {0} record")]
    Duplicate(Part),
    #[error("no patient record before the {0} records")]
    MissingPatient(Part),
    #[error("{part} record: {detail}")]
    Data { part: Part, detail: &'static str },
    #[error("cannot serialize a FHIR entry: {0}")]
    Json(#[from] serde_json::Error),
}

/// Streams a FHIR R4 collection Bundle; see the module docs.
#[derive(Debug)]
pub struct FhirWriter {
    transfer: Uuid,
    fqdn: String,
    /// The federation uuid (or whatever precedes `@` in the source).
    fid: String,
    /// `urn:uuid:` of the Patient entry.
    patient_url: String,
    /// The patient record, until the profile arrives.
    pending: Option<Value>,
    current: Option<Part>,
    entries: u64,
}

#[derive(Serialize)]
struct BundleHead {
    #[serde(rename = "resourceType")]
    resource_type: &'static str,
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    timestamp: Option<String>,
    identifier: Identifier,
}

#[derive(Serialize)]
struct Coding {
    system: &'static str,
    code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    display: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct CodeableConcept {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    coding: Vec<Coding>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
}

#[derive(Serialize)]
struct Reference {
    reference: String,
}

#[derive(Serialize)]
struct Identifier {
    system: String,
    value: String,
}

#[derive(Serialize)]
struct Quantity {
    value: Number,
    unit: &'static str,
    system: &'static str,
    code: &'static str,
}

#[derive(Serialize)]
struct Period {
    #[serde(skip_serializing_if = "Option::is_none")]
    start: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    end: Option<String>,
}

#[derive(Serialize)]
struct Annotation {
    text: String,
}

#[derive(Serialize)]
struct HumanName {
    #[serde(skip_serializing_if = "Option::is_none")]
    family: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    given: Vec<String>,
}

#[derive(Serialize)]
struct ContactPoint {
    system: &'static str,
    value: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Patient {
    resource_type: &'static str,
    id: String,
    identifier: Vec<Identifier>,
    active: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    name: Vec<HumanName>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    telecom: Vec<ContactPoint>,
    gender: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Observation {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    identifier: Vec<Identifier>,
    status: &'static str,
    category: Vec<CodeableConcept>,
    code: CodeableConcept,
    subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_date_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    value_quantity: Option<Quantity>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data_absent_reason: Option<CodeableConcept>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    component: Vec<Component>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Component {
    code: CodeableConcept,
    value_quantity: Quantity,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Condition {
    resource_type: &'static str,
    id: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    identifier: Vec<Identifier>,
    clinical_status: CodeableConcept,
    category: Vec<CodeableConcept>,
    code: CodeableConcept,
    subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    recorded_date: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    note: Vec<Annotation>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MedicationStatement {
    resource_type: &'static str,
    id: String,
    status: &'static str,
    medication_codeable_concept: CodeableConcept,
    subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    date_asserted: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuestionnaireResponse {
    resource_type: &'static str,
    id: String,
    identifier: Identifier,
    #[serde(skip_serializing_if = "Option::is_none")]
    questionnaire: Option<String>,
    status: &'static str,
    subject: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    authored: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    item: Vec<ResponseItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseItem {
    link_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    answer: Vec<AnswerValue>,
}

/// One answer, serialized as `{"valueString": …}` and so on.
#[derive(Serialize)]
enum AnswerValue {
    #[serde(rename = "valueString")]
    String(String),
    #[serde(rename = "valueInteger")]
    Integer(i32),
    #[serde(rename = "valueBoolean")]
    Boolean(bool),
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Questionnaire {
    resource_type: &'static str,
    id: String,
    url: String,
    identifier: Vec<Identifier>,
    status: &'static str,
    subject_type: [&'static str; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    effective_period: Option<Period>,
    item: Vec<QuestionnaireItem>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct QuestionnaireItem {
    link_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Task {
    resource_type: &'static str,
    id: String,
    identifier: Vec<Identifier>,
    status: &'static str,
    intent: &'static str,
    code: CodeableConcept,
    focus: Reference,
    #[serde(rename = "for")]
    owner_for: Reference,
    #[serde(skip_serializing_if = "Option::is_none")]
    authored_on: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_modified: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    restriction: Option<Restriction>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    input: Vec<TaskInput>,
}

#[derive(Serialize)]
struct Restriction {
    period: Period,
}

#[derive(Serialize)]
struct TaskInput {
    #[serde(rename = "type")]
    kind: CodeableConcept,
    #[serde(flatten)]
    value: TaskValue,
}

#[derive(Serialize)]
enum TaskValue {
    #[serde(rename = "valueTime")]
    Time(String),
    #[serde(rename = "valueBoolean")]
    Boolean(bool),
}

/// One entry as written.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry<'a, R> {
    full_url: &'a str,
    resource: &'a R,
}

impl FhirWriter {
    /// Starts the Bundle for `header`'s record, read from `server_fqdn`:
    /// appends everything up to the opening of `entry`.
    pub fn new(header: &BundleHeader, server_fqdn: &str, out: &mut Vec<u8>) -> FhirWriter {
        let fid = match parse_address(&header.source) {
            Ok(address) => address.patient.to_string(),
            Err(_) => header
                .source
                .split_once('@')
                .map_or(header.source.as_str(), |(id, _)| id)
                .to_owned(),
        };
        let patient_url = urn(derived_uuid(header.transfer, "patient", &fid));
        let head = BundleHead {
            resource_type: "Bundle",
            kind: "collection",
            timestamp: instant(header.created),
            identifier: Identifier {
                system: "urn:ietf:rfc:3986".to_owned(),
                value: urn(header.transfer),
            },
        };
        // Invariant: these structs hold strings only, which serialize into
        // a Vec without error.
        let mut text = serde_json::to_vec(&head).expect("bundle head serializes");
        // Replace the closing brace with the opening of the entries.
        text.pop();
        out.extend_from_slice(&text);
        out.extend_from_slice(b",\"entry\":[");
        FhirWriter {
            transfer: header.transfer,
            fqdn: server_fqdn.trim_end_matches('.').to_ascii_lowercase(),
            fid,
            patient_url,
            pending: None,
            current: None,
            entries: 0,
        }
    }

    /// Converts one record (the `data` of a bundle line) and appends its
    /// entries. Records must come in bundle order, the patient first.
    pub fn push(&mut self, part: Part, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        self.admit(part)?;
        // Everything that can be wrong with the record is checked before
        // anything is written, so a refused record leaves `out` as it was.
        if !data.is_object() {
            return Err(FhirError::Data {
                part,
                detail: "not a JSON object",
            });
        }
        upstream_id(part, data)?;
        self.convert(part, data, out)?;
        self.current = Some(part);
        Ok(())
    }

    /// Ends the Bundle. Returns the number of entries written.
    pub fn finish(mut self, out: &mut Vec<u8>) -> Result<u64, FhirError> {
        if self.current.is_none() {
            return Err(FhirError::MissingPatient(Part::Patient));
        }
        self.flush_patient(None, out)?;
        out.extend_from_slice(b"]}");
        Ok(self.entries)
    }

    fn admit(&self, part: Part) -> Result<(), FhirError> {
        match self.current {
            None if part != Part::Patient => Err(FhirError::MissingPatient(part)),
            Some(after) if part < after => Err(FhirError::Order { part, after }),
            Some(after) if part == after && matches!(part, Part::Patient | Part::Profile) => {
                Err(FhirError::Duplicate(part))
            }
            _ => Ok(()),
        }
    }

    fn convert(&mut self, part: Part, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        match part {
            Part::Patient => {
                self.pending = Some(data.clone());
                Ok(())
            }
            Part::Profile => {
                let sex = data.get("sex").and_then(Value::as_str);
                self.flush_patient(sex, out)?;
                self.profile(data, out)
            }
            Part::Vitals => {
                self.flush_patient(None, out)?;
                self.vitals(data, out)
            }
            Part::Symptom => {
                self.flush_patient(None, out)?;
                self.symptom(data, out)
            }
            Part::Answer => {
                self.flush_patient(None, out)?;
                self.answer(data, out)
            }
            Part::Question => {
                self.flush_patient(None, out)?;
                self.question(data, out)
            }
        }
    }

    /// Writes the pending Patient, with the gender the profile gives (or
    /// unknown when there is no profile).
    fn flush_patient(&mut self, sex: Option<&str>, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let Some(data) = self.pending.take() else {
            return Ok(());
        };
        let id = upstream_id(Part::Patient, &data)?;
        let first = text(&data, "firstName");
        let last = text(&data, "lastName");
        let name = if first.is_some() || last.is_some() {
            vec![HumanName {
                family: last,
                given: first.into_iter().collect(),
            }]
        } else {
            Vec::new()
        };
        let patient = Patient {
            resource_type: "Patient",
            id: uuid_text(&self.patient_url),
            identifier: vec![
                Identifier {
                    system: format!("https://{}/federation/patient", self.fqdn),
                    value: self.fid.clone(),
                },
                self.upstream_identifier("patient", id),
            ],
            active: true,
            name,
            telecom: text(&data, "telephoneNumber")
                .map(|value| ContactPoint {
                    system: "phone",
                    value,
                })
                .into_iter()
                .collect(),
            gender: match sex {
                Some("Female") => "female",
                Some("Male") => "male",
                _ => "unknown",
            },
        };
        let url = self.patient_url.clone();
        self.entry(&url, &patient, out)
    }

    fn profile(&mut self, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let id = upstream_id(Part::Profile, data)?;
        let when = time(data, "updateDate").or_else(|| time(data, "creationDate"));
        for (key, loinc, display, unit) in [
            ("height", "8302-2", "Body height", "cm"),
            ("weight", "29463-7", "Body weight", "kg"),
        ] {
            let Some(value) = number(data, key).filter(|n| n.as_f64() != Some(0.0)) else {
                continue;
            };
            let url = self.url(&format!("profile-{key}"), id);
            let observation = Observation {
                resource_type: "Observation",
                id: uuid_text(&url),
                identifier: Vec::new(),
                status: "final",
                category: vec![vital_signs()],
                code: loinc_concept(loinc, display),
                subject: self.subject(),
                effective_date_time: when.clone(),
                value_quantity: Some(Quantity {
                    value,
                    unit,
                    system: UCUM,
                    code: unit,
                }),
                data_absent_reason: None,
                component: Vec::new(),
            };
            self.entry(&url, &observation, out)?;
        }
        for (key, label) in FLAGS {
            if data.get(key).and_then(Value::as_bool) != Some(true) {
                continue;
            }
            let url = self.url(&format!("profile-{key}"), id);
            let condition = Condition {
                resource_type: "Condition",
                id: uuid_text(&url),
                identifier: Vec::new(),
                clinical_status: clinical_status("active"),
                category: vec![condition_category()],
                code: CodeableConcept {
                    coding: Vec::new(),
                    text: Some(label.to_owned()),
                },
                subject: self.subject(),
                recorded_date: when.clone(),
                note: Vec::new(),
            };
            self.entry(&url, &condition, out)?;
        }
        let medications = data.get("medications").and_then(Value::as_array);
        for (index, medication) in medications.into_iter().flatten().enumerate() {
            let Some(name) = medication.as_str().and_then(non_blank) else {
                continue;
            };
            let url = self.url(&format!("profile-medication-{index}"), id);
            let statement = MedicationStatement {
                resource_type: "MedicationStatement",
                id: uuid_text(&url),
                status: "active",
                medication_codeable_concept: CodeableConcept {
                    coding: Vec::new(),
                    text: Some(name),
                },
                subject: self.subject(),
                date_asserted: when.clone(),
            };
            self.entry(&url, &statement, out)?;
        }
        Ok(())
    }

    fn vitals(&mut self, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let id = upstream_id(Part::Vitals, data)?;
        let url = self.url("vitals", id);
        let component: Vec<Component> = VITALS
            .iter()
            .filter_map(|vital| {
                number(data, vital.key).map(|value| Component {
                    code: loinc_concept(vital.loinc, vital.display),
                    value_quantity: Quantity {
                        value,
                        unit: vital.unit,
                        system: UCUM,
                        code: vital.ucum,
                    },
                })
            })
            .collect();
        let data_absent_reason = component.is_empty().then(|| CodeableConcept {
            coding: vec![Coding {
                system: DATA_ABSENT,
                code: "unknown".to_owned(),
                display: Some("Unknown"),
            }],
            text: None,
        });
        let observation = Observation {
            resource_type: "Observation",
            id: uuid_text(&url),
            identifier: vec![self.upstream_identifier("vitals", id)],
            status: "final",
            category: vec![vital_signs()],
            code: CodeableConcept {
                coding: vec![Coding {
                    system: LOINC,
                    code: "85353-1".to_owned(),
                    display: Some(
                        "Vital signs, weight, height, head circumference, oxygen saturation and BMI panel",
                    ),
                }],
                text: Some("Vital signs panel".to_owned()),
            },
            subject: self.subject(),
            effective_date_time: time(data, "creationDate"),
            value_quantity: None,
            data_absent_reason,
            component,
        };
        self.entry(&url, &observation, out)
    }

    fn symptom(&mut self, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let id = upstream_id(Part::Symptom, data)?;
        let url = self.url("symptom", id);
        let code = text(data, "symptomCode");
        let archived = data.get("archived").and_then(Value::as_bool) == Some(true);
        let concept = match code {
            Some(code) if valid_code(&code) => CodeableConcept {
                coding: vec![Coding {
                    system: ICPC2,
                    code,
                    display: None,
                }],
                text: None,
            },
            // Not a FHIR code (inner runs of white space): keep it as text.
            other => CodeableConcept {
                coding: Vec::new(),
                text: Some(other.unwrap_or_else(|| "Symptom".to_owned())),
            },
        };
        let condition = Condition {
            resource_type: "Condition",
            id: uuid_text(&url),
            identifier: vec![self.upstream_identifier("symptom", id)],
            clinical_status: clinical_status(if archived { "inactive" } else { "active" }),
            category: vec![condition_category()],
            code: concept,
            subject: self.subject(),
            recorded_date: time(data, "creationDate"),
            note: text(data, "note")
                .map(|text| Annotation { text })
                .into_iter()
                .collect(),
        };
        self.entry(&url, &condition, out)
    }

    fn answer(&mut self, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let id = upstream_id(Part::Answer, data)?;
        let url = self.url("answer", id);
        let question = data.get("question").filter(|q| q.is_object());
        let question_id = question.and_then(|q| q.get("id")).and_then(Value::as_i64);
        let kind = question.and_then(|q| q.get("type")).and_then(Value::as_str);
        let item = question_id.map(|qid| ResponseItem {
            link_id: qid.to_string(),
            text: question.and_then(|q| text(q, "question")),
            answer: text(data, "answer")
                .map(|a| typed_answer(kind, a))
                .into_iter()
                .collect(),
        });
        let response = QuestionnaireResponse {
            resource_type: "QuestionnaireResponse",
            id: uuid_text(&url),
            identifier: self.upstream_identifier("answer", id),
            questionnaire: question_id.map(|qid| self.url("question", qid)),
            status: "completed",
            subject: self.subject(),
            authored: time(data, "creationDate"),
            item: item.into_iter().collect(),
        };
        self.entry(&url, &response, out)
    }

    fn question(&mut self, data: &Value, out: &mut Vec<u8>) -> Result<(), FhirError> {
        let id = upstream_id(Part::Question, data)?;
        let url = self.url("question", id);
        let period = || {
            let start = time(data, "startDate");
            let end = time(data, "endDate");
            (start.is_some() || end.is_some()).then_some(Period { start, end })
        };
        let questionnaire = Questionnaire {
            resource_type: "Questionnaire",
            id: uuid_text(&url),
            url: url.clone(),
            identifier: vec![self.upstream_identifier("question", id)],
            status: "active",
            subject_type: ["Patient"],
            date: time(data, "updateDate"),
            effective_period: period(),
            item: vec![QuestionnaireItem {
                link_id: id.to_string(),
                text: text(data, "question"),
                kind: item_type(data.get("type").and_then(Value::as_str)),
            }],
        };
        self.entry(&url, &questionnaire, out)?;

        let task_url = self.url("question-task", id);
        let answered = data.get("answered").and_then(Value::as_bool) == Some(true);
        let authored_on = time(data, "creationDate");
        let last_modified = time(data, "updateDate").filter(|_| {
            // Task inv-1: lastModified is not before authoredOn.
            millis(data, "updateDate") >= millis(data, "creationDate")
        });
        let mut input: Vec<TaskInput> = data
            .get("recurrance")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(time_of_day)
            .map(|time| TaskInput {
                kind: CodeableConcept {
                    coding: Vec::new(),
                    text: Some("Time of day to ask".to_owned()),
                },
                value: TaskValue::Time(time),
            })
            .collect();
        if let Some(recurring) = data.get("recurring").and_then(Value::as_bool) {
            input.push(TaskInput {
                kind: CodeableConcept {
                    coding: Vec::new(),
                    text: Some("Recurring question".to_owned()),
                },
                value: TaskValue::Boolean(recurring),
            });
        }
        let task = Task {
            resource_type: "Task",
            id: uuid_text(&task_url),
            identifier: vec![self.upstream_identifier("question", id)],
            status: if answered { "completed" } else { "requested" },
            intent: "order",
            code: CodeableConcept {
                coding: Vec::new(),
                text: Some("Answer the question".to_owned()),
            },
            focus: Reference { reference: url },
            owner_for: self.subject(),
            authored_on,
            last_modified,
            restriction: period().map(|period| Restriction { period }),
            input,
        };
        self.entry(&task_url, &task, out)
    }

    /// Appends one entry, with the comma before it when needed.
    fn entry<R: Serialize>(
        &mut self,
        full_url: &str,
        resource: &R,
        out: &mut Vec<u8>,
    ) -> Result<(), FhirError> {
        if self.entries > 0 {
            out.push(b',');
        }
        serde_json::to_writer(&mut *out, &Entry { full_url, resource })?;
        self.entries += 1;
        Ok(())
    }

    /// The fullUrl of the entry made from upstream record `id` as `kind`.
    fn url(&self, kind: &str, id: i64) -> String {
        urn(derived_uuid(self.transfer, kind, &id.to_string()))
    }

    fn subject(&self) -> Reference {
        Reference {
            reference: self.patient_url.clone(),
        }
    }

    fn upstream_identifier(&self, kind: &str, id: i64) -> Identifier {
        Identifier {
            system: format!("https://{}/accessmd/{kind}", self.fqdn),
            value: id.to_string(),
        }
    }
}

/// The first 16 bytes of SHA-256(transfer ‖ kind ‖ 0 ‖ id), as a version 8
/// (custom) RFC 9562 UUID.
fn derived_uuid(transfer: Uuid, kind: &str, id: &str) -> Uuid {
    let mut hasher = Sha256::new();
    hasher.update(transfer.as_bytes());
    hasher.update(kind.as_bytes());
    hasher.update([0]);
    hasher.update(id.as_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    bytes[6] = (bytes[6] & 0x0f) | 0x80;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    Uuid::from_bytes(bytes)
}

fn urn(uuid: Uuid) -> String {
    format!("urn:uuid:{}", uuid.as_hyphenated())
}

/// The resource id: the uuid of its `urn:uuid:` fullUrl.
fn uuid_text(url: &str) -> String {
    url.strip_prefix("urn:uuid:").unwrap_or(url).to_owned()
}

/// The record's numeric upstream id.
fn upstream_id(part: Part, data: &Value) -> Result<i64, FhirError> {
    data.get("id")
        .and_then(Value::as_i64)
        .ok_or(FhirError::Data {
            part,
            detail: "no numeric id",
        })
}

/// A string field, trimmed, when it has content (FHIR strings may not be
/// empty).
fn text(data: &Value, key: &str) -> Option<String> {
    data.get(key).and_then(Value::as_str).and_then(non_blank)
}

fn non_blank(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_owned())
}

/// A number field, kept as written.
fn number(data: &Value, key: &str) -> Option<Number> {
    match data.get(key) {
        Some(Value::Number(n)) => Some(n.clone()),
        _ => None,
    }
}

fn millis(data: &Value, key: &str) -> Option<i64> {
    data.get(key).and_then(Value::as_i64)
}

/// An epoch-millis field as an instant.
fn time(data: &Value, key: &str) -> Option<String> {
    millis(data, key).and_then(instant)
}

/// Epoch millis as `YYYY-MM-DDThh:mm:ss.sssZ`, for years 1 to 9999.
fn instant(ms: i64) -> Option<String> {
    (FIRST_MS..=LAST_MS)
        .contains(&ms)
        .then(|| rfc3339_millis(ms))
}

/// `{"hourOfDay":9,"minuteOfHour":0}` as `09:00:00`.
fn time_of_day(entry: &Value) -> Option<String> {
    let hour = entry.get("hourOfDay").and_then(Value::as_i64)?;
    let minute = entry.get("minuteOfHour").and_then(Value::as_i64)?;
    ((0..24).contains(&hour) && (0..60).contains(&minute))
        .then(|| format!("{hour:02}:{minute:02}:00"))
}

/// A FHIR `code`: no leading, trailing or doubled white space.
fn valid_code(code: &str) -> bool {
    !code.is_empty()
        && code
            .split(' ')
            .all(|word| !word.is_empty() && !word.chars().any(char::is_whitespace))
}

/// The Questionnaire item type for an upstream question type.
fn item_type(kind: Option<&str>) -> &'static str {
    match kind {
        Some("Scale") => "integer",
        Some("Binary") => "boolean",
        Some("Text") => "text",
        _ => "string",
    }
}

/// The answer typed like its item when the text allows.
fn typed_answer(kind: Option<&str>, answer: String) -> AnswerValue {
    match kind {
        Some("Scale") => match answer.parse::<i32>() {
            Ok(n) => AnswerValue::Integer(n),
            Err(_) => AnswerValue::String(answer),
        },
        Some("Binary") => match answer.to_ascii_lowercase().as_str() {
            "yes" | "true" => AnswerValue::Boolean(true),
            "no" | "false" => AnswerValue::Boolean(false),
            _ => AnswerValue::String(answer),
        },
        _ => AnswerValue::String(answer),
    }
}

fn loinc_concept(code: &str, display: &'static str) -> CodeableConcept {
    CodeableConcept {
        coding: vec![Coding {
            system: LOINC,
            code: code.to_owned(),
            display: Some(display),
        }],
        text: Some(display.to_owned()),
    }
}

fn vital_signs() -> CodeableConcept {
    CodeableConcept {
        coding: vec![Coding {
            system: OBSERVATION_CATEGORY,
            code: "vital-signs".to_owned(),
            display: Some("Vital Signs"),
        }],
        text: None,
    }
}

fn condition_category() -> CodeableConcept {
    CodeableConcept {
        coding: vec![Coding {
            system: CONDITION_CATEGORY,
            code: "problem-list-item".to_owned(),
            display: Some("Problem List Item"),
        }],
        text: None,
    }
}

fn clinical_status(code: &'static str) -> CodeableConcept {
    CodeableConcept {
        coding: vec![Coding {
            system: CONDITION_CLINICAL,
            code: code.to_owned(),
            display: None,
        }],
        text: None,
    }
}

impl FhirError {
    /// A stable machine-readable reason.
    pub fn reason(&self) -> &'static str {
        match self {
            FhirError::Order { .. } | FhirError::Duplicate(_) | FhirError::MissingPatient(_) => {
                "fhir_order"
            }
            FhirError::Data { .. } => "fhir_data",
            FhirError::Json(_) => "fhir_internal",
        }
    }
}

#[cfg(test)]
mod tests;
