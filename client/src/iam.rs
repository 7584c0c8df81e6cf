//! The IAM part of [`KmsClient`]: exchanging an API key for a bearer token
//! (`IamService/CreateToken`, which needs no token) and creating API keys.

use std::time::Duration;

use kmsim_proto::v1::iam_service_client::IamServiceClient;
use kmsim_proto::v1::{
    CreateApiKeyRequest, CreateApiKeyResponse, CreateTokenRequest, CreateTokenResponse,
};

use crate::client::{AuthenticatedChannel, KmsClient};
use crate::error::ClientError;
use crate::retry::rpc;

impl KmsClient {
    /// The generated IamService client, with this client's credentials.
    pub fn iam_service(&self) -> IamServiceClient<AuthenticatedChannel> {
        IamServiceClient::with_interceptor(self.channel().clone(), self.interceptor().clone())
    }

    /// Exchanges `api_key` for a bearer token living `lifetime` (60 s ..= 1 day) by the
    /// server's clock. The response holds the token: keep it out of logs.
    ///
    /// # Errors
    /// A [`ClientError`]; `UNAUTHENTICATED` (`UNAUTHORIZED_ERR`) for a wrong key.
    pub async fn create_token(
        &self,
        api_key: &str,
        lifetime: Duration,
    ) -> Result<CreateTokenResponse, ClientError> {
        let request = CreateTokenRequest {
            api_key: api_key.to_owned(),
            expires_in_seconds: i32::try_from(lifetime.as_secs()).unwrap_or(i32::MAX),
        };
        rpc!(
            self,
            NotIdempotent,
            self.iam_service(),
            create_token,
            request
        )
    }

    /// Creates an API key (administrators only). The secret is in the response, once.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn create_api_key(
        &self,
        request: CreateApiKeyRequest,
    ) -> Result<CreateApiKeyResponse, ClientError> {
        rpc!(
            self,
            NotIdempotent,
            self.iam_service(),
            create_api_key,
            request
        )
    }
}
