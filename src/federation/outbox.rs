//! Delivers the durable outbox: messages to peers (access requests,
//! decisions with grant tokens, revocation notices) and webhook events.
//!
//! A message is written in the same transaction as the state change it
//! announces (`store::Effects`), so it exists exactly when the change
//! does. This worker sends due messages, marks them delivered on a 2xx,
//! and otherwise schedules the next attempt with exponential backoff and
//! jitter (1 s doubling up to 10 min), so a peer that is down gets the
//! message once it is back, and a restart resumes where it stopped. A peer
//! that refuses a message for good (a 4xx other than 408/429) gets no
//! retries: the refusal is recorded, logged and audited. The receiver
//! drops duplicates by the message's own id, so a message delivered twice
//! (delivered, then a crash before `mark_delivered`) changes nothing.

use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use rand::Rng as _;
use tokio::sync::watch;

use super::access::wire::{self, ErrorMsg, PeerPost};
use super::access::{millis, Access};
use crate::store::{Effects, OutboxMessage, OutgoingState, OutgoingUpdate};

/// Messages taken per round.
const BATCH: u32 = 32;
/// Longest wait between rounds when nothing kicks the worker.
const IDLE: Duration = Duration::from_secs(1);
/// Backoff bounds.
const FIRST_RETRY: Duration = Duration::from_secs(1);
const LAST_RETRY: Duration = Duration::from_secs(600);

/// Runs until `shutdown` turns true.
pub async fn run(access: Access, mut shutdown: watch::Receiver<bool>) {
    loop {
        if *shutdown.borrow() {
            return;
        }
        let now = millis(std::time::SystemTime::now());
        match access.store().due(now, BATCH).await {
            Ok(batch) => {
                let full = batch.len() as u32 == BATCH;
                for msg in &batch {
                    deliver(&access, msg).await;
                }
                if full {
                    continue;
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read the outbox"),
        }
        // Also sweep pending requests nobody decided in time.
        sweep_expired(&access).await;
        tokio::select! {
            _ = access.kicked(IDLE) => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// Closes pending requests past their expiry (telling the requester).
async fn sweep_expired(access: &Access) {
    let now = millis(std::time::SystemTime::now());
    match access.store().expired_pending_requests(now, BATCH).await {
        Ok(reqs) => {
            for req in reqs {
                let _ = access
                    .close(&req, crate::store::RequestState::Expired, "mdgate")
                    .await;
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot sweep expired requests"),
    }
}

/// The delay before attempt `attempts + 1`.
fn backoff(attempts: u32) -> Duration {
    let base = FIRST_RETRY.saturating_mul(1u32 << attempts.min(20));
    let capped = base.min(LAST_RETRY);
    // Up to a quarter more, so peers coming back are not hit in step.
    let jitter = rand::thread_rng().gen_range(0..=capped.as_millis() as u64 / 4);
    capped + Duration::from_millis(jitter)
}

enum Attempt {
    Delivered,
    /// Refused for good; the reason.
    Refused(String),
    /// Try again later; why (no secrets).
    Retry(String),
}

/// One delivery attempt of `msg`, with its bookkeeping.
pub async fn deliver(access: &Access, msg: &OutboxMessage) {
    let attempt = if msg.kind == wire::KIND_WEBHOOK {
        webhook(access, msg).await
    } else {
        to_peer(access, msg).await
    };
    let store = access.store();
    let now = millis(std::time::SystemTime::now());
    let result = match attempt {
        Attempt::Delivered => {
            tracing::debug!(outbox.id = msg.id, kind = %msg.kind, to = %msg.destination, "delivered");
            store.mark_delivered(msg.id, now).await
        }
        Attempt::Refused(reason) => {
            tracing::warn!(outbox.id = msg.id, kind = %msg.kind, to = %msg.destination, reason = %reason, "message refused by the receiver; not retried");
            refused(access, msg, &reason).await;
            store.mark_delivered(msg.id, now).await
        }
        Attempt::Retry(why) => {
            let next =
                now + i64::try_from(backoff(msg.attempts).as_millis()).unwrap_or(i64::MAX / 2);
            tracing::info!(outbox.id = msg.id, kind = %msg.kind, to = %msg.destination, attempts = msg.attempts + 1, error = %why, "delivery failed; will retry");
            store.mark_failed(msg.id, next, &why).await
        }
    };
    if let Err(e) = result {
        tracing::error!(error = %e, outbox.id = msg.id, "cannot record a delivery attempt");
    }
}

async fn to_peer(access: &Access, msg: &OutboxMessage) -> Attempt {
    let Ok(post) = serde_json::from_value::<PeerPost>(msg.payload.clone()) else {
        return Attempt::Refused("malformed outbox payload".to_owned());
    };
    let path = format!("{}{}", super::PREFIX, post.path);
    let body = match serde_json::to_vec(&post.body) {
        Ok(b) => bytes::Bytes::from(b),
        Err(_) => return Attempt::Refused("malformed outbox payload".to_owned()),
    };
    let mut headers = HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_str(&msg.idempotency_key) {
        headers.insert("idempotency-key", v);
    }
    match super::access::peer_send(
        access,
        &msg.destination,
        Method::POST,
        &path,
        headers,
        Some(body),
    )
    .await
    {
        Err(e) => Attempt::Retry(format!("{}: {e}", e.reason())),
        Ok((status, body)) => {
            if status.is_success() {
                if msg.kind == wire::ACCESS_REQUESTS {
                    accepted(access, msg).await;
                }
                if msg.kind == super::transfer::wire::KIND_CONFIRMATION {
                    if let Some(id) = msg
                        .idempotency_key
                        .strip_prefix("transfer-confirmation:")
                        .and_then(|id| id.parse().ok())
                    {
                        super::transfer::peer::confirmed(access, id).await;
                    }
                }
                Attempt::Delivered
            } else if status.is_client_error()
                && status != StatusCode::REQUEST_TIMEOUT
                && status != StatusCode::TOO_MANY_REQUESTS
                && status != StatusCode::CONFLICT
            {
                let reason = serde_json::from_slice::<ErrorMsg>(&body)
                    .map(|e| e.error)
                    .unwrap_or_else(|_| format!("status_{}", status.as_u16()));
                Attempt::Refused(reason)
            } else {
                Attempt::Retry(format!("peer answered {}", status.as_u16()))
            }
        }
    }
}

/// server1 took our access request: it is pending now.
async fn accepted(access: &Access, msg: &OutboxMessage) {
    let Some(id) = request_id(msg) else { return };
    let update = OutgoingUpdate {
        state: OutgoingState::Pending,
        reason: None,
        grant: None,
    };
    let now = millis(std::time::SystemTime::now());
    if let Err(e) = access
        .store()
        .update_outgoing_request(id, update, now, Effects::none())
        .await
    {
        tracing::debug!(error = %e, "request already past pending");
    }
}

fn request_id(msg: &OutboxMessage) -> Option<uuid::Uuid> {
    let post = serde_json::from_value::<PeerPost>(msg.payload.clone()).ok()?;
    post.body.get("id")?.as_str()?.parse().ok()
}

/// The receiver refused for good: for our access requests, the doctor's
/// request fails with the reason.
async fn refused(access: &Access, msg: &OutboxMessage, reason: &str) {
    if msg.kind != wire::ACCESS_REQUESTS {
        return;
    }
    let Some(id) = request_id(msg) else { return };
    if super::transfer::peer::is_target(access, id).await {
        super::transfer::request_refused(access, id, reason).await;
        return;
    }
    let update = OutgoingUpdate {
        state: OutgoingState::Failed,
        reason: Some(reason.chars().take(200).collect()),
        grant: None,
    };
    let now = millis(std::time::SystemTime::now());
    if let Err(e) = access
        .store()
        .update_outgoing_request(id, update, now, Effects::none())
        .await
    {
        tracing::warn!(error = %e, "cannot record a refused request");
    }
}

async fn webhook(access: &Access, msg: &OutboxMessage) -> Attempt {
    let Some(hook) = access.parts().webhook.as_ref() else {
        // The webhook was removed from the configuration: drop the event.
        return Attempt::Delivered;
    };
    match hook.post(&msg.payload).await {
        Ok(()) => Attempt::Delivered,
        Err(e) => Attempt::Retry(e.to_string()),
    }
}
