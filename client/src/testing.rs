//! Test support (compiled only for unit tests): a small in-memory fake of KeyService served
//! over a loopback TCP port, so the client and the data-key manager can be exercised through
//! real gRPC calls before the real server exists. It models only what the tests need: one
//! root key with versions and a state, generate/wrap/unwrap/rewrap with AAD checking, rotate,
//! disable, and Key Protect-style error details. Its "ciphertext" is not encryption.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmsim_proto::v1::key_service_server::{KeyService, KeyServiceServer};
use kmsim_proto::v1::*;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::KmsClient;

/// The fake's state, shared with the test for inspection.
#[derive(Debug, Default)]
pub struct FakeState {
    /// Version ids, oldest first; the last is current.
    pub versions: Vec<String>,
    /// False once disabled.
    pub active: bool,
    /// The `authorization` header of the last request.
    pub last_authorization: Option<String>,
    /// How many data keys were generated.
    pub generated: u32,
}

/// The fake service.
#[derive(Debug, Clone)]
pub struct FakeKeyService {
    state: Arc<Mutex<FakeState>>,
}

fn kp_error(code: Code, reason: &str, http: u16, message: &str) -> Status {
    let mut details = ErrorDetails::with_error_info(
        reason,
        crate::ERROR_DOMAIN,
        HashMap::from([("http_status".to_owned(), http.to_string())]),
    );
    if reason == "KEY_ROTATION_NOT_PERMITTED" {
        details.set_retry_info(Some(Duration::from_secs(3600)));
    }
    Status::with_error_details(code, message, details)
}

fn version(id: &str) -> KeyVersion {
    KeyVersion {
        id: id.to_owned(),
        create_time: None,
    }
}

/// Fake ciphertext: version index byte, AAD joined by 0xFF, 0x00, then the plaintext.
fn fake_wrap(version: usize, aad: &[String], plaintext: &[u8]) -> Vec<u8> {
    let mut out = vec![u8::try_from(version).expect("few versions in tests")];
    out.extend_from_slice(aad.join("\u{ff}").as_bytes());
    out.push(0);
    out.extend_from_slice(plaintext);
    out
}

fn fake_unwrap(ciphertext: &[u8], aad: &[String]) -> Result<(usize, Vec<u8>), Status> {
    let bad = || {
        kp_error(
            Code::InvalidArgument,
            "UNPROCESSABLE_CIPHERTEXT_ERR",
            422,
            "ciphertext cannot be processed",
        )
    };
    let (&version, rest) = ciphertext.split_first().ok_or_else(bad)?;
    let expected = aad.join("\u{ff}");
    let rest = rest.strip_prefix(expected.as_bytes()).ok_or_else(bad)?;
    let plaintext = rest.strip_prefix(&[0]).ok_or_else(bad)?;
    Ok((usize::from(version), plaintext.to_vec()))
}

impl FakeKeyService {
    fn check(&self, metadata: &tonic::metadata::MetadataMap, usable: bool) -> Result<(), Status> {
        let mut state = self.state.lock().expect("test lock");
        state.last_authorization = metadata
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if usable && !state.active {
            return Err(kp_error(
                Code::FailedPrecondition,
                "KEY_ACTION_INVALID_STATE_ERR",
                409,
                "key is suspended",
            ));
        }
        Ok(())
    }
}

/// Starts the fake on a loopback port; returns a connected client and the state.
pub async fn start() -> (KmsClient, Arc<Mutex<FakeState>>) {
    let state = Arc::new(Mutex::new(FakeState {
        versions: vec!["v-0".to_owned()],
        active: true,
        ..FakeState::default()
    }));
    let service = FakeKeyService {
        state: Arc::clone(&state),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(KeyServiceServer::new(service))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = KmsClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to fake");
    (client, state)
}

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("not in the fake"))
}

#[tonic::async_trait]
impl KeyService for FakeKeyService {
    async fn create_key(
        &self,
        _: Request<CreateKeyRequest>,
    ) -> Result<Response<CreateKeyResponse>, Status> {
        unimplemented()
    }

    async fn get_key(
        &self,
        request: Request<GetKeyRequest>,
    ) -> Result<Response<GetKeyResponse>, Status> {
        self.check(request.metadata(), false)?;
        if request.get_ref().key.ends_with("/keys/missing") {
            return Err(kp_error(
                Code::NotFound,
                "KEY_NOT_FOUND_ERR",
                404,
                "key not found",
            ));
        }
        Ok(Response::new(GetKeyResponse {
            key: Some(Key {
                id: "k-1".to_owned(),
                ..Key::default()
            }),
        }))
    }

    async fn list_keys(
        &self,
        _: Request<ListKeysRequest>,
    ) -> Result<Response<ListKeysResponse>, Status> {
        unimplemented()
    }

    async fn wrap_key(
        &self,
        request: Request<WrapKeyRequest>,
    ) -> Result<Response<WrapKeyResponse>, Status> {
        self.check(request.metadata(), true)?;
        let request = request.into_inner();
        let mut state = self.state.lock().expect("test lock");
        let current = state.versions.len() - 1;
        let (plaintext, returned) = if request.plaintext.is_empty() {
            state.generated += 1;
            let dek = vec![u8::try_from(state.generated).expect("few keys"); 32];
            (dek.clone(), dek)
        } else {
            (request.plaintext, Vec::new())
        };
        Ok(Response::new(WrapKeyResponse {
            ciphertext: fake_wrap(current, &request.aad, &plaintext),
            plaintext: returned,
            key_version: Some(version(&state.versions[current])),
        }))
    }

    async fn unwrap_key(
        &self,
        request: Request<UnwrapKeyRequest>,
    ) -> Result<Response<UnwrapKeyResponse>, Status> {
        self.check(request.metadata(), true)?;
        let request = request.into_inner();
        let (made_under, plaintext) = fake_unwrap(&request.ciphertext, &request.aad)?;
        let state = self.state.lock().expect("test lock");
        let current = state.versions.len() - 1;
        let (rewrapped_ciphertext, rewrapped_key_version) = if made_under == current {
            (Vec::new(), None)
        } else {
            (
                fake_wrap(current, &request.aad, &plaintext),
                Some(version(&state.versions[current])),
            )
        };
        Ok(Response::new(UnwrapKeyResponse {
            plaintext,
            key_version: Some(version(&state.versions[made_under])),
            rewrapped_ciphertext,
            rewrapped_key_version,
        }))
    }

    async fn rewrap_key(
        &self,
        request: Request<RewrapKeyRequest>,
    ) -> Result<Response<RewrapKeyResponse>, Status> {
        self.check(request.metadata(), true)?;
        let request = request.into_inner();
        let (made_under, plaintext) = fake_unwrap(&request.ciphertext, &request.aad)?;
        let state = self.state.lock().expect("test lock");
        let current = state.versions.len() - 1;
        Ok(Response::new(RewrapKeyResponse {
            ciphertext: fake_wrap(current, &request.aad, &plaintext),
            key_version: Some(version(&state.versions[made_under])),
            rewrapped_key_version: Some(version(&state.versions[current])),
        }))
    }

    async fn rotate_key(
        &self,
        request: Request<RotateKeyRequest>,
    ) -> Result<Response<RotateKeyResponse>, Status> {
        self.check(request.metadata(), false)?;
        let mut state = self.state.lock().expect("test lock");
        if state.versions.len() >= 3 {
            return Err(kp_error(
                Code::FailedPrecondition,
                "KEY_ROTATION_NOT_PERMITTED",
                409,
                "rotated less than an hour ago",
            ));
        }
        let next = format!("v-{}", state.versions.len());
        state.versions.push(next.clone());
        Ok(Response::new(RotateKeyResponse {
            key: Some(Key {
                id: "k-1".to_owned(),
                current_version: Some(version(&next)),
                ..Key::default()
            }),
        }))
    }

    async fn list_key_versions(
        &self,
        request: Request<ListKeyVersionsRequest>,
    ) -> Result<Response<ListKeyVersionsResponse>, Status> {
        // Pages of one version, newest first, to exercise paging.
        let request = request.into_inner();
        let state = self.state.lock().expect("test lock");
        let newest_first: Vec<&String> = state.versions.iter().rev().collect();
        let start: usize = if request.page_token.is_empty() {
            0
        } else {
            request.page_token.parse().expect("fake page token")
        };
        let next_page_token = if start + 1 < newest_first.len() {
            (start + 1).to_string()
        } else {
            String::new()
        };
        Ok(Response::new(ListKeyVersionsResponse {
            versions: vec![version(newest_first[start])],
            next_page_token,
            total_size: i32::try_from(newest_first.len()).expect("few versions"),
        }))
    }

    async fn disable_key(
        &self,
        request: Request<DisableKeyRequest>,
    ) -> Result<Response<DisableKeyResponse>, Status> {
        self.check(request.metadata(), false)?;
        self.state.lock().expect("test lock").active = false;
        Ok(Response::new(DisableKeyResponse {
            key: Some(Key {
                id: "k-1".to_owned(),
                state: KeyState::Suspended as i32,
                ..Key::default()
            }),
        }))
    }

    async fn enable_key(
        &self,
        _: Request<EnableKeyRequest>,
    ) -> Result<Response<EnableKeyResponse>, Status> {
        unimplemented()
    }

    async fn delete_key(
        &self,
        _: Request<DeleteKeyRequest>,
    ) -> Result<Response<DeleteKeyResponse>, Status> {
        // A response without its `key`: the client must report a malformed response.
        Ok(Response::new(DeleteKeyResponse { key: None }))
    }

    async fn restore_key(
        &self,
        _: Request<RestoreKeyRequest>,
    ) -> Result<Response<RestoreKeyResponse>, Status> {
        unimplemented()
    }

    async fn purge_key(
        &self,
        _: Request<PurgeKeyRequest>,
    ) -> Result<Response<PurgeKeyResponse>, Status> {
        unimplemented()
    }

    async fn create_key_alias(
        &self,
        _: Request<CreateKeyAliasRequest>,
    ) -> Result<Response<CreateKeyAliasResponse>, Status> {
        unimplemented()
    }

    async fn delete_key_alias(
        &self,
        _: Request<DeleteKeyAliasRequest>,
    ) -> Result<Response<DeleteKeyAliasResponse>, Status> {
        unimplemented()
    }

    async fn create_import_token(
        &self,
        _: Request<CreateImportTokenRequest>,
    ) -> Result<Response<CreateImportTokenResponse>, Status> {
        unimplemented()
    }

    async fn get_import_token(
        &self,
        _: Request<GetImportTokenRequest>,
    ) -> Result<Response<GetImportTokenResponse>, Status> {
        unimplemented()
    }

    async fn sync_key(
        &self,
        _: Request<SyncKeyRequest>,
    ) -> Result<Response<SyncKeyResponse>, Status> {
        unimplemented()
    }

    async fn set_key_policies(
        &self,
        _: Request<SetKeyPoliciesRequest>,
    ) -> Result<Response<SetKeyPoliciesResponse>, Status> {
        unimplemented()
    }

    async fn get_key_policies(
        &self,
        _: Request<GetKeyPoliciesRequest>,
    ) -> Result<Response<GetKeyPoliciesResponse>, Status> {
        unimplemented()
    }

    async fn set_key_for_deletion(
        &self,
        _: Request<SetKeyForDeletionRequest>,
    ) -> Result<Response<SetKeyForDeletionResponse>, Status> {
        unimplemented()
    }

    async fn unset_key_for_deletion(
        &self,
        _: Request<UnsetKeyForDeletionRequest>,
    ) -> Result<Response<UnsetKeyForDeletionResponse>, Status> {
        unimplemented()
    }
}

#[cfg(test)]
mod tests {
    use tonic::Code;

    use super::*;
    use crate::{ClientError, DataKeyError, DataKeyManager, KeyRef};

    fn root() -> KeyRef {
        KeyRef::in_instance("inst-1", "db-root").unwrap()
    }

    #[tokio::test]
    async fn bearer_token_reaches_the_server() {
        let (client, state) = start().await;
        client.get_key(&root()).await.unwrap();
        assert_eq!(state.lock().unwrap().last_authorization, None);

        let with_token = client.clone().with_bearer_token("t0k3n").unwrap();
        assert!(with_token.has_bearer_token());
        with_token.get_key(&root()).await.unwrap();
        assert_eq!(
            state.lock().unwrap().last_authorization.as_deref(),
            Some("Bearer t0k3n")
        );
        // The original clone still sends none.
        client.get_key(&root()).await.unwrap();
        assert_eq!(state.lock().unwrap().last_authorization, None);
        let cleared = with_token.without_bearer_token();
        assert!(!cleared.has_bearer_token());
    }

    #[tokio::test]
    async fn error_details_survive_the_wire() {
        let (client, _) = start().await;
        let missing = KeyRef::in_instance("inst-1", "missing").unwrap();
        let err = client.get_key(&missing).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(err.reason_code(), Some("KEY_NOT_FOUND_ERR"));
        assert_eq!(err.http_status(), Some(404));

        client.rotate(&root()).await.unwrap();
        client.rotate(&root()).await.unwrap();
        let err = client.rotate(&root()).await.unwrap_err();
        assert_eq!(err.reason_code(), Some("KEY_ROTATION_NOT_PERMITTED"));
        assert_eq!(err.retry_delay(), Some(Duration::from_secs(3600)));

        let err = client.restore(&root()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        assert_eq!(err.reason(), None);
    }

    #[tokio::test]
    async fn missing_response_field_is_reported() {
        let (client, _) = start().await;
        let err = client.delete(&root(), false).await.unwrap_err();
        assert!(
            matches!(err, ClientError::MalformedResponse("key")),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn key_versions_follow_pages() {
        let (client, _) = start().await;
        client.rotate(&root()).await.unwrap();
        client.rotate(&root()).await.unwrap();
        let versions = client.list_key_versions(&root()).await.unwrap();
        let ids: Vec<&str> = versions.iter().map(|v| v.id.as_str()).collect();
        assert_eq!(ids, ["v-2", "v-1", "v-0"]);
    }

    #[tokio::test]
    async fn wrap_and_unwrap_with_aad() {
        let (client, _) = start().await;
        let wrapped = client.wrap(&root(), b"my dek", &["a", "b"]).await.unwrap();
        assert_eq!(wrapped.key_version.id, "v-0");
        let unwrapped = client
            .unwrap(&root(), &wrapped.ciphertext, &["a", "b"])
            .await
            .unwrap();
        assert_eq!(unwrapped.plaintext.as_slice(), b"my dek");
        assert!(unwrapped.rewrapped.is_none());
        let err = client
            .unwrap(&root(), &wrapped.ciphertext, &["a"])
            .await
            .unwrap_err();
        assert_eq!(err.reason_code(), Some("UNPROCESSABLE_CIPHERTEXT_ERR"));
    }

    #[tokio::test]
    async fn data_key_life_cycle() {
        let (client, _) = start().await;
        let aad =
            vec!["crn:v1:bluemix:public:databases-for-postgresql:us-south:a/acct:db1::".to_owned()];
        let deployment = DataKeyManager::new(client.clone(), root(), aad.clone());

        // Provision: the DEK is unlocked and its wrapped form returned.
        let wrapped = deployment.provision().await.unwrap();
        assert_eq!(wrapped.key_version_id, "v-0");
        let ct = deployment.encrypt(b"balance=100", b"accounts").unwrap();

        // Restart: a new manager unlocks the persisted form; nothing to re-persist.
        let restarted = DataKeyManager::new(client.clone(), root(), aad.clone());
        assert!(matches!(
            restarted.decrypt(&ct, b"accounts"),
            Err(DataKeyError::Locked)
        ));
        assert_eq!(restarted.unlock(&wrapped).await.unwrap(), None);
        assert_eq!(
            restarted.decrypt(&ct, b"accounts").unwrap().as_slice(),
            b"balance=100"
        );

        // Rotation: unlock hands back the rewrapped form, which still opens the data.
        client.rotate(&root()).await.unwrap();
        restarted.lock();
        let newer = restarted
            .unlock(&wrapped)
            .await
            .unwrap()
            .expect("rewrapped");
        assert_eq!(newer.key_version_id, "v-1");
        assert_ne!(newer.ciphertext, wrapped.ciphertext);
        assert_eq!(restarted.unlock(&newer).await.unwrap(), None);
        assert_eq!(
            restarted.decrypt(&ct, b"accounts").unwrap().as_slice(),
            b"balance=100"
        );

        // Rewrap after a second rotation, without unlocking.
        client.rotate(&root()).await.unwrap();
        let locked = DataKeyManager::new(client.clone(), root(), aad.clone());
        let newest = locked.rewrap(&newer).await.unwrap();
        assert_eq!(newest.key_version_id, "v-2");
        assert!(!locked.is_unlocked());

        // Wrong AAD: the KMS refuses, and the manager stays locked.
        let stranger = DataKeyManager::new(client.clone(), root(), vec!["other".to_owned()]);
        let err = stranger.unlock(&newest).await.unwrap_err();
        match err {
            DataKeyError::Kms(e) => {
                assert_eq!(e.reason_code(), Some("UNPROCESSABLE_CIPHERTEXT_ERR"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!stranger.is_unlocked());

        // Disable: the deployment locks; unlocking is refused with the KMS reason.
        client.disable(&root()).await.unwrap();
        assert!(restarted.lock());
        assert!(matches!(
            restarted.encrypt(b"x", b""),
            Err(DataKeyError::Locked)
        ));
        let err = restarted.unlock(&newest).await.unwrap_err();
        match err {
            DataKeyError::Kms(e) => {
                assert_eq!(e.code(), Code::FailedPrecondition);
                assert_eq!(e.reason_code(), Some("KEY_ACTION_INVALID_STATE_ERR"));
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(!restarted.is_unlocked());
    }

    #[tokio::test]
    async fn connection_failure_is_unavailable() {
        // Port 1 on loopback: nothing listens there.
        let err = KmsClient::connect("http://127.0.0.1:1").await.unwrap_err();
        assert!(matches!(err, ClientError::Connect(_)));
        assert_eq!(err.code(), Code::Unavailable);

        let lazy = KmsClient::connect_lazy("http://127.0.0.1:1").unwrap();
        let err = lazy.get_key(&root()).await.unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
    }
}
