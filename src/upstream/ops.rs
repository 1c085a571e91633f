//! The access.md routes mdgate uses, as typed operations.
//!
//! An [`Op<T>`] is a request plus the function that reads its reply into a
//! `T`: pure values, no I/O, so the status rules of each route sit next to
//! its request and can be tested without a server. Whoever holds a session
//! runs them: [`UpstreamIdentity::run`](super::UpstreamIdentity::run) (a
//! doctor account mdgate logs in as, with re-login) or
//! [`PatientSession::run`](super::PatientSession::run) (a patient's session
//! from their sign-in).
//!
//! Status rules, from the upstream document:
//!
//! * 200 is success; writes answer an *empty* 200 (a body there is an
//!   error), except R13 whose body is the JSON `200`.
//! * 401 is [`UpstreamError::Unauthorized`], whatever the HTML body says.
//! * 400 is [`UpstreamError::BadRequest`] (Javalin's binding messages).
//! * 500 is [`UpstreamError::NotLinked`] only in the form the route uses
//!   for an unlinked patient (500N with the Kotlin message for R20, 500E
//!   with an empty body for R21-R28); any other 500 is
//!   [`UpstreamError::Failed`].
//!
//! Write bodies are checked before they leave: non-finite numbers (which
//! JSON cannot carry), strings over access.md's 255-character columns, and
//! for R28 bodies that arrive as bytes, any key outside the §8.5
//! whitelist.

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::access::{ApiRequest, Fault, Reply};
use super::error::{describe_body, UpstreamError};
use super::model::{
    Answer, CodeBody, Doctor, MedicalProfile, NewPatientAccount, NewQuestion, NewSymptom, Patient,
    ProfileUpdate, Question, SecurityCode, Symptom, UpstreamId, Vitals, VitalsMeasurement,
    QUESTION_KEYS, RECURRENCE_KEYS,
};

/// access.md's text columns are Derby `VARCHAR(255)` (UTF-16 units).
pub const MAX_TEXT: usize = 255;

pub const R4: &str = "R4 GET /api/patient/doctor";
pub const R5: &str = "R5 POST /api/patient/signup";
pub const R6: &str = "R6 PUT /api/patient/profile";
pub const R7: &str = "R7 GET /api/patient/profile";
pub const R9: &str = "R9 GET /api/patient/question";
pub const R11: &str = "R11 GET /api/patient/code";
pub const R12: &str = "R12 POST /api/patient/symptom";
pub const R13: &str = "R13 POST /api/patient/vitals";
pub const R18: &str = "R18 GET /api/doctor/patient";
pub const R19: &str = "R19 POST /api/doctor/patient/add";
pub const R20: &str = "R20 GET /api/doctor/patient/:id";
pub const R21: &str = "R21 GET /api/doctor/patient/:id/profile";
pub const R22: &str = "R22 GET /api/doctor/patient/:id/vitals";
pub const R23: &str = "R23 GET /api/doctor/patient/:id/symptom";
pub const R24: &str = "R24 PUT /api/doctor/patient/:id/symptom/:symptom_id/seen";
pub const R25: &str = "R25 GET /api/doctor/patient/:id/answer";
pub const R26: &str = "R26 PUT /api/doctor/patient/:id/answer/:answer_id/seen";
pub const R27: &str = "R27 GET /api/doctor/patient/:id/question";
pub const R28: &str = "R28 POST /api/doctor/patient/:id/question";

/// A request and how to read its reply.
pub struct Op<T> {
    request: ApiRequest,
    decode: fn(&Reply) -> Result<T, UpstreamError>,
}

impl<T> Op<T> {
    pub fn request(&self) -> &ApiRequest {
        &self.request
    }

    /// Reads a reply to [`Op::request`].
    pub fn decode(&self, reply: &Reply) -> Result<T, UpstreamError> {
        (self.decode)(reply)
    }
}

impl<T> std::fmt::Debug for Op<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Op")
            .field("request", &self.request)
            .finish()
    }
}

/// What R19 said. It answers an empty 200 whether or not anything
/// happened (unknown, expired or already used code), so `Answered` proves
/// nothing: look with R20 afterwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeConsumption {
    /// Empty 200: the code was linked, or was not valid.
    Answered,
    /// 500: the patient already had a doctor; the code is burnt.
    Refused,
}

/// The form a route's "patient not linked" 500 takes.
#[derive(Debug, Clone, Copy)]
enum Unlinked {
    /// 500N (R20, R31).
    NullJson,
    /// 500E (the other `/api/doctor/patient/:id/...` routes).
    Empty,
    /// Not a per-patient route.
    Never,
}

fn op<T>(request: ApiRequest, decode: fn(&Reply) -> Result<T, UpstreamError>) -> Op<T> {
    Op { request, decode }
}

fn get(route: &'static str, path: String) -> ApiRequest {
    ApiRequest::fixed(route, Method::GET, path)
}

/// The status rules shared by every route (module docs).
fn check(reply: &Reply, unlinked: Unlinked) -> Result<(), UpstreamError> {
    let route = reply.route();
    match reply.status() {
        StatusCode::OK => Ok(()),
        StatusCode::UNAUTHORIZED => Err(UpstreamError::Unauthorized { route }),
        StatusCode::BAD_REQUEST => Err(UpstreamError::BadRequest {
            route,
            detail: describe_body(reply.body()),
        }),
        StatusCode::INTERNAL_SERVER_ERROR => match (unlinked, reply.fault()) {
            (Unlinked::NullJson, Fault::NullJson) | (Unlinked::Empty, Fault::Empty) => {
                Err(UpstreamError::NotLinked { route })
            }
            _ => Err(reply.failed()),
        },
        _ => Err(reply.failed()),
    }
}

/// A 200 whose body is JSON of type `T`.
pub(crate) fn parse_json<T: DeserializeOwned>(reply: &Reply) -> Result<T, UpstreamError> {
    if !reply.is_json() {
        return Err(UpstreamError::UnexpectedBody {
            route: reply.route(),
            what: "the body is not declared as JSON",
        });
    }
    serde_json::from_slice(reply.body()).map_err(|e| UpstreamError::json(reply.route(), &e))
}

fn json<T: DeserializeOwned>(reply: &Reply, unlinked: Unlinked) -> Result<T, UpstreamError> {
    check(reply, unlinked)?;
    parse_json(reply)
}

fn empty(reply: &Reply, unlinked: Unlinked) -> Result<(), UpstreamError> {
    check(reply, unlinked)?;
    if !reply.body().is_empty() {
        return Err(UpstreamError::UnexpectedBody {
            route: reply.route(),
            what: "a write answered with a body instead of an empty 200",
        });
    }
    Ok(())
}

/// Serialises a write body, refusing what access.md would reject or
/// corrupt.
fn body<B: Serialize>(route: &'static str, value: &B) -> Result<Bytes, UpstreamError> {
    let json = serde_json::to_value(value).map_err(|_| UpstreamError::InvalidRequest {
        route,
        what: "a value this version cannot send (an unknown enum value)".to_owned(),
    })?;
    check_values(route, &json)?;
    serde_json::to_vec(&json)
        .map(Bytes::from)
        .map_err(|_| UpstreamError::InvalidRequest {
            route,
            what: "cannot write the body as JSON".to_owned(),
        })
}

/// No string longer than the upstream's columns. Non-finite floats
/// serialise as `null` in serde_json, so the typed bodies are checked for
/// them separately.
fn check_values(route: &'static str, value: &serde_json::Value) -> Result<(), UpstreamError> {
    match value {
        serde_json::Value::String(s) if s.encode_utf16().count() > MAX_TEXT => {
            Err(UpstreamError::InvalidRequest {
                route,
                what: format!("a text is longer than the {MAX_TEXT} characters access.md stores"),
            })
        }
        serde_json::Value::Array(items) => items.iter().try_for_each(|v| check_values(route, v)),
        serde_json::Value::Object(map) => map.values().try_for_each(|v| check_values(route, v)),
        _ => Ok(()),
    }
}

fn finite(route: &'static str, values: &[f64]) -> Result<(), UpstreamError> {
    if values.iter().all(|v| v.is_finite()) {
        Ok(())
    } else {
        Err(UpstreamError::InvalidRequest {
            route,
            what: "a number is not finite".to_owned(),
        })
    }
}

// ---------------------------------------------------------------- patient

/// R4: the patient's doctor; `None` when the patient has none (500N).
pub fn doctor_of_patient() -> Op<Option<Doctor>> {
    op(get(R4, "/api/patient/doctor".to_owned()), |reply| {
        if reply.status() == StatusCode::INTERNAL_SERVER_ERROR && reply.fault() == Fault::NullJson {
            return Ok(None);
        }
        json(reply, Unlinked::Never).map(Some)
    })
}

/// R6: replaces the patient's profile (never with an `id`: see
/// [`ProfileUpdate`]).
pub fn replace_profile(profile: &ProfileUpdate) -> Result<Op<()>, UpstreamError> {
    finite(R6, &[profile.height, profile.weight])?;
    let request = ApiRequest::fixed(R6, Method::PUT, "/api/patient/profile".to_owned())
        .json_body(body(R6, profile)?);
    Ok(op(request, |reply| empty(reply, Unlinked::Never)))
}

/// R7: the patient's own profile.
pub fn own_profile() -> Op<MedicalProfile> {
    op(get(R7, "/api/patient/profile".to_owned()), |reply| {
        json(reply, Unlinked::Never)
    })
}

/// R9: the patient's unanswered questions.
pub fn unanswered_questions() -> Op<Vec<Question>> {
    op(get(R9, "/api/patient/question".to_owned()), |reply| {
        json(reply, Unlinked::Never)
    })
}

/// R11: a new link code for the patient (older ones stop working).
pub fn mint_code() -> Op<SecurityCode> {
    op(get(R11, "/api/patient/code".to_owned()), |reply| {
        json(reply, Unlinked::Never)
    })
}

/// What R5 did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignUp {
    Created,
    /// The username exists (400, empty body); nothing was created.
    UsernameTaken,
}

/// R5 (public): creates a patient account. access.md returns no id: log in
/// to learn it. The password is only borrowed for the request body.
pub fn sign_up(account: &NewPatientAccount<'_>) -> Result<Op<SignUp>, UpstreamError> {
    for (what, value) in [
        ("username", Some(account.username)),
        ("first name", account.first_name),
        ("last name", account.last_name),
        ("telephone number", account.telephone_number),
    ] {
        if value.is_some_and(|v| v.encode_utf16().count() > MAX_TEXT) {
            return Err(UpstreamError::InvalidRequest {
                route: R5,
                what: format!("the {what} is longer than access.md stores"),
            });
        }
    }
    let bytes = serde_json::to_vec(account).map_err(|_| UpstreamError::InvalidRequest {
        route: R5,
        what: "cannot write the account as JSON".to_owned(),
    })?;
    let request = ApiRequest::fixed(R5, Method::POST, "/api/patient/signup".to_owned())
        .json_body(Bytes::from(bytes));
    Ok(op(request, |reply| {
        if reply.status() == StatusCode::BAD_REQUEST && reply.body().is_empty() {
            return Ok(SignUp::UsernameTaken);
        }
        empty(reply, Unlinked::Never).map(|()| SignUp::Created)
    }))
}

/// R12: appends a symptom.
pub fn report_symptom(symptom: &NewSymptom) -> Result<Op<()>, UpstreamError> {
    let request = ApiRequest::fixed(R12, Method::POST, "/api/patient/symptom".to_owned())
        .json_body(body(R12, symptom)?);
    Ok(op(request, |reply| empty(reply, Unlinked::Never)))
}

/// R13: appends a vitals measurement. The only write whose 200 has a body:
/// the JSON number `200`.
pub fn report_vitals(vitals: &Vitals) -> Result<Op<()>, UpstreamError> {
    finite(
        R13,
        &[
            vitals.heart_beats_per_minute,
            vitals.systolic_pressure,
            vitals.diastolic_pressure,
            vitals.blood_oxygenation,
            vitals.breathing_rate,
        ],
    )?;
    let request = ApiRequest::fixed(R13, Method::POST, "/api/patient/vitals".to_owned())
        .json_body(body(R13, vitals)?);
    Ok(op(request, |reply| {
        match json::<serde_json::Value>(reply, Unlinked::Never)? {
            serde_json::Value::Number(n) if n.as_u64() == Some(200) => Ok(()),
            _ => Err(UpstreamError::UnexpectedBody {
                route: R13,
                what: "the answer is not the JSON 200",
            }),
        }
    }))
}

// ----------------------------------------------------------------- doctor

/// R18: every patient linked to the doctor account, in link order.
pub fn linked_patients() -> Op<Vec<Patient>> {
    op(get(R18, "/api/doctor/patient".to_owned()), |reply| {
        json(reply, Unlinked::Never)
    })
}

/// R19: consumes a patient's link code. The code is trimmed and lower-cased
/// (the upstream compares exactly; codes are `[a-z0-9]`).
pub fn consume_code(code: &str) -> Result<Op<CodeConsumption>, UpstreamError> {
    let code = code.trim().to_ascii_lowercase();
    let body = serde_json::to_vec(&CodeBody { code: &code }).map_err(|_| {
        UpstreamError::InvalidRequest {
            route: R19,
            what: "cannot write the code as JSON".to_owned(),
        }
    })?;
    let request = ApiRequest::fixed(R19, Method::POST, "/api/doctor/patient/add".to_owned())
        .json_body(Bytes::from(body));
    Ok(op(request, |reply| {
        if reply.status() == StatusCode::INTERNAL_SERVER_ERROR {
            return Ok(CodeConsumption::Refused);
        }
        empty(reply, Unlinked::Never).map(|()| CodeConsumption::Answered)
    }))
}

/// R20: the patient with their profile; [`UpstreamError::NotLinked`] (500N)
/// unless linked to this doctor.
pub fn patient(id: UpstreamId) -> Op<Patient> {
    op(get(R20, format!("/api/doctor/patient/{id}")), |reply| {
        json(reply, Unlinked::NullJson)
    })
}

/// R21: the patient's profile.
pub fn patient_profile(id: UpstreamId) -> Op<MedicalProfile> {
    op(
        get(R21, format!("/api/doctor/patient/{id}/profile")),
        |reply| json(reply, Unlinked::Empty),
    )
}

/// R22: every vitals measurement of the patient.
pub fn patient_vitals(id: UpstreamId) -> Op<Vec<VitalsMeasurement>> {
    op(
        get(R22, format!("/api/doctor/patient/{id}/vitals")),
        |reply| json(reply, Unlinked::Empty),
    )
}

/// R23: the patient's unarchived symptoms.
pub fn patient_symptoms(id: UpstreamId) -> Op<Vec<Symptom>> {
    op(
        get(R23, format!("/api/doctor/patient/{id}/symptom")),
        |reply| json(reply, Unlinked::Empty),
    )
}

/// R24: archives a symptom, for everyone using this doctor account.
pub fn mark_symptom_seen(id: UpstreamId, symptom: UpstreamId) -> Op<()> {
    let path = format!("/api/doctor/patient/{id}/symptom/{symptom}/seen");
    op(ApiRequest::fixed(R24, Method::PUT, path), |reply| {
        empty(reply, Unlinked::Empty)
    })
}

/// R25: the patient's unarchived answers, each with its question.
pub fn patient_answers(id: UpstreamId) -> Op<Vec<Answer>> {
    op(
        get(R25, format!("/api/doctor/patient/{id}/answer")),
        |reply| json(reply, Unlinked::Empty),
    )
}

/// R26: archives an answer, for everyone using this doctor account.
pub fn mark_answer_seen(id: UpstreamId, answer: UpstreamId) -> Op<()> {
    let path = format!("/api/doctor/patient/{id}/answer/{answer}/seen");
    op(ApiRequest::fixed(R26, Method::PUT, path), |reply| {
        empty(reply, Unlinked::Empty)
    })
}

/// R27: all of the patient's questions, answered or not.
pub fn patient_questions(id: UpstreamId) -> Op<Vec<Question>> {
    op(
        get(R27, format!("/api/doctor/patient/{id}/question")),
        |reply| json(reply, Unlinked::Empty),
    )
}

/// R28: asks the patient a question.
pub fn ask_question(id: UpstreamId, question: &NewQuestion) -> Result<Op<()>, UpstreamError> {
    ask_question_bytes(id, body(R28, question)?)
}

/// R28 with a body that arrives as bytes (already whitelisted by the
/// policy): checked again here, key by key, because a stray `id`,
/// `answered` or `answeredOn` would mass-assign upstream. The bytes are
/// sent unchanged.
pub fn ask_question_bytes(id: UpstreamId, body: Bytes) -> Result<Op<()>, UpstreamError> {
    check_question_body(&body)?;
    let request = ApiRequest::fixed(
        R28,
        Method::POST,
        format!("/api/doctor/patient/{id}/question"),
    )
    .json_body(body);
    Ok(op(request, |reply| empty(reply, Unlinked::Empty)))
}

fn check_question_body(body: &[u8]) -> Result<(), UpstreamError> {
    let refuse = |what: &str| UpstreamError::InvalidRequest {
        route: R28,
        what: what.to_owned(),
    };
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| refuse("the body is not JSON"))?;
    let serde_json::Value::Object(map) = &value else {
        return Err(refuse("the body is not a JSON object"));
    };
    if map.is_empty() || !map.contains_key("question") {
        return Err(refuse("the body has no question"));
    }
    if let Some(key) = map.keys().find(|k| !QUESTION_KEYS.contains(&k.as_str())) {
        // Key names come from mdgate's own whitelist check, not patient data,
        // but are bounded anyway.
        let key: String = key.chars().take(40).collect();
        return Err(refuse(&format!("the body key {key:?} is not allowed")));
    }
    match map.get("recurrance") {
        None | Some(serde_json::Value::Null) => {}
        Some(serde_json::Value::Array(items)) => {
            for item in items {
                let serde_json::Value::Object(item) = item else {
                    return Err(refuse("a recurrance element is not an object"));
                };
                if item.keys().any(|k| !RECURRENCE_KEYS.contains(&k.as_str())) {
                    return Err(refuse("a recurrance element has a key that is not allowed"));
                }
            }
        }
        Some(_) => return Err(refuse("recurrance is not a list")),
    }
    check_values(R28, &value)
}

#[cfg(test)]
mod tests;
