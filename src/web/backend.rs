//! What the pages need from the access flow, as a trait: [`Access`] in
//! production, a fake in the unit tests (which then exercise routing,
//! sessions and CSRF without an access.md or a store).
//!
//! The transfer methods have default bodies ("nothing here") so that a
//! fake only overrides what its test drives; [`Access`] overrides them
//! all with [`crate::federation::transfer`]'s functions.

use std::path::PathBuf;
use std::time::Duration;

use uuid::Uuid;

use crate::federation::access::{
    Access, AccessError, DoctorRequest, NewInvitation, PatientOverview,
};
use crate::federation::transfer::{self, HandOver, HandOverError, TransferView};
use crate::policy::{Role, RouteId};
use crate::store;
use crate::upstream::{NewQuestion, Secret, SignInError, SignedInUser};

/// The access flow as the pages call it; the methods are
/// [`Access`]'s, one for one.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError>;
    async fn patient_overview(&self, user: &SignedInUser) -> Result<PatientOverview, AccessError>;
    async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError>;
    async fn approve(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError>;
    async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError>;
    async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError>;
    async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError>;
    async fn doctor_requests(&self, user: &SignedInUser)
        -> Result<Vec<DoctorRequest>, AccessError>;
    async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError>;
    async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError>;
    async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &NewQuestion,
    ) -> Result<(), AccessError>;
    async fn webfinger(&self, resource: &str) -> Result<Option<serde_json::Value>, AccessError>;

    // ------------------------------------------------------- transfers

    async fn start_transfer(
        &self,
        _user: &SignedInUser,
        _payload: &str,
    ) -> Result<TransferView, AccessError> {
        Err(AccessError::NotFound)
    }
    async fn doctor_transfers(
        &self,
        _user: &SignedInUser,
    ) -> Result<Vec<TransferView>, AccessError> {
        Ok(Vec::new())
    }
    async fn doctor_transfer(
        &self,
        _user: &SignedInUser,
        _id: Uuid,
    ) -> Result<TransferView, AccessError> {
        Err(AccessError::NotFound)
    }
    /// The kept plaintext bundle (JSON lines) of an imported transfer.
    async fn doctor_bundle(&self, _user: &SignedInUser, _id: Uuid) -> Result<PathBuf, AccessError> {
        Err(AccessError::NotFound)
    }
    async fn approve_transfer(
        &self,
        _user: &SignedInUser,
        _request: Uuid,
        _code: &str,
        _key: &str,
    ) -> Result<TransferView, AccessError> {
        Err(AccessError::NotFound)
    }
    async fn patient_transfers(
        &self,
        _user: &SignedInUser,
    ) -> Result<Vec<TransferView>, AccessError> {
        Ok(Vec::new())
    }
    /// The new home's transfer `id`, for the sign-in-free hand-over page.
    async fn handover_view(&self, _id: Uuid) -> Result<TransferView, AccessError> {
        Err(AccessError::NotFound)
    }
    fn import_running(&self, _id: Uuid) -> bool {
        false
    }
    async fn hand_over(&self, _id: Uuid, _form: HandOver) -> Result<(), HandOverError> {
        Err(HandOverError::NotFound)
    }
}

#[async_trait::async_trait]
impl Backend for Access {
    async fn sign_in(&self, username: &str, password: Secret) -> Result<SignedInUser, SignInError> {
        Access::sign_in(self, username, password).await
    }

    async fn patient_overview(&self, user: &SignedInUser) -> Result<PatientOverview, AccessError> {
        Access::patient_overview(self, user).await
    }

    async fn new_invitation(&self, user: &SignedInUser) -> Result<NewInvitation, AccessError> {
        Access::new_invitation(self, user).await
    }

    async fn approve(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        role: Option<Role>,
        duration: Option<Duration>,
    ) -> Result<store::Grant, AccessError> {
        Access::approve(self, user, request, code, role, duration).await
    }

    async fn deny(&self, user: &SignedInUser, request: Uuid) -> Result<(), AccessError> {
        Access::deny(self, user, request).await
    }

    async fn revoke(&self, user: &SignedInUser, grant: Uuid) -> Result<(), AccessError> {
        Access::revoke(self, user, grant).await
    }

    async fn start_request(
        &self,
        user: &SignedInUser,
        payload: &str,
        role: Role,
        duration: Duration,
    ) -> Result<DoctorRequest, AccessError> {
        Access::start_request(self, user, payload, role, duration).await
    }

    async fn doctor_requests(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<DoctorRequest>, AccessError> {
        Access::doctor_requests(self, user).await
    }

    async fn doctor_request(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<DoctorRequest, AccessError> {
        Access::doctor_request(self, user, id).await
    }

    async fn remote_read(
        &self,
        user: &SignedInUser,
        request: Uuid,
        route: RouteId,
    ) -> Result<serde_json::Value, AccessError> {
        Access::remote_read(self, user, request, route).await
    }

    async fn remote_ask(
        &self,
        user: &SignedInUser,
        request: Uuid,
        question: &NewQuestion,
    ) -> Result<(), AccessError> {
        Access::remote_ask(self, user, request, question).await
    }

    async fn webfinger(&self, resource: &str) -> Result<Option<serde_json::Value>, AccessError> {
        Access::webfinger(self, resource).await
    }

    async fn start_transfer(
        &self,
        user: &SignedInUser,
        payload: &str,
    ) -> Result<TransferView, AccessError> {
        transfer::start(self, user, payload).await
    }

    async fn doctor_transfers(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<TransferView>, AccessError> {
        transfer::doctor_transfers(self, user).await
    }

    async fn doctor_transfer(
        &self,
        user: &SignedInUser,
        id: Uuid,
    ) -> Result<TransferView, AccessError> {
        transfer::doctor_transfer(self, user, id).await
    }

    async fn doctor_bundle(&self, user: &SignedInUser, id: Uuid) -> Result<PathBuf, AccessError> {
        transfer::doctor_bundle(self, user, id).await
    }

    async fn approve_transfer(
        &self,
        user: &SignedInUser,
        request: Uuid,
        code: &str,
        key: &str,
    ) -> Result<TransferView, AccessError> {
        transfer::approve(self, user, request, code, key).await
    }

    async fn patient_transfers(
        &self,
        user: &SignedInUser,
    ) -> Result<Vec<TransferView>, AccessError> {
        transfer::patient_transfers(self, user).await
    }

    async fn handover_view(&self, id: Uuid) -> Result<TransferView, AccessError> {
        transfer::handover_view(self, id).await
    }

    fn import_running(&self, id: Uuid) -> bool {
        transfer::import_running(self, id)
    }

    async fn hand_over(&self, id: Uuid, form: HandOver) -> Result<(), HandOverError> {
        transfer::hand_over(self, id, form).await.map(|_| ())
    }
}
