//! Key states and the action x state matrix of Key Protect (reference section 1.6): the one
//! place that decides whether an action is allowed in a state.

use crate::error::KmsError;
use crate::kms::ids::KeyId;

/// A key's state, with Key Protect's integer values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(i32)]
pub enum KeyState {
    /// Fully usable.
    Active = 1,
    /// Disabled.
    Suspended = 2,
    /// Expired.
    Deactivated = 3,
    /// Deleted (soft).
    Destroyed = 5,
}

impl KeyState {
    /// Every state, in Key Protect's order.
    pub const ALL: [KeyState; 4] = [
        KeyState::Active,
        KeyState::Suspended,
        KeyState::Deactivated,
        KeyState::Destroyed,
    ];
}

/// Something a caller can do to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Read metadata (and a standard key's payload).
    Get,
    /// List versions.
    ListVersions,
    /// Rotate (new version).
    Rotate,
    /// Wrap a data key.
    Wrap,
    /// Unwrap a data key.
    Unwrap,
    /// Rewrap a ciphertext.
    Rewrap,
    /// Disable (suspend).
    Disable,
    /// Enable.
    Enable,
    /// Delete (soft).
    Delete,
    /// Restore a deleted key.
    Restore,
    /// Purge a deleted key.
    Purge,
    /// Add or remove an alias.
    ManageAliases,
    /// Set policies, set or unset the key for deletion.
    ManagePolicies,
}

impl Action {
    /// Every action.
    pub const ALL: [Action; 13] = [
        Action::Get,
        Action::ListVersions,
        Action::Rotate,
        Action::Wrap,
        Action::Unwrap,
        Action::Rewrap,
        Action::Disable,
        Action::Enable,
        Action::Delete,
        Action::Restore,
        Action::Purge,
        Action::ManageAliases,
        Action::ManagePolicies,
    ];

    /// Whether Key Protect allows this action in `state`.
    pub fn allowed_in(self, state: KeyState) -> bool {
        use KeyState::{Active, Deactivated, Destroyed, Suspended};
        match self {
            Action::Get | Action::ListVersions => true,
            Action::Rotate | Action::Unwrap | Action::Rewrap => {
                matches!(state, Active | Deactivated)
            }
            Action::Wrap | Action::Disable => state == Active,
            Action::Enable => state == Suspended,
            Action::Delete | Action::ManageAliases | Action::ManagePolicies => {
                matches!(state, Active | Suspended | Deactivated)
            }
            Action::Restore | Action::Purge => state == Destroyed,
        }
    }

    /// `Ok` when allowed; otherwise the error Key Protect answers with: `KEY_DELETED_ERR`
    /// for a Destroyed key, `KEY_ACTION_INVALID_STATE_ERR` otherwise.
    pub fn check(self, key: KeyId, state: KeyState) -> Result<(), KmsError> {
        if self.allowed_in(state) {
            Ok(())
        } else if state == KeyState::Destroyed {
            Err(KmsError::KeyDeleted(key))
        } else {
            Err(KmsError::ActionInvalidState { state })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_matches_key_protect() {
        use KeyState::*;
        // (action, [Active, Suspended, Deactivated, Destroyed]) from reference section 1.6.
        let expected: [(Action, [bool; 4]); 13] = [
            (Action::Get, [true, true, true, true]),
            (Action::ListVersions, [true, true, true, true]),
            (Action::Rotate, [true, false, true, false]),
            (Action::Wrap, [true, false, false, false]),
            (Action::Unwrap, [true, false, true, false]),
            (Action::Rewrap, [true, false, true, false]),
            (Action::Disable, [true, false, false, false]),
            (Action::Enable, [false, true, false, false]),
            (Action::Delete, [true, true, true, false]),
            (Action::Restore, [false, false, false, true]),
            (Action::Purge, [false, false, false, true]),
            (Action::ManageAliases, [true, true, true, false]),
            (Action::ManagePolicies, [true, true, true, false]),
        ];
        for (action, row) in expected {
            for (state, allowed) in [Active, Suspended, Deactivated, Destroyed]
                .into_iter()
                .zip(row)
            {
                assert_eq!(action.allowed_in(state), allowed, "{action:?} in {state:?}");
            }
        }
    }

    #[test]
    fn refusals_carry_key_protect_reasons() {
        let key = KeyId::from_bytes([7; 16]);
        assert!(matches!(
            Action::Wrap.check(key, KeyState::Destroyed),
            Err(KmsError::KeyDeleted(_))
        ));
        assert!(matches!(
            Action::Wrap.check(key, KeyState::Suspended),
            Err(KmsError::ActionInvalidState {
                state: KeyState::Suspended
            })
        ));
    }
}
