//! Table tests and property tests for the record syntax.

use base64::Engine as _;
use proptest::prelude::*;

use super::*;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn ed25519_spki() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
        .expect("keygen")
        .public_key_der()
}

fn p256_spki() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("keygen")
        .public_key_der()
}

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

// ------------------------------------------------------------------ index

#[test]
fn index_table() {
    let ok: &[(&str, &[&str], u16, u16)] = &[
        (
            "v=mdgate1; s=tls2026a,sig2026a; fp=8443; wp=443",
            &["tls2026a", "sig2026a"],
            8443,
            443,
        ),
        ("v=mdgate1;s=a", &["a"], 8443, 443),
        ("  v = mdgate1 ;  s = a , b ; ", &["a", "b"], 8443, 443),
        ("v=mdgate1; s=a; fp=9000; wp=8080;", &["a"], 9000, 8080),
        // Unknown tags are ignored (forward compatibility).
        ("v=mdgate1; s=a; x=whatever goes; n_2=1", &["a"], 8443, 443),
        ("v=mdgate1\t;\ts=0-a", &["0-a"], 8443, 443),
    ];
    for (text, selectors, fp, wp) in ok {
        let index = IndexRecord::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let want: Vec<Selector> = selectors.iter().map(|s| sel(s)).collect();
        assert_eq!(index.selectors, want, "{text:?}");
        assert_eq!(
            (index.federation_port, index.web_port),
            (*fp, *wp),
            "{text:?}"
        );
    }

    use RecordError as E;
    let seventeen = (0..17)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let bad: Vec<(String, RecordError)> = vec![
        (
            "".into(),
            E::Syntax {
                offset: 0,
                reason: "empty tag",
            },
        ),
        (
            "v=mdgate1;; s=a".into(),
            E::Syntax {
                offset: 10,
                reason: "empty tag",
            },
        ),
        (
            "v=mdgate1; s".into(),
            E::Syntax {
                offset: 10,
                reason: "a tag without '='",
            },
        ),
        ("s=a; v=mdgate1".into(), E::VersionNotFirst),
        ("v=mdgate2; s=a".into(), E::VersionNotFirst),
        ("v=mdgate1".into(), E::MissingTag("s")),
        ("v=mdgate1; s=".into(), E::EmptySelectorList),
        ("v=mdgate1; s=a; s=b".into(), E::DuplicateTag("s".into())),
        (
            "v=mdgate1; s=a; v=mdgate1".into(),
            E::DuplicateTag("v".into()),
        ),
        ("v=mdgate1; s=a,a".into(), E::DuplicateSelector("a".into())),
        ("v=mdgate1; s=A".into(), E::BadSelector("A".into())),
        ("v=mdgate1; s=-a".into(), E::BadSelector("-a".into())),
        ("v=mdgate1; s=a,,b".into(), E::BadSelector("".into())),
        ("v=mdgate1; s=a_b".into(), E::BadSelector("a_b".into())),
        (
            format!("v=mdgate1; s={}", "a".repeat(64)),
            E::BadSelector("a".repeat(40) + "…"),
        ),
        (format!("v=mdgate1; s={seventeen}"), E::TooManySelectors(17)),
        (
            "v=mdgate1; s=a; fp=0".into(),
            E::BadPort {
                tag: "fp",
                value: "0".into(),
            },
        ),
        (
            "v=mdgate1; s=a; fp=65536".into(),
            E::BadPort {
                tag: "fp",
                value: "65536".into(),
            },
        ),
        (
            "v=mdgate1; s=a; wp=+443".into(),
            E::BadPort {
                tag: "wp",
                value: "+443".into(),
            },
        ),
        (
            "v=mdgate1; s=a; wp=".into(),
            E::BadPort {
                tag: "wp",
                value: "".into(),
            },
        ),
        ("v=mdgate1; S=a".into(), E::BadTagName("S".into())),
        ("v=mdgate1; 1s=a".into(), E::BadTagName("1s".into())),
        (
            "v=mdgate1; s=a; x=\u{e9}".into(),
            E::Syntax {
                offset: 18,
                reason: "bytes that are not printable ASCII",
            },
        ),
    ];
    for (text, want) in bad {
        assert_eq!(IndexRecord::parse(&text), Err(want), "{text:?}");
    }
}

#[test]
fn sixteen_selectors_are_allowed() {
    let list = (0..16)
        .map(|i| format!("s{i}"))
        .collect::<Vec<_>>()
        .join(",");
    let index = IndexRecord::parse(&format!("v=mdgate1; s={list}")).expect("16 selectors");
    assert_eq!(index.selectors.len(), 16);
}

#[test]
fn index_formats_every_tag() {
    let index = IndexRecord::new(vec![sel("tls2026a"), sel("sig2026a")]);
    assert_eq!(
        index.to_string(),
        "v=mdgate1; s=tls2026a,sig2026a; fp=8443; wp=443"
    );
}

// -------------------------------------------------------------------- keys

#[test]
fn key_records_parse() {
    let ed = ed25519_spki();
    let p = p256_spki();
    let hash: [u8; 32] = Sha256::digest(&p).into();

    let sig = KeyRecord::parse(&format!("v=mdgate1; u=sig; a=ed25519; k={}", b64(&ed))).unwrap();
    assert_eq!(sig.usage, KeyUse::Sig);
    assert_eq!(sig.material, KeyMaterial::Spki(ed.clone()));
    assert_eq!(sig.spki(), Some(ed.as_slice()));

    let tls_k = KeyRecord::parse(&format!("v=mdgate1; u=tls; a=p256; k={}", b64(&p))).unwrap();
    assert!(tls_k.matches_spki(&hash));
    let tls_h = KeyRecord::parse(&format!("v=mdgate1; u=tls; a=p256; h={}", b64(&hash))).unwrap();
    assert!(tls_h.matches_spki(&hash));
    assert!(!tls_h.matches_spki(&[0; 32]));
    assert_eq!(tls_h.spki(), None);

    // Padding optional; whitespace inside a long value is removed.
    let unpadded = b64(&hash).trim_end_matches('=').to_owned();
    let split = format!("{} {}", &unpadded[..10], &unpadded[10..]);
    for h in [unpadded, split] {
        let r = KeyRecord::parse(&format!("v=mdgate1; u=tls; a=p256; h={h}")).unwrap();
        assert!(r.matches_spki(&hash));
    }

    // Ed25519 TLS keys are allowed.
    let ed_tls = KeyRecord::parse(&format!("v=mdgate1;u=tls;a=ed25519;k={}", b64(&ed))).unwrap();
    assert_eq!(ed_tls.algorithm, KeyAlgorithm::Ed25519);
}

#[test]
fn empty_key_revokes() {
    for text in [
        "v=mdgate1; u=tls; a=p256; h=",
        "v=mdgate1; u=tls; a=p256; k=",
        "v=mdgate1; u=sig; a=ed25519; k=",
        "v=mdgate1; u=sig; a=ed25519; k= ;",
    ] {
        let r = KeyRecord::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert!(r.is_revoked(), "{text:?}");
        assert!(!r.matches_spki(&[0; 32]));
        assert_eq!(r.spki_sha256(), None);
    }
}

#[test]
fn key_record_errors() {
    let ed = b64(&ed25519_spki());
    let p = b64(&p256_spki());
    use RecordError as E;
    let cases: Vec<(String, RecordError)> = vec![
        ("v=mdgate1; a=p256; h=".into(), E::MissingTag("u")),
        ("v=mdgate1; u=tls; h=".into(), E::MissingTag("a")),
        ("v=mdgate1; u=tls; a=p256".into(), E::MissingKey),
        (
            "v=mdgate1; u=enc; a=p256; h=".into(),
            E::UnknownUse("enc".into()),
        ),
        (
            "v=mdgate1; u=tls; a=rsa; h=".into(),
            E::UnknownAlgorithm("rsa".into()),
        ),
        ("v=mdgate1; u=sig; a=p256; k=".into(), E::SigKeyNotEd25519),
        (
            "v=mdgate1; u=sig; a=ed25519; h=AAAA".into(),
            E::HashForSigKey,
        ),
        ("v=mdgate1; u=tls; a=p256; k=; h=".into(), E::KeyAndHash),
        (
            "v=mdgate1; u=tls; a=p256; h=@@@@".into(),
            E::BadBase64 { tag: "h" },
        ),
        (
            "v=mdgate1; u=tls; a=p256; h=AAAA".into(),
            E::BadHashLength(3),
        ),
        ("v=mdgate1; u=tls; a=p256; k=AAAA".into(), E::BadSpki(3)),
        (
            format!("v=mdgate1; u=tls; a=p256; k={ed}"),
            E::AlgorithmMismatch {
                declared: KeyAlgorithm::P256,
                found: KeyAlgorithm::Ed25519,
            },
        ),
        (
            format!("v=mdgate1; u=tls; a=ed25519; k={p}"),
            E::AlgorithmMismatch {
                declared: KeyAlgorithm::Ed25519,
                found: KeyAlgorithm::P256,
            },
        ),
        (
            "v=mdgate1; u=tls; u=tls; a=p256; h=".into(),
            E::DuplicateTag("u".into()),
        ),
        ("u=tls; v=mdgate1; a=p256; h=".into(), E::VersionNotFirst),
    ];
    for (text, want) in cases {
        assert_eq!(KeyRecord::parse(&text), Err(want), "{text:?}");
    }
}

#[test]
fn spki_algorithms() {
    let ed = ed25519_spki();
    let p = p256_spki();
    assert_eq!(KeyAlgorithm::of_spki(&ed), Some(KeyAlgorithm::Ed25519));
    assert_eq!(KeyAlgorithm::of_spki(&p), Some(KeyAlgorithm::P256));
    // A compressed point is a valid P-256 SPKI too.
    let mut compressed = P256_COMPRESSED_SPKI_PREFIX.to_vec();
    compressed.push(0x02);
    compressed.extend_from_slice(&[7; 32]);
    assert_eq!(KeyAlgorithm::of_spki(&compressed), Some(KeyAlgorithm::P256));
    compressed[P256_COMPRESSED_SPKI_PREFIX.len()] = 0x04;
    assert_eq!(KeyAlgorithm::of_spki(&compressed), None);
    // Truncated or extended encodings are not keys.
    assert_eq!(KeyAlgorithm::of_spki(&ed[..ed.len() - 1]), None);
    let mut longer = p.clone();
    longer.push(0);
    assert_eq!(KeyAlgorithm::of_spki(&longer), None);
}

#[test]
fn key_records_format() {
    let ed = ed25519_spki();
    let sig = KeyRecord {
        usage: KeyUse::Sig,
        algorithm: KeyAlgorithm::Ed25519,
        material: KeyMaterial::Spki(ed.clone()),
    };
    assert_eq!(
        sig.to_string(),
        format!("v=mdgate1; u=sig; a=ed25519; k={}", b64(&ed))
    );
    let tls = KeyRecord::tls_hash(KeyAlgorithm::P256, &ed);
    let hash: [u8; 32] = Sha256::digest(&ed).into();
    assert_eq!(
        tls.to_string(),
        format!("v=mdgate1; u=tls; a=p256; h={}", b64(&hash))
    );
    let revoked = KeyRecord {
        material: KeyMaterial::Revoked,
        ..tls
    };
    assert_eq!(revoked.to_string(), "v=mdgate1; u=tls; a=p256; h=");
}

// ----------------------------------------------------------------- RRsets

#[test]
fn rrsets_concatenate_and_pick_ours() {
    // Split across strings anywhere, even inside a tag.
    let split = vec![vec!["v=mdg", "ate1; s=a,", "b"]];
    let index = parse_index_rrset(&split).unwrap().unwrap();
    assert_eq!(index.selectors, vec![sel("a"), sel("b")]);

    // Other records at the name are ignored, including other versions and
    // records that are not tag lists at all.
    let mixed = vec![
        vec!["google-site-verification=abc"],
        vec!["v=spf1 -all"],
        vec!["v=mdgate10; s=x"],
        vec!["v=mdgate2; s=x"],
        vec!["v=mdgate1; s=a"],
        vec!["\u{0}\u{ff}"],
    ];
    assert_eq!(
        parse_index_rrset(&mixed).unwrap().unwrap().selectors,
        vec![sel("a")]
    );

    let none: Vec<Vec<&str>> = vec![vec!["v=spf1 -all"]];
    assert_eq!(parse_index_rrset(&none), Ok(None));
    assert_eq!(parse_index_rrset::<&str>(&[]), Ok(None));

    let two = vec![vec!["v=mdgate1; s=a"], vec!["v = mdgate1;s=b"]];
    assert_eq!(parse_index_rrset(&two), Err(RecordError::Ambiguous(2)));
    // Ours but broken is an error, not "absent".
    let broken = vec![vec!["v=mdgate1; s=a;;"]];
    assert!(matches!(
        parse_index_rrset(&broken),
        Err(RecordError::Syntax { .. })
    ));
    let binary: Vec<Vec<&[u8]>> = vec![vec![b"v=mdgate1; s=a; x=\xff"]];
    assert!(matches!(
        parse_index_rrset(&binary),
        Err(RecordError::Syntax { offset: 18, .. })
    ));

    let key = vec![vec!["v=mdgate1; u=tls; a=p256; h="]];
    assert!(parse_key_rrset(&key).unwrap().unwrap().is_revoked());
}

#[test]
fn long_records_split_into_strings() {
    let text = "x".repeat(600);
    let strings = split_strings(&text);
    assert_eq!(
        strings.iter().map(String::len).collect::<Vec<_>>(),
        vec![255, 255, 90]
    );
    assert_eq!(concat_strings(&strings), text.as_bytes());
    assert_eq!(split_strings(""), vec![String::new()]);
    let line = txt_zone_line("_mdgate.a.example.org", 300, "v=mdgate1; s=\"a\"");
    assert_eq!(
        line,
        r#"_mdgate.a.example.org. 300 IN TXT "v=mdgate1; s=\"a\"""#
    );
}

#[test]
fn names_and_tlsa() {
    assert_eq!(index_name("a.example.org"), "_mdgate.a.example.org.");
    assert_eq!(index_name("a.example.org."), "_mdgate.a.example.org.");
    assert_eq!(
        key_name(&sel("tls1"), "a.example.org"),
        "tls1._mdgate.a.example.org."
    );
    assert_eq!(
        tlsa_name(8443, "a.example.org"),
        "_8443._tcp.a.example.org."
    );
    let tlsa = Tlsa::dane_ee([0xab; 32]);
    assert_eq!(tlsa.to_string(), format!("3 1 1 {}", "ab".repeat(32)));
    assert_eq!(tlsa.dane_ee_spki_sha256(), Some([0xab; 32]));
    assert_eq!(
        Tlsa {
            usage: 2,
            ..tlsa.clone()
        }
        .dane_ee_spki_sha256(),
        None
    );
    assert_eq!(
        Tlsa {
            data: vec![1; 31],
            ..tlsa.clone()
        }
        .dane_ee_spki_sha256(),
        None
    );
    assert_eq!(
        tlsa_zone_line("_8443._tcp.a.example.org", 60, &tlsa),
        format!(
            "_8443._tcp.a.example.org. 60 IN TLSA 3 1 1 {}",
            "ab".repeat(32)
        )
    );
}

#[test]
fn errors_quote_little_and_escape() {
    let long = format!("v=mdgate1; s={}\u{7}", "q".repeat(100));
    let e = IndexRecord::parse(&long).unwrap_err();
    let message = e.to_string();
    assert!(message.len() < 200, "{message}");
    let e = IndexRecord::parse("v=mdgate1; s=a\u{1b}[31m").unwrap_err();
    assert!(!e.to_string().contains('\u{1b}'), "{e}");
}

// ------------------------------------------------------------- properties

fn selector_strategy() -> impl Strategy<Value = Selector> {
    "[a-z0-9][a-z0-9-]{0,62}".prop_map(|s| Selector::parse(&s).expect("generated selector"))
}

fn index_strategy() -> impl Strategy<Value = IndexRecord> {
    (
        proptest::collection::btree_set(selector_strategy(), 1..=MAX_SELECTORS),
        1u16..,
        1u16..,
    )
        .prop_map(|(selectors, fp, wp)| IndexRecord {
            selectors: selectors.into_iter().collect(),
            federation_port: fp,
            web_port: wp,
        })
}

fn key_strategy() -> impl Strategy<Value = KeyRecord> {
    let ed = ed25519_spki();
    let p = p256_spki();
    prop_oneof![
        Just(KeyRecord {
            usage: KeyUse::Sig,
            algorithm: KeyAlgorithm::Ed25519,
            material: KeyMaterial::Spki(ed.clone())
        }),
        Just(KeyRecord {
            usage: KeyUse::Sig,
            algorithm: KeyAlgorithm::Ed25519,
            material: KeyMaterial::Revoked
        }),
        Just(KeyRecord {
            usage: KeyUse::Tls,
            algorithm: KeyAlgorithm::P256,
            material: KeyMaterial::Spki(p)
        }),
        Just(KeyRecord {
            usage: KeyUse::Tls,
            algorithm: KeyAlgorithm::Ed25519,
            material: KeyMaterial::Spki(ed)
        }),
        any::<[u8; 32]>().prop_map(|h| KeyRecord {
            usage: KeyUse::Tls,
            algorithm: KeyAlgorithm::P256,
            material: KeyMaterial::SpkiSha256(h)
        }),
        Just(KeyRecord {
            usage: KeyUse::Tls,
            algorithm: KeyAlgorithm::P256,
            material: KeyMaterial::Revoked
        }),
    ]
}

/// Splits `text` into TXT strings at arbitrary points.
fn chunks(text: &str, cuts: &[usize]) -> Vec<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut out = Vec::new();
    let mut last = 0;
    for p in points {
        out.push(bytes[last..p].to_vec());
        last = p;
    }
    out.push(bytes[last..].to_vec());
    out
}

proptest! {
    #[test]
    fn index_round_trips(index in index_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let text = index.to_string();
        prop_assert_eq!(IndexRecord::parse(&text), Ok(index.clone()));
        let rrset = vec![chunks(&text, &cuts), b"v=spf1 -all".to_vec().into_iter().map(|b| vec![b]).collect()];
        prop_assert_eq!(parse_index_rrset(&rrset), Ok(Some(index)));
    }

    #[test]
    fn key_round_trips(key in key_strategy(), cuts in proptest::collection::vec(any::<usize>(), 0..4)) {
        let text = key.to_string();
        prop_assert_eq!(KeyRecord::parse(&text), Ok(key.clone()));
        prop_assert_eq!(parse_key_rrset(&[chunks(&text, &cuts)]), Ok(Some(key)));
    }

    #[test]
    fn parsers_never_panic(records in proptest::collection::vec(proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4), 0..4)) {
        let _ = parse_index_rrset(&records);
        let _ = parse_key_rrset(&records);
        for record in &records {
            let text = String::from_utf8_lossy(&concat_strings(record)).into_owned();
            let _ = IndexRecord::parse(&text);
            let _ = KeyRecord::parse(&text);
        }
    }

    #[test]
    fn near_valid_text_never_panics(prefix in "v=mdgate1;[ -~]{0,80}") {
        // Printable text that starts like ours reaches the deep checks.
        let _ = IndexRecord::parse(&prefix);
        let _ = KeyRecord::parse(&prefix);
        let _ = parse_key_rrset(&[vec![prefix.as_bytes()]]);
    }
}
