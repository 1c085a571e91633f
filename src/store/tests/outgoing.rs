//! The requesting server's side: our doctors' outgoing requests and the
//! grants received for them.

use super::*;

use OutgoingState::*;

const ALL: [OutgoingState; 9] = [
    Sending, Pending, Approved, Denied, Voided, Expired, Cancelled, Revoked, Failed,
];

/// The allowed moves, written out here rather than taken from the code
/// under test.
const ALLOWED: &[(OutgoingState, OutgoingState)] = &[
    (Sending, Pending),
    (Sending, Approved),
    (Sending, Denied),
    (Sending, Voided),
    (Sending, Expired),
    (Sending, Cancelled),
    (Sending, Failed),
    (Pending, Approved),
    (Pending, Denied),
    (Pending, Voided),
    (Pending, Expired),
    (Pending, Cancelled),
    (Pending, Failed),
    (Approved, Revoked),
    (Approved, Expired),
];

const CODE: &str = "ABCDE-FGHJK";
const TOKEN_MARK: &str = "very-secret-token-bytes";

fn new_outgoing(doctor: &str, at: UnixMillis) -> NewOutgoingRequest {
    NewOutgoingRequest {
        id: Uuid::new_v4(),
        kind: RequestKind::Access,
        doctor: doctor.into(),
        doctor_upstream_id: 7,
        patient_address: format!("{}@server1.example", Uuid::new_v4()),
        server_fqdn: "server1.example".into(),
        role: "doctor".into(),
        duration_ms: 3_600_000,
        code: CODE.into(),
        created_at: at,
        expires_at: at + 600_000,
    }
}

/// The grant server1 would issue for `request` (one per request: grant
/// ids are unique).
fn grant_for(request: Uuid) -> ReceivedGrant {
    ReceivedGrant {
        id: Uuid::from_u128(request.as_u128().wrapping_add(1)),
        token: format!("eyJhbGciOiJFZERTQSJ9.{TOKEN_MARK}.c2ln"),
        role: "viewer".into(),
        not_before: 2_000,
        expires_at: 2_000 + 3_600_000,
    }
}

fn to(state: OutgoingState, grant: Option<ReceivedGrant>) -> OutgoingUpdate {
    OutgoingUpdate {
        state,
        reason: None,
        grant,
    }
}

/// The update that moves `id` to `state`, with the grant approval needs.
fn step(id: Uuid, state: OutgoingState) -> OutgoingUpdate {
    to(state, (state == Approved).then(|| grant_for(id)))
}

/// One audit entry and one outbox message, under a key unique to `tag`.
fn effects(tag: &str, at: UnixMillis) -> Effects {
    Effects::none()
        .with_audit(AuditRecord {
            at,
            kind: "request.sent".into(),
            actor: "dr.who@server2.example".into(),
            patient: None,
            detail: json!({ "tag": tag }),
        })
        .with_outbox(NewOutboxMessage {
            destination: "server1.example".into(),
            kind: "access-requests".into(),
            payload: json!({ "tag": tag }),
            idempotency_key: format!("effect:{tag}"),
            created_at: at,
            next_attempt_at: at,
        })
}

/// (audit entries, undelivered outbox messages).
async fn counts(store: &dyn Store) -> (usize, u64) {
    let audit = store.audit_entries(1, MAX_PAGE).await.unwrap().len();
    (audit, store.pending_outbox_count().await.unwrap())
}

/// A new request moved to `state` along the shortest path.
async fn in_state(store: &dyn Store, state: OutgoingState) -> OutgoingRequest {
    let created = store
        .create_outgoing_request(new_outgoing("dr.who", 1_000), Effects::none())
        .await
        .unwrap()
        .value;
    let path: &[OutgoingState] = match state {
        Sending => &[],
        Revoked => &[Approved, Revoked],
        other => &[other],
    };
    let mut row = created;
    for (i, s) in path.iter().enumerate() {
        let at = 1_100 + i as i64;
        row = store
            .update_outgoing_request(row.id, step(row.id, *s), at, Effects::none())
            .await
            .unwrap()
            .value;
    }
    assert_eq!(row.state, state);
    row
}

fn assert_conflict(err: &StoreError, want: ConflictKind) {
    assert!(
        matches!(err, StoreError::Conflict { kind, .. } if *kind == want),
        "expected a {want} conflict, got {err:?}"
    );
}

#[tokio::test]
async fn creation_is_idempotent_on_the_id() {
    let (_dir, _path, store) = fresh().await;
    let new = new_outgoing("dr.who", 1_000);
    let created = store
        .create_outgoing_request(new.clone(), effects("create", 1_000))
        .await
        .unwrap();
    assert!(created.changed);
    let row = &created.value;
    assert_eq!(row.id, new.id);
    assert_eq!(row.state, Sending);
    assert_eq!(row.code.as_deref(), Some(CODE));
    assert_eq!((row.reason.as_ref(), row.grant.as_ref()), (None, None));
    assert_eq!(
        (row.created_at, row.updated_at, row.expires_at),
        (1_000, 1_000, 601_000)
    );
    assert_eq!(
        (
            row.kind,
            row.doctor.as_str(),
            row.doctor_upstream_id,
            row.patient_address.as_str(),
            row.server_fqdn.as_str(),
            row.role.as_str(),
            row.duration_ms
        ),
        (
            new.kind,
            new.doctor.as_str(),
            new.doctor_upstream_id,
            new.patient_address.as_str(),
            new.server_fqdn.as_str(),
            new.role.as_str(),
            new.duration_ms
        )
    );
    assert_eq!(counts(&*store).await, (1, 1));
    assert_eq!(
        store.outgoing_request(new.id).await.unwrap().as_ref(),
        Some(row)
    );

    // A retry, even stamped later: the stored row, no second effects.
    let replay = store
        .create_outgoing_request(
            NewOutgoingRequest {
                created_at: 5_000,
                expires_at: 9_000,
                ..new.clone()
            },
            effects("create-again", 5_000),
        )
        .await
        .unwrap();
    assert!(!replay.changed);
    assert_eq!(&replay.value, row);
    assert_eq!(counts(&*store).await, (1, 1));

    // The id reused for another request is refused.
    for other in [
        NewOutgoingRequest {
            role: "nurse".into(),
            ..new.clone()
        },
        NewOutgoingRequest {
            code: "ZZZZZ-ZZZZZ".into(),
            ..new.clone()
        },
        NewOutgoingRequest {
            doctor_upstream_id: 8,
            ..new.clone()
        },
        NewOutgoingRequest {
            kind: RequestKind::Transfer,
            ..new.clone()
        },
    ] {
        let err = store
            .create_outgoing_request(other, effects("conflict", 6_000))
            .await
            .unwrap_err();
        assert_conflict(&err, ConflictKind::IdempotencyKey);
    }
    assert_eq!(counts(&*store).await, (1, 1));

    // Once decided the code is gone: a replay cannot compare it, the rest
    // still must match.
    store
        .update_outgoing_request(new.id, to(Denied, None), 7_000, Effects::none())
        .await
        .unwrap();
    let late = store
        .create_outgoing_request(new.clone(), effects("late", 8_000))
        .await
        .unwrap();
    assert!(!late.changed);
    assert_eq!(late.value.state, Denied);
    assert_eq!(counts(&*store).await, (1, 1));

    assert!(store
        .outgoing_request(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn creation_is_refused_by_the_schema_for_bad_values() {
    let (_dir, _path, store) = fresh().await;
    let bad = [
        NewOutgoingRequest {
            doctor: String::new(),
            ..new_outgoing("x", 1)
        },
        NewOutgoingRequest {
            doctor: "d".repeat(129),
            ..new_outgoing("x", 1)
        },
        NewOutgoingRequest {
            patient_address: "no-at-sign".into(),
            ..new_outgoing("x", 1)
        },
        NewOutgoingRequest {
            server_fqdn: "Server1.Example".into(),
            ..new_outgoing("x", 1)
        },
        NewOutgoingRequest {
            duration_ms: 0,
            ..new_outgoing("x", 1)
        },
        NewOutgoingRequest {
            expires_at: 1,
            ..new_outgoing("x", 1)
        },
    ];
    for new in bad {
        let err = store
            .create_outgoing_request(new, effects("bad", 1))
            .await
            .unwrap_err();
        assert_conflict(&err, ConflictKind::Check);
    }
    // Nothing of the refused requests remains, effects included.
    assert_eq!(counts(&*store).await, (0, 0));
    let longest = "d".repeat(128);
    store
        .create_outgoing_request(new_outgoing(&longest, 1), Effects::none())
        .await
        .unwrap();
}

#[tokio::test]
async fn every_transition_is_applied_replayed_or_refused() {
    let (_dir, _path, store) = fresh().await;
    let mut tally = (0, 0, 0);
    for from in ALL {
        for target in ALL {
            let before = in_state(&*store, from).await;
            let (audit, outbox) = counts(&*store).await;
            let tag = format!("{from}-{target}");
            // From Approved, approving again means the same grant.
            let update = step(before.id, target);
            let result = store
                .update_outgoing_request(before.id, update, 50_000, effects(&tag, 50_000))
                .await;
            let after = store.outgoing_request(before.id).await.unwrap().unwrap();
            if from == target {
                tally.1 += 1;
                let outcome = result.unwrap_or_else(|e| panic!("{tag}: {e}"));
                assert!(!outcome.changed, "{tag}");
                assert_eq!(outcome.value, before, "{tag}");
                assert_eq!(after, before, "{tag}");
                assert_eq!(counts(&*store).await, (audit, outbox), "{tag}");
            } else if ALLOWED.contains(&(from, target)) {
                tally.0 += 1;
                let outcome = result.unwrap_or_else(|e| panic!("{tag}: {e}"));
                assert!(outcome.changed, "{tag}");
                assert_eq!(outcome.value, after, "{tag}");
                assert_eq!(after.state, target, "{tag}");
                assert_eq!(after.updated_at, 50_000, "{tag}");
                let open = matches!(target, Sending | Pending);
                assert_eq!(after.code.is_some(), open, "{tag}: code");
                let granted = target == Approved || from == Approved;
                assert_eq!(
                    after.grant,
                    granted.then(|| grant_for(before.id)),
                    "{tag}: grant"
                );
                assert_eq!(
                    counts(&*store).await,
                    (audit + 1, outbox + 1),
                    "{tag}: effects"
                );
            } else {
                tally.2 += 1;
                let err = result.expect_err(&tag);
                assert_conflict(&err, ConflictKind::Transition { from, to: target });
                let msg = err.to_string();
                assert!(
                    msg.contains(from.as_str()) && msg.contains(target.as_str()),
                    "{tag}: {msg}"
                );
                assert_eq!(after, before, "{tag}");
                assert_eq!(counts(&*store).await, (audit, outbox), "{tag}");
            }
        }
    }
    assert_eq!(tally, (15, 9, 57));
}

#[tokio::test]
async fn a_grant_comes_exactly_with_approval() {
    let (_dir, _path, store) = fresh().await;
    let pending = in_state(&*store, Pending).await;
    let err = store
        .update_outgoing_request(pending.id, to(Approved, None), 2_000, effects("a", 2_000))
        .await
        .unwrap_err();
    assert_conflict(&err, ConflictKind::Check);
    assert!(err.to_string().contains("grant"), "{err}");
    for state in [Denied, Expired, Failed, Pending] {
        let err = store
            .update_outgoing_request(
                pending.id,
                to(state, Some(grant_for(pending.id))),
                2_000,
                effects("b", 2_000),
            )
            .await
            .unwrap_err();
        assert_conflict(&err, ConflictKind::Check);
    }
    assert_eq!(
        store.outgoing_request(pending.id).await.unwrap(),
        Some(pending.clone())
    );
    assert_eq!(counts(&*store).await, (0, 0));

    // Approved with a grant; the same decision replayed changes nothing,
    // another grant for it is a conflict.
    let grant = grant_for(pending.id);
    let approved = store
        .update_outgoing_request(
            pending.id,
            to(Approved, Some(grant.clone())),
            3_000,
            effects("approve", 3_000),
        )
        .await
        .unwrap();
    assert!(approved.changed);
    assert_eq!(approved.value.grant.as_ref(), Some(&grant));
    let replay = store
        .update_outgoing_request(
            pending.id,
            to(Approved, Some(grant.clone())),
            4_000,
            effects("approve-again", 4_000),
        )
        .await
        .unwrap();
    assert!(!replay.changed);
    assert_eq!(replay.value.updated_at, 3_000);
    let other = ReceivedGrant {
        token: "another.token.sig".into(),
        ..grant.clone()
    };
    let err = store
        .update_outgoing_request(
            pending.id,
            to(Approved, Some(other)),
            4_000,
            Effects::none(),
        )
        .await
        .unwrap_err();
    assert_conflict(&err, ConflictKind::State);
    assert_eq!(counts(&*store).await, (1, 1));

    // Revocation keeps the grant on record, findable by its id.
    let revoked = store
        .update_outgoing_request(pending.id, to(Revoked, None), 5_000, Effects::none())
        .await
        .unwrap()
        .value;
    assert_eq!(revoked.grant.as_ref(), Some(&grant));
    let by_grant = store.outgoing_request_by_grant(grant.id).await.unwrap();
    assert_eq!(by_grant, Some(revoked));
    assert!(store
        .outgoing_request_by_grant(Uuid::new_v4())
        .await
        .unwrap()
        .is_none());

    // A grant id belongs to one request only.
    let second = in_state(&*store, Pending).await;
    let err = store
        .update_outgoing_request(second.id, to(Approved, Some(grant)), 6_000, Effects::none())
        .await
        .unwrap_err();
    assert_conflict(&err, ConflictKind::Unique);
    assert_eq!(
        store
            .outgoing_request(second.id)
            .await
            .unwrap()
            .unwrap()
            .state,
        Pending
    );
}

#[tokio::test]
async fn the_code_is_kept_only_while_the_request_is_open() {
    let (_dir, path, store) = fresh().await;
    let sending = in_state(&*store, Sending).await;
    let pending = store
        .update_outgoing_request(sending.id, to(Pending, None), 1_500, Effects::none())
        .await
        .unwrap()
        .value;
    assert_eq!(pending.code.as_deref(), Some(CODE));
    for state in [Approved, Denied, Voided, Expired, Cancelled, Failed] {
        let open = in_state(&*store, Pending).await;
        let closed = store
            .update_outgoing_request(open.id, step(open.id, state), 2_000, Effects::none())
            .await
            .unwrap()
            .value;
        assert_eq!(closed.code, None, "{state}");
    }
    // The schema holds the rule even against a write that forgets it.
    let mut conn = raw(&path).await;
    let err = sqlx::query("UPDATE outgoing_requests SET state = 'denied' WHERE id = ?1")
        .bind(pending.id.to_string())
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_conflict(&StoreError::from(err), ConflictKind::Check);
    let err =
        sqlx::query("UPDATE outgoing_requests SET state = 'revoked', code = NULL WHERE id = ?1")
            .bind(pending.id.to_string())
            .execute(&mut conn)
            .await
            .unwrap_err();
    assert_conflict(&StoreError::from(err), ConflictKind::Check);
}

#[tokio::test]
async fn reasons_times_and_unknown_requests() {
    let (_dir, _path, store) = fresh().await;
    let r = in_state(&*store, Sending).await;
    let failed = store
        .update_outgoing_request(
            r.id,
            OutgoingUpdate {
                state: Failed,
                reason: Some("no_live_invitation".into()),
                grant: None,
            },
            // The caller's clock stepped back: updated_at does not.
            900,
            Effects::none(),
        )
        .await
        .unwrap()
        .value;
    assert_eq!(failed.reason.as_deref(), Some("no_live_invitation"));
    assert_eq!(failed.updated_at, 1_000);
    // A replay keeps the first reason.
    let again = store
        .update_outgoing_request(
            r.id,
            OutgoingUpdate {
                state: Failed,
                reason: Some("something_else".into()),
                grant: None,
            },
            2_000,
            Effects::none(),
        )
        .await
        .unwrap();
    assert!(!again.changed);
    assert_eq!(again.value.reason.as_deref(), Some("no_live_invitation"));

    let long = in_state(&*store, Pending).await;
    let err = store
        .update_outgoing_request(
            long.id,
            OutgoingUpdate {
                state: Denied,
                reason: Some("x".repeat(201)),
                grant: None,
            },
            2_000,
            Effects::none(),
        )
        .await
        .unwrap_err();
    assert_conflict(&err, ConflictKind::Check);

    let err = store
        .update_outgoing_request(Uuid::new_v4(), to(Pending, None), 1, Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "outgoing request"
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_failing_effect_leaves_the_request_unchanged() {
    let (_dir, _path, store) = fresh().await;
    let r = in_state(&*store, Pending).await;
    // The key the update's message uses is taken by another message.
    store
        .enqueue(NewOutboxMessage {
            payload: json!("other"),
            ..effects("approve", 1).outbox.remove(0)
        })
        .await
        .unwrap();
    let err = store
        .update_outgoing_request(r.id, step(r.id, Approved), 2_000, effects("approve", 2_000))
        .await
        .unwrap_err();
    assert_conflict(&err, ConflictKind::IdempotencyKey);
    assert_eq!(store.outgoing_request(r.id).await.unwrap(), Some(r));
    assert_eq!(counts(&*store).await, (0, 1));
}

#[tokio::test]
async fn a_doctors_requests_newest_first() {
    let (_dir, _path, store) = fresh().await;
    let mut mine = Vec::new();
    for at in [3_000, 1_000, 2_000] {
        let r = store
            .create_outgoing_request(new_outgoing("dr.who", at), Effects::none())
            .await
            .unwrap()
            .value;
        mine.push((at, r.id));
    }
    store
        .create_outgoing_request(new_outgoing("dr.no", 5_000), Effects::none())
        .await
        .unwrap();
    mine.sort_by_key(|m| std::cmp::Reverse(m.0));
    let listed = store
        .outgoing_requests_for_doctor("dr.who", u32::MAX)
        .await
        .unwrap();
    assert_eq!(
        listed.iter().map(|r| r.id).collect::<Vec<_>>(),
        mine.iter().map(|m| m.1).collect::<Vec<_>>()
    );
    let two = store
        .outgoing_requests_for_doctor("dr.who", 2)
        .await
        .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(two[0].created_at, 3_000);
    assert!(store
        .outgoing_requests_for_doctor("nobody", 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn secrets_never_reach_debug_output() {
    let (_dir, _path, store) = fresh().await;
    let new = new_outgoing("dr.who", 1_000);
    let shown = format!("{new:?}");
    assert!(!shown.contains(CODE), "{shown}");
    assert!(shown.contains("\"<redacted>\""), "{shown}");

    let open = store
        .create_outgoing_request(new, Effects::none())
        .await
        .unwrap()
        .value;
    let shown = format!("{open:?} {open:#?}");
    assert!(!shown.contains(CODE), "{shown}");
    assert!(shown.contains("\"<redacted>\""), "{shown}");
    assert!(shown.contains("dr.who"), "{shown}");

    let update = step(open.id, Approved);
    let shown = format!("{update:?}");
    assert!(!shown.contains(TOKEN_MARK), "{shown}");
    let approved = store
        .update_outgoing_request(open.id, update, 2_000, Effects::none())
        .await
        .unwrap();
    let shown = format!("{approved:?} {approved:#?}");
    assert!(!shown.contains(TOKEN_MARK), "{shown}");
    assert!(!shown.contains(CODE), "{shown}");
    assert!(shown.contains("token: \"<redacted>\""), "{shown}");
    assert!(shown.contains("code: None"), "{shown}");
    let grant = approved.value.grant.unwrap();
    assert!(shown.contains(&grant.id.to_string()), "{shown}");
}
