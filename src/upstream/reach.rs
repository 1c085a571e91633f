//! [`Accounts`]: the upstream identities from the configuration, and which
//! patients each one reaches.
//!
//! An access.md doctor session reaches exactly the patients linked to that
//! doctor, and a patient is linked to one doctor for good (§4.3, §5). So
//! the map patient → account ([`Reach`]) is learned by asking each account
//! for its patients (R18) at start, and again on demand; it only ever
//! grows in normal operation. An account that cannot be asked (upstream
//! down, password refused) keeps the patients it had, since links do not
//! go away; an account that answers replaces its own entries (which also
//! covers an upstream whose database was reset).
//!
//! [`Accounts::identity_for_patient`] refreshes the map once when it does
//! not know a patient (someone may have linked them since), with concurrent
//! misses sharing one refresh and at most one miss-driven refresh per
//! [`DEFAULT_MIN_REFRESH_INTERVAL`], so requests for unknown ids cannot
//! turn into a stream of upstream calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use super::access::AccessMd;
use super::error::UpstreamError;
use super::identity::{IdentityError, UpstreamIdentity};
use super::model::{Role, UpstreamId};
use super::ops;
use crate::config;

/// The least time between two refreshes caused by unknown patients.
pub const DEFAULT_MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);

/// The configured upstream accounts and the patients they reach.
pub struct Accounts {
    /// The federation account first (when configured), then the enrolled
    /// ones in configuration order.
    identities: Vec<UpstreamIdentity>,
    has_federation: bool,
    /// Patient → index into `identities`.
    reach: RwLock<HashMap<UpstreamId, usize>>,
    /// Completed refreshes; a miss that started before a refresh finished
    /// does not need another.
    generation: AtomicU64,
    /// Held for the length of a refresh (one at a time); the time of the
    /// last one.
    refresh_gate: tokio::sync::Mutex<Option<Instant>>,
    min_refresh_interval: Duration,
}

/// A snapshot of which account reaches each patient.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reach {
    patients: HashMap<UpstreamId, String>,
}

impl Reach {
    /// The username of the account that reaches `patient`.
    pub fn account_for(&self, patient: UpstreamId) -> Option<&str> {
        self.patients.get(&patient).map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.patients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.patients.is_empty()
    }

    /// (patient, account username) pairs, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (UpstreamId, &str)> {
        self.patients.iter().map(|(id, name)| (*id, name.as_str()))
    }
}

/// What a refresh learned, per account.
#[derive(Debug)]
pub struct RefreshReport {
    /// In the order of [`Accounts::all`].
    pub accounts: Vec<AccountReport>,
}

/// One account's part of a [`RefreshReport`].
#[derive(Debug)]
pub struct AccountReport {
    pub username: String,
    /// The account's upstream id, when a login has shown it.
    pub upstream_id: Option<UpstreamId>,
    /// How many patients it reaches, or why that is unknown.
    pub patients: Result<usize, ReachError>,
}

/// Why an account's patients could not be learned.
#[derive(Debug, thiserror::Error)]
pub enum ReachError {
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The account is not a doctor, so it reaches no patient's record.
    #[error("the access.md account is not a doctor (its role is {role:?})")]
    NotADoctor { role: Role },
}

impl RefreshReport {
    /// Whether every account answered.
    pub fn is_complete(&self) -> bool {
        self.accounts.iter().all(|a| a.patients.is_ok())
    }
}

impl Accounts {
    /// Builds the identities of `[upstream.federation_account]` and
    /// `[[upstream.enrolled]]`, reading their password files. Nothing is
    /// sent upstream until [`Accounts::start`].
    pub fn from_config(access: &AccessMd, cfg: &config::Upstream) -> Result<Self, IdentityError> {
        let federation = cfg
            .federation_account
            .as_ref()
            .map(|account| UpstreamIdentity::from_account(access, account))
            .transpose()?;
        let enrolled = cfg
            .enrolled
            .iter()
            .map(|account| UpstreamIdentity::from_account(access, account))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Accounts::new(federation, enrolled))
    }

    /// Accounts from identities built elsewhere.
    pub fn new(federation: Option<UpstreamIdentity>, enrolled: Vec<UpstreamIdentity>) -> Self {
        let has_federation = federation.is_some();
        let identities = federation.into_iter().chain(enrolled).collect();
        Accounts {
            identities,
            has_federation,
            reach: RwLock::new(HashMap::new()),
            generation: AtomicU64::new(0),
            refresh_gate: tokio::sync::Mutex::new(None),
            min_refresh_interval: DEFAULT_MIN_REFRESH_INTERVAL,
        }
    }

    /// Changes the least time between two miss-driven refreshes.
    pub fn with_min_refresh_interval(mut self, interval: Duration) -> Self {
        self.min_refresh_interval = interval;
        self
    }

    /// The federation account, when configured.
    pub fn federation(&self) -> Option<&UpstreamIdentity> {
        if self.has_federation {
            self.identities.first()
        } else {
            None
        }
    }

    /// The enrolled doctors' accounts, in configuration order.
    pub fn enrolled(&self) -> &[UpstreamIdentity] {
        &self.identities[usize::from(self.has_federation)..]
    }

    /// Every account: the federation one first.
    pub fn all(&self) -> &[UpstreamIdentity] {
        &self.identities
    }

    /// Logs every account in, learns its id and its patients, and logs one
    /// line per account. Accounts that fail are reported, not fatal: the
    /// upstream may simply not be up yet, and a later refresh retries.
    pub async fn start(&self) -> RefreshReport {
        let report = self.refresh().await;
        for account in &report.accounts {
            match &account.patients {
                Ok(n) => tracing::info!(
                    upstream.account = %account.username,
                    upstream.user_id = account.upstream_id.map(|id| id.0),
                    upstream.patients = n,
                    "upstream account ready"
                ),
                Err(e) => tracing::warn!(
                    upstream.account = %account.username,
                    "upstream account not ready: {e}"
                ),
            }
        }
        report
    }

    /// Learns again which patients each account reaches (R18 per account,
    /// concurrently; logging in where needed).
    pub async fn refresh(&self) -> RefreshReport {
        let mut gate = self.refresh_gate.lock().await;
        self.refresh_locked(&mut gate).await
    }

    /// A snapshot of the map.
    pub fn reach(&self) -> Reach {
        let map = self.reach.read().unwrap_or_else(PoisonError::into_inner);
        Reach {
            patients: map
                .iter()
                .map(|(patient, i)| (*patient, self.identities[*i].username().to_owned()))
                .collect(),
        }
    }

    /// The account that reaches `patient`, refreshing the map once if it is
    /// not known (see the module docs for the limits on that).
    pub async fn identity_for_patient(&self, patient: UpstreamId) -> Option<&UpstreamIdentity> {
        let seen = self.generation.load(Ordering::Acquire);
        if let Some(identity) = self.lookup(patient) {
            return Some(identity);
        }
        {
            let mut gate = self.refresh_gate.lock().await;
            let refreshed_meanwhile = self.generation.load(Ordering::Acquire) != seen;
            let too_soon = gate.is_some_and(|at| at.elapsed() < self.min_refresh_interval);
            if !refreshed_meanwhile && !too_soon {
                let report = self.refresh_locked(&mut gate).await;
                for account in report.accounts {
                    if let Err(e) = account.patients {
                        tracing::warn!(
                            upstream.account = %account.username,
                            "cannot learn the account's patients: {e}"
                        );
                    }
                }
            }
        }
        self.lookup(patient)
    }

    fn lookup(&self, patient: UpstreamId) -> Option<&UpstreamIdentity> {
        let map = self.reach.read().unwrap_or_else(PoisonError::into_inner);
        map.get(&patient).map(|i| &self.identities[*i])
    }

    /// Notes that the account at `index` reaches `patient` (after a link
    /// was verified, or the patient's doctor was found to be that account).
    pub(super) fn record(&self, patient: UpstreamId, index: usize) {
        let mut map = self.reach.write().unwrap_or_else(PoisonError::into_inner);
        map.insert(patient, index);
    }

    /// The index of an identity of this set (by address).
    pub(super) fn index_of(&self, identity: &UpstreamIdentity) -> Option<usize> {
        self.identities
            .iter()
            .position(|candidate| std::ptr::eq(candidate, identity))
    }

    async fn refresh_locked(&self, gate: &mut Option<Instant>) -> RefreshReport {
        let results =
            futures_util::future::join_all(self.identities.iter().map(account_patients)).await;
        let mut accounts = Vec::with_capacity(results.len());
        {
            let mut map = self.reach.write().unwrap_or_else(PoisonError::into_inner);
            for (index, result) in results.into_iter().enumerate() {
                let identity = &self.identities[index];
                let patients = match result {
                    Ok(patients) => {
                        map.retain(|_, i| *i != index);
                        for patient in &patients {
                            match map.get(patient) {
                                Some(other) if *other != index => tracing::warn!(
                                    upstream.patient_id = %patient,
                                    upstream.account = %identity.username(),
                                    upstream.other_account = %self.identities[*other].username(),
                                    "two accounts list the same patient; keeping the first"
                                ),
                                _ => {
                                    map.insert(*patient, index);
                                }
                            }
                        }
                        Ok(patients.len())
                    }
                    Err(e) => Err(e),
                };
                accounts.push(AccountReport {
                    username: identity.username().to_owned(),
                    upstream_id: identity.account().map(|a| a.id),
                    patients,
                });
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
        *gate = Some(Instant::now());
        RefreshReport { accounts }
    }
}

/// The patients one account reaches: logs in (through `run`), checks the
/// account is a doctor, lists its patients.
async fn account_patients(identity: &UpstreamIdentity) -> Result<Vec<UpstreamId>, ReachError> {
    // Log in first so that a non-doctor account is reported as such rather
    // than as the 401 its R18 would get.
    identity.upstream_id().await?;
    if let Some(account) = identity.account() {
        if account.role != Role::Doctor {
            return Err(ReachError::NotADoctor { role: account.role });
        }
    }
    let patients = identity.run(ops::linked_patients()).await?;
    Ok(patients.iter().map(|p| p.id()).collect())
}

impl std::fmt::Debug for Accounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accounts")
            .field("federation", &self.federation())
            .field("enrolled", &self.enrolled())
            .field("reach", &self.reach().len())
            .finish()
    }
}
