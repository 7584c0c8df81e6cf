//! Aliases (at most 5, unique per instance, never UUID-shaped; usable wherever a key is named)
//! and listing with paging and filters.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kmsim_proto::v1 as pb;
use kmsim_tests::{TestServer, assert_error, key_path, violated_fields};
use tonic::Code;

#[tokio::test]
async fn aliases_name_keys_and_follow_the_rules() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let key = server.root_key(&instance).await;
    let other = server.root_key(&instance).await;
    let mut keys = server.keys();
    for n in 0..5 {
        let alias = keys
            .create_key_alias(pb::CreateKeyAliasRequest {
                key: key.crn.clone(),
                alias: format!("pg-root-{n}"),
            })
            .await
            .unwrap()
            .into_inner()
            .alias
            .unwrap();
        assert_eq!(alias.key_id, key.id);
    }
    assert_error(
        keys.create_key_alias(pb::CreateKeyAliasRequest {
            key: key.crn.clone(),
            alias: "sixth".into(),
        })
        .await,
        Code::ResourceExhausted,
        "KEY_ALIAS_QUOTA_ERR",
    );
    assert_error(
        keys.create_key_alias(pb::CreateKeyAliasRequest {
            key: other.crn.clone(),
            alias: "pg-root-0".into(),
        })
        .await,
        Code::AlreadyExists,
        "KEY_ALIAS_NOT_UNIQUE_ERR",
    );
    let status = assert_error(
        keys.create_key_alias(pb::CreateKeyAliasRequest {
            key: other.crn.clone(),
            alias: other.id.clone(),
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["alias"]);

    // The alias names the key for every call.
    let by_alias = key_path(&instance, "pg-root-3");
    let wrapped = keys
        .wrap_key(pb::WrapKeyRequest {
            key: by_alias.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    keys.unwrap_key(pb::UnwrapKeyRequest {
        key: key.crn.clone(),
        ciphertext: wrapped.ciphertext,
        aad: vec![],
    })
    .await
    .unwrap();
    let fetched = keys
        .get_key(pb::GetKeyRequest {
            key: by_alias.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(fetched.id, key.id);
    assert_eq!(fetched.aliases.len(), 5);

    // Removing frees the name for another key.
    keys.delete_key_alias(pb::DeleteKeyAliasRequest {
        key: key.crn.clone(),
        alias: "pg-root-3".into(),
    })
    .await
    .unwrap();
    assert_error(
        keys.get_key(pb::GetKeyRequest {
            key: by_alias.clone(),
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    assert_error(
        keys.delete_key_alias(pb::DeleteKeyAliasRequest {
            key: key.crn.clone(),
            alias: "pg-root-3".into(),
        })
        .await,
        Code::NotFound,
        "KEY_ALIAS_NOT_FOUND_ERR",
    );
    keys.create_key_alias(pb::CreateKeyAliasRequest {
        key: other.crn.clone(),
        alias: "pg-root-3".into(),
    })
    .await
    .unwrap();
    let moved = keys
        .get_key(pb::GetKeyRequest { key: by_alias })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_eq!(moved.id, other.id);
}

#[tokio::test]
async fn aliases_at_creation_and_per_instance_uniqueness() {
    let server = TestServer::start().await;
    let a = server.instance().await;
    let b = server.instance().await;
    let mut keys = server.keys();
    let create = |instance: &str, alias: &str| pb::CreateKeyRequest {
        instance: instance.to_owned(),
        name: "aliased".into(),
        r#type: pb::KeyType::Root as i32,
        aliases: vec![alias.to_owned()],
        ..Default::default()
    };
    keys.create_key(create(&a, "shared")).await.unwrap();
    keys.create_key(create(&b, "shared")).await.unwrap();
    assert_error(
        keys.create_key(create(&a, "shared")).await,
        Code::AlreadyExists,
        "KEY_ALIAS_NOT_UNIQUE_ERR",
    );
    // An alias of instance A does not reach into instance B.
    let key_a = keys
        .get_key(pb::GetKeyRequest {
            key: key_path(&a, "shared"),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    let key_b = keys
        .get_key(pb::GetKeyRequest {
            key: key_path(&b, "shared"),
        })
        .await
        .unwrap()
        .into_inner()
        .key
        .unwrap();
    assert_ne!(key_a.id, key_b.id);
    assert_error(
        keys.get_key(pb::GetKeyRequest {
            key: key_path(&b, &key_a.id),
        })
        .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
}

#[tokio::test]
async fn listing_pages_and_filters() {
    let server = TestServer::start().await;
    let instance = server.instance().await;
    let mut keys = server.keys();
    let mut ids = Vec::new();
    for n in 0..7 {
        let kind = if n % 3 == 0 {
            pb::KeyType::Standard
        } else {
            pb::KeyType::Root
        };
        let key = keys
            .create_key(pb::CreateKeyRequest {
                instance: instance.clone(),
                name: format!("Key-{n}"),
                r#type: kind as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .key
            .unwrap();
        assert_eq!(key.payload.is_empty(), kind == pb::KeyType::Root);
        ids.push(key.id);
        // Listings order by creation time (then id): give each key its own second.
        server.advance(std::time::Duration::from_secs(1));
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = keys
            .list_keys(pb::ListKeysRequest {
                instance: instance.clone(),
                page_size: 3,
                page_token: token,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.total_size, 7);
        assert!(
            page.keys.iter().all(|k| k.payload.is_empty()),
            "listings never carry payloads"
        );
        seen.extend(page.keys.into_iter().map(|k| k.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen, ids, "every key once, in creation order");

    let standard = keys
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            extractable: Some(true),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(standard.total_size, 3);
    let named = keys
        .list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            search: "key-4".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(named.keys.len(), 1);
    assert_eq!(named.keys[0].id, ids[4]);

    let status = assert_error(
        keys.list_keys(pb::ListKeysRequest {
            instance: instance.clone(),
            page_token: "zz".into(),
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["page_token"]);
    let status = assert_error(
        keys.list_keys(pb::ListKeysRequest {
            instance,
            page_size: -1,
            ..Default::default()
        })
        .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["page_size"]);
}

#[tokio::test]
async fn instances_create_list_and_delete() {
    let server = TestServer::start().await;
    let mut instances = server.instances();
    let created = instances
        .create_instance(pb::CreateInstanceRequest {
            name: "eu keys".into(),
            flavor: pb::InstanceFlavor::Hpcs as i32,
            region: "eu-de".into(),
            account_id: "acct42".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(
        created.crn,
        format!(
            "crn:v1:bluemix:public:hs-crypto:eu-de:a/acct42:{}::",
            created.id
        )
    );
    let by_crn = instances
        .get_instance(pb::GetInstanceRequest {
            instance: created.crn.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .instance
        .unwrap();
    assert_eq!(by_crn.id, created.id);
    let second = server.instance().await;
    let listed = instances
        .list_instances(pb::ListInstancesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.total_size, 2);

    let key = server.root_key(&second).await;
    assert_error(
        instances
            .delete_instance(pb::DeleteInstanceRequest {
                instance: second.clone(),
                force: false,
            })
            .await,
        Code::FailedPrecondition,
        "INSTANCE_NOT_EMPTY_ERR",
    );
    instances
        .delete_instance(pb::DeleteInstanceRequest {
            instance: second.clone(),
            force: true,
        })
        .await
        .unwrap();
    assert_error(
        server
            .keys()
            .get_key(pb::GetKeyRequest { key: key.crn })
            .await,
        Code::NotFound,
        "KEY_NOT_FOUND_ERR",
    );
    assert_error(
        instances
            .get_instance(pb::GetInstanceRequest { instance: second })
            .await,
        Code::NotFound,
        "INSTANCE_NOT_FOUND_ERR",
    );
    let status = assert_error(
        instances
            .create_instance(pb::CreateInstanceRequest {
                name: String::new(),
                ..Default::default()
            })
            .await,
        Code::InvalidArgument,
        "BAD_BODY_ERR",
    );
    assert_eq!(violated_fields(&status), vec!["name"]);
}
