//! Ending one session (logout, the owner, an operator, the refresh
//! flow), and the form-logout token that lets a browser ask for its own.
//! Ending many at once is `operators`'.

use super::cookie::StoreId;
use super::store::{Revocation, RevokeOutcome, RevokeReason, SessionStore, StoreResult};
use super::{Sessions, StoreOp};

impl Sessions {
    /// Ends one session with a tombstone that tells its cookie why (see
    /// `EndReason`); what was there before is the outcome.
    pub async fn revoke(
        &self,
        store_id: &StoreId,
        reason: RevokeReason,
        actor: &str,
        now: u64,
    ) -> StoreResult<RevokeOutcome> {
        let why = Revocation::new(reason, actor, now);
        let outcome = self
            .timed(StoreOp::Revoke, self.store.revoke(store_id, &why))
            .await;
        self.forget(store_id);
        let outcome = outcome?;
        self.count_revocations(reason, usize::from(outcome == RevokeOutcome::Revoked));
        tracing::info!(session = ?store_id, reason = reason.as_str(), actor, ?outcome, "session revoked");
        Ok(outcome)
    }

    /// The form-logout token for a session, as the current key makes it.
    pub fn logout_token(&self, store_id: &StoreId) -> String {
        self.keys.current().logout_token(store_id.as_str())
    }

    /// Whether `token` is a logout token for this session under any key.
    pub fn logout_token_matches(&self, store_id: &StoreId, token: &str) -> bool {
        self.keys.all().any(|k| {
            crate::secret::constant_time_eq(
                k.logout_token(store_id.as_str()).as_bytes(),
                token.as_bytes(),
            )
        })
    }
}
