//! The JSON shapes access.md reads and writes (§3 of the upstream
//! document), as serde types.
//!
//! Two kinds, kept apart on purpose:
//!
//! * **Read models** ([`User`], [`Patient`], [`MedicalProfile`],
//!   [`Question`], [`Answer`], [`Symptom`], [`VitalsMeasurement`],
//!   [`SecurityCode`], [`Reply`]) are tolerant: unknown keys are ignored,
//!   missing ones take their default, enums have an `Unknown` catch-all, so
//!   a slightly different server version still parses.
//! * **Write bodies** ([`NewSymptom`], [`Vitals`], [`ProfileUpdate`],
//!   [`NewQuestion`] and the private login and code bodies) have exactly
//!   the keys access.md accepts for that route and no others: its Jackson
//!   mapper answers 400 to any unknown key, and keys such as `id`,
//!   `archived` or `answered` would mass-assign (§7.1 item 11). They are
//!   never built from a read model by serialising it back.
//!
//! Every date is epoch milliseconds, as Jackson writes them.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An id from access.md's single global sequence (users, profiles,
/// questions, answers, symptoms, vitals, codes all share it). A patient's id
/// is also their login's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UpstreamId(pub i64);

impl fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `userRole`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    #[serde(rename = "ROLE_DOCTOR")]
    Doctor,
    #[serde(rename = "ROLE_PATIENT")]
    Patient,
    #[serde(rename = "ROLE_ADMIN")]
    Admin,
    /// A value this version does not know (never sent back).
    #[serde(other, skip_serializing)]
    Unknown,
}

/// A user as the login answer (R1) and the patient's doctor (R4) show it.
/// access.md never writes the password.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    /// `null` is possible: signup does not validate.
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default = "unknown_role")]
    pub user_role: Role,
    #[serde(default)]
    pub telephone_number: Option<String>,
    #[serde(default)]
    pub first_name: Option<String>,
    #[serde(default)]
    pub last_name: Option<String>,
}

fn unknown_role() -> Role {
    Role::Unknown
}

/// The doctor a patient is linked to (R4): a [`User`] with the doctor role.
pub type Doctor = User;

impl User {
    /// "First Last" from the parts that are set, else the username, else
    /// the id: what a page shows for this account.
    pub fn display_name(&self) -> String {
        let parts: Vec<&str> = [self.first_name.as_deref(), self.last_name.as_deref()]
            .into_iter()
            .flatten()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect();
        if !parts.is_empty() {
            return parts.join(" ");
        }
        match self.username.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => name.to_owned(),
            _ => format!("#{}", self.id),
        }
    }
}

/// A patient (R18, R20; nested in symptoms and vitals): the user fields
/// plus the medical profile. access.md hides the linked doctor here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Patient {
    #[serde(flatten)]
    pub user: User,
    #[serde(default)]
    pub profile: Option<MedicalProfile>,
}

impl Patient {
    pub fn id(&self) -> UpstreamId {
        self.user.id
    }
}

/// `sex`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    Female,
    Male,
    /// A value this version does not know (never sent back).
    #[serde(other, skip_serializing)]
    Unknown,
}

/// A medical profile (R7, R21, `Patient.profile`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MedicalProfile {
    #[serde(default)]
    pub id: Option<UpstreamId>,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    #[serde(default)]
    pub age: i32,
    #[serde(default)]
    pub height: f64,
    #[serde(default)]
    pub weight: f64,
    #[serde(default)]
    pub sex: Option<Sex>,
    #[serde(default)]
    pub g6pd_deficiency: bool,
    #[serde(default)]
    pub respiratory_diseases: bool,
    #[serde(default)]
    pub diabetes: bool,
    #[serde(default)]
    pub cardiovascular_diseases: bool,
    #[serde(default)]
    pub obesity: bool,
    #[serde(default)]
    pub medications: Vec<String>,
}

/// `type` of a question.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuestionType {
    Scale,
    Binary,
    Text,
    /// Answers to these are archived at once and never reach the doctor.
    Vitals,
    /// A value this version does not know (never sent back).
    #[serde(other, skip_serializing)]
    Unknown,
}

/// A time of day at which a recurring question is asked (`recurrance`
/// elements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recurrence {
    #[serde(default)]
    pub hour_of_day: i64,
    #[serde(default)]
    pub minute_of_hour: i64,
}

/// A question a doctor asked (R9, R27; nested in answers).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Question {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    #[serde(default)]
    pub question: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<QuestionType>,
    #[serde(default)]
    pub answered: bool,
    #[serde(default)]
    pub answered_on: Option<i64>,
    /// The upstream spells the key `recurrance`.
    #[serde(default, rename = "recurrance")]
    pub recurrence: Vec<Recurrence>,
    /// Local midnight of the start date (the server stores a SQL `DATE`).
    #[serde(default)]
    pub start_date: Option<i64>,
    #[serde(default)]
    pub end_date: Option<i64>,
    #[serde(default)]
    pub recurring: bool,
}

/// A doctor's reply to a symptom or answer (`replies` lists; always empty
/// in practice, since no route creates one). The upstream calls it `Reply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoctorReply {
    #[serde(default)]
    pub id: Option<UpstreamId>,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    #[serde(default)]
    pub reply: Option<String>,
}

/// A patient's answer (R25: unarchived only), with its question.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    #[serde(default)]
    pub question: Option<Box<Question>>,
    #[serde(default)]
    pub replies: Vec<DoctorReply>,
    #[serde(default)]
    pub answer: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub archive_date: Option<i64>,
}

/// A reported symptom (R23: unarchived only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Symptom {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    /// An ICPC code, not validated by the upstream.
    #[serde(default)]
    pub symptom_code: Option<String>,
    #[serde(default)]
    pub patient: Option<Box<Patient>>,
    #[serde(default)]
    pub replies: Vec<DoctorReply>,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub archive_date: Option<i64>,
}

/// A vitals measurement (R22: all of them). The upstream's entity is
/// spelt `VitalsMeasurment`.
#[doc(alias = "VitalsMeasurment")]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VitalsMeasurement {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    #[serde(default)]
    pub patient: Option<Box<Patient>>,
    #[serde(default)]
    pub heart_beats_per_minute: f64,
    #[serde(default)]
    pub systolic_pressure: f64,
    #[serde(default)]
    pub diastolic_pressure: f64,
    #[serde(default)]
    pub blood_oxygenation: f64,
    #[serde(default)]
    pub breathing_rate: f64,
}

/// A patient's link code (R11). Whoever consumes it first becomes the
/// patient's one and only doctor, so it is handled like a credential.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityCode {
    pub id: UpstreamId,
    #[serde(default)]
    pub creation_date: Option<i64>,
    #[serde(default)]
    pub update_date: Option<i64>,
    /// 8 characters `[a-z0-9]`.
    pub code: String,
    /// Epoch milliseconds; consumption only checks that the code is still
    /// VALID, which a sweep every 5 s ends after this time.
    #[serde(default)]
    pub valid_until: Option<i64>,
}

impl fmt::Debug for SecurityCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityCode")
            .field("id", &self.id)
            .field("code", &"[redacted]")
            .field("valid_until", &self.valid_until)
            .finish()
    }
}

// ------------------------------------------------------------ write bodies

/// R1 body. Private: only [`crate::upstream::AccessMd::login`] builds it.
#[derive(Serialize)]
pub(crate) struct Credentials<'a> {
    pub username: &'a str,
    pub password: &'a str,
}

/// R19 body.
#[derive(Serialize)]
pub(crate) struct CodeBody<'a> {
    pub code: &'a str,
}

/// R12 body: a symptom a patient reports. Exactly `symptomCode` and `note`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewSymptom {
    /// An ICPC code such as `A03` (the upstream does not check it).
    pub symptom_code: String,
    pub note: Option<String>,
}

/// R5 body: a new patient account, with the keys the Android client
/// sends. Debug never shows the password.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewPatientAccount<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub telephone_number: Option<&'a str>,
    pub first_name: Option<&'a str>,
    pub last_name: Option<&'a str>,
}

impl std::fmt::Debug for NewPatientAccount<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewPatientAccount")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// R13 body: the five vitals numbers, nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Vitals {
    pub heart_beats_per_minute: f64,
    pub systolic_pressure: f64,
    pub diastolic_pressure: f64,
    pub blood_oxygenation: f64,
    pub breathing_rate: f64,
}

/// R6 body: the ten profile fields. It has no `id`, `creationDate` or
/// `updateDate` by construction: an `id` would overwrite whatever profile
/// row has that id (§2.3, the profile IDOR). R6 *replaces* the profile, so
/// fields left at their default are written as such.
#[derive(Debug, Clone, PartialEq, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdate {
    pub age: i32,
    pub height: f64,
    pub weight: f64,
    pub sex: Option<Sex>,
    pub g6pd_deficiency: bool,
    pub respiratory_diseases: bool,
    pub diabetes: bool,
    pub cardiovascular_diseases: bool,
    pub obesity: bool,
    pub medications: Vec<String>,
}

impl From<&MedicalProfile> for ProfileUpdate {
    /// Keeps the ten fields and drops `id` and the dates.
    fn from(p: &MedicalProfile) -> Self {
        ProfileUpdate {
            age: p.age,
            height: p.height,
            weight: p.weight,
            sex: p.sex,
            g6pd_deficiency: p.g6pd_deficiency,
            respiratory_diseases: p.respiratory_diseases,
            diabetes: p.diabetes,
            cardiovascular_diseases: p.cardiovascular_diseases,
            obesity: p.obesity,
            medications: p.medications.clone(),
        }
    }
}

/// R28 body: a question for a patient, with the fields of the §8.5
/// whitelist only (no `id`, `answered`, `answeredOn` or dates of the row).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NewQuestion {
    /// At most 255 characters (longer fails upstream with a 500).
    pub question: String,
    #[serde(rename = "type")]
    pub kind: Option<QuestionType>,
    pub recurring: bool,
    pub start_date: Option<i64>,
    pub end_date: Option<i64>,
    #[serde(rename = "recurrance")]
    pub recurrence: Vec<Recurrence>,
}

/// The keys an R28 body may have (§8.5), for bodies that arrive as bytes.
pub(crate) const QUESTION_KEYS: &[&str] = &[
    "question",
    "type",
    "recurring",
    "startDate",
    "endDate",
    "recurrance",
];

/// The keys of one `recurrance` element.
pub(crate) const RECURRENCE_KEYS: &[&str] = &["hourOfDay", "minuteOfHour"];
