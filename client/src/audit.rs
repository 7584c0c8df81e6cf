//! The audit trail from the client side: [`KmsClient`] methods for
//! `EventService.ListAuditEvents` (one page, or every page) and `WatchAuditEvents` (stored
//! events, then live ones).

use kmsim_proto::v1::event_service_client::EventServiceClient;
use kmsim_proto::v1::{
    AuditEvent, AuditEventFilter, ListAuditEventsRequest, ListAuditEventsResponse,
    WatchAuditEventsRequest,
};
use tonic::Streaming;

use crate::retry::rpc;
use crate::{AuthenticatedChannel, ClientError, KmsClient};

/// Largest page the server returns.
const MAX_PAGE: i32 = 1000;

impl KmsClient {
    fn audit_events(&self) -> EventServiceClient<AuthenticatedChannel> {
        EventServiceClient::with_interceptor(self.channel().clone(), self.interceptor().clone())
    }

    /// One page of audit events after sequence `after_sequence` that pass `filter`, oldest
    /// first (`page_size` 0 means 100; `page_token` empty for the first page).
    ///
    /// # Errors
    /// A [`ClientError`]; `PERMISSION_DENIED` unless the caller is an Administrator or a
    /// Manager of the instance the filter names.
    pub async fn list_audit_events_page(
        &self,
        filter: AuditEventFilter,
        after_sequence: u64,
        page_size: i32,
        page_token: &str,
    ) -> Result<ListAuditEventsResponse, ClientError> {
        let request = ListAuditEventsRequest {
            filter: Some(filter),
            after_sequence,
            page_size,
            page_token: page_token.to_owned(),
        };
        Ok(rpc!(
            self,
            Idempotent,
            self.audit_events(),
            list_audit_events,
            request
        )?)
    }

    /// Every audit event after `after_sequence` that passes `filter`, oldest first, reading
    /// page after page.
    ///
    /// # Errors
    /// A [`ClientError`].
    pub async fn list_audit_events(
        &self,
        filter: AuditEventFilter,
        after_sequence: u64,
    ) -> Result<Vec<AuditEvent>, ClientError> {
        let mut events = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_audit_events_page(filter.clone(), after_sequence, MAX_PAGE, &token)
                .await?;
            events.extend(page.events);
            if page.next_page_token.is_empty() {
                return Ok(events);
            }
            token = page.next_page_token;
        }
    }

    /// A stream of the audit events after `after_sequence` that pass `filter`: the stored
    /// ones first, then new ones as calls are made. Resume after a disconnect with the last
    /// received event's `sequence`.
    ///
    /// # Errors
    /// A [`ClientError`] if the watch cannot start.
    pub async fn watch_audit_events(
        &self,
        filter: AuditEventFilter,
        after_sequence: u64,
    ) -> Result<Streaming<AuditEvent>, ClientError> {
        let request = WatchAuditEventsRequest {
            filter: Some(filter),
            after_sequence,
        };
        rpc!(
            self,
            NotIdempotent,
            self.audit_events(),
            watch_audit_events,
            request
        )
    }
}
