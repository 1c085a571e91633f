//! Tests for the record bundle: a large round trip fed in random pieces,
//! and each way a bundle or its manifest is refused, with its own reason.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{json, Value};

use super::*;

const FQDN: &str = "records.example.org";
const OTHER: &str = "clinic.example.net";
const T0: u64 = 1_795_500_000;
/// sha256 of nothing.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn now() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(T0)
}

fn key() -> SigningKey {
    SigningKey::generate("sel1").expect("generate")
}

fn patient_json() -> Value {
    json!({"id":7,"creationDate":1_611_000_000_000_i64,"updateDate":1_611_000_000_000_i64,
        "username":"0790000000","userRole":"ROLE_PATIENT","telephoneNumber":"0790000000",
        "firstName":"Ali","lastName":"X",
        "profile":{"id":8,"creationDate":1,"updateDate":2,"age":40,"height":175.0,"weight":80.5,
            "sex":"Male","g6pdDeficiency":false,"respiratoryDiseases":false,"diabetes":true,
            "cardiovascularDiseases":false,"obesity":false,"medications":["metformin"]}})
}

fn vitals_json(i: u64) -> Value {
    json!({"id":1000 + i,"creationDate":1_611_000_000_000_u64 + i * 60_000,
        "updateDate":1_611_000_000_000_u64 + i * 60_000,"patient":patient_json(),
        "heartBeatsPerMinute":72.0,"systolicPressure":120.0,"diastolicPressure":80.0,
        "bloodOxygenation":97.0,"breathingRate":if i.is_multiple_of(7) { Value::Null } else { json!(16.0) }})
}

fn question_json(id: u64) -> Value {
    json!({"id":id,"creationDate":5,"updateDate":6,"question":"How is your fever?","type":"Scale",
        "answered":true,"answeredOn":7,"recurrance":[{"hourOfDay":9,"minuteOfHour":0}],
        "startDate":1_611_014_400_000_i64,"endDate":1_611_619_200_000_i64,"recurring":true})
}

/// A record as the upstream gives it: (part, element bytes).
fn record(vitals: u64) -> Vec<(Part, Vec<u8>)> {
    let bytes = |v: Value| serde_json::to_vec(&v).expect("serialize");
    let patient = patient_json();
    let mut out = vec![
        (Part::Patient, bytes(patient.clone())),
        (Part::Profile, bytes(patient["profile"].clone())),
    ];
    out.extend((0..vitals).map(|i| (Part::Vitals, bytes(vitals_json(i)))));
    out.push((
        Part::Symptom,
        bytes(json!({"id":50,"creationDate":3,"updateDate":4,"symptomCode":"A03",
            "patient":patient,"replies":[],"note":"since \"yesterday\"\n","archived":false,"archiveDate":null})),
    ));
    out.push((
        Part::Answer,
        bytes(
            json!({"id":40,"creationDate":8,"updateDate":9,"question":question_json(31),
            "replies":[],"answer":"yes","archived":false,"archiveDate":null}),
        ),
    ));
    out.push((Part::Question, bytes(question_json(31))));
    out
}

struct Made {
    bytes: Vec<u8>,
    manifest: Manifest,
    transfer: Uuid,
    fid: Uuid,
}

/// Writes a bundle of `vitals` measurements, signed by `key` as `issuer`.
fn make(key: &SigningKey, issuer: &str, fid: Uuid, transfer: Uuid, vitals: u64) -> Made {
    let header = BundleHeader {
        transfer,
        source: format!("{fid}@{issuer}"),
        created: 1_795_500_000_000,
    };
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    for (part, element) in record(vitals) {
        writer.push(part, &element, &mut out).expect("push");
    }
    let manifest = writer
        .finish(key, issuer, fid, now(), &mut out)
        .expect("finish");
    Made {
        bytes: out,
        manifest,
        transfer,
        fid,
    }
}

fn made(vitals: u64) -> (SigningKey, Made) {
    let key = key();
    let made = make(&key, FQDN, Uuid::new_v4(), Uuid::new_v4(), vitals);
    (key, made)
}

/// Reads `bytes` in pieces of random sizes; returns the records and the
/// read bundle.
fn read(bytes: &[u8], seed: u64) -> Result<(Vec<(Part, Value)>, ReadBundle), BundleError> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut reader = BundleReader::new(64 * 1024);
    let mut records = Vec::new();
    let mut headers = 0;
    let mut rest = bytes;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=rest.len().min(5000));
        let (chunk, tail) = rest.split_at(n);
        reader.feed(chunk, &mut |item| {
            match item {
                Item::Header(_) => headers += 1,
                Item::Record { part, data } => records.push((
                    part,
                    serde_json::from_str(data.get()).expect("record data parses"),
                )),
            }
            Ok(())
        })?;
        rest = tail;
    }
    let read = reader.finish()?;
    assert_eq!(headers, 1);
    Ok((records, read))
}

/// Reads and verifies as the importer would, expecting `transfer` from
/// `FQDN`.
fn accept(bytes: &[u8], key: &VerifyingKey, transfer: Uuid) -> Result<Manifest, BundleError> {
    let (_, read) = read(bytes, 7)?;
    read.verify(key, FQDN, transfer, now())
}

/// The bundle's lines, newlines kept.
fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|&b| b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[test]
fn round_trip_of_thousands_of_vitals_in_random_pieces() {
    let (key, made) = made(3000);
    for seed in 0..4 {
        let (records, read) = read(&made.bytes, seed).expect("read");
        assert_eq!(records.len(), 3000 + 5);
        let (iss, kid) = read.signer().expect("signer");
        assert_eq!((iss.as_str(), kid.as_str()), (FQDN, "sel1"));
        let manifest = read
            .verify(key.verifying_key(), FQDN, made.transfer, now())
            .expect("verify");
        assert_eq!(manifest, made.manifest);
        assert_eq!(read.computed, made.manifest.parts);
        assert_eq!(read.header.transfer, made.transfer);
        assert_eq!(read.header.source, format!("{}@{FQDN}", made.fid));
        // The embedded copies are gone, the rest is as the upstream gave it.
        assert_eq!(records[0].0, Part::Patient);
        assert!(records[0].1.get("profile").is_none());
        assert_eq!(records[0].1["firstName"], "Ali");
        assert_eq!(records[1].0, Part::Profile);
        assert_eq!(records[1].1, patient_json()["profile"]);
        let mut expected = vitals_json(2999);
        expected.as_object_mut().expect("object").remove("patient");
        assert_eq!(records[3001], (Part::Vitals, expected));
        assert!(records[3002].1.get("patient").is_none());
        assert_eq!(records[3002].1["note"], "since \"yesterday\"\n");
        assert_eq!(records[3003].1["question"]["id"], 31);
        assert_eq!(records[3004].0, Part::Question);
    }
    let counts: Vec<(Part, u64)> = made
        .manifest
        .parts
        .iter()
        .map(|d| (d.part, d.count))
        .collect();
    assert_eq!(
        counts,
        [
            (Part::Patient, 1),
            (Part::Profile, 1),
            (Part::Vitals, 3000),
            (Part::Symptom, 1),
            (Part::Answer, 1),
            (Part::Question, 1)
        ]
    );
    assert_eq!(made.manifest.exp - made.manifest.iat, 30 * 24 * 3600);
    let manifest_line = lines(&made.bytes).pop().expect("a line");
    assert_eq!(
        made.manifest.bytes,
        (made.bytes.len() - manifest_line.len()) as u64
    );
}

#[test]
fn digests_are_over_the_exact_line_bytes() {
    let (_, made) = made(2);
    let all = lines(&made.bytes);
    let header = &all[0];
    assert!(header.starts_with(
        format!(
            r#"{{"t":"header","format":"mdgate-record/1","transfer":"{}""#,
            made.transfer
        )
        .as_bytes()
    ));
    let vitals: Vec<u8> = all[3..5].concat();
    assert_eq!(
        made.manifest.parts[2].sha256,
        hex::encode(Sha256::digest(&vitals))
    );
    let body: Vec<u8> = all[..all.len() - 1].concat();
    assert_eq!(made.manifest.sha256, hex::encode(Sha256::digest(&body)));
    // Values are kept byte for byte, in the upstream's key order; only the
    // embedded patient goes.
    let header = BundleHeader {
        transfer: made.transfer,
        source: format!("{}@{FQDN}", made.fid),
        created: 1,
    };
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    let patient = br#"{"id":7, "firstName":"Ali","profile":{"id":8},"lastName":"X"}"#;
    writer
        .push(Part::Patient, patient, &mut out)
        .expect("patient");
    writer
        .push(Part::Profile, br#" {"id":8,"height":175.0}"#, &mut out)
        .expect("profile");
    let vitals = br#"{"id":70,"patient":{"id":7,"profile":{}},"heartBeatsPerMinute":72.0,"systolicPressure":1.20e2,"breathingRate":null}"#;
    writer.push(Part::Vitals, vitals, &mut out).expect("vitals");
    let text = String::from_utf8(out).expect("utf-8");
    let written: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(
        written,
        [
            r#"{"t":"patient","data":{"id":7,"firstName":"Ali","lastName":"X"}}"#,
            r#"{"t":"profile","data":{"id":8,"height":175.0}}"#,
            r#"{"t":"vitals","data":{"id":70,"heartBeatsPerMinute":72.0,"systolicPressure":1.20e2,"breathingRate":null}}"#,
        ]
    );
    let (_, empty) = made_without_optional_parts();
    for digest in &empty.manifest.parts[2..] {
        assert_eq!((digest.count, digest.sha256.as_str()), (0, EMPTY_SHA256));
    }
}

fn made_without_optional_parts() -> (SigningKey, Made) {
    let key = key();
    let fid = Uuid::new_v4();
    let transfer = Uuid::new_v4();
    let header = BundleHeader {
        transfer,
        source: format!("{fid}@{FQDN}"),
        created: 1,
    };
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    let patient = serde_json::to_vec(&patient_json()).expect("serialize");
    let profile = serde_json::to_vec(&patient_json()["profile"]).expect("serialize");
    writer
        .push(Part::Patient, &patient, &mut out)
        .expect("patient");
    writer
        .push(Part::Profile, &profile, &mut out)
        .expect("profile");
    let manifest = writer
        .finish(&key, FQDN, fid, now(), &mut out)
        .expect("finish");
    let (_, read) = read(&out, 1).expect("read");
    read.verify(key.verifying_key(), FQDN, transfer, now())
        .expect("a bundle with only the patient and profile verifies");
    (
        key,
        Made {
            bytes: out,
            manifest,
            transfer,
            fid,
        },
    )
}

#[test]
fn a_pretty_printed_element_is_written_on_one_line() {
    let (_, made) = made(0);
    let header = BundleHeader {
        transfer: made.transfer,
        source: format!("{}@{FQDN}", made.fid),
        created: 1,
    };
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    let pretty = serde_json::to_vec_pretty(&patient_json()).expect("serialize");
    writer
        .push(Part::Patient, &pretty, &mut out)
        .expect("patient");
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 2);
}

/// The refusal of a bundle made by `tamper` from a good one.
fn refusal(tamper: impl FnOnce(&Made) -> (Vec<u8>, Uuid)) -> BundleError {
    let (key, made) = made(20);
    let (bytes, transfer) = tamper(&made);
    accept(&bytes, key.verifying_key(), transfer).expect_err("refused")
}

#[test]
fn an_altered_vitals_line_is_a_manifest_mismatch() {
    let error = refusal(|made| {
        let mut all = lines(&made.bytes);
        let line = String::from_utf8(all[7].clone()).expect("utf-8");
        assert!(line.starts_with(r#"{"t":"vitals""#));
        all[7] = line
            .replace("\"systolicPressure\":120.0", "\"systolicPressure\":180.0")
            .into_bytes();
        (all.concat(), made.transfer)
    });
    assert_eq!(error.reason(), "manifest_mismatch");
    assert!(matches!(
        error,
        BundleError::Mismatch {
            part: Some(Part::Vitals),
            what: "sha256",
            ..
        }
    ));
    assert!(error.to_string().contains("vitals"), "{error}");
}

#[test]
fn a_missing_line_is_a_manifest_mismatch() {
    let error = refusal(|made| {
        let mut all = lines(&made.bytes);
        all.remove(10);
        (all.concat(), made.transfer)
    });
    assert_eq!(error.reason(), "manifest_mismatch");
    assert!(matches!(
        error,
        BundleError::Mismatch {
            part: Some(Part::Vitals),
            what: "count",
            ..
        }
    ));
}

#[test]
fn a_forged_signature_is_refused() {
    let (key, made) = made(3);
    // Same selector, same claims shape, another private key.
    let forger = SigningKey::generate("sel1").expect("generate");
    let forged = make(&forger, FQDN, made.fid, made.transfer, 3);
    let error = accept(&forged.bytes, key.verifying_key(), made.transfer).expect_err("forged");
    assert_eq!(error.reason(), "manifest_signature");
    // A manifest line that is not a JWS at all.
    let mut all = lines(&made.bytes);
    *all.last_mut().expect("line") = b"{\"t\":\"manifest\",\"jws\":\"a.b.c\"}\n".to_vec();
    let error = accept(&all.concat(), key.verifying_key(), made.transfer).expect_err("junk");
    assert_eq!(error.reason(), "manifest_signature");
}

#[test]
fn a_manifest_from_another_issuer_is_refused() {
    let other_key = SigningKey::generate("sel1").expect("generate");
    let transfer = Uuid::new_v4();
    let other = make(&other_key, OTHER, Uuid::new_v4(), transfer, 3);
    let (_, read) = read(&other.bytes, 3).expect("read");
    let (iss, _) = read.signer().expect("signer");
    assert_eq!(iss, OTHER);
    // The importer fetched the key that `iss` names, but expected FQDN.
    let error = read
        .verify(other_key.verifying_key(), FQDN, transfer, now())
        .expect_err("other issuer");
    assert_eq!(error.reason(), "manifest_issuer");
}

#[test]
fn a_manifest_copied_from_another_transfer_is_refused() {
    let key = key();
    let fid = Uuid::new_v4();
    let a = make(&key, FQDN, fid, Uuid::new_v4(), 3);
    let b = make(&key, FQDN, fid, Uuid::new_v4(), 3);
    let mut spliced = lines(&a.bytes);
    spliced.pop();
    spliced.push(lines(&b.bytes).pop().expect("manifest line"));
    let error = accept(&spliced.concat(), key.verifying_key(), a.transfer).expect_err("spliced");
    assert_eq!(error.reason(), "manifest_transfer");
    // A genuine bundle, but not the transfer the importer is waiting for.
    let error = accept(&b.bytes, key.verifying_key(), a.transfer).expect_err("other transfer");
    assert_eq!(error.reason(), "manifest_transfer");
}

#[test]
fn an_expired_manifest_is_refused() {
    let (key, made) = made(1);
    let (_, read) = read(&made.bytes, 2).expect("read");
    let later = now() + MANIFEST_LIFETIME + Duration::from_secs(3600);
    let error = read
        .verify(key.verifying_key(), FQDN, made.transfer, later)
        .expect_err("expired");
    assert_eq!(error.reason(), "manifest_expired");
}

#[test]
fn parts_out_of_order_are_refused_by_writer_and_reader() {
    let (_, made) = made(2);
    let header = BundleHeader {
        transfer: made.transfer,
        source: format!("{}@{FQDN}", made.fid),
        created: 1,
    };
    let elements = record(2);
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    writer
        .push(Part::Patient, &elements[0].1, &mut out)
        .expect("patient");
    writer
        .push(Part::Profile, &elements[1].1, &mut out)
        .expect("profile");
    writer
        .push(Part::Symptom, &elements[4].1, &mut out)
        .expect("symptom");
    let before = out.len();
    let error = writer
        .push(Part::Vitals, &elements[2].1, &mut out)
        .expect_err("vitals after symptom");
    assert!(matches!(
        error,
        BundleError::Order {
            part: Part::Vitals,
            after: Part::Symptom
        }
    ));
    assert_eq!(error.reason(), "bundle_format");
    assert_eq!(out.len(), before, "nothing written on refusal");

    // The reader refuses a stream with a vitals line after the symptom.
    let mut all = lines(&made.bytes);
    let vitals = all.remove(3);
    all.insert(5, vitals);
    let error = read(&all.concat(), 4).expect_err("out of order");
    assert!(matches!(error, BundleError::Order { .. }), "{error}");
    assert_eq!(error.reason(), "bundle_format");
}

#[test]
fn the_refusals_have_distinct_reasons() {
    let reasons: BTreeSet<&str> = [
        refusal(|m| {
            let mut all = lines(&m.bytes);
            all[4] = String::from_utf8(all[4].clone())
                .expect("utf-8")
                .replace("80.0", "81.0")
                .into_bytes();
            (all.concat(), m.transfer)
        }),
        refusal(|m| (m.bytes.clone(), Uuid::new_v4())),
        refusal(|m| {
            let mut all = lines(&m.bytes);
            all.swap(22, 23);
            (all.concat(), m.transfer)
        }),
    ]
    .iter()
    .map(BundleError::reason)
    .collect();
    assert_eq!(
        reasons,
        BTreeSet::from(["bundle_format", "manifest_mismatch", "manifest_transfer"])
    );
}

#[test]
fn the_writer_refuses_bad_elements_and_incomplete_records() {
    let fid = Uuid::new_v4();
    let header = BundleHeader {
        transfer: Uuid::new_v4(),
        source: format!("{fid}@{FQDN}"),
        created: 1,
    };
    let patient = serde_json::to_vec(&patient_json()).expect("serialize");
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    for bad in [
        &b"[1]"[..],
        b"12",
        b"\"x\"",
        b"{\"a\":1",
        b"{\"a\":1,\"a\":2}",
        b"{} {}",
    ] {
        let error = writer
            .push(Part::Patient, bad, &mut out)
            .expect_err("bad element");
        assert!(matches!(error, BundleError::Element { .. }), "{error}");
    }
    let error = writer
        .push(Part::Vitals, b"{}", &mut out)
        .expect_err("no patient");
    assert!(matches!(error, BundleError::Missing(Part::Patient)));
    writer
        .push(Part::Patient, &patient, &mut out)
        .expect("patient");
    let error = writer
        .push(Part::Patient, &patient, &mut out)
        .expect_err("second");
    assert!(matches!(error, BundleError::Duplicate(Part::Patient)));
    let error = writer
        .finish(&key(), FQDN, fid, now(), &mut out)
        .expect_err("no profile");
    assert!(matches!(error, BundleError::Missing(Part::Profile)));
    assert_eq!(error.reason(), "bundle_format");

    // The header's source must be the subject at the issuer.
    let mut out = Vec::new();
    let mut writer = BundleWriter::new(&header, &mut out);
    writer
        .push(Part::Patient, &patient, &mut out)
        .expect("patient");
    writer
        .push(Part::Profile, b"{}", &mut out)
        .expect("profile");
    let error = writer
        .finish(&key(), OTHER, fid, now(), &mut out)
        .expect_err("another issuer");
    assert!(matches!(error, BundleError::Source { .. }));
}

#[test]
fn the_reader_refuses_malformed_bundles() {
    let (_, made) = made(2);
    let all = lines(&made.bytes);
    let manifest = all.last().expect("line").clone();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", all[1..].concat()),
        ("two headers", [&all[..1], &all[..]].concat().concat()),
        (
            "unknown tag",
            [
                &all[..3],
                &[b"{\"t\":\"allergy\",\"data\":{}}\n".to_vec()][..],
                &all[3..],
            ]
            .concat()
            .concat(),
        ),
        (
            "extra field",
            [
                &all[..3],
                &[b"{\"t\":\"vitals\",\"data\":{},\"x\":1}\n".to_vec()][..],
                &all[3..],
            ]
            .concat()
            .concat(),
        ),
        (
            "data not an object",
            [
                &all[..3],
                &[b"{\"t\":\"vitals\",\"data\":[]}\n".to_vec()][..],
                &all[3..],
            ]
            .concat()
            .concat(),
        ),
        (
            "not JSON",
            [&all[..3], &[b"vitals\n".to_vec()][..], &all[3..]]
                .concat()
                .concat(),
        ),
        (
            "empty line",
            [&all[..3], &[b"\n".to_vec()][..], &all[3..]]
                .concat()
                .concat(),
        ),
        ("second profile", [&all[..3], &all[2..]].concat().concat()),
        ("no manifest", all[..all.len() - 1].concat()),
        (
            "data after manifest",
            [&all[..], &all[3..4]].concat().concat(),
        ),
        ("truncated", made.bytes[..made.bytes.len() - 1].to_vec()),
        (
            "manifest before profile",
            [&all[..2], &[manifest]].concat().concat(),
        ),
        (
            "wrong format",
            String::from_utf8(made.bytes.clone())
                .expect("utf-8")
                .replacen("mdgate-record/1", "mdgate-record/2", 1)
                .into_bytes(),
        ),
    ];
    for (name, bytes) in cases {
        let error = read(&bytes, 5).expect_err(name);
        assert_eq!(error.reason(), "bundle_format", "{name}: {error}");
    }
    // A line over the limit, whether it arrives whole or in pieces.
    let mut reader = BundleReader::new(100);
    let error = reader
        .feed(&made.bytes, &mut |_| Ok(()))
        .expect_err("line too long");
    assert!(
        matches!(
            error,
            BundleError::LineTooLong {
                line: 1,
                limit: 100
            }
        ),
        "{error}"
    );
    assert!(matches!(
        reader.feed(b"\n", &mut |_| Ok(())),
        Err(BundleError::Refused)
    ));
    let mut reader = BundleReader::new(100);
    let mut error = None;
    for chunk in made.bytes.chunks(30) {
        if let Err(e) = reader.feed(chunk, &mut |_| Ok(())) {
            error = Some(e);
            break;
        }
    }
    assert!(matches!(error, Some(BundleError::LineTooLong { .. })));
}

#[test]
fn callback_errors_stop_the_reader() {
    let (_, made) = made(2);
    let mut reader = BundleReader::new(1 << 16);
    let error = reader
        .feed(&made.bytes, &mut |item| match item {
            Item::Record {
                part: Part::Vitals, ..
            } => Err(BundleError::Missing(Part::Vitals)),
            _ => Ok(()),
        })
        .expect_err("refused by the callback");
    assert!(matches!(error, BundleError::Missing(Part::Vitals)));
    assert!(matches!(reader.finish(), Err(BundleError::Refused)));
}
