//! `kmsim.v1.InstanceService`.

use std::sync::Arc;

use kmsim_proto::v1 as pb;
use pb::instance_service_server::InstanceService;
use tonic::{Request, Response, Status};

use crate::error::{FieldProblem, KmsError};
use crate::grpc::{blocking, caller, context, name_instance, page_size, page_token, parse, text};
use crate::kms::ids::{InstanceId, InstanceRef};
use crate::kms::records::{Flavor, InstanceRecord};
use crate::kms::{Kms, NewInstance};

/// The InstanceService adapter.
#[derive(Debug, Clone)]
pub struct Instances {
    kms: Arc<Kms>,
}

impl Instances {
    /// Serves `kms`.
    pub fn new(kms: Arc<Kms>) -> Self {
        Self { kms }
    }
}

/// An instance record as protobuf.
pub fn to_proto(record: &InstanceRecord) -> pb::Instance {
    pb::Instance {
        id: record.id.to_string(),
        name: record.name.clone(),
        flavor: match record.flavor {
            Flavor::KeyProtect => pb::InstanceFlavor::KeyProtect,
            Flavor::Hpcs => pb::InstanceFlavor::Hpcs,
        } as i32,
        region: record.region.to_string(),
        account_id: record.account.to_string(),
        crn: record.crn().to_string(),
        create_time: Some(record.create_time.to_proto()),
    }
}

fn flavor(value: i32) -> Result<Flavor, KmsError> {
    match pb::InstanceFlavor::try_from(value) {
        Ok(pb::InstanceFlavor::Unspecified | pb::InstanceFlavor::KeyProtect) => {
            Ok(Flavor::KeyProtect)
        }
        Ok(pb::InstanceFlavor::Hpcs) => Ok(Flavor::Hpcs),
        Err(_) => Err(KmsError::field("flavor", FieldProblem::UnknownEnumValue)),
    }
}

fn optional<T: std::str::FromStr<Err = crate::kms::ids::ParseError>>(
    field: &'static str,
    value: &str,
) -> Result<Option<T>, KmsError> {
    if value.is_empty() {
        Ok(None)
    } else {
        parse(field, value).map(Some)
    }
}

#[tonic::async_trait]
impl InstanceService for Instances {
    async fn create_instance(
        &self,
        request: Request<pb::CreateInstanceRequest>,
    ) -> Result<Response<pb::CreateInstanceResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let new = NewInstance {
            name: text("name", &request.name, 1, 90)?,
            flavor: flavor(request.flavor)?,
            region: optional("region", &request.region)?,
            account: optional("account_id", &request.account_id)?,
        };
        let record = blocking(&self.kms, move |kms| kms.create_instance(&who, new)).await?;
        if let Some(call) = &call {
            call.set_target(&record.crn());
        }
        Ok(Response::new(pb::CreateInstanceResponse {
            instance: Some(to_proto(&record)),
        }))
    }

    async fn get_instance(
        &self,
        request: Request<pb::GetInstanceRequest>,
    ) -> Result<Response<pb::GetInstanceResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let reference: InstanceRef = parse("instance", &request.get_ref().instance)?;
        name_instance(call.as_ref(), reference.id()).await?;
        let record = self.kms.get_instance(&who, &reference)?;
        Ok(Response::new(pb::GetInstanceResponse {
            instance: Some(to_proto(&record)),
        }))
    }

    async fn list_instances(
        &self,
        request: Request<pb::ListInstancesRequest>,
    ) -> Result<Response<pb::ListInstancesResponse>, Status> {
        let who = caller(&request)?;
        let request = request.into_inner();
        let size = page_size("page_size", request.page_size, 100, 1000)?;
        let after =
            page_token::decode(&request.page_token)?.map(|(t, id)| (t, InstanceId::from_uuid(id)));
        let page = self.kms.list_instances(&who, size, after)?;
        let next_page_token = match (page.more, page.items.last()) {
            (true, Some(last)) => {
                page_token::encode(last.create_time.as_millis(), last.id.as_bytes())
            }
            _ => String::new(),
        };
        Ok(Response::new(pb::ListInstancesResponse {
            instances: page.items.iter().map(to_proto).collect(),
            next_page_token,
            total_size: i32::try_from(page.total).unwrap_or(i32::MAX),
        }))
    }

    async fn delete_instance(
        &self,
        request: Request<pb::DeleteInstanceRequest>,
    ) -> Result<Response<pb::DeleteInstanceResponse>, Status> {
        let who = caller(&request)?;
        let call = context(&request);
        let request = request.into_inner();
        let reference: InstanceRef = parse("instance", &request.instance)?;
        name_instance(call.as_ref(), reference.id()).await?;
        blocking(&self.kms, move |kms| {
            kms.delete_instance(&who, &reference, request.force)
        })
        .await?;
        Ok(Response::new(pb::DeleteInstanceResponse {}))
    }

    async fn set_instance_policies(
        &self,
        request: Request<pb::SetInstancePoliciesRequest>,
    ) -> Result<Response<pb::SetInstancePoliciesResponse>, Status> {
        crate::grpc::policies::set_instance_policies(&self.kms, request).await
    }

    async fn get_instance_policies(
        &self,
        request: Request<pb::GetInstancePoliciesRequest>,
    ) -> Result<Response<pb::GetInstancePoliciesResponse>, Status> {
        crate::grpc::policies::get_instance_policies(&self.kms, request).await
    }
}
