//! Tests for the array splitter: element boundaries in tricky JSON, every
//! way of cutting the input, each refusal, and a property test against
//! serde_json's own output.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;

/// Why a test callback refuses an element.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("refused element {0}")]
struct Refused(u64);

/// Feeds `chunks` and returns the elements as strings, or the error.
fn split_chunks(chunks: &[&[u8]], limit: usize) -> Result<Vec<String>, SplitError<Refused>> {
    let mut splitter = ArraySplitter::new(limit);
    let mut out = Vec::new();
    for chunk in chunks {
        splitter.feed(chunk, &mut |e: &[u8]| {
            out.push(String::from_utf8(e.to_vec()).expect("utf-8 element"));
            Ok(())
        })?;
    }
    let count = splitter.finish()?;
    assert_eq!(count, out.len() as u64);
    Ok(out)
}

fn split(text: &str) -> Result<Vec<String>, SplitError<Refused>> {
    split_chunks(&[text.as_bytes()], 1 << 20)
}

/// Splits `text` fed one byte at a time.
fn split_bytewise(text: &str) -> Result<Vec<String>, SplitError<Refused>> {
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(1).collect();
    split_chunks(&chunks, 1 << 20)
}

const TRICKY: &str = r#" [ {"a":"]}\"","b":[1,{"c":"\\"}]}, "x\"y\\" ,12.5e-3,-0, true,false ,null,[],{},[[["]"]]] ,"" ]  "#;

fn tricky_elements() -> Vec<&'static str> {
    vec![
        r#"{"a":"]}\"","b":[1,{"c":"\\"}]}"#,
        r#""x\"y\\""#,
        "12.5e-3",
        "-0",
        "true",
        "false",
        "null",
        "[]",
        "{}",
        r#"[[["]"]]]"#,
        r#""""#,
    ]
}

#[test]
fn splits_elements_of_every_kind() {
    assert_eq!(split(TRICKY).expect("split"), tricky_elements());
    assert_eq!(split("[]").expect("empty"), Vec::<String>::new());
    assert_eq!(split(" \n[ \t]\r\n").expect("empty"), Vec::<String>::new());
    assert_eq!(split("[1]").expect("one"), vec!["1"]);
    assert_eq!(split("[1,2]").expect("two"), vec!["1", "2"]);
    assert_eq!(split("[\"é\"]").expect("utf-8"), vec!["\"é\""]);
}

#[test]
fn every_cut_gives_the_same_elements() {
    let bytes = TRICKY.as_bytes();
    for cut in 0..=bytes.len() {
        let (a, b) = bytes.split_at(cut);
        assert_eq!(
            split_chunks(&[a, b], 1 << 20).expect("split"),
            tricky_elements(),
            "cut at {cut}"
        );
    }
    for cut in 0..=bytes.len() {
        for cut2 in cut..=bytes.len() {
            let chunks = [&bytes[..cut], &bytes[cut..cut2], &bytes[cut2..]];
            assert_eq!(
                split_chunks(&chunks, 1 << 20).expect("split"),
                tricky_elements()
            );
        }
    }
    assert_eq!(split_bytewise(TRICKY).expect("split"), tricky_elements());
}

#[test]
fn refuses_what_is_not_an_array() {
    for (text, offset) in [("{}", 0), ("  1", 2), ("\"[]\"", 0), ("\u{feff}[]", 0)] {
        match split(text) {
            Err(SplitError::NotAnArray { offset: at }) => assert_eq!(at, offset, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn refuses_malformed_arrays_with_the_offset() {
    for (text, offset) in [
        ("[1,]", 3),
        ("[,1]", 1),
        ("[1 2]", 3),
        ("[{]", 2),
        ("[[}]", 2),
        ("[{\"a\":1]]", 7),
        ("[1}", 2),
        ("[:]", 1),
        ("[1:2]", 2),
        ("[\"a\" \"b\"]", 5),
        ("[{}{}]", 3),
    ] {
        match split(text) {
            Err(SplitError::Malformed { offset: at }) => assert_eq!(at, offset, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
        // The offset counts across chunks too.
        match split_bytewise(text) {
            Err(SplitError::Malformed { offset: at }) => assert_eq!(at, offset, "{text}"),
            other => panic!("{text} bytewise: {other:?}"),
        }
    }
}

#[test]
fn refuses_unterminated_arrays() {
    for text in [
        "",
        "  ",
        "[",
        "[1",
        "[1,",
        "[{\"a\":1",
        "[\"]",
        "[1,2 ",
        "[[]",
    ] {
        assert!(
            matches!(split(text), Err(SplitError::Unterminated)),
            "{text:?}"
        );
        assert!(
            matches!(split_bytewise(text), Err(SplitError::Unterminated)),
            "{text:?} bytewise"
        );
    }
}

#[test]
fn refuses_trailing_data() {
    for (text, offset) in [("[] x", 3), ("[][]", 2), ("[1]\n,", 4)] {
        match split(text) {
            Err(SplitError::TrailingData { offset: at }) => assert_eq!(at, offset, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn bounds_the_element_size_in_one_chunk_and_across_chunks() {
    let text = r#"[{"a":"0123456789"},1]"#;
    // The object is 18 bytes.
    assert_eq!(split_chunks(&[text.as_bytes()], 18).expect("fits").len(), 2);
    assert!(matches!(
        split_chunks(&[text.as_bytes()], 17),
        Err(SplitError::ElementTooLarge { limit: 17 })
    ));
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(3).collect();
    assert_eq!(split_chunks(&chunks, 18).expect("fits").len(), 2);
    assert!(matches!(
        split_chunks(&chunks, 17),
        Err(SplitError::ElementTooLarge { limit: 17 })
    ));
    // A long element is refused before it is whole: the carry never grows
    // past the limit.
    let mut splitter = ArraySplitter::new(8);
    let mut f = |_: &[u8]| Ok::<(), Refused>(());
    splitter
        .feed(b"[\"abcdef", &mut f)
        .expect("within the limit");
    assert!(matches!(
        splitter.feed(b"ghijkl", &mut f),
        Err(SplitError::ElementTooLarge { limit: 8 })
    ));
}

#[test]
fn passes_callback_errors_through_and_stays_failed() {
    let mut splitter = ArraySplitter::new(1024);
    let mut seen = 0;
    let mut f = |_: &[u8]| {
        seen += 1;
        if seen == 2 {
            Err(Refused(seen))
        } else {
            Ok(())
        }
    };
    match splitter.feed(b"[1,2,3]", &mut f) {
        Err(SplitError::Callback(Refused(2))) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        splitter.feed(b" ", &mut f),
        Err(SplitError::Malformed { .. })
    ));
    assert!(matches!(
        splitter.finish::<Refused>(),
        Err(SplitError::Malformed { .. })
    ));
}

#[test]
fn upstream_vitals_shape() {
    let patient = json!({"id":7,"creationDate":1,"updateDate":2,"username":"0790000000",
        "userRole":"ROLE_PATIENT","telephoneNumber":"0790000000","firstName":"Ali","lastName":"X",
        "profile":{"id":8,"medications":["a]b","c\"d"]}});
    let list: Vec<Value> = (0..50)
        .map(|i| json!({"id": 100 + i, "patient": patient, "heartBeatsPerMinute": 72.0}))
        .collect();
    let text = serde_json::to_string(&list).expect("serialize");
    let chunks: Vec<&[u8]> = text.as_bytes().chunks(97).collect();
    let got = split_chunks(&chunks, 4096).expect("split");
    assert_eq!(got.len(), 50);
    for (element, value) in got.iter().zip(&list) {
        assert_eq!(element, &serde_json::to_string(value).expect("serialize"));
    }
}

/// Any JSON value, up to a small depth.
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[\"\\\\\\[\\]{},: ]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z\"\\\\\\]}]{0,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn any_split_of_a_serialized_array_yields_its_elements(
        elements in prop::collection::vec(any_json(), 0..12),
        pretty in any::<bool>(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let text = if pretty {
            serde_json::to_string_pretty(&elements)
        } else {
            serde_json::to_string(&elements)
        }.expect("serialize");
        let bytes = text.as_bytes();
        let mut points: Vec<usize> = cuts.iter().map(|c| c.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for p in points {
            chunks.push(&bytes[from..p]);
            from = p;
        }
        chunks.push(&bytes[from..]);
        let got = split_chunks(&chunks, usize::MAX).expect("split");
        prop_assert_eq!(got.len(), elements.len());
        for (element, value) in got.iter().zip(&elements) {
            let compact = serde_json::to_string(value).expect("serialize");
            if pretty {
                // The same number texts parse to the same values.
                let a: Value = serde_json::from_str(element).expect("element parses");
                let b: Value = serde_json::from_str(&compact).expect("compact parses");
                prop_assert_eq!(a, b);
            } else {
                prop_assert_eq!(element, &compact);
            }
        }
    }
}
