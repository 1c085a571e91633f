//! The per-route status rules and the write bodies, without a server.

use super::*;
use crate::upstream::model::{QuestionType, Recurrence, Role, Sex};

const JSON: Option<&str> = Some("application/json");
const HTML: Option<&str> = Some("text/html");
const TEXT: Option<&str> = Some("text/plain");
const NULL_JSON: &[u8] = crate::upstream::error::NULL_JSON_MESSAGE.as_bytes();

fn reply(
    op_route: &'static str,
    status: u16,
    ct: Option<&'static str>,
    body: &'static [u8],
) -> Reply {
    Reply::for_test(op_route, status, ct, body)
}

fn body_json(request: &ApiRequest) -> serde_json::Value {
    serde_json::from_slice(request.body().expect("a body")).expect("JSON body")
}

fn keys(value: &serde_json::Value) -> Vec<&str> {
    let mut keys: Vec<&str> = value
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

const PATIENT: &[u8] = br#"{"id":7,"creationDate":1611000000000,"updateDate":1611000000000,
    "username":"0790000000","userRole":"ROLE_PATIENT","telephoneNumber":"0790000000",
    "firstName":"Ali","lastName":"X","futureField":{"a":1},
    "profile":{"id":8,"creationDate":1,"updateDate":2,"age":0,"height":0.0,"weight":0.0,
      "sex":null,"g6pdDeficiency":false,"respiratoryDiseases":false,"diabetes":false,
      "cardiovascularDiseases":false,"obesity":false,"medications":[]}}"#;

#[test]
fn per_patient_routes_tell_not_linked_from_other_failures() {
    let op = patient(UpstreamId(7));
    assert_eq!(op.request().path(), "/api/doctor/patient/7");
    assert!(matches!(
        op.decode(&reply(R20, 500, TEXT, NULL_JSON)),
        Err(UpstreamError::NotLinked { route: R20 })
    ));
    // R20 never answers 500E for an unlinked patient: anything else is a failure.
    assert!(matches!(
        op.decode(&reply(R20, 500, TEXT, b"")),
        Err(UpstreamError::Failed { .. })
    ));
    let parsed = op.decode(&reply(R20, 200, JSON, PATIENT)).expect("patient");
    assert_eq!(parsed.id(), UpstreamId(7));

    for op in [
        patient_profile(UpstreamId(7)).request().clone(),
        patient_vitals(UpstreamId(7)).request().clone(),
        patient_symptoms(UpstreamId(7)).request().clone(),
        patient_answers(UpstreamId(7)).request().clone(),
        patient_questions(UpstreamId(7)).request().clone(),
    ] {
        assert!(
            op.path().starts_with("/api/doctor/patient/7/"),
            "{}",
            op.path()
        );
    }
    let op = patient_symptoms(UpstreamId(7));
    assert!(matches!(
        op.decode(&reply(R23, 500, TEXT, b"")),
        Err(UpstreamError::NotLinked { .. })
    ));
    assert!(matches!(
        op.decode(&reply(R23, 500, TEXT, NULL_JSON)),
        Err(UpstreamError::Failed { .. })
    ));
    let e = op
        .decode(&reply(
            R23,
            500,
            TEXT,
            b"ARJUNA016053: Could not commit transaction.",
        ))
        .expect_err("500T");
    assert!(e.to_string().contains("ARJUNA016053"), "{e}");
}

#[test]
fn unauthorized_is_keyed_on_the_status_only() {
    let op = linked_patients();
    for (status, ct, body) in [
        (401, HTML, &b"<html><login></login></html>"[..]),
        (401, TEXT, b"Unauthorized"),
        (401, None, b""),
    ] {
        let r = Reply::for_test(R18, status, ct, Box::leak(body.to_vec().into_boxed_slice()));
        assert!(matches!(
            op.decode(&r),
            Err(UpstreamError::Unauthorized { route: R18 })
        ));
    }
    // A login page with status 200 is not a patient list.
    let e = op
        .decode(&reply(R18, 200, HTML, b"<html><login></login></html>"))
        .expect_err("html");
    assert!(matches!(e, UpstreamError::UnexpectedBody { .. }), "{e}");
    assert_eq!(
        op.decode(&reply(R18, 200, JSON, b"[]")).expect("empty"),
        vec![]
    );
    let e = op
        .decode(&reply(R18, 404, TEXT, b"Not found"))
        .expect_err("404");
    assert!(matches!(e, UpstreamError::Failed { .. }), "{e}");
}

#[test]
fn writes_answer_an_empty_200() {
    let op = report_symptom(&NewSymptom {
        symptom_code: "A03".into(),
        note: Some("since yesterday".into()),
    })
    .expect("op");
    op.decode(&reply(R12, 200, TEXT, b"")).expect("empty 200");
    assert!(matches!(
        op.decode(&reply(R12, 200, TEXT, b"ok")),
        Err(UpstreamError::UnexpectedBody { .. })
    ));
    let e = op
        .decode(&reply(
            R12,
            400,
            TEXT,
            b"Couldn't deserialize body to Symptom",
        ))
        .expect_err("400");
    assert!(
        matches!(&e, UpstreamError::BadRequest { detail, .. } if detail == "Couldn't deserialize body to Symptom"),
        "{e}"
    );
}

#[test]
fn vitals_answer_the_json_200() {
    let op = report_vitals(&Vitals {
        heart_beats_per_minute: 72.0,
        systolic_pressure: 120.0,
        diastolic_pressure: 80.0,
        blood_oxygenation: 97.0,
        breathing_rate: 16.0,
    })
    .expect("op");
    op.decode(&reply(R13, 200, JSON, b"200")).expect("JSON 200");
    assert!(op.decode(&reply(R13, 200, TEXT, b"")).is_err());
    assert!(op.decode(&reply(R13, 200, JSON, b"201")).is_err());
    assert_eq!(
        keys(&body_json(op.request())),
        [
            "bloodOxygenation",
            "breathingRate",
            "diastolicPressure",
            "heartBeatsPerMinute",
            "systolicPressure"
        ]
    );
}

#[test]
fn the_patients_doctor_or_none() {
    let op = doctor_of_patient();
    assert_eq!(
        op.decode(&reply(R4, 500, TEXT, NULL_JSON)).expect("none"),
        None
    );
    let doctor = op
        .decode(&reply(
            R4,
            200,
            JSON,
            br#"{"id":3,"username":"dr","userRole":"ROLE_DOCTOR","firstName":"Doc","lastName":null}"#,
        ))
        .expect("doctor")
        .expect("some");
    assert_eq!(doctor.username.as_deref(), Some("dr"));
    assert_eq!(doctor.user_role, Role::Doctor);
    assert_eq!(doctor.display_name(), "Doc");
    assert!(op.decode(&reply(R4, 500, TEXT, b"")).is_err());
}

#[test]
fn code_consumption_is_never_taken_as_proof() {
    let op = consume_code("  X7K2M9QA\n").expect("op");
    assert_eq!(
        body_json(op.request()),
        serde_json::json!({"code": "x7k2m9qa"})
    );
    assert_eq!(
        op.decode(&reply(R19, 200, TEXT, b"")).expect("answered"),
        CodeConsumption::Answered
    );
    assert_eq!(
        op.decode(&reply(
            R19,
            500,
            TEXT,
            b"ARJUNA016053: Could not commit transaction."
        ))
        .expect("refused"),
        CodeConsumption::Refused
    );
}

#[test]
fn write_bodies_have_exactly_the_accepted_keys() {
    let op = report_symptom(&NewSymptom {
        symptom_code: "A03".into(),
        note: None,
    })
    .expect("op");
    assert_eq!(keys(&body_json(op.request())), ["note", "symptomCode"]);

    let read: MedicalProfile = serde_json::from_str(
        r#"{"id":8,"creationDate":1,"updateDate":2,"age":40,"height":1.8,"weight":80.0,
            "sex":"Female","g6pdDeficiency":true,"respiratoryDiseases":false,"diabetes":true,
            "cardiovascularDiseases":false,"obesity":false,"medications":["aspirin"]}"#,
    )
    .expect("profile");
    let op = replace_profile(&ProfileUpdate::from(&read)).expect("op");
    let sent = body_json(op.request());
    assert_eq!(
        keys(&sent),
        [
            "age",
            "cardiovascularDiseases",
            "diabetes",
            "g6pdDeficiency",
            "height",
            "medications",
            "obesity",
            "respiratoryDiseases",
            "sex",
            "weight"
        ]
    );
    assert_eq!(sent["sex"], "Female");
    assert_eq!(sent["medications"], serde_json::json!(["aspirin"]));

    let question = NewQuestion {
        question: "How is your fever?".into(),
        kind: Some(QuestionType::Scale),
        recurring: true,
        start_date: Some(1_611_014_400_000),
        end_date: None,
        recurrence: vec![Recurrence {
            hour_of_day: 9,
            minute_of_hour: 0,
        }],
    };
    let op = ask_question(UpstreamId(7), &question).expect("op");
    let sent = body_json(op.request());
    let mut allowed = QUESTION_KEYS.to_vec();
    allowed.sort_unstable();
    assert_eq!(keys(&sent), allowed);
    assert_eq!(sent["type"], "Scale");
    assert_eq!(
        sent["recurrance"],
        serde_json::json!([{"hourOfDay": 9, "minuteOfHour": 0}])
    );
}

#[test]
fn bodies_access_md_would_reject_are_not_sent() {
    let nan = Vitals {
        heart_beats_per_minute: f64::NAN,
        systolic_pressure: 1.0,
        diastolic_pressure: 1.0,
        blood_oxygenation: 1.0,
        breathing_rate: f64::INFINITY,
    };
    assert!(matches!(
        report_vitals(&nan),
        Err(UpstreamError::InvalidRequest { .. })
    ));
    let long = NewSymptom {
        symptom_code: "A03".into(),
        note: Some("x".repeat(256)),
    };
    assert!(matches!(
        report_symptom(&long),
        Err(UpstreamError::InvalidRequest { .. })
    ));
    let fits = NewSymptom {
        symptom_code: "A03".into(),
        note: Some("\u{e9}".repeat(255)),
    };
    assert!(report_symptom(&fits).is_ok());
    let unknown = NewQuestion {
        question: "q".into(),
        kind: Some(QuestionType::Unknown),
        recurring: false,
        start_date: None,
        end_date: None,
        recurrence: vec![],
    };
    assert!(matches!(
        ask_question(UpstreamId(7), &unknown),
        Err(UpstreamError::InvalidRequest { .. })
    ));
    let profile = ProfileUpdate {
        sex: Some(Sex::Unknown),
        ..ProfileUpdate::default()
    };
    assert!(replace_profile(&profile).is_err());
}

#[test]
fn question_bytes_are_checked_against_the_whitelist() {
    let ok = Bytes::from_static(
        br#"{"question":"q?","type":"Text","recurring":false,"startDate":null,"endDate":null,
            "recurrance":[{"hourOfDay":9,"minuteOfHour":30}]}"#,
    );
    let op = ask_question_bytes(UpstreamId(7), ok.clone()).expect("allowed");
    assert_eq!(op.request().body(), Some(&ok), "sent unchanged");
    assert_eq!(op.request().path(), "/api/doctor/patient/7/question");
    op.decode(&reply(R28, 200, TEXT, b"")).expect("empty 200");
    assert!(matches!(
        op.decode(&reply(R28, 500, TEXT, b"")),
        Err(UpstreamError::NotLinked { .. })
    ));

    for bad in [
        &br#"{"question":"q","id":5}"#[..],
        br#"{"question":"q","answered":true}"#,
        br#"{"question":"q","answeredOn":1}"#,
        br#"{"question":"q","creationDate":1}"#,
        br#"{"question":"q","recurrance":[{"hourOfDay":1,"id":2}]}"#,
        br#"{"question":"q","recurrance":{"hourOfDay":1}}"#,
        br#"{"question":"q","recurrance":[1]}"#,
        br#"{"type":"Text"}"#,
        br#"[{"question":"q"}]"#,
        br#"{"question":"q""#,
        b"",
    ] {
        let e = ask_question_bytes(UpstreamId(7), Bytes::from_static(bad)).expect_err("refused");
        assert!(matches!(e, UpstreamError::InvalidRequest { .. }), "{e}");
    }
    let long = format!(r#"{{"question":"{}"}}"#, "q".repeat(256));
    assert!(ask_question_bytes(UpstreamId(7), Bytes::from(long)).is_err());
}

#[test]
fn read_models_tolerate_unknown_and_missing_keys() {
    let p: Patient = serde_json::from_slice(PATIENT).expect("patient");
    assert_eq!(p.user.first_name.as_deref(), Some("Ali"));
    assert_eq!(p.user.user_role, Role::Patient);
    assert_eq!(p.profile.as_ref().map(|p| p.id), Some(Some(UpstreamId(8))));

    let q: Question = serde_json::from_str(
        r#"{"id":31,"creationDate":1,"updateDate":2,"question":"How is your fever?","type":"Scale",
            "answered":false,"answeredOn":null,"recurrance":[{"hourOfDay":9,"minuteOfHour":0}],
            "startDate":1611014400000,"endDate":1611619200000,"recurring":true,"newKey":[1]}"#,
    )
    .expect("question");
    assert_eq!(q.kind, Some(QuestionType::Scale));
    assert_eq!(
        q.recurrence,
        [Recurrence {
            hour_of_day: 9,
            minute_of_hour: 0
        }]
    );

    let q: Question = serde_json::from_str(r#"{"id":1,"type":"Essay"}"#).expect("minimal");
    assert_eq!(q.kind, Some(QuestionType::Unknown));
    assert!(q.recurrence.is_empty());

    let a: Answer = serde_json::from_str(
        r#"{"id":40,"creationDate":1,"updateDate":2,"question":{"id":31,"question":"q"},
            "replies":[],"answer":"yes","archived":false,"archiveDate":null}"#,
    )
    .expect("answer");
    assert_eq!(a.question.map(|q| q.id), Some(UpstreamId(31)));

    let s: Symptom = serde_json::from_slice(
        &[
            &br#"{"id":50,"symptomCode":"A03","note":"n","archived":false,"replies":[],"patient":"#
                [..],
            PATIENT,
            b"}",
        ]
        .concat(),
    )
    .expect("symptom");
    assert_eq!(s.patient.map(|p| p.id()), Some(UpstreamId(7)));

    let v: VitalsMeasurement = serde_json::from_str(
        r#"{"id":70,"heartBeatsPerMinute":72.0,"systolicPressure":120.0,"diastolicPressure":80.0,
            "bloodOxygenation":97.0,"breathingRate":16}"#,
    )
    .expect("vitals");
    assert_eq!(v.breathing_rate, 16.0);

    let u: crate::upstream::User =
        serde_json::from_str(r#"{"id":1,"username":null,"userRole":"ROLE_SUPERUSER"}"#)
            .expect("user");
    assert_eq!(u.user_role, Role::Unknown);
    assert_eq!(u.display_name(), "#1");
}

#[test]
fn security_codes_do_not_print() {
    let code: SecurityCode = serde_json::from_str(
        r#"{"id":60,"creationDate":1,"updateDate":1,"code":"k3j9x0ab","validUntil":1611000300000}"#,
    )
    .expect("code");
    assert_eq!(code.code, "k3j9x0ab");
    assert!(!format!("{code:?}").contains("k3j9x0ab"));
}
