//! The patient-approved access flow across two complete servers: two
//! access.md emulators, two mdgates, a real DNS server on loopback, real
//! mutual TLS. The tests drive the flow through `federation::access::Access`,
//! the service the pages call (the pages themselves are tested in `web`
//! and `browser`).

use std::time::Duration;

use mdgate::demo::testbed::{Site, Testbed};
use mdgate::federation::access::{Access, AccessError};
use mdgate::policy::{Role, RouteId};
use mdgate::upstream::{Secret, SignedInUser, Vitals};

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

async fn two_sites(extra: &str) -> (tempfile::TempDir, Testbed) {
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), &["one", "two"], extra)
        .await
        .unwrap_or_else(|e| panic!("testbed: {e}"));
    (dir, bed)
}

/// Waits until the doctor's request reaches `state`.
async fn wait_state(site: &Site, doctor: &SignedInUser, id: uuid::Uuid, state: &str) {
    let a = access(site);
    for _ in 0..200 {
        let r = a.doctor_request(doctor, id).await.unwrap();
        if r.state == state {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = a.doctor_request(doctor, id).await.unwrap();
    panic!(
        "request stayed {} (reason {:?}), wanted {state}",
        r.state, r.reason
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_approve_read_ask_revoke_across_two_servers() {
    let (_dir, bed) = two_sites("").await;
    let (one, two) = (&bed.sites[0], &bed.sites[1]);

    // The patient on one has a record with vitals.
    let patient = sign_in(one, &one.patient).await;
    let up =
        mdgate::upstream::AccessMd::new(&mdgate::config::load(&one.config_path).unwrap().upstream);
    patient
        .patient_session(&up)
        .unwrap()
        .report_vitals(&Vitals {
            heart_beats_per_minute: 61.0,
            systolic_pressure: 120.0,
            diastolic_pressure: 80.0,
            blood_oxygenation: 98.0,
            breathing_rate: 14.0,
        })
        .await
        .unwrap();
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    assert!(invitation.payload.starts_with("mdgate:"));

    // The doctor on two asks with the QR payload and gets a code.
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Contributor,
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
    assert_eq!(
        req.state, "pending",
        "server1 took the request: {:?}",
        req.reason
    );
    let code = req.code.clone().expect("code shown to the doctor");

    // The same invitation cannot be used twice.
    let again = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(60),
        )
        .await
        .unwrap();
    wait_state(two, &doctor, again.id, "failed").await;
    assert_eq!(
        access(two)
            .doctor_request(&doctor, again.id)
            .await
            .unwrap()
            .reason
            .as_deref(),
        Some("invitation_invalid")
    );

    // The patient sees it and approves with the code.
    let overview = access(one).patient_overview(&patient).await.unwrap();
    assert_eq!(overview.pending.len(), 1);
    let pending = &overview.pending[0];
    assert_eq!(
        pending.doctor,
        format!("{}@{}", two.doctor.username, two.fqdn)
    );
    // A wrong code counts and says how many tries are left.
    let wrong = access(one)
        .approve(&patient, pending.id, "00000-00000", None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(wrong, AccessError::WrongCode { attempts_left: 2 }),
        "{wrong:?}"
    );
    let grant = access(one)
        .approve(&patient, pending.id, &code.to_lowercase(), None, None)
        .await
        .unwrap();
    assert_eq!(grant.role, "contributor");

    // The grant reaches two; the doctor reads the vitals.
    wait_state(two, &doctor, req.id, "approved").await;
    let vitals = access(two)
        .remote_read(&doctor, req.id, RouteId::Vitals)
        .await
        .unwrap();
    let list = vitals.as_array().expect("a list of measurements");
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["heartBeatsPerMinute"], 61.0);
    let record = access(two)
        .remote_read(&doctor, req.id, RouteId::Record)
        .await
        .unwrap();
    assert_eq!(record["firstName"], "Pat");

    // ...and asks a question (contributor).
    access(two)
        .remote_ask(
            &doctor,
            req.id,
            &mdgate::upstream::NewQuestion {
                question: "How did you sleep?".into(),
                kind: Some(mdgate::upstream::QuestionType::Text),
                recurring: false,
                start_date: None,
                end_date: None,
                recurrence: Vec::new(),
            },
        )
        .await
        .unwrap();
    let questions = access(two)
        .remote_read(&doctor, req.id, RouteId::Questions)
        .await
        .unwrap();
    assert!(
        questions.to_string().contains("How did you sleep?"),
        "{questions}"
    );

    // Every access is in the patient's log.
    let overview = access(one).patient_overview(&patient).await.unwrap();
    let kinds: Vec<&str> = overview.log.iter().map(|e| e.kind.as_str()).collect();
    for k in [
        "access.requested",
        "access.wrong_code",
        "access.approved",
        "record.read",
        "record.question",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }

    // The patient revokes: the very next read is refused.
    access(one).revoke(&patient, grant.id).await.unwrap();
    let refused = access(two)
        .remote_read(&doctor, req.id, RouteId::Vitals)
        .await
        .unwrap_err();
    assert!(
        matches!(refused, AccessError::Closed { state: "revoked" }),
        "{refused:?}"
    );
    wait_state(two, &doctor, req.id, "revoked").await;

    // The audit chains verify on both sides.
    for site in [one, two] {
        let store = mdgate::store::open(&mdgate::config::load(&site.config_path).unwrap().store)
            .await
            .unwrap();
        store
            .verify_audit(None)
            .await
            .unwrap()
            .expect("audit chain intact");
    }
    // ...and fail after a row is altered (server1) or removed (server2), as
    // someone holding the database file could.
    let db = |site: &Site| site.dir.join("mdgate.db");
    crate::audit::tamper(
        &db(one),
        &[
            "DROP TRIGGER audit_log_no_update",
            r#"UPDATE audit_log SET detail = '{"route":"profile"}' WHERE seq = 3"#,
        ],
    )
    .await;
    crate::audit::tamper(
        &db(two),
        &[
            "DROP TRIGGER audit_log_no_delete",
            "DELETE FROM audit_log WHERE seq = 2",
        ],
    )
    .await;
    for site in [one, two] {
        let store = mdgate::store::open(&mdgate::config::load(&site.config_path).unwrap().store)
            .await
            .unwrap();
        let verdict = store.verify_audit(None).await.unwrap();
        assert!(verdict.is_err(), "{}: tampering not detected", site.fqdn);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patient_cannot_act_on_another_patients_request() {
    let (_dir, bed) = two_sites("").await;
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let patient = sign_in(one, &one.patient).await;
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let code = req.code.clone().unwrap();
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;

    // Another patient of the same server.
    let other = mdgate::demo::testbed::Login {
        username: "other-patient".into(),
        password: "other-pw".into(),
    };
    let body = serde_json::json!({"username": other.username, "password": other.password,
        "telephoneNumber": "0790000001", "firstName": "O", "lastName": "P"});
    let resp = reqwest::Client::new()
        .post(format!("{}/api/patient/signup", one.emulator().base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success());
    let intruder = sign_in(one, &other).await;
    let e = access(one)
        .approve(&intruder, pending, &code, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::NotYours), "{e:?}");
    let e = access(one).deny(&intruder, pending).await.unwrap_err();
    assert!(matches!(e, AccessError::NotYours), "{e:?}");
    assert!(access(one)
        .patient_overview(&intruder)
        .await
        .unwrap()
        .pending
        .is_empty());
    // A doctor is not a patient, and a patient is not a doctor.
    let e = access(two).patient_overview(&doctor).await.unwrap_err();
    assert!(matches!(e, AccessError::WrongRole), "{e:?}");
    let e = access(one).doctor_requests(&patient).await.unwrap_err();
    assert!(matches!(e, AccessError::WrongRole), "{e:?}");

    // Wrong codes exhaust the request; the right one then does nothing.
    for left in [2, 1, 0] {
        let e = access(one)
            .approve(&patient, pending, "11111-11111", None, None)
            .await
            .unwrap_err();
        assert!(
            matches!(e, AccessError::WrongCode { attempts_left } if attempts_left == left),
            "{e:?}"
        );
    }
    let e = access(one)
        .approve(&patient, pending, &code, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AccessError::Closed { state: "voided" }),
        "{e:?}"
    );
    wait_state(two, &doctor, req.id, "voided").await;
}

/// Runs the flow up to an approved grant; returns the patient, the doctor
/// and the doctor's request id.
async fn granted(
    bed: &Testbed,
    role: Role,
    duration: Duration,
) -> (SignedInUser, SignedInUser, uuid::Uuid, mdgate::store::Grant) {
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let patient = sign_in(one, &one.patient).await;
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(&doctor, &invitation.payload, role, duration)
        .await
        .unwrap();
    let code = req.code.clone().unwrap();
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;
    let grant = access(one)
        .approve(&patient, pending, &code, None, None)
        .await
        .unwrap();
    wait_state(two, &doctor, req.id, "approved").await;
    (patient, doctor, req.id, grant)
}

/// The grant token site two holds for `request`.
async fn held_token(site: &Site, request: uuid::Uuid) -> String {
    let store = mdgate::store::open(&mdgate::config::load(&site.config_path).unwrap().store)
        .await
        .unwrap();
    let row = store.outgoing_request(request).await.unwrap().unwrap();
    row.grant.expect("grant received").token
}

/// One data request from `from` to `to` with a bearer token.
async fn raw_read(
    from: &Site,
    to: &Site,
    method: http::Method,
    path: &str,
    token: &str,
) -> (u16, String) {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let body = (method == http::Method::POST).then(|| {
        bytes::Bytes::from_static(br#"{"question":"Q?","type":"Text","recurring":false}"#)
    });
    let resp = from
        .running()
        .egress
        .as_ref()
        .unwrap()
        .send_with(&to.fqdn, method, path, headers, body)
        .await
        .unwrap();
    let status = resp.response.status().as_u16();
    let bytes = http_body_util::BodyExt::collect(resp.response.into_body())
        .await
        .unwrap()
        .to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// Every federated read is in the audit log after a clean stop: the
/// entries still in the audit journal are copied when the server stops,
/// and nothing is left waiting in the journal file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_stop_leaves_every_read_in_the_log_and_none_in_the_journal() {
    let (_dir, mut bed) = two_sites("").await;
    let (_patient, _doctor, request, grant) =
        granted(&bed, Role::Viewer, Duration::from_secs(600)).await;
    let token = held_token(&bed.sites[1], request).await;
    let path = RouteId::Vitals.federation_path(&grant.patient);
    for _ in 0..20 {
        let (status, body) = raw_read(
            &bed.sites[1],
            &bed.sites[0],
            http::Method::GET,
            &path,
            &token,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    bed.sites[0].stop().await;
    let cfg = mdgate::config::load(&bed.sites[0].config_path)
        .unwrap()
        .store;
    let store = mdgate::store::open_read_only(&cfg).await.unwrap();
    assert_eq!(store.audit_journal_pending().await.unwrap(), 0);
    let reads: Vec<_> = store
        .audit_entries(0, 1000)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == "record.read")
        .collect();
    assert_eq!(reads.len(), 20);
    // Each says which route, under which grant, for which server, with
    // what answer; its detail is stored in canonical form.
    for e in &reads {
        assert_eq!(
            e.detail,
            serde_json::json!({
                "route": "vitals", "grant": grant.id.to_string(),
                "server": bed.sites[1].fqdn, "status": 200,
            }),
            "{e:?}"
        );
        assert_eq!(e.patient, Some(grant.patient));
    }
    store
        .verify_audit(None)
        .await
        .unwrap()
        .expect("chain intact");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stolen_token_is_useless_from_another_server() {
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start(dir.path(), &["one", "two", "three"], "")
        .await
        .unwrap();
    let (_patient, _doctor, request, grant) =
        granted(&bed, Role::Viewer, Duration::from_secs(600)).await;
    let (one, two, three) = (&bed.sites[0], &bed.sites[1], &bed.sites[2]);
    let token = held_token(two, request).await;
    let path = RouteId::Vitals.federation_path(&grant.patient);
    // The holder reads.
    let (status, _) = raw_read(two, one, http::Method::GET, &path, &token).await;
    assert_eq!(status, 200);
    // The same token over server three's connection is refused.
    let (status, body) = raw_read(three, one, http::Method::GET, &path, &token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("wrong_certificate"), "{body}");
    // Two tokens in one request are refused.
    let mut headers = http::HeaderMap::new();
    for _ in 0..2 {
        headers.append(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
        );
    }
    let resp = two
        .running()
        .egress
        .as_ref()
        .unwrap()
        .send_with(&one.fqdn, http::Method::GET, &path, headers, None)
        .await
        .unwrap();
    assert_eq!(resp.response.status().as_u16(), 401);
    // No token at all.
    let resp = two
        .running()
        .egress
        .as_ref()
        .unwrap()
        .send(&one.fqdn, http::Method::GET, &path, None)
        .await
        .unwrap();
    assert_eq!(resp.response.status().as_u16(), 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_and_method_outside_the_role_is_refused() {
    for role in Role::ALL {
        let (_dir, bed) = two_sites("").await;
        let (_patient, _doctor, request, grant) =
            granted(&bed, role, Duration::from_secs(600)).await;
        let (one, two) = (&bed.sites[0], &bed.sites[1]);
        let token = held_token(two, request).await;
        let methods = [
            http::Method::GET,
            http::Method::POST,
            http::Method::PUT,
            http::Method::DELETE,
            http::Method::PATCH,
            http::Method::HEAD,
        ];
        for route in RouteId::ALL {
            for method in &methods {
                // Two routes share a path (questions: GET to read, POST
                // to ask): a (method, path) pair is allowed when any rule
                // on that path allows it.
                let path = route.federation_path(&grant.patient);
                let allowed = RouteId::ALL.iter().any(|r| {
                    let rule = r.rule();
                    r.federation_path(&grant.patient) == path
                        && rule.method == *method
                        && role >= rule.min_role
                });
                let (status, body) = raw_read(
                    two,
                    one,
                    method.clone(),
                    &route.federation_path(&grant.patient),
                    &token,
                )
                .await;
                if allowed {
                    assert!(
                        (200..300).contains(&status),
                        "{role} {method} {route:?}: {status} {body}"
                    );
                } else {
                    assert!(
                        (400..500).contains(&status),
                        "{role} {method} {route:?} passed: {status} {body}"
                    );
                }
            }
        }
        // Another patient's id, under this grant.
        let other = uuid::Uuid::new_v4();
        let (status, _) = raw_read(
            two,
            one,
            http::Method::GET,
            &RouteId::Vitals.federation_path(&other),
            &token,
        )
        .await;
        assert_eq!(status, 403);
        // Tricks on the path never reach anything.
        let fid = grant.patient;
        for path in [
            format!("/federation/v1/records/{fid}/vitals/"),
            format!("/federation/v1/records/{fid}//vitals"),
            format!("/federation/v1/records/{fid}/./vitals"),
            format!("/federation/v1/records/{fid}/%76itals"),
            format!("/federation/v1/records/{fid}/vitals?x=1"),
            format!("/federation/v1/records/{fid}/../{fid}/vitals"),
            format!(
                "/federation/v1/records/{}/vitals",
                fid.to_string().to_uppercase()
            ),
        ] {
            let (status, body) = raw_read(two, one, http::Method::GET, &path, &token).await;
            assert!(
                (400..500).contains(&status),
                "{path} passed: {status} {body}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_grant_is_refused_on_the_next_request() {
    let (_dir, bed) = two_sites("").await;
    let (_patient, doctor, request, grant) =
        granted(&bed, Role::Viewer, Duration::from_secs(2)).await;
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let token = held_token(two, request).await;
    let path = RouteId::Vitals.federation_path(&grant.patient);
    assert_eq!(
        raw_read(two, one, http::Method::GET, &path, &token).await.0,
        200
    );
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (status, body) = raw_read(two, one, http::Method::GET, &path, &token).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("grant_expired"), "{body}");
    let e = access(two)
        .remote_read(&doctor, request, RouteId::Vitals)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AccessError::Closed { state: "expired" }),
        "{e:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_issued_while_the_requester_is_down_arrives_once_after_restarts() {
    let (_dir, mut bed) = two_sites("").await;
    let patient = sign_in(&bed.sites[0], &bed.sites[0].patient).await;
    let invitation = access(&bed.sites[0])
        .new_invitation(&patient)
        .await
        .unwrap();
    let doctor = sign_in(&bed.sites[1], &bed.sites[1].doctor).await;
    let req = access(&bed.sites[1])
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let code = req.code.clone().unwrap();
    let pending = access(&bed.sites[0])
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;

    // server2 goes down; the patient approves; then server1 crashes before
    // it could deliver.
    bed.sites[1].stop().await;
    access(&bed.sites[0])
        .approve(&patient, pending, &code, None, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    bed.sites[0].stop().await;

    // Both come back: the grant arrives, once.
    bed.restart(1).await.unwrap();
    bed.restart(0).await.unwrap();
    let doctor = sign_in(&bed.sites[1], &bed.sites[1].doctor).await;
    for _ in 0..300 {
        if access(&bed.sites[1])
            .doctor_request(&doctor, req.id)
            .await
            .unwrap()
            .state
            == "approved"
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_state(&bed.sites[1], &doctor, req.id, "approved").await;
    let store = mdgate::store::open(
        &mdgate::config::load(&bed.sites[1].config_path)
            .unwrap()
            .store,
    )
    .await
    .unwrap();
    let entries = store.audit_entries(0, 1000).await.unwrap();
    let received = entries
        .iter()
        .filter(|e| e.kind == "grant.approved")
        .count();
    assert_eq!(
        received,
        1,
        "{:?}",
        entries.iter().map(|e| &e.kind).collect::<Vec<_>>()
    );
    // And it works.
    access(&bed.sites[1])
        .remote_read(&doctor, req.id, RouteId::Profile)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_restart_is_transparent_and_upstream_down_changes_nothing() {
    let (_dir, mut bed) = two_sites("").await;
    let (_patient, doctor, request, _grant) =
        granted(&bed, Role::Viewer, Duration::from_secs(600)).await;
    // access.md restarts (its sessions are in memory): mdgate logs in again.
    bed.sites[0].emulator().restart();
    access(&bed.sites[1])
        .remote_read(&doctor, request, RouteId::Vitals)
        .await
        .unwrap();

    // access.md goes down: a clear error, and no audit entry is written.
    // (Site one's own store: its reads include the entries its journal
    // acknowledged.)
    let store = bed.sites[0].running().store.clone();
    let before = store.audit_head().await.unwrap();
    bed.sites[0].stop_upstream().await;
    let e = access(&bed.sites[1])
        .remote_read(&doctor, request, RouteId::Vitals)
        .await
        .unwrap_err();
    match &e {
        AccessError::Peer { reason } => assert_eq!(reason, "upstream_unavailable"),
        other => panic!("{other:?}"),
    }
    assert!(!e.message().contains("127.0.0.1"), "{}", e.message());
    assert_eq!(store.audit_head().await.unwrap(), before);
    // The grant is still approved on server2.
    assert_eq!(
        access(&bed.sites[1])
            .doctor_request(&doctor, request)
            .await
            .unwrap()
            .state,
        "approved"
    );
}

/// A webhook receiver on loopback: every JSON body POSTed to it.
async fn hook_receiver() -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>>,
) {
    use http_body_util::BodyExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let sink = sink.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let sink = sink.clone();
                        async move {
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            if let Ok(v) = serde_json::from_slice(&body) {
                                sink.lock().unwrap().push(v);
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_hears_of_requests_grants_and_revocations_without_secrets() {
    let (addr, seen) = hook_receiver().await;
    let (_dir, bed) = two_sites(&format!(
        "\n[notify]\nwebhook_url = \"http://{addr}/hook\"\n"
    ))
    .await;
    let (patient, _doctor, request, grant) =
        granted(&bed, Role::Viewer, Duration::from_secs(600)).await;
    access(&bed.sites[0])
        .revoke(&patient, grant.id)
        .await
        .unwrap();
    let token = held_token(&bed.sites[1], request).await;
    let mut events = Vec::new();
    for _ in 0..100 {
        events = seen.lock().unwrap().clone();
        if events.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["event"].as_str()).collect();
    for k in ["access.requested", "access.granted", "access.revoked"] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
    let text = serde_json::to_string(&events).unwrap();
    let address = format!("{}@{}", grant.patient, bed.sites[0].fqdn);
    assert!(text.contains(&address), "{text}");
    assert!(!text.contains(&token), "the token reached the webhook");
    assert!(!text.contains("eyJ"), "a token reached the webhook: {text}");
    assert!(!text.contains("invitation"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecided_request_expires_on_both_sides() {
    let (_dir, bed) = two_sites("\n[access]\ncode_ttl = \"1s\"\n").await;
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let patient = sign_in(one, &one.patient).await;
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Viewer,
            Duration::from_secs(600),
        )
        .await
        .unwrap();
    let code = req.code.clone().unwrap();
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Nobody decided: server1's sweeper closed it and told server2.
    wait_state(two, &doctor, req.id, "expired").await;
    let e = access(one)
        .approve(&patient, pending, &code, None, None)
        .await
        .unwrap_err();
    assert!(
        matches!(e, AccessError::Closed { state: "expired" }),
        "{e:?}"
    );
    assert!(access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending
        .is_empty());
    let code_after = access(two)
        .doctor_request(&doctor, req.id)
        .await
        .unwrap()
        .code;
    assert_eq!(
        code_after, None,
        "the code is forgotten once the request ended"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_patient_can_lower_the_role_and_shorten_the_time_but_not_raise_them() {
    let (_dir, bed) = two_sites("").await;
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let patient = sign_in(one, &one.patient).await;
    let invitation = access(one).new_invitation(&patient).await.unwrap();
    let doctor = sign_in(two, &two.doctor).await;
    let req = access(two)
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Contributor,
            Duration::from_secs(7200),
        )
        .await
        .unwrap();
    let code = req.code.clone().unwrap();
    let pending = access(one)
        .patient_overview(&patient)
        .await
        .unwrap()
        .pending[0]
        .id;
    let e = access(one)
        .approve(
            &patient,
            pending,
            &code,
            None,
            Some(Duration::from_secs(7201)),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::BadInput(_)), "{e:?}");
    let grant = access(one)
        .approve(
            &patient,
            pending,
            &code,
            Some(Role::Viewer),
            Some(Duration::from_secs(600)),
        )
        .await
        .unwrap();
    assert_eq!(grant.role, "viewer");
    assert!(grant.expires_at - grant.not_before <= 600_000);
    wait_state(two, &doctor, req.id, "approved").await;
    let seen = access(two).doctor_request(&doctor, req.id).await.unwrap();
    assert_eq!(seen.granted_role, Some(Role::Viewer));
    // A viewer cannot ask questions, on either side.
    let question = mdgate::upstream::NewQuestion {
        question: "Q?".into(),
        kind: Some(mdgate::upstream::QuestionType::Text),
        recurring: false,
        start_date: None,
        end_date: None,
        recurrence: Vec::new(),
    };
    let e = access(two)
        .remote_ask(&doctor, req.id, &question)
        .await
        .unwrap_err();
    assert!(matches!(e, AccessError::BadInput(_)), "{e:?}");
    let token = held_token(two, req.id).await;
    let (status, body) = raw_read(
        two,
        one,
        http::Method::POST,
        &RouteId::AskQuestion.federation_path(&grant.patient),
        &token,
    )
    .await;
    assert_eq!(status, 403, "{body}");
}

/// The testbed can serve its public listeners over TLS with each site's
/// certificate (what `benches/access.sh` measures pass-through with): the
/// same request answers the same through TLS as access.md answers it.
#[tokio::test]
async fn a_testbed_public_listener_can_speak_tls() {
    use mdgate::demo::testbed::{PublicListener, Upstreams};
    let dir = tempfile::tempdir().unwrap();
    let bed = Testbed::start_sites(
        dir.path(),
        &["one"],
        "",
        &Upstreams::InProcess,
        PublicListener::Tls,
    )
    .await
    .unwrap();
    let one = &bed.sites[0];
    let url = one.public_url();
    assert!(url.starts_with("https://"), "{url}");
    let cert = std::fs::read(one.dir.join("fed.crt")).unwrap();
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&cert).unwrap())
        .resolve(&one.fqdn, one.running().public_addr)
        .no_proxy()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap();
    let port = one.running().public_addr.port();
    let through = client
        .get(format!("https://{}:{port}/api/symptom/codes", one.fqdn))
        .send()
        .await
        .unwrap();
    assert_eq!(through.status(), 200);
    let through = through.bytes().await.unwrap();
    let plain_client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let direct = plain_client
        .get(format!(
            "{}/api/symptom/codes",
            one.emulator().base_url().trim_end_matches('/')
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(through, direct);
    // Plain HTTP to it is not served.
    let plain = plain_client
        .get(format!(
            "http://{}/api/symptom/codes",
            one.running().public_addr
        ))
        .send()
        .await;
    assert!(
        plain.map(|r| !r.status().is_success()).unwrap_or(true),
        "plain HTTP answered on a TLS listener"
    );
    bed.shutdown().await;
}
