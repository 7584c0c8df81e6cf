//! The signed administrative commands of the HSM master-key ceremony, shared by the crypto
//! unit that verifies them (`sim-hsm`) and the clients that sign them (`kmsim-client`), so a
//! client signs without linking the HSM: [`AdminCommand`], its canonical bytes bound to the
//! unit's [`CommandContext`] (instance nonce and command counter), and [`sign_command`]
//! (ECDSA P-256/SHA-256, r || s).

use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use sha2::{Digest, Sha256};

/// The P-256 types a signer needs.
pub use p256;

/// Module context that every signed command binds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommandContext {
    /// Random per-start instance nonce.
    pub instance: [u8; 16],
    /// Counter of accepted administrative commands.
    pub counter: u64,
}

/// An administrative command (what administrators sign).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    /// Install an administrator.
    AddAdministrator {
        /// Unique name.
        name: String,
        /// SEC1 encoding of the P-256 public key.
        public_key: Vec<u8>,
    },
    /// Remove an administrator (needs the revocation threshold).
    RemoveAdministrator {
        /// Name.
        name: String,
    },
    /// Set the signature and revocation thresholds (leaves imprint mode).
    SetThresholds {
        /// Signature threshold.
        signature: u8,
        /// Revocation threshold.
        revocation: u8,
    },
    /// Load one master-key part into the new register (the part itself is bound through its SHA-256).
    LoadMasterKeyPart {
        /// SHA-256 of the part.
        part_digest: [u8; 32],
    },
    /// Clear the new register.
    ClearNewMasterKey,
    /// Commit the new register.
    CommitMasterKey,
    /// Move the committed new key into the empty current register (first activation).
    ActivateMasterKey,
    /// Begin re-sealing the store under the committed new key.
    RotateMasterKey,
}

impl AdminCommand {
    /// The command for loading `part`.
    #[must_use]
    pub fn load_master_key_part(part: &[u8; 32]) -> Self {
        Self::LoadMasterKeyPart {
            part_digest: Sha256::digest(part).into(),
        }
    }

    /// Canonical bytes signed by administrators.
    #[must_use]
    pub fn canonical_bytes(&self, ctx: &CommandContext) -> Vec<u8> {
        let mut out = b"sim-hsm/admin-command/v1".to_vec();
        out.extend_from_slice(&ctx.instance);
        out.extend_from_slice(&ctx.counter.to_be_bytes());
        let mut field = |b: &[u8]| {
            // usize is at most 64 bits on every supported target.
            out.extend_from_slice(&(b.len() as u64).to_be_bytes());
            out.extend_from_slice(b);
        };
        match self {
            Self::AddAdministrator { name, public_key } => {
                field(b"add-administrator");
                field(name.as_bytes());
                field(public_key);
            }
            Self::RemoveAdministrator { name } => {
                field(b"remove-administrator");
                field(name.as_bytes());
            }
            Self::SetThresholds {
                signature,
                revocation,
            } => {
                field(b"set-thresholds");
                field(&[*signature, *revocation]);
            }
            Self::LoadMasterKeyPart { part_digest } => {
                field(b"load-master-key-part");
                field(part_digest);
            }
            Self::ClearNewMasterKey => field(b"clear-new-master-key"),
            Self::CommitMasterKey => field(b"commit-master-key"),
            Self::ActivateMasterKey => field(b"activate-master-key"),
            Self::RotateMasterKey => field(b"rotate-master-key"),
        }
        out
    }
}

/// One administrator's signature over a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSignature {
    /// Administrator name.
    pub admin: String,
    /// ECDSA P-256/SHA-256 signature, r || s (64 bytes).
    pub signature: Vec<u8>,
}

/// Signs `command` for the module state `ctx` as administrator `admin` (what a client of the ceremony sends).
#[must_use]
pub fn sign_command(
    key: &SigningKey,
    admin: &str,
    ctx: &CommandContext,
    command: &AdminCommand,
) -> AdminSignature {
    AdminSignature {
        admin: admin.to_owned(),
        signature: {
            let signature: Signature = key.sign(&command.canonical_bytes(ctx));
            signature.to_bytes().to_vec()
        },
    }
}
