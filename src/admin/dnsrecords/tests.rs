//! The zone text parses back into the records it was made from; the
//! verdicts on next keys; the comparison of published and held keys.

use super::*;

const FQDN: &str = "server1.example.org";

fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("selector")
}

fn tls_spki() -> Vec<u8> {
    rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("key")
        .public_key_der()
}

fn sig_record() -> KeyRecord {
    let key = crate::token::SigningKey::generate("s").expect("key");
    KeyRecord {
        usage: KeyUse::Sig,
        algorithm: KeyAlgorithm::Ed25519,
        material: KeyMaterial::Spki(key.spki_der().to_vec()),
    }
}

fn plan_with(kept: Vec<Selector>) -> ZonePlan {
    let tls = tls_spki();
    let next_tls = tls_spki();
    let keys = vec![
        PlannedKey {
            selector: sel("tls1"),
            record: KeyRecord::tls_hash(KeyAlgorithm::P256, &tls),
            role: KeyRole::Current,
        },
        PlannedKey {
            selector: sel("sig1"),
            record: sig_record(),
            role: KeyRole::Current,
        },
        PlannedKey {
            selector: sel("tls2"),
            record: KeyRecord::tls_hash(KeyAlgorithm::P256, &next_tls),
            role: KeyRole::Next,
        },
    ];
    let tlsa = keys
        .iter()
        .filter_map(|k| {
            Some(PlannedTlsa {
                selector: k.selector.clone(),
                tlsa: Tlsa::dane_ee(
                    k.record
                        .spki_sha256()
                        .filter(|_| k.record.usage == KeyUse::Tls)?,
                ),
                role: k.role,
            })
        })
        .collect();
    let selectors = keys
        .iter()
        .map(|k| k.selector.clone())
        .chain(kept.iter().cloned())
        .collect();
    ZonePlan {
        fqdn: FQDN.into(),
        ttl: 300,
        index: IndexRecord {
            selectors,
            federation_port: 8443,
            web_port: 443,
        },
        keys,
        kept,
        tlsa,
        warnings: Vec::new(),
    }
}

/// A zone line: name, TTL, class, type, and the rest (TXT strings
/// unquoted, or the TLSA presentation).
#[derive(Debug)]
struct Line {
    name: String,
    ttl: u32,
    kind: String,
    strings: Vec<String>,
    rest: String,
}

/// Parses the record lines of the zone text the way a zone loader does for
/// these simple records: comments dropped, quoted strings kept apart.
fn parse_zone(text: &str) -> Vec<Line> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with(';') && !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.splitn(5, ' ');
            let name = fields.next().unwrap().to_owned();
            let ttl = fields.next().unwrap().parse().unwrap();
            assert_eq!(fields.next(), Some("IN"));
            let kind = fields.next().unwrap().to_owned();
            let rest = fields.next().unwrap().to_owned();
            let mut strings = Vec::new();
            if kind == "TXT" {
                let mut chars = rest.chars();
                while let Some(c) = chars.next() {
                    if c != '"' {
                        assert_eq!(c, ' ', "only spaces between strings");
                        continue;
                    }
                    let mut s = String::new();
                    loop {
                        match chars.next().expect("closing quote") {
                            '"' => break,
                            '\\' => s.push(chars.next().unwrap()),
                            c => s.push(c),
                        }
                    }
                    strings.push(s);
                }
            }
            Line {
                name,
                ttl,
                kind,
                strings,
                rest,
            }
        })
        .collect()
}

fn txt_at<'a>(lines: &'a [Line], name: &str) -> Vec<&'a Line> {
    lines
        .iter()
        .filter(|l| l.name == name && l.kind == "TXT")
        .collect()
}

#[test]
fn zone_text_parses_back_into_the_planned_records() {
    let plan = plan_with(Vec::new());
    let text = plan.zone_text();
    let lines = parse_zone(&text);
    assert!(lines.iter().all(|l| l.ttl == 300));

    let index = txt_at(&lines, "_mdgate.server1.example.org.");
    assert_eq!(index.len(), 1);
    let parsed = record::parse_index_rrset(&[index[0].strings.clone()])
        .unwrap()
        .unwrap();
    assert_eq!(parsed, plan.index);

    for key in &plan.keys {
        let name = format!("{}._mdgate.server1.example.org.", key.selector);
        let found = txt_at(&lines, &name);
        assert_eq!(found.len(), 1, "{name}");
        let parsed = record::parse_key_rrset(&[found[0].strings.clone()])
            .unwrap()
            .unwrap();
        assert_eq!(parsed, key.record, "{name}");
    }

    let tlsa: Vec<&Line> = lines.iter().filter(|l| l.kind == "TLSA").collect();
    assert_eq!(tlsa.len(), 2);
    for (line, planned) in tlsa.iter().zip(&plan.tlsa) {
        assert_eq!(line.name, "_8443._tcp.server1.example.org.");
        assert_eq!(line.rest, planned.tlsa.to_string());
    }
    assert!(
        text.contains("NEXT KEYS: PUBLISH NOW, USE LATER"),
        "next keys are marked:\n{text}"
    );
    assert!(text.contains("; tls2 (next key: publish now, use later)"));
}

#[test]
fn long_index_strings_are_split_at_255_bytes() {
    // Thirteen kept selectors of 39 characters make an index of ~560 bytes.
    let kept: Vec<Selector> = (0..13)
        .map(|i| sel(&format!("retired-{i:02}-{}", "x".repeat(28))))
        .collect();
    let plan = plan_with(kept);
    let text = plan.zone_text();
    let lines = parse_zone(&text);
    let index = txt_at(&lines, "_mdgate.server1.example.org.");
    let strings = &index[0].strings;
    assert!(strings.len() >= 3, "{strings:?}");
    assert!(strings.iter().all(|s| s.len() <= 255));
    assert!(strings[..strings.len() - 1].iter().all(|s| s.len() == 255));
    let parsed = record::parse_index_rrset(std::slice::from_ref(strings))
        .unwrap()
        .unwrap();
    assert_eq!(parsed, plan.index);
    assert_eq!(parsed.selectors.len(), 16);
    assert!(text.contains("Kept in the index"));
}

#[test]
fn published_records_are_compared_by_key() {
    let spki = tls_spki();
    let ours = KeyRecord::tls_hash(KeyAlgorithm::P256, &spki);
    // The same key published as k= is the same key.
    let as_k = KeyRecord {
        usage: KeyUse::Tls,
        algorithm: KeyAlgorithm::P256,
        material: KeyMaterial::Spki(spki.clone()),
    };
    assert!(matches!(compare_record(&ours, &as_k), Published::Same));
    let other = KeyRecord::tls_hash(KeyAlgorithm::P256, &tls_spki());
    assert!(matches!(
        compare_record(&ours, &other),
        Published::Different(_)
    ));
    let revoked = KeyRecord {
        material: KeyMaterial::Revoked,
        ..ours.clone()
    };
    assert!(matches!(
        compare_record(&ours, &revoked),
        Published::Revoked
    ));
    assert!(matches!(
        compare_record(&ours, &sig_record()),
        Published::Different(why) if why.contains("u=sig")
    ));
}

#[test]
fn next_keys_are_safe_to_switch_only_when_visible() {
    let step = LookupStep {
        name: "_mdgate.server1.example.org.".into(),
        record_type: "TXT",
        outcome: StepOutcome::Ok,
        security: Some(Security::Insecure),
        ttl: Some(300),
        elapsed: std::time::Duration::ZERO,
        records: Vec::new(),
    };
    let visible = next_verdict(Check::pass("next.key.tls2", "visible"), Some(&step));
    assert_eq!(visible.status, Status::Pass);
    assert!(visible
        .reason
        .starts_with("visible: safe to switch once 300 s"));
    let missing = next_verdict(Check::fail("next.key.tls2", "NXDOMAIN"), Some(&step));
    assert_eq!(missing.status, Status::Fail);
    assert!(missing.reason.starts_with("not visible yet: do not switch"));
    // A TLSA record that peers do not use yet does not block the switch.
    let warned = next_verdict(Check::warn("next.tlsa.tls2", "other keys"), Some(&step));
    assert_eq!(warned.status, Status::Warn);
}
