//! The request-body classes of access.md and their Jackson bindings.
//!
//! Each binder accepts exactly the properties the Java class exposes (see
//! §3 of the upstream document), checks nested objects just as strictly,
//! and keeps only what the service layer goes on to use.

use serde_json::Value;

use super::bind::{coerce_opt_string, untyped_java_class, BodyError, Fields, Mismatch};
use super::model::{Fault, Id, Profile, QuestionType, Sex, Stamps};

type Bound<T> = Result<T, Mismatch>;

const USER_KEYS: [&str; 6] = [
    "password",
    "username",
    "userRole",
    "telephoneNumber",
    "firstName",
    "lastName",
];
const ROLE_NAMES: [&str; 4] = ["ROLE_DOCTOR", "ROLE_PATIENT", "ROLE_ADMIN", "NONE"];

/// `id`, `creationDate`, `updateDate` of a `DomainEntity` body.
struct EntityKeys {
    id: Option<Id>,
    creation_date: Option<i64>,
}

fn entity_keys(f: &Fields<'_>) -> Bound<EntityKeys> {
    f.date("updateDate")?;
    Ok(EntityKeys {
        id: f.long("id")?,
        creation_date: f.date("creationDate")?,
    })
}

/// `SignInRequest` (R1).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct SignIn {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
}

/// Binds a login body.
pub(crate) fn sign_in(body: &[u8]) -> Result<SignIn, BodyError> {
    super::bind::bind_body(body, "SignInRequest", |v| {
        let f = Fields::required(v, false, &["username", "password"], &[])?;
        Ok(SignIn {
            username: f.string("username")?,
            password: f.string("password")?,
        })
    })
}

/// A `User` body (R5 signup, R32 doctor creation): the copied fields.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct UserInput {
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) telephone: Option<String>,
    pub(crate) first_name: Option<String>,
    pub(crate) last_name: Option<String>,
}

/// Binds a `User` body; `id` and `userRole` are checked but not used.
pub(crate) fn user(body: &[u8]) -> Result<UserInput, BodyError> {
    super::bind::bind_body(body, "User", |v| {
        let f = Fields::required(v, true, &USER_KEYS, &[])?;
        bind_user_fields(&f)
    })
}

fn bind_user_fields(f: &Fields<'_>) -> Bound<UserInput> {
    entity_keys(f)?;
    f.enumeration("userRole", &ROLE_NAMES)?;
    Ok(UserInput {
        username: f.string("username")?,
        password: f.string("password")?,
        telephone: f.string("telephoneNumber")?,
        first_name: f.string("firstName")?,
        last_name: f.string("lastName")?,
    })
}

/// Checks a nested `Patient` (inside Symptom and VitalsMeasurment bodies);
/// the service overwrites it, so nothing is kept.
fn check_patient(value: &Value) -> Bound<()> {
    let mut known = USER_KEYS.to_vec();
    known.push("profile");
    let ignored = [
        "doctor",
        "reccomendations",
        "questions",
        "vitalsMeasurments",
        "symptoms",
        "unarchivedAnswers",
        "unarchivedSymptoms",
    ];
    if let Some(f) = Fields::of(value, true, &known, &ignored)? {
        bind_user_fields(&f)?;
        if let Some(profile) = f.value("profile") {
            bind_profile(profile)?;
        }
    }
    Ok(())
}

/// A `MedicalProfile` body (R6).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ProfileInput {
    pub(crate) id: Option<Id>,
    pub(crate) creation_date: Option<i64>,
    pub(crate) age: i32,
    pub(crate) height: f64,
    pub(crate) weight: f64,
    pub(crate) sex: Option<Sex>,
    pub(crate) g6pd_deficiency: bool,
    pub(crate) respiratory_diseases: bool,
    pub(crate) diabetes: bool,
    pub(crate) cardiovascular_diseases: bool,
    pub(crate) obesity: bool,
    /// Null elements are dropped, as Hibernate skips them in element collections.
    pub(crate) medications: Vec<String>,
}

impl ProfileInput {
    /// The row this body becomes under `id`.
    pub(crate) fn into_profile(self, id: Id, stamps: Stamps) -> Profile {
        Profile {
            id,
            stamps,
            age: self.age,
            height: self.height,
            weight: self.weight,
            sex: self.sex,
            g6pd_deficiency: self.g6pd_deficiency,
            respiratory_diseases: self.respiratory_diseases,
            diabetes: self.diabetes,
            cardiovascular_diseases: self.cardiovascular_diseases,
            obesity: self.obesity,
            medications: self.medications,
        }
    }
}

const PROFILE_KEYS: [&str; 10] = [
    "age",
    "height",
    "weight",
    "sex",
    "g6pdDeficiency",
    "respiratoryDiseases",
    "diabetes",
    "cardiovascularDiseases",
    "obesity",
    "medications",
];

/// Binds a `MedicalProfile` body.
pub(crate) fn profile(body: &[u8]) -> Result<ProfileInput, BodyError> {
    super::bind::bind_body(body, "MedicalProfile", |v| bind_profile(v)?.ok_or(Mismatch))
}

fn bind_profile(value: &Value) -> Bound<Option<ProfileInput>> {
    let Some(f) = Fields::of(value, true, &PROFILE_KEYS, &[])? else {
        return Ok(None);
    };
    let keys = entity_keys(&f)?;
    let medications = f
        .list("medications", coerce_opt_string)?
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    Ok(Some(ProfileInput {
        id: keys.id,
        creation_date: keys.creation_date,
        age: f.int_prim("age")?,
        height: f.double_prim("height")?,
        weight: f.double_prim("weight")?,
        sex: f.enumeration("sex", &Sex::NAMES)?.map(|i| Sex::ALL[i]),
        g6pd_deficiency: f.bool_prim("g6pdDeficiency")?,
        respiratory_diseases: f.bool_prim("respiratoryDiseases")?,
        diabetes: f.bool_prim("diabetes")?,
        cardiovascular_diseases: f.bool_prim("cardiovascularDiseases")?,
        obesity: f.bool_prim("obesity")?,
        medications,
    }))
}

/// A `Question` body (R28, R30).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct QuestionInput {
    pub(crate) id: Option<Id>,
    pub(crate) creation_date: Option<i64>,
    pub(crate) question: Option<String>,
    pub(crate) kind: Option<QuestionType>,
    pub(crate) answered: bool,
    pub(crate) answered_on: Option<i64>,
    pub(crate) recurrance: Vec<(i64, i64)>,
    pub(crate) start_date: Option<i64>,
    pub(crate) end_date: Option<i64>,
    pub(crate) recurring: bool,
}

/// Binds a `Question` body.
pub(crate) fn question(body: &[u8]) -> Result<QuestionInput, BodyError> {
    super::bind::bind_body(body, "Question", |v| bind_question(v)?.ok_or(Mismatch))
}

fn bind_question(value: &Value) -> Bound<Option<QuestionInput>> {
    let known = [
        "question",
        "type",
        "answered",
        "answeredOn",
        "recurrance",
        "startDate",
        "endDate",
        "recurring",
    ];
    let Some(f) = Fields::of(value, true, &known, &["answers", "patient"])? else {
        return Ok(None);
    };
    let keys = entity_keys(&f)?;
    let recurrance = f
        .list("recurrance", |item| {
            let Some(t) = Fields::of(item, false, &["hourOfDay", "minuteOfHour"], &[])? else {
                return Ok(None);
            };
            Ok(Some((
                t.long_prim("hourOfDay")?,
                t.long_prim("minuteOfHour")?,
            )))
        })?
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect();
    Ok(Some(QuestionInput {
        id: keys.id,
        creation_date: keys.creation_date,
        question: f.string("question")?,
        kind: f
            .enumeration("type", &QuestionType::NAMES)?
            .map(|i| QuestionType::ALL[i]),
        answered: f.bool_prim("answered")?,
        answered_on: f.date("answeredOn")?,
        recurrance,
        start_date: f.date("startDate")?,
        end_date: f.date("endDate")?,
        recurring: f.bool_prim("recurring")?,
    }))
}

/// A `Reply` inside a body's `replies` array.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ReplyInput {
    pub(crate) id: Option<Id>,
    pub(crate) reply: Option<String>,
}

fn bind_replies(f: &Fields<'_>) -> Bound<Vec<ReplyInput>> {
    let replies = f.list("replies", |item| {
        let Some(r) = Fields::of(item, true, &["reply"], &[])? else {
            return Ok(None);
        };
        Ok(Some(ReplyInput {
            id: entity_keys(&r)?.id,
            reply: r.string("reply")?,
        }))
    })?;
    Ok(replies.unwrap_or_default().into_iter().flatten().collect())
}

/// Binds an `Answer` body (R10) and returns its `answer` text, the only
/// property the service uses.
pub(crate) fn answer_text(body: &[u8]) -> Result<Option<String>, BodyError> {
    super::bind::bind_body(body, "Answer", |v| {
        let known = ["question", "replies", "answer", "archived", "archiveDate"];
        let f = Fields::required(v, true, &known, &[])?;
        entity_keys(&f)?;
        if let Some(q) = f.value("question") {
            bind_question(q)?;
        }
        bind_replies(&f)?;
        f.bool_prim("archived")?;
        f.date("archiveDate")?;
        f.string("answer")
    })
}

/// A `Symptom` body (R12).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SymptomInput {
    pub(crate) id: Option<Id>,
    pub(crate) symptom_code: Option<String>,
    pub(crate) note: Option<String>,
    pub(crate) archived: bool,
    pub(crate) archive_date: Option<i64>,
    pub(crate) replies: Vec<ReplyInput>,
}

/// Binds a `Symptom` body.
pub(crate) fn symptom(body: &[u8]) -> Result<SymptomInput, BodyError> {
    super::bind::bind_body(body, "Symptom", |v| {
        let known = [
            "symptomCode",
            "patient",
            "replies",
            "note",
            "archived",
            "archiveDate",
        ];
        let f = Fields::required(v, true, &known, &[])?;
        let keys = entity_keys(&f)?;
        if let Some(p) = f.value("patient") {
            check_patient(p)?;
        }
        Ok(SymptomInput {
            id: keys.id,
            symptom_code: f.string("symptomCode")?,
            note: f.string("note")?,
            archived: f.bool_prim("archived")?,
            archive_date: f.date("archiveDate")?,
            replies: bind_replies(&f)?,
        })
    })
}

/// A `VitalsMeasurment` body (R13).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct VitalsInput {
    pub(crate) id: Option<Id>,
    pub(crate) heart_beats_per_minute: f64,
    pub(crate) systolic_pressure: f64,
    pub(crate) diastolic_pressure: f64,
    pub(crate) blood_oxygenation: f64,
    pub(crate) breathing_rate: f64,
}

/// Binds a `VitalsMeasurment` body.
pub(crate) fn vitals(body: &[u8]) -> Result<VitalsInput, BodyError> {
    super::bind::bind_body(body, "VitalsMeasurment", |v| {
        let known = [
            "patient",
            "heartBeatsPerMinute",
            "systolicPressure",
            "diastolicPressure",
            "bloodOxygenation",
            "breathingRate",
        ];
        let f = Fields::required(v, true, &known, &[])?;
        let keys = entity_keys(&f)?;
        if let Some(p) = f.value("patient") {
            check_patient(p)?;
        }
        Ok(VitalsInput {
            id: keys.id,
            heart_beats_per_minute: f.double_prim("heartBeatsPerMinute")?,
            systolic_pressure: f.double_prim("systolicPressure")?,
            diastolic_pressure: f.double_prim("diastolicPressure")?,
            blood_oxygenation: f.double_prim("bloodOxygenation")?,
            breathing_rate: f.double_prim("breathingRate")?,
        })
    })
}

/// The outcome of reading R19's `HashMap` body.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum CodeBody {
    /// `code` is absent or null.
    Missing,
    /// `code` is a string.
    Code(String),
}

/// Binds R19's body as a raw `HashMap` and casts `code` to `String`.
/// The outer error is the 400; the inner one the `ClassCastException`.
pub(crate) fn code(body: &[u8]) -> Result<Result<CodeBody, Fault>, BodyError> {
    let value = super::bind::parse_body(body, "HashMap")?;
    let Value::Object(map) = value else {
        return Err(BodyError::Invalid("HashMap"));
    };
    Ok(match map.get("code") {
        None | Some(Value::Null) => Ok(CodeBody::Missing),
        Some(Value::String(s)) => Ok(CodeBody::Code(s.clone())),
        Some(other) => Err(Fault::ClassCast(untyped_java_class(other))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_in_is_strict() {
        assert_eq!(
            sign_in(br#"{"username":"a","password":"b"}"#),
            Ok(SignIn {
                username: Some("a".into()),
                password: Some("b".into())
            })
        );
        assert_eq!(
            sign_in(br#"{"username":"a","id":1}"#),
            Err(BodyError::Invalid("SignInRequest"))
        );
        assert_eq!(sign_in(b"null"), Err(BodyError::Null("SignInRequest")));
    }

    #[test]
    fn user_accepts_entity_keys_and_rejects_extras() {
        let ok = user(br#"{"id":3,"username":"u","userRole":"ROLE_ADMIN","entityName":"x","creationDate":"2021-01-01"}"#);
        assert_eq!(ok.unwrap().username.as_deref(), Some("u"));
        for bad in [
            &br#"{"username":"u","profile":{}}"#[..],
            br#"{"username":"u","confirmPassword":"x"}"#,
            br#"{"userRole":"ROLE_NURSE"}"#,
            br#"{"id":"x"}"#,
            br#"[]"#,
        ] {
            assert_eq!(user(bad), Err(BodyError::Invalid("User")));
        }
    }

    #[test]
    fn question_binding() {
        let q = question(
            br#"{"question":"How?","type":"Scale","recurring":true,"startDate":1611019800000,
                "recurrance":[{"hourOfDay":9,"minuteOfHour":"30"},null],"answers":[1],"patient":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(q.kind, Some(QuestionType::Scale));
        assert_eq!(q.recurrance, vec![(9, 30)]);
        assert_eq!(q.start_date, Some(1_611_019_800_000));
        assert_eq!(
            question(br#"{"type":""}"#),
            Err(BodyError::Invalid("Question"))
        );
        assert_eq!(
            question(br#"{"recurrance":[{"hour":1}]}"#),
            Err(BodyError::Invalid("Question"))
        );
    }

    #[test]
    fn nested_objects_are_strict() {
        assert!(symptom(
            br#"{"symptomCode":"A03","patient":{"username":"x","profile":{"age":3}}}"#
        )
        .is_ok());
        assert_eq!(
            symptom(br#"{"symptomCode":"A03","patient":{"profile":{"shoeSize":3}}}"#),
            Err(BodyError::Invalid("Symptom"))
        );
        assert_eq!(
            answer_text(br#"{"answer":"yes","question":{"id":3}}"#),
            Ok(Some("yes".into()))
        );
        assert_eq!(
            answer_text(br#"{"answer":"yes","extra":1}"#),
            Err(BodyError::Invalid("Answer"))
        );
    }

    #[test]
    fn profile_defaults_and_medications() {
        let p = profile(br#"{"age":"41","sex":"Male","medications":["a",null,"b"]}"#).unwrap();
        assert_eq!(p.age, 41);
        assert_eq!(p.sex, Some(Sex::Male));
        assert_eq!(p.medications, vec!["a".to_owned(), "b".to_owned()]);
        assert_eq!(p.height, 0.0);
        assert_eq!(
            profile(br#"{"medications":"a"}"#),
            Err(BodyError::Invalid("MedicalProfile"))
        );
    }

    #[test]
    fn code_body_casts() {
        assert_eq!(
            code(br#"{"code":"abc","x":1}"#),
            Ok(Ok(CodeBody::Code("abc".into())))
        );
        assert_eq!(code(br#"{}"#), Ok(Ok(CodeBody::Missing)));
        assert_eq!(
            code(br#"{"code":12}"#),
            Ok(Err(Fault::ClassCast("java.lang.Integer")))
        );
        assert_eq!(code(b"[1]"), Err(BodyError::Invalid("HashMap")));
        assert_eq!(code(b"null"), Err(BodyError::Null("HashMap")));
        assert_eq!(
            Fault::ClassCast("java.lang.Integer").to_string(),
            "class java.lang.Integer cannot be cast to class java.lang.String (java.lang.Integer and java.lang.String are in module java.base of loader 'bootstrap')"
        );
    }
}
