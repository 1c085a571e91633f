//! The live state of this server's grants, in memory, for the data path.
//!
//! A data request must see a revocation on the very next request, and the
//! checks on the data path together must cost a few microseconds, so the
//! grant row is not read from the database per request: the first request
//! under a grant loads it (and the patient's upstream id) from the store,
//! later ones read the cached entry. A revocation by this instance marks
//! the entry revoked *before* the store commits, so no request slips
//! between. (Several instances on PostgreSQL will add a notification
//! channel that does the same on every instance; see `store`.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use moka::sync::Cache;
use uuid::Uuid;

use crate::store::{Grant, UnixMillis};

/// A grant as the data path needs it.
#[derive(Debug)]
pub struct LiveGrant {
    pub grant: Grant,
    /// The patient's access.md id.
    pub upstream_patient_id: i64,
    revoked: AtomicBool,
}

impl LiveGrant {
    pub fn new(grant: Grant, upstream_patient_id: i64) -> LiveGrant {
        let revoked = grant.revoked_at.is_some();
        LiveGrant {
            grant,
            upstream_patient_id,
            revoked: AtomicBool::new(revoked),
        }
    }

    pub fn is_revoked(&self) -> bool {
        self.revoked.load(Ordering::Acquire)
    }

    /// Unrevoked and within its validity at `now`.
    pub fn is_live(&self, now: UnixMillis) -> bool {
        !self.is_revoked() && self.grant.not_before <= now && now < self.grant.expires_at
    }
}

/// Grants by id (the token's `jti`).
pub struct GrantCache {
    entries: Cache<Uuid, Arc<LiveGrant>>,
    /// Ids revoked by this instance, kept so that an entry loaded from a
    /// snapshot taken before the revocation committed is still refused.
    revoked: Cache<Uuid, ()>,
}

impl GrantCache {
    pub fn new(capacity: u64) -> GrantCache {
        GrantCache {
            entries: Cache::new(capacity),
            revoked: Cache::new(capacity),
        }
    }

    pub fn get(&self, id: &Uuid) -> Option<Arc<LiveGrant>> {
        self.entries.get(id)
    }

    /// Caches a grant loaded from the store, unless revoked meanwhile.
    pub fn insert(&self, live: LiveGrant) -> Arc<LiveGrant> {
        if self.revoked.contains_key(&live.grant.id) {
            live.revoked.store(true, Ordering::Release);
        }
        let live = Arc::new(live);
        self.entries.insert(live.grant.id, live.clone());
        live
    }

    /// Marks a grant revoked at once.
    pub fn revoke(&self, id: Uuid) {
        self.revoked.insert(id, ());
        if let Some(live) = self.entries.get(&id) {
            live.revoked.store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(id: u128) -> Grant {
        Grant {
            id: Uuid::from_u128(id),
            request_id: Uuid::from_u128(id + 1000),
            patient: Uuid::from_u128(7),
            server_fqdn: "two.example.org".into(),
            server_key_sha256: [1; 32],
            doctor: "d@two.example.org".into(),
            role: "viewer".into(),
            not_before: 1_000,
            expires_at: 2_000,
            revoked_at: None,
        }
    }

    #[test]
    fn revocation_reaches_cached_and_later_loaded_entries() {
        let cache = GrantCache::new(10);
        let a = cache.insert(LiveGrant::new(grant(1), 5));
        assert!(a.is_live(1_500));
        assert!(!a.is_live(999));
        assert!(!a.is_live(2_000));
        cache.revoke(a.grant.id);
        assert!(!a.is_live(1_500));
        assert!(cache.get(&a.grant.id).is_some_and(|g| g.is_revoked()));
        // A stale load after the revocation stays revoked.
        let again = cache.insert(LiveGrant::new(grant(1), 5));
        assert!(again.is_revoked());
        // Revoking something never loaded, then loading it.
        cache.revoke(Uuid::from_u128(2));
        assert!(cache.insert(LiveGrant::new(grant(2), 5)).is_revoked());
        assert!(!cache.insert(LiveGrant::new(grant(3), 5)).is_revoked());
    }
}
