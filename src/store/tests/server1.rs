//! The patient's home-server queries added for the access flow: expiry
//! sweeps, grant lookups, invitations, and outbox lookups.

use super::*;

/// Another invitation of the fixture's patient, live from `created_at`.
async fn invite(f: &Fixture, byte: u8, created_at: UnixMillis) -> Invitation {
    let invitation = Invitation {
        id: Uuid::new_v4(),
        patient: f.patient,
        token_hash: [byte; 32],
        created_at,
        expires_at: created_at + 10_000,
        used_at: None,
    };
    f.store.insert_invitation(invitation.clone()).await.unwrap();
    invitation
}

/// A pending request on invitation `byte`, expiring at `expires_at`.
async fn request(f: &Fixture, byte: u8, expires_at: UnixMillis) -> AccessRequest {
    invite(f, byte, 50).await;
    let new = NewAccessRequest {
        invitation_token_hash: [byte; 32],
        expires_at,
        ..new_request(f, &format!("key-{byte}"))
    };
    f.store
        .create_access_request(new, Effects::none())
        .await
        .unwrap()
        .value
}

#[tokio::test]
async fn the_sweeper_sees_expired_pending_requests_earliest_first() {
    let f = fixture().await;
    let late = request(&f, 1, 900).await;
    let early = request(&f, 2, 500).await;
    let later = request(&f, 3, 5_000).await;
    let closed = request(&f, 4, 400).await;
    f.store
        .close_request(closed.id, RequestState::Denied, 150, Effects::none())
        .await
        .unwrap();

    let ids = |v: Vec<AccessRequest>| v.into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert!(f
        .store
        .expired_pending_requests(499, 10)
        .await
        .unwrap()
        .is_empty());
    // Expiry is inclusive: a request is expired at its expires_at.
    assert_eq!(
        ids(f.store.expired_pending_requests(900, 10).await.unwrap()),
        [early.id, late.id]
    );
    assert_eq!(
        ids(f.store.expired_pending_requests(10_000, 1).await.unwrap()),
        [early.id]
    );
    assert_eq!(
        ids(f.store.expired_pending_requests(10_000, 10).await.unwrap()),
        [early.id, late.id, later.id]
    );
}

#[tokio::test]
async fn grants_by_request_by_server_and_live() {
    let f = fixture().await;
    f.store.touch_peer("server3.example", 1).await.unwrap();
    let a = request(&f, 1, 900).await;
    let b = request(&f, 2, 900).await;
    let c = request(&f, 3, 900).await;
    let d = request(&f, 4, 900).await;
    let unapproved = request(&f, 5, 900).await;
    let mut grants = Vec::new();
    for (r, not_before, expires_at, server) in [
        (&a, 200, 5_000, "server2.example"),
        (&b, 300, 9_000, "server2.example"),
        // Not valid yet at 1_000, but not expired either.
        (&c, 2_000, 7_000, "server2.example"),
        (&d, 250, 1_000, "server2.example"),
    ] {
        let g = Grant {
            not_before,
            expires_at,
            server_fqdn: server.into(),
            ..grant_for(r)
        };
        grants.push(
            f.store
                .approve_request(g, 200, Effects::none())
                .await
                .unwrap(),
        );
    }
    let [ga, gb, gc, gd] = [0, 1, 2, 3].map(|i| grants[i].clone());
    f.store
        .revoke_grant(gb.id, 400, Effects::none())
        .await
        .unwrap();

    assert_eq!(
        f.store.grant_for_request(a.id).await.unwrap(),
        Some(ga.clone())
    );
    assert_eq!(
        f.store
            .grant_for_request(b.id)
            .await
            .unwrap()
            .unwrap()
            .revoked_at,
        Some(400)
    );
    assert_eq!(
        f.store.grant_for_request(unapproved.id).await.unwrap(),
        None
    );
    assert_eq!(
        f.store.grant_for_request(Uuid::new_v4()).await.unwrap(),
        None
    );

    let ids = |v: Vec<Grant>| v.into_iter().map(|g| g.id).collect::<Vec<_>>();
    // All of the peer's grants, revoked and expired included, newest first.
    assert_eq!(
        ids(f.store.grants_for_server("server2.example").await.unwrap()),
        [gc.id, gb.id, gd.id, ga.id]
    );
    assert!(f
        .store
        .grants_for_server("server3.example")
        .await
        .unwrap()
        .is_empty());

    // Live at 1_000: not revoked (b), not expired (d, expiring exactly
    // then); latest expiry first.
    assert_eq!(
        ids(f.store.live_grants(1_000, 10).await.unwrap()),
        [gc.id, ga.id]
    );
    assert_eq!(ids(f.store.live_grants(1_000, 1).await.unwrap()), [gc.id]);
    assert_eq!(
        ids(f.store.live_grants(999, 10).await.unwrap()),
        [gc.id, ga.id, gd.id]
    );
    assert!(f.store.live_grants(9_000, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn invitations_listed_newest_first_and_withdrawn() {
    let f = fixture().await;
    let first = f
        .store
        .invitation_by_token_hash(f.token)
        .await
        .unwrap()
        .unwrap();
    let second = invite(&f, 1, 20).await;
    let third = invite(&f, 2, 30).await;
    // Someone else's invitation is not listed.
    let other = Uuid::new_v4();
    f.store
        .insert_patient(Patient {
            federation_id: other,
            upstream_id: 43,
            created_at: 1,
            moved_to: None,
        })
        .await
        .unwrap();
    f.store
        .insert_invitation(Invitation {
            patient: other,
            token_hash: [99; 32],
            ..invite_template(40)
        })
        .await
        .unwrap();

    let ids = |v: Vec<Invitation>| v.into_iter().map(|i| i.id).collect::<Vec<_>>();
    assert_eq!(
        ids(f
            .store
            .invitations_for_patient(f.patient, 10)
            .await
            .unwrap()),
        [third.id, second.id, first.id]
    );
    assert_eq!(
        ids(f.store.invitations_for_patient(f.patient, 2).await.unwrap()),
        [third.id, second.id]
    );

    // Withdrawn: used at that time, and no longer accepted for a request.
    f.store.revoke_invitation(first.id, 60).await.unwrap();
    let used = f.store.invitation_by_token_hash(f.token).await.unwrap();
    assert_eq!(used.unwrap().used_at, Some(60));
    let err = f
        .store
        .create_access_request(new_request(&f, "after-withdrawal"), Effects::none())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NotFound {
                what: "live invitation"
            }
        ),
        "{err:?}"
    );
    // Again: the first time stays.
    f.store.revoke_invitation(first.id, 70).await.unwrap();
    let used = f.store.invitation_by_token_hash(f.token).await.unwrap();
    assert_eq!(used.unwrap().used_at, Some(60));
    // A clock behind the invitation's creation cannot break the schema.
    f.store.revoke_invitation(third.id, 5).await.unwrap();
    let used = f.store.invitation_by_token_hash([2; 32]).await.unwrap();
    assert_eq!(used.unwrap().used_at, Some(30));
    assert!(matches!(
        f.store.revoke_invitation(Uuid::new_v4(), 60).await,
        Err(StoreError::NotFound { what: "invitation" })
    ));
}

fn invite_template(created_at: UnixMillis) -> Invitation {
    Invitation {
        id: Uuid::new_v4(),
        patient: Uuid::nil(),
        token_hash: [0; 32],
        created_at,
        expires_at: created_at + 10_000,
        used_at: None,
    }
}

#[tokio::test]
async fn outbox_lookup_by_key_and_pending_count() {
    let (_dir, _path, store) = fresh().await;
    assert_eq!(store.pending_outbox_count().await.unwrap(), 0);
    assert!(store.outbox_message("decision:x").await.unwrap().is_none());
    let a = store
        .enqueue(message("decision:a", json!({"token": "T"}), 100))
        .await
        .unwrap()
        .value;
    store
        .enqueue(message("decision:b", json!(2), 100))
        .await
        .unwrap();
    assert_eq!(store.pending_outbox_count().await.unwrap(), 2);
    assert_eq!(
        store.outbox_message("decision:a").await.unwrap(),
        Some(a.clone())
    );

    store.mark_delivered(a.id, 150).await.unwrap();
    assert_eq!(store.pending_outbox_count().await.unwrap(), 1);
    // Still found once delivered (its payload is the record of what was
    // sent).
    let delivered = store.outbox_message("decision:a").await.unwrap().unwrap();
    assert_eq!(delivered.delivered_at, Some(150));
    assert_eq!(delivered.payload, json!({"token": "T"}));
    // Failed attempts keep a message pending.
    let b = store.outbox_message("decision:b").await.unwrap().unwrap();
    store
        .mark_failed(b.id, 500, "connection refused")
        .await
        .unwrap();
    assert_eq!(store.pending_outbox_count().await.unwrap(), 1);
}
