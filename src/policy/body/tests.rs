//! Tests for the question body whitelist.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

fn ok(body: &str) -> Value {
    let out = filter_question(body.as_bytes())
        .unwrap_or_else(|e| panic!("{body}: refused: {e} ({})", e.reason()));
    serde_json::from_slice(&out).expect("output is JSON")
}

fn err(body: &str) -> BodyError {
    match filter_question(body.as_bytes()) {
        Ok(out) => panic!("{body}: accepted as {}", String::from_utf8_lossy(&out)),
        Err(e) => e,
    }
}

fn invalid(key: &str) -> impl Fn(&BodyError) -> bool + '_ {
    move |e| matches!(e, BodyError::InvalidValue { key: k, .. } if k == key)
}

#[test]
fn the_web_ui_body_passes_unchanged() {
    // What `vue/components/patient-question.vue` sends.
    let body = r#"{"question":"How is your fever?","type":"Scale","recurring":true,
        "startDate":1611014400000,"endDate":1611619200000,
        "recurrance":[{"hourOfDay":9,"minuteOfHour":0},{"hourOfDay":21,"minuteOfHour":30}]}"#;
    assert_eq!(
        ok(body),
        json!({
            "question": "How is your fever?",
            "type": "Scale",
            "recurring": true,
            "startDate": 1611014400000_i64,
            "endDate": 1611619200000_i64,
            "recurrance": [
                {"hourOfDay": 9, "minuteOfHour": 0},
                {"hourOfDay": 21, "minuteOfHour": 30}
            ]
        })
    );
}

#[test]
fn output_is_compact_and_rebuilt() {
    let out = filter_question(br#"  { "question" : "Any pain?\u0021" , "type" : null }  "#)
        .expect("valid");
    assert_eq!(out, br#"{"question":"Any pain?!"}"#);
}

#[test]
fn nulls_are_left_out() {
    let v = ok(
        r#"{"question":"q","type":null,"recurring":null,"startDate":null,
        "endDate":null,"recurrance":null}"#,
    );
    assert_eq!(v, json!({"question": "q"}));
}

#[test]
fn forbidden_keys_are_named() {
    for key in FORBIDDEN {
        let body = format!(r#"{{"question":"q","{key}":1}}"#);
        assert_eq!(
            err(&body),
            BodyError::ForbiddenKey {
                key: key.to_owned()
            },
            "{key}"
        );
        assert_eq!(err(&body).reason(), "body_forbidden_key");
    }
    // Also before the question, and with other value types.
    assert_eq!(
        err(r#"{"id":null,"question":"q"}"#),
        BodyError::ForbiddenKey { key: "id".into() }
    );
    assert_eq!(
        err(r#"{"question":"q","patient":{"id":7}}"#),
        BodyError::ForbiddenKey {
            key: "patient".into()
        }
    );
    assert_eq!(
        err(r#"{"question":"q","recurrance":[{"hourOfDay":1,"minuteOfHour":2,"id":3}]}"#),
        BodyError::ForbiddenKey { key: "id".into() }
    );
}

#[test]
fn unknown_keys_are_named_not_dropped() {
    for key in [
        "archived",
        "entityName",
        "Question",
        "questions",
        "recurrence",
        "trace_id",
        "",
    ] {
        let body = format!(r#"{{"question":"q","{key}":true}}"#);
        assert_eq!(
            err(&body),
            BodyError::UnknownKey {
                key: key.to_owned()
            },
            "{key}"
        );
    }
    let long = "k".repeat(500);
    match err(&format!(r#"{{"{long}":1}}"#)) {
        BodyError::UnknownKey { key } => assert_eq!(key.len(), 64),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        err(r#"{"question":"q","recurrance":[{"hourOfDay":1,"minuteOfHour":2,"second":3}]}"#),
        BodyError::UnknownKey {
            key: "second".into()
        }
    );
}

#[test]
fn duplicate_keys_are_refused() {
    assert_eq!(
        err(r#"{"question":"q","question":"r"}"#),
        BodyError::DuplicateKey {
            key: "question".into()
        }
    );
    // Duplicates are found before any value is looked at.
    assert_eq!(
        err(r#"{"question":"q","type":"Text","type":null}"#),
        BodyError::DuplicateKey { key: "type".into() }
    );
    assert_eq!(
        err(r#"{"question":"q","recurrance":[{"hourOfDay":1,"hourOfDay":2,"minuteOfHour":0}]}"#),
        BodyError::DuplicateKey {
            key: "hourOfDay".into()
        }
    );
    // The same key in two recurrence entries is fine.
    ok(
        r#"{"question":"q","recurrance":[{"hourOfDay":1,"minuteOfHour":0},{"hourOfDay":2,"minuteOfHour":0}]}"#,
    );
}

#[test]
fn only_json_objects() {
    for body in ["[]", "\"q\"", "1", "null", "true", r#"[{"question":"q"}]"#] {
        assert_eq!(err(body), BodyError::NotObject, "{body}");
    }
    for body in [
        "",
        " ",
        "{",
        r#"{"question":"q"} x"#,
        r#"{"question":"q"}{"question":"r"}"#,
        r#"{'question':'q'}"#,
        r#"{"question":"q",}"#,
        "\u{feff}{\"question\":\"q\"}",
        r#"{"question":"\ud800"}"#,
    ] {
        assert!(matches!(err(body), BodyError::NotJson(_)), "{body:?}");
    }
    let not_utf8 = b"{\"question\":\"\xff\"}";
    assert!(matches!(
        filter_question(not_utf8),
        Err(BodyError::NotJson(_))
    ));
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    assert!(matches!(err(&deep), BodyError::NotJson(_)));
}

#[test]
fn size_limit() {
    let body = |len: usize| {
        let head = r#"{"question":"q"}"#;
        format!("{head}{}", " ".repeat(len - head.len()))
    };
    assert!(filter_question(body(MAX_QUESTION_BODY).as_bytes()).is_ok());
    assert_eq!(
        filter_question(body(MAX_QUESTION_BODY + 1).as_bytes()),
        Err(BodyError::TooLarge {
            limit: MAX_QUESTION_BODY
        })
    );
}

#[test]
fn question_text() {
    assert_eq!(
        err(r#"{"type":"Text"}"#),
        BodyError::MissingKey { key: "question" }
    );
    assert_eq!(err("{}"), BodyError::MissingKey { key: "question" });
    for body in [
        r#"{"question":""}"#,
        r#"{"question":"  \n"}"#,
        r#"{"question":null}"#,
        r#"{"question":7}"#,
        r#"{"question":["q"]}"#,
    ] {
        assert!(invalid("question")(&err(body)), "{body}");
    }
    let text = |s: String| format!(r#"{{"question":"{s}"}}"#);
    ok(&text("a".repeat(255)));
    assert!(invalid("question")(&err(&text("a".repeat(256)))));
    // Derby counts Java characters: 255 in the BMP fit, 128 astral ones
    // (256 UTF-16 units) do not.
    ok(&text("é".repeat(255)));
    ok(&text("😷".repeat(127)));
    assert!(invalid("question")(&err(&text("😷".repeat(128)))));
}

#[test]
fn question_type() {
    for t in QUESTION_TYPES {
        assert_eq!(
            ok(&format!(r#"{{"question":"q","type":"{t}"}}"#))["type"],
            t
        );
    }
    for body in [
        r#"{"question":"q","type":""}"#,
        r#"{"question":"q","type":"scale"}"#,
        r#"{"question":"q","type":"SCALE"}"#,
        r#"{"question":"q","type":0}"#,
        r#"{"question":"q","type":["Text"]}"#,
    ] {
        assert!(invalid("type")(&err(body)), "{body}");
    }
}

#[test]
fn recurring_flag() {
    assert_eq!(
        ok(r#"{"question":"q","recurring":false}"#)["recurring"],
        false
    );
    for body in [
        r#"{"question":"q","recurring":"true"}"#,
        r#"{"question":"q","recurring":1}"#,
    ] {
        assert!(invalid("recurring")(&err(body)), "{body}");
    }
}

#[test]
fn dates_are_epoch_millis() {
    for ms in [0, 1611014400000, MAX_EPOCH_MILLIS] {
        let v = ok(&format!(
            r#"{{"question":"q","startDate":{ms},"endDate":{ms}}}"#
        ));
        assert_eq!(v["startDate"], ms);
        assert_eq!(v["endDate"], ms);
    }
    for value in [
        "-1",
        "253402300800000",
        "1.5",
        "1e3",
        "1611014400000.0",
        "18446744073709551615",
        "\"2021-01-19\"",
        "\"1611014400000\"",
        "true",
    ] {
        let body = format!(r#"{{"question":"q","endDate":{value}}}"#);
        assert!(invalid("endDate")(&err(&body)), "{value}");
    }
}

#[test]
fn recurrence_times() {
    let entries = |n: usize| {
        let items: Vec<String> = (0..n)
            .map(|h| format!(r#"{{"minuteOfHour":59,"hourOfDay":{}}}"#, h % 24))
            .collect();
        format!(r#"{{"question":"q","recurrance":[{}]}}"#, items.join(","))
    };
    assert_eq!(ok(&entries(0))["recurrance"], json!([]));
    assert_eq!(
        ok(&entries(24))["recurrance"][23],
        json!({"hourOfDay": 23, "minuteOfHour": 59})
    );
    assert!(invalid("recurrance")(&err(&entries(25))));

    let one = |entry: &str| format!(r#"{{"question":"q","recurrance":[{entry}]}}"#);
    for (entry, key) in [
        (
            r#"{"hourOfDay":24,"minuteOfHour":0}"#,
            "recurrance[0].hourOfDay",
        ),
        (
            r#"{"hourOfDay":-1,"minuteOfHour":0}"#,
            "recurrance[0].hourOfDay",
        ),
        (
            r#"{"hourOfDay":9.0,"minuteOfHour":0}"#,
            "recurrance[0].hourOfDay",
        ),
        (
            r#"{"hourOfDay":"9","minuteOfHour":0}"#,
            "recurrance[0].hourOfDay",
        ),
        (
            r#"{"hourOfDay":9,"minuteOfHour":60}"#,
            "recurrance[0].minuteOfHour",
        ),
        (
            r#"{"hourOfDay":9,"minuteOfHour":null}"#,
            "recurrance[0].minuteOfHour",
        ),
        ("[9,0]", "recurrance[0]"),
        ("null", "recurrance[0]"),
    ] {
        assert!(invalid(key)(&err(&one(entry))), "{entry}");
    }
    assert_eq!(
        err(&one(r#"{"minuteOfHour":0}"#)),
        BodyError::MissingKey { key: "hourOfDay" }
    );
    assert_eq!(
        err(&one(r#"{"hourOfDay":0}"#)),
        BodyError::MissingKey {
            key: "minuteOfHour"
        }
    );
    for body in [
        r#"{"question":"q","recurrance":{"hourOfDay":1,"minuteOfHour":0}}"#,
        r#"{"question":"q","recurrance":"09:00"}"#,
    ] {
        assert!(invalid("recurrance")(&err(body)), "{body}");
    }
}

#[test]
fn reasons_are_distinct() {
    let all = [
        BodyError::TooLarge { limit: 1 },
        BodyError::NotJson(String::new()),
        BodyError::NotObject,
        BodyError::DuplicateKey { key: String::new() },
        BodyError::ForbiddenKey { key: String::new() },
        BodyError::UnknownKey { key: String::new() },
        BodyError::MissingKey { key: "" },
        BodyError::InvalidValue {
            key: String::new(),
            problem: "",
        },
    ];
    let mut reasons: Vec<_> = all.iter().map(BodyError::reason).collect();
    reasons.sort_unstable();
    reasons.dedup();
    assert_eq!(reasons.len(), all.len());
    assert!(reasons.iter().all(|r| r.starts_with("body_")));
}

const ALLOWED: [&str; 6] = [
    "question",
    "type",
    "recurring",
    "startDate",
    "endDate",
    "recurrance",
];

/// Valid question bodies, as JSON values.
fn valid_body() -> impl Strategy<Value = Value> {
    (
        "[a-zA-Z0-9 ?é😷]{1,100}",
        prop::option::of(prop::sample::select(QUESTION_TYPES.to_vec())),
        prop::option::of(any::<bool>()),
        prop::option::of(0..=MAX_EPOCH_MILLIS),
        prop::option::of(prop::collection::vec((0..24i64, 0..60i64), 0..=24)),
    )
        .prop_filter("question not blank", |(q, ..)| !q.trim().is_empty())
        .prop_map(|(question, kind, recurring, start, times)| {
            let mut m = serde_json::Map::new();
            m.insert("question".into(), question.into());
            if let Some(kind) = kind {
                m.insert("type".into(), kind.into());
            }
            if let Some(r) = recurring {
                m.insert("recurring".into(), r.into());
            }
            if let Some(s) = start {
                m.insert("startDate".into(), s.into());
            }
            if let Some(times) = times {
                let times: Vec<Value> = times
                    .into_iter()
                    .map(|(h, m)| json!({"hourOfDay": h, "minuteOfHour": m}))
                    .collect();
                m.insert("recurrance".into(), times.into());
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    /// Arbitrary bytes never panic; whatever passes is a JSON object with
    /// allowed keys only, and filtering it again changes nothing.
    #[test]
    fn arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..200)) {
        if let Ok(out) = filter_question(&body) {
            let v: Value = serde_json::from_slice(&out).unwrap();
            let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
            prop_assert!(keys.iter().all(|k| ALLOWED.contains(&k.as_str())));
            prop_assert_eq!(filter_question(&out).unwrap(), out);
        }
    }

    /// Valid bodies come through with the same content, in one canonical
    /// form, and adding any other key refuses them.
    #[test]
    fn valid_bodies_pass_and_extra_keys_refuse(
        body in valid_body(),
        extra in prop_oneof![
            prop::sample::select(FORBIDDEN.to_vec()).prop_map(str::to_owned),
            "[a-zA-Z_]{1,12}",
        ],
    ) {
        let text = serde_json::to_vec(&body).unwrap();
        let out = filter_question(&text).unwrap();
        let back: Value = serde_json::from_slice(&out).unwrap();
        prop_assert_eq!(&back, &body);
        prop_assert_eq!(filter_question(&out).unwrap(), out);

        let mut with_extra = body.as_object().unwrap().clone();
        let allowed = ALLOWED.contains(&extra.as_str());
        with_extra.insert(extra.clone(), Value::Bool(true));
        let result = filter_question(&serde_json::to_vec(&with_extra).unwrap());
        if !allowed {
            let refused_for_key = matches!(
                &result,
                Err(BodyError::ForbiddenKey { key }) | Err(BodyError::UnknownKey { key }) if *key == extra
            );
            prop_assert!(refused_for_key, "{:?}", result);
        }
    }
}
