//! The demo's walk-through of the access flow across two servers, step by
//! step, through the same service the pages call.

use std::time::Duration;

use super::testbed::{Login, Site, Testbed};
use super::DemoResult;
use crate::federation::access::Access;
use crate::policy::{Role, RouteId};
use crate::upstream::{NewQuestion, QuestionType, Secret, SignedInUser, Vitals};

fn access(site: &Site) -> DemoResult<Access> {
    site.running()
        .access
        .clone()
        .ok_or_else(|| "the access flow is not configured".to_owned())
}

async fn sign_in(site: &Site, who: &Login) -> DemoResult<SignedInUser> {
    access(site)?
        .sign_in(&who.username, Secret::new(who.password.clone()))
        .await
        .map_err(|e| format!("sign-in of {}: {e}", who.username))
}

fn step(n: usize, what: &str) {
    println!("\n[{n}] {what}");
}

fn fail(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Runs the whole access flow once, printing each step.
pub async fn walk(bed: &Testbed) -> DemoResult<()> {
    let (one, two) = (&bed.sites[0], &bed.sites[1]);
    let a1 = access(one)?;
    let a2 = access(two)?;

    step(
        1,
        &format!(
            "The patient {} signs in on {} (through access.md) and records vitals",
            one.patient.username, one.fqdn
        ),
    );
    let patient = sign_in(one, &one.patient).await?;
    let cfg = crate::config::load(&one.config_path).map_err(|e| e.report())?;
    let up = crate::upstream::AccessMd::new(&cfg.upstream);
    if let Some(session) = patient.patient_session(&up) {
        session
            .report_vitals(&Vitals {
                heart_beats_per_minute: 64.0,
                systolic_pressure: 118.0,
                diastolic_pressure: 76.0,
                blood_oxygenation: 98.0,
                breathing_rate: 14.0,
            })
            .await
            .map_err(fail)?;
    }
    let overview = a1.patient_overview(&patient).await.map_err(fail)?;
    println!("    federation address: {}", overview.address);

    step(
        2,
        "The patient's page shows a QR code with a single-use invitation",
    );
    let invitation = a1.new_invitation(&patient).await.map_err(fail)?;
    println!("    QR payload: {}", redact_invitation(&invitation.payload));

    step(
        3,
        &format!(
            "Doctor {} on {} scans it and asks for contributor access for 1 hour",
            two.doctor.username, two.fqdn
        ),
    );
    let doctor = sign_in(two, &two.doctor).await?;
    let req = a2
        .start_request(
            &doctor,
            &invitation.payload,
            Role::Contributor,
            Duration::from_secs(3600),
        )
        .await
        .map_err(fail)?;
    let code = req.code.clone().unwrap_or_default();
    println!(
        "    {} → {}: POST /federation/v1/access-requests (mutual TLS, keys from DNS)",
        two.fqdn, one.fqdn
    );
    println!(
        "    request {} is {}; the doctor's page shows the code {code}",
        req.id, req.state
    );

    step(
        4,
        "The patient sees the pending request and types the code the doctor shows",
    );
    let overview = a1.patient_overview(&patient).await.map_err(fail)?;
    let pending = overview
        .pending
        .first()
        .ok_or("no pending request on server1")?;
    println!(
        "    pending: {} asks for {} for {} s",
        pending.doctor,
        pending.role,
        pending.duration_ms / 1000
    );
    let grant = a1
        .approve(&patient, pending.id, &code, None, None)
        .await
        .map_err(fail)?;
    println!(
        "    approved: grant {} ({}) until {} ms",
        grant.id, grant.role, grant.expires_at
    );

    step(
        5,
        &format!(
            "{} delivers the grant token to {} through its outbox",
            one.fqdn, two.fqdn
        ),
    );
    let mut state = String::new();
    for _ in 0..100 {
        state = a2
            .doctor_request(&doctor, req.id)
            .await
            .map_err(fail)?
            .state
            .to_owned();
        if state == "approved" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("    the doctor's request is now {state}");

    step(6, "The doctor reads the remote record under the grant");
    let vitals = a2
        .remote_read(&doctor, req.id, RouteId::Vitals)
        .await
        .map_err(fail)?;
    println!("    GET /federation/v1/records/<id>/vitals → {vitals}");
    a2.remote_ask(
        &doctor,
        req.id,
        &NewQuestion {
            question: "How did you sleep last night?".into(),
            kind: Some(QuestionType::Text),
            recurring: false,
            start_date: None,
            end_date: None,
            recurrence: Vec::new(),
        },
    )
    .await
    .map_err(fail)?;
    println!("    POST /federation/v1/records/<id>/questions → asked (contributor)");

    step(
        7,
        "The patient revokes the grant; the very next read is refused",
    );
    a1.revoke(&patient, grant.id).await.map_err(fail)?;
    match a2.remote_read(&doctor, req.id, RouteId::Vitals).await {
        Ok(_) => return Err("a read after revocation succeeded".into()),
        Err(e) => println!("    refused: {}", e.message()),
    }

    step(8, "The patient's access log (hash-chained audit entries)");
    let overview = a1.patient_overview(&patient).await.map_err(fail)?;
    for entry in overview.log.iter().rev() {
        println!(
            "    #{:<3} {:<18} by {}",
            entry.seq, entry.kind, entry.actor
        );
    }
    Ok(())
}

/// The payload with its invitation token shortened (it is a secret).
fn redact_invitation(payload: &str) -> String {
    match payload.split_once("?invitation=") {
        Some((head, token)) => format!("{head}?invitation={}…", &token[..token.len().min(4)]),
        None => payload.to_owned(),
    }
}
