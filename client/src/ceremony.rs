//! The client half of the HSM master-key ceremony (`HsmService.AddAdministrator` ...
//! `RotateMasterKey`): an [`Administrator`] holds a P-256 signing key and signs commands; a
//! [`Ceremony`] fetches the crypto unit's command context before each command, collects the
//! signatures of the administrators given, and sends the command.
//!
//! Commands are signed exactly as `sim-hsm` verifies them ([`sign_command`](kmsim_proto::admin::sign_command) over
//! [`AdminCommand`]'s canonical bytes bound to the instance nonce and command counter),
//! so a signature is good for one command only.
//!
//! ```no_run
//! use kmsim_client::KmsClient;
//! use kmsim_client::ceremony::{Administrator, Ceremony};
//!
//! # async fn example(client: KmsClient) -> Result<(), kmsim_client::ClientError> {
//! let alice = Administrator::generate("alice");
//! let bob = Administrator::generate("bob");
//! let ceremony = Ceremony::new(&client);
//! ceremony.add_administrator(&alice, &[]).await?; // imprint mode: unsigned
//! ceremony.add_administrator(&bob, &[]).await?;
//! ceremony.set_thresholds(2, 2, &[]).await?; // leaves imprint mode
//! ceremony.load_master_key_part(&[1; 32], &[&alice, &bob]).await?;
//! ceremony.load_master_key_part(&[2; 32], &[&alice, &bob]).await?;
//! ceremony.commit_master_key(&[&alice, &bob]).await?;
//! ceremony.rotate_master_key(&[&alice, &bob], false).await?;
//! # Ok(())
//! # }
//! ```

use std::fmt;

use kmsim_proto::admin::p256::ecdsa::SigningKey;
use kmsim_proto::admin::{AdminCommand, CommandContext};
use kmsim_proto::v1 as pb;
use pb::hsm_service_client::HsmServiceClient;

use crate::client::AuthenticatedChannel;
use crate::{ClientError, KmsClient};

/// A crypto-unit administrator: a name and a P-256 signing key (never printed).
#[derive(Clone)]
pub struct Administrator {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for Administrator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Administrator")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl Administrator {
    /// An administrator with a fresh random signing key.
    ///
    /// # Panics
    /// Only when the operating system's random source is unavailable.
    #[must_use]
    pub fn generate(name: &str) -> Self {
        let mut seed = zeroize::Zeroizing::new([0u8; 32]);
        loop {
            // Invariant: the OS RNG is available on every supported platform; without it no
            // key can be made.
            #[allow(clippy::expect_used)]
            getrandom::fill(&mut seed[..]).expect("operating-system RNG unavailable");
            if let Ok(key) = SigningKey::from_slice(&seed[..]) {
                return Self::from_signing_key(name, key);
            }
        }
    }

    /// An administrator with an existing signing key.
    #[must_use]
    pub fn from_signing_key(name: &str, key: SigningKey) -> Self {
        Self {
            name: name.to_owned(),
            key,
        }
    }

    /// The administrator's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The SEC1 (uncompressed) encoding of the public key, as `AddAdministrator` takes it.
    #[must_use]
    pub fn public_key_sec1(&self) -> Vec<u8> {
        self.key
            .verifying_key()
            .to_sec1_point(false)
            .as_bytes()
            .to_vec()
    }

    /// Signs `command` for the crypto unit's `context`.
    #[must_use]
    pub fn sign(&self, context: &CommandContext, command: &AdminCommand) -> pb::AdminSignature {
        let signature = kmsim_proto::admin::sign_command(&self.key, &self.name, context, command);
        pb::AdminSignature {
            administrator: signature.admin,
            signature: signature.signature,
        }
    }
}

/// Runs ceremony commands against a server's HsmService with a client's credentials (an
/// administrator identity).
#[derive(Debug, Clone)]
pub struct Ceremony {
    hsm: HsmServiceClient<AuthenticatedChannel>,
}

impl Ceremony {
    /// A ceremony over `client`'s connection and bearer token.
    pub fn new(client: &KmsClient) -> Self {
        Self {
            hsm: HsmServiceClient::with_interceptor(
                client.channel().clone(),
                client.interceptor().clone(),
            ),
        }
    }

    /// The crypto unit's current command context.
    ///
    /// # Errors
    /// A [`ClientError`], or [`ClientError::MalformedResponse`] for an instance nonce that is
    /// not 16 bytes.
    pub async fn context(&self) -> Result<CommandContext, ClientError> {
        let response = self
            .hsm
            .clone()
            .get_admin_command_context(pb::GetAdminCommandContextRequest {})
            .await?
            .into_inner();
        let instance: [u8; 16] = response
            .instance
            .as_slice()
            .try_into()
            .map_err(|_| ClientError::MalformedResponse("instance"))?;
        Ok(CommandContext {
            instance,
            counter: response.counter,
        })
    }

    /// Fetches the context and collects every signer's signature over `command`.
    async fn sign(
        &self,
        command: &AdminCommand,
        signers: &[&Administrator],
    ) -> Result<Vec<pb::AdminSignature>, ClientError> {
        if signers.is_empty() {
            return Ok(Vec::new());
        }
        let context = self.context().await?;
        Ok(signers.iter().map(|a| a.sign(&context, command)).collect())
    }

    /// Installs `new` as an administrator, signed by `signers` (none in imprint mode).
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn add_administrator(
        &self,
        new: &Administrator,
        signers: &[&Administrator],
    ) -> Result<(), ClientError> {
        let public_key = new.public_key_sec1();
        let command = AdminCommand::AddAdministrator {
            name: new.name.clone(),
            public_key: public_key.clone(),
        };
        let signatures = self.sign(&command, signers).await?;
        self.hsm
            .clone()
            .add_administrator(pb::AddAdministratorRequest {
                name: new.name.clone(),
                public_key,
                signatures,
            })
            .await?;
        Ok(())
    }

    /// Sets the thresholds (leaves imprint mode).
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn set_thresholds(
        &self,
        signature: u8,
        revocation: u8,
        signers: &[&Administrator],
    ) -> Result<(), ClientError> {
        let command = AdminCommand::SetThresholds {
            signature,
            revocation,
        };
        let signatures = self.sign(&command, signers).await?;
        self.hsm
            .clone()
            .set_thresholds(pb::SetThresholdsRequest {
                signature_threshold: i32::from(signature),
                revocation_threshold: i32::from(revocation),
                signatures,
            })
            .await?;
        Ok(())
    }

    /// Loads a 256-bit master-key part. Returns the new register.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn load_master_key_part(
        &self,
        part: &[u8; 32],
        signers: &[&Administrator],
    ) -> Result<pb::MasterKeyRegister, ClientError> {
        let signatures = self
            .sign(&AdminCommand::load_master_key_part(part), signers)
            .await?;
        let response = self
            .hsm
            .clone()
            .load_master_key_part(pb::LoadMasterKeyPartRequest {
                part: part.to_vec(),
                signatures,
            })
            .await?
            .into_inner();
        response
            .new_master_key
            .ok_or(ClientError::MalformedResponse("new_master_key"))
    }

    /// Commits the new register. Returns it.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn commit_master_key(
        &self,
        signers: &[&Administrator],
    ) -> Result<pb::MasterKeyRegister, ClientError> {
        let signatures = self.sign(&AdminCommand::CommitMasterKey, signers).await?;
        let response = self
            .hsm
            .clone()
            .commit_master_key(pb::CommitMasterKeyRequest { signatures })
            .await?
            .into_inner();
        response
            .new_master_key
            .ok_or(ClientError::MalformedResponse("new_master_key"))
    }

    /// First activation of the committed key. Returns the current register.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn activate_master_key(
        &self,
        signers: &[&Administrator],
    ) -> Result<pb::MasterKeyRegister, ClientError> {
        let signatures = self.sign(&AdminCommand::ActivateMasterKey, signers).await?;
        let response = self
            .hsm
            .clone()
            .activate_master_key(pb::ActivateMasterKeyRequest { signatures })
            .await?
            .into_inner();
        response
            .current_master_key
            .ok_or(ClientError::MalformedResponse("current_master_key"))
    }

    /// Rotates to the committed key; with `pause`, the rotation stays in progress until
    /// [`Ceremony::finish_master_key_rotation`].
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn rotate_master_key(
        &self,
        signers: &[&Administrator],
        pause: bool,
    ) -> Result<pb::RotateMasterKeyResponse, ClientError> {
        let signatures = self.sign(&AdminCommand::RotateMasterKey, signers).await?;
        Ok(self
            .hsm
            .clone()
            .rotate_master_key(pb::RotateMasterKeyRequest {
                signatures,
                pause_before_finish: pause,
            })
            .await?
            .into_inner())
    }

    /// Finishes a paused rotation. Returns the current register.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn finish_master_key_rotation(&self) -> Result<pb::MasterKeyRegister, ClientError> {
        let response = self
            .hsm
            .clone()
            .finish_master_key_rotation(pb::FinishMasterKeyRotationRequest {})
            .await?
            .into_inner();
        response
            .current_master_key
            .ok_or(ClientError::MalformedResponse("current_master_key"))
    }
}
