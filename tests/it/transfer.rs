//! The patient transfer across two complete servers (two emulators, two
//! mdgates, real DNS, real mutual TLS), driven through
//! `federation::transfer`, the service the pages call.

use std::time::Duration;

use mdgate::demo::testbed::{Site, Testbed};
use mdgate::federation::access::Access;
use mdgate::federation::transfer::{self, HandOver};
use mdgate::policy::Role;
use mdgate::transfer::seal::SealKey;
use mdgate::upstream::{NewSymptom, ProfileUpdate, Secret, SignedInUser, Vitals};
use uuid::Uuid;

fn access(site: &Site) -> Access {
    site.running()
        .access
        .clone()
        .expect("access flow configured")
}

async fn sign_in(site: &Site, who: &mdgate::demo::testbed::Login) -> SignedInUser {
    access(site)
        .sign_in(&who.username, Secret::new(who.password.clone()))
        .await
        .expect("sign-in")
}

fn upstream_of(site: &Site) -> mdgate::upstream::AccessMd {
    mdgate::upstream::AccessMd::new(&mdgate::config::load(&site.config_path).unwrap().upstream)
}

/// A record on `site`'s patient: a profile, `vitals` measurements, two
/// symptoms.
async fn fill_record(site: &Site, patient: &SignedInUser, vitals: usize) {
    let session = patient.patient_session(&upstream_of(site)).unwrap();
    session
        .replace_profile(&ProfileUpdate {
            age: 47,
            height: 171.0,
            weight: 68.5,
            diabetes: true,
            medications: vec!["metformin 500 mg".to_owned()],
            ..ProfileUpdate::default()
        })
        .await
        .unwrap();
    for code in ["A03", "R05"] {
        session
            .report_symptom(&NewSymptom {
                symptom_code: code.to_owned(),
                note: Some(format!("note {code}")),
            })
            .await
            .unwrap();
    }
    for i in 0..vitals {
        session
            .report_vitals(&Vitals {
                heart_beats_per_minute: 60.0 + (i % 30) as f64,
                systolic_pressure: 120.0,
                diastolic_pressure: 80.0,
                blood_oxygenation: 97.0,
                breathing_rate: 14.0,
            })
            .await
            .unwrap();
    }
}

/// The moved patient's record on `site`'s upstream, as the site's doctor
/// reads it after the patient links to them: (vitals, symptoms).
async fn record_on(
    site: &Site,
    username: &str,
) -> (
    Vec<mdgate::upstream::VitalsMeasurement>,
    Vec<mdgate::upstream::Symptom>,
) {
    use mdgate::upstream::ops;
    let up = upstream_of(site);
    let patient = access(site)
        .sign_in(username, Secret::new("new-home-pass".to_owned()))
        .await
        .unwrap();
    let code = patient
        .patient_session(&up)
        .unwrap()
        .mint_code()
        .await
        .unwrap();
    let doctor = sign_in(site, &site.doctor).await;
    let consume = ops::consume_code(&code.code).unwrap();
    let reply = up
        .send(consume.request(), Some(&doctor.session))
        .await
        .unwrap();
    consume.decode(&reply).unwrap();
    let vitals = ops::patient_vitals(patient.upstream_id);
    let reply = up
        .send(vitals.request(), Some(&doctor.session))
        .await
        .unwrap();
    let symptoms = ops::patient_symptoms(patient.upstream_id);
    let sreply = up
        .send(symptoms.request(), Some(&doctor.session))
        .await
        .unwrap();
    (
        vitals.decode(&reply).unwrap(),
        symptoms.decode(&sreply).unwrap(),
    )
}

/// How far the import of `id` on `site` got (its cursor file).
fn cursor_vitals(site: &Site, id: Uuid) -> u64 {
    let raw =
        std::fs::read(site.dir.join("transfers").join(format!("{id}.cursor"))).unwrap_or_default();
    raw.get(16..24)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()))
        .unwrap_or(0)
}

async fn wait_target(site: &Site, id: Uuid, state: &str) {
    for _ in 0..600 {
        let v = transfer::handover_view(&access(site), id).await.unwrap();
        if v.state() == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let v = transfer::handover_view(&access(site), id).await.unwrap();
    panic!(
        "target stayed {} ({:?}), wanted {state}",
        v.state(),
        v.data.reason
    );
}

async fn wait_source(site: &Site, patient: &SignedInUser, state: &str) -> transfer::TransferView {
    for _ in 0..600 {
        let list = transfer::patient_transfers(&access(site), patient)
            .await
            .unwrap();
        if let Some(v) = list.into_iter().find(|v| v.state() == state) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no transfer of the patient reached {state}");
}

struct Started {
    id: Uuid,
    key: SealKey,
}

/// The doctor on `two` asks; the patient on `one` approves with the code
/// and a fresh key.
async fn start_and_approve(one: &Site, two: &Site, patient: &SignedInUser) -> Started {
    let invitation = access(one).new_invitation(patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let started = transfer::start(&access(two), &doctor, &invitation.payload)
        .await
        .unwrap();
    assert_eq!(started.state(), "requested");
    let code = started.data.code.clone().expect("code for the patient");
    let pending = access(one).patient_overview(patient).await.unwrap().pending;
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].kind, mdgate::store::RequestKind::Transfer);
    // A transfer cannot be approved as an access grant.
    assert!(access(one)
        .approve(patient, pending[0].id, &code, None, None)
        .await
        .is_err());
    let key = SealKey::generate();
    transfer::approve(
        &access(one),
        patient,
        pending[0].id,
        &code,
        &key.to_b64url(),
    )
    .await
    .unwrap();
    Started {
        id: started.transfer.id,
        key,
    }
}

fn hand(key: &str, approval: &str, username: &str) -> HandOver {
    HandOver {
        key: key.to_owned(),
        approval: approval.to_owned(),
        username: username.to_owned(),
        password: Secret::new("new-home-pass".to_owned()),
    }
}

async fn wait_imported(site: &Site, id: Uuid) {
    for _ in 0..1200 {
        let v = transfer::handover_view(&access(site), id).await.unwrap();
        if matches!(v.state(), "imported" | "confirmed")
            && !transfer::import_running(&access(site), id)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("import did not finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_moves_checks_every_refusal_and_leaves_a_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), &["one", "two"], "")
        .await
        .unwrap();
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let patient = sign_in(one, &one.patient).await;
    fill_record(one, &patient, 25).await;

    // An access grant held before the move, to see it revoked after.
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;
    access(one)
        .approve(&patient, pending, req.code.as_deref().unwrap(), None, None)
        .await
        .unwrap();

    let Started { id, key } = start_and_approve(one, two, &patient).await;
    wait_target(two, id, "received").await;
    let delivered = wait_source(one, &patient, "delivered").await;
    assert!(
        delivered.data.key.is_none(),
        "the key is dropped after export"
    );
    let approval = delivered.data.approval.clone().unwrap();
    let sealed = two.dir.join("transfers").join(format!("{id}.sealed"));
    assert!(sealed.exists());

    // Refusals, each with its own reason; nothing reaches the upstream.
    let t = access(two);
    let other = SealKey::generate();
    let err = transfer::hand_over(&t, id, hand(&other.to_b64url(), &approval, "moved1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "approval_key", "{err}");
    let forged_key = mdgate::token::SigningKey::generate("forged1").unwrap();
    let claims = transfer::wire::ApprovalClaims {
        iss: one.fqdn.clone(),
        sub: Uuid::parse_str(delivered.data.patient_address.split('@').next().unwrap()).unwrap(),
        aud: two.fqdn.clone(),
        transfer: id,
        key: hex::encode(key.fingerprint()),
        doctor: format!("{}@{}", two.doctor.username, two.fqdn),
        iat: 0,
        exp: i64::MAX / 2,
    };
    let forged =
        mdgate::token::jws::sign(&forged_key, transfer::wire::APPROVAL_TYP, &claims).unwrap();
    let err = transfer::hand_over(&t, id, hand(&key.to_b64url(), &forged, "moved1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "approval_signature", "{err}");
    let mut elsewhere = claims.clone();
    elsewhere.iss = "elsewhere.mdgate.test".to_owned();
    let elsewhere =
        mdgate::token::jws::sign(&forged_key, transfer::wire::APPROVAL_TYP, &elsewhere).unwrap();
    let err = transfer::hand_over(&t, id, hand(&key.to_b64url(), &elsewhere, "moved1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "approval_issuer", "{err}");
    let err = transfer::hand_over(
        &t,
        Uuid::new_v4(),
        hand(&key.to_b64url(), &approval, "moved1"),
    )
    .await
    .unwrap_err();
    assert_eq!(err.reason(), "unknown_transfer", "{err}");
    // A damaged ciphertext: the AEAD refuses it.
    let original = std::fs::read(&sealed).unwrap();
    let mut damaged = original.clone();
    let at = damaged.len() / 2;
    damaged[at] ^= 0x40;
    std::fs::write(&sealed, &damaged).unwrap();
    let err = transfer::hand_over(&t, id, hand(&key.to_b64url(), &approval, "moved1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "ciphertext_damaged", "{err}");
    std::fs::write(&sealed, &original).unwrap();
    assert!(
        access(two)
            .sign_in("moved1", Secret::new("new-home-pass".to_owned()))
            .await
            .is_err(),
        "no account was created by a refused hand-over"
    );
    assert_eq!(
        transfer::handover_view(&t, id).await.unwrap().state(),
        "received"
    );

    // The right hand-over: account created, record imported, confirmed.
    transfer::hand_over(&t, id, hand(&key.to_b64url(), &approval, "moved1"))
        .await
        .unwrap();
    wait_imported(two, id).await;
    wait_target(two, id, "confirmed").await;
    let moved = wait_source(one, &patient, "moved").await;
    let new_address = moved.data.new_address.clone().unwrap();
    assert!(new_address.ends_with(&format!("@{}", two.fqdn)));
    assert_eq!(moved.data.imported.vitals, 25);
    assert_eq!(moved.data.imported.symptoms, 2);

    // The patient signs in on the new home; the profile came along.
    let moved_patient = access(two)
        .sign_in("moved1", Secret::new("new-home-pass".to_owned()))
        .await
        .unwrap();
    let profile = moved_patient
        .patient_session(&upstream_of(two))
        .unwrap()
        .profile()
        .await
        .unwrap();
    assert_eq!((profile.age, profile.diabetes), (47, true));
    assert_eq!(profile.medications, vec!["metformin 500 mg".to_owned()]);

    // The kept bundle holds every part with the original times.
    let bundle =
        std::fs::read_to_string(two.dir.join("transfers").join(format!("{id}.bundle"))).unwrap();
    let lines: Vec<serde_json::Value> = bundle
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let count = |t: &str| lines.iter().filter(|l| l["t"] == t).count();
    assert_eq!(
        (
            count("vitals"),
            count("symptom"),
            count("profile"),
            count("patient")
        ),
        (25, 2, 1, 1)
    );
    assert!(lines
        .iter()
        .filter(|l| l["t"] == "vitals")
        .all(|l| l["data"]["creationDate"].is_i64()));

    // A replayed approval is refused; nothing is imported twice.
    let err = transfer::hand_over(&t, id, hand(&key.to_b64url(), &approval, "moved1"))
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "already_imported");
    let (vitals, symptoms) = record_on(two, "moved1").await;
    assert_eq!((vitals.len(), symptoms.len()), (25, 2));
    let mut pulses: Vec<f64> = vitals.iter().map(|v| v.heart_beats_per_minute).collect();
    pulses.sort_by(f64::total_cmp);
    let mut expected: Vec<f64> = (0..25).map(|i| 60.0 + (i % 30) as f64).collect();
    expected.sort_by(f64::total_cmp);
    assert_eq!(pulses, expected);

    // The old address now resolves to the new one, signed; the grant is
    // revoked and the old record refuses federation.
    let old_address = delivered.data.patient_address.clone();
    let jrd = access(one)
        .webfinger(&format!("acct:{old_address}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(jrd["aliases"][0], format!("acct:{new_address}"));
    let proof = jrd["properties"]["https://mdgate.org/ns/moved-proof"]
        .as_str()
        .expect("a signed redirect");
    let expect =
        mdgate::token::jws::Expect::typ(transfer::wire::MOVED_TYP, Duration::from_secs(60));
    let claims: transfer::wire::MovedClaims = mdgate::token::jws::parse(proof, &expect)
        .unwrap()
        .peek_unverified()
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.moved_to.as_str()),
        (old_address.as_str(), new_address.as_str())
    );
    let err = access(two)
        .remote_read(&doctor, req.id, mdgate::policy::RouteId::Profile)
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("revoked") || format!("{err:?}").contains("Closed"),
        "{err:?}"
    );
    let again = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    assert_ne!(again.state, "pending");
    assert!(!sealed.with_file_name(format!("{id}.sealed")).exists() || two.dir.exists());

    // The admin's list says what is left upstream.
    let store = mdgate::store::open(&mdgate::config::load(&one.config_path).unwrap().store)
        .await
        .unwrap();
    let rows = transfer::admin_list(&*store).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["state"], "moved");
    assert!(rows[0]["todo"]
        .as_str()
        .unwrap()
        .contains("no delete route"));
    assert_eq!(rows[0]["new_address"], new_address.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_of_either_server_at_each_step_completes_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start(dir.path(), &["one", "two"], "")
        .await
        .unwrap();
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    fill_record(&bed.sites[0], &patient, 40).await;

    // The new home is down when the patient approves; the old home crashes
    // right after.
    let Started { id, key } = {
        let (one, two) = (&bed.sites[0], &bed.sites[1]);
        start_and_approve(one, two, &patient).await
    };
    bed.sites[1].stop().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    bed.sites[0].stop().await;
    bed.restart(0).await.unwrap();
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    // Exported while the new home is away; crash again after the export.
    wait_source(&bed.sites[0], &patient, "exported").await;
    bed.sites[0].stop().await;
    bed.restart(1).await.unwrap();
    bed.restart(0).await.unwrap();
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    wait_target(&bed.sites[1], id, "received").await;
    let delivered = wait_source(&bed.sites[0], &patient, "delivered").await;
    // The new home crashes after the receipt; the old home is down during
    // the import, so the confirmation waits in the outbox.
    bed.sites[1].stop().await;
    bed.restart(1).await.unwrap();
    bed.sites[0].stop().await;
    let approval = delivered.data.approval.clone().unwrap();
    transfer::hand_over(
        &access(&bed.sites[1]),
        id,
        hand(&key.to_b64url(), &approval, "moved2"),
    )
    .await
    .unwrap();
    wait_imported(&bed.sites[1], id).await;
    // The new home crashes after the import, before confirming.
    bed.sites[1].stop().await;
    bed.restart(1).await.unwrap();
    bed.restart(0).await.unwrap();
    wait_target(&bed.sites[1], id, "confirmed").await;
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    let moved = wait_source(&bed.sites[0], &patient, "moved").await;
    assert_eq!(moved.data.imported.vitals, 40);
    // Once, whatever the restarts.
    let (vitals, symptoms) = record_on(&bed.sites[1], "moved2").await;
    assert_eq!((vitals.len(), symptoms.len()), (40, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_import_resumes_without_repeating_a_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut bed = Testbed::start(dir.path(), &["one", "two"], "")
        .await
        .unwrap();
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    fill_record(&bed.sites[0], &patient, 10_000).await;
    let Started { id, key } = start_and_approve(&bed.sites[0], &bed.sites[1], &patient).await;
    wait_target(&bed.sites[1], id, "received").await;
    let delivered = wait_source(&bed.sites[0], &patient, "delivered").await;
    let approval = delivered.data.approval.clone().unwrap();
    transfer::hand_over(
        &access(&bed.sites[1]),
        id,
        hand(&key.to_b64url(), &approval, "moved3"),
    )
    .await
    .unwrap();
    // Crash the new home mid-import.
    for _ in 0..400 {
        if cursor_vitals(&bed.sites[1], id) > 500 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    bed.sites[1].stop().await;
    let written = cursor_vitals(&bed.sites[1], id);
    assert!(
        written > 0 && written < 10_000,
        "crash at {written} of 10000"
    );
    bed.restart(1).await.unwrap();
    let t = access(&bed.sites[1]);
    assert_eq!(
        transfer::handover_view(&t, id).await.unwrap().state(),
        "importing"
    );
    // The patient signs in again (the password is never stored).
    let wrong = transfer::hand_over(
        &t,
        id,
        HandOver {
            password: Secret::new("not-it".to_owned()),
            ..hand("", "", "moved3")
        },
    )
    .await
    .unwrap_err();
    assert_eq!(wrong.reason(), "wrong_credentials");
    transfer::hand_over(&t, id, hand("", "", "moved3"))
        .await
        .unwrap();
    wait_imported(&bed.sites[1], id).await;
    wait_target(&bed.sites[1], id, "confirmed").await;
    let (vitals, _) = record_on(&bed.sites[1], "moved3").await;
    // At most the one write in flight at the crash is repeated.
    assert!(
        (10_000..=10_001).contains(&vitals.len()),
        "{} vitals",
        vitals.len()
    );
}
