//! The kmsim gRPC contract: the `kmsim.v1` messages, the tonic clients and servers, and the
//! encoded file descriptor set that the server registers for reflection.
//!
//! The `.proto` files under `kmsim/v1/` are the public contract; this crate only compiles
//! them. Field and method documentation lives in those files and is carried into the
//! generated code.

pub mod codec;

/// The `kmsim.v1` package: messages, enums, `*_client` and `*_server` modules.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("kmsim.v1");
}

pub mod admin;
mod reason;

pub use reason::Reason;

/// The encoded `FileDescriptorSet` of every kmsim `.proto` file (with the well-known types it
/// imports), for `tonic-reflection`.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("kmsim_descriptor");

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn descriptor_set_names_every_service() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET)
            .expect("the build script writes a valid descriptor set");
        let services: Vec<String> = set
            .file
            .iter()
            .filter(|f| f.package() == "kmsim.v1")
            .flat_map(|f| f.service.iter().map(|s| s.name().to_owned()))
            .collect();
        assert!(services.contains(&"InstanceService".to_owned()));
        assert!(services.contains(&"KeyService".to_owned()));
        assert!(services.contains(&"SimulatorService".to_owned()));
        assert!(services.contains(&"HsmService".to_owned()));
        assert!(services.contains(&"IamService".to_owned()));
    }

    #[test]
    fn key_state_numbers_match_key_protect() {
        use super::v1::KeyState;
        assert_eq!(KeyState::Active as i32, 1);
        assert_eq!(KeyState::Suspended as i32, 2);
        assert_eq!(KeyState::Deactivated as i32, 3);
        assert_eq!(KeyState::Destroyed as i32, 5);
    }
}
