//! The codec of every kmsim service and client: prost's, except that a body that is not a
//! valid protobuf message is the caller's mistake, answered `INVALID_ARGUMENT` with the Key
//! Protect reason `BAD_BODY_ERR` (http 400) instead of prost's `INTERNAL`.

use std::collections::HashMap;

use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::ProstCodec;
use tonic_types::{ErrorDetails, StatusExt};

/// [`ProstCodec`] with undecodable bodies mapped to `BAD_BODY_ERR`.
#[derive(Debug, Clone, Default)]
pub struct KmsCodec<T, U> {
    inner: ProstCodec<T, U>,
}

/// The status of a body that is not a valid protobuf message.
pub fn bad_body(problem: &str) -> Status {
    let details = ErrorDetails::with_error_info(
        "BAD_BODY_ERR",
        "kmsim",
        HashMap::from([("http_status".to_owned(), "400".to_owned())]),
    );
    Status::with_error_details(
        Code::InvalidArgument,
        format!("the request body is not a valid protobuf message: {problem}"),
        details,
    )
}

impl<T, U> Codec for KmsCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = KmsDecoder<<ProstCodec<T, U> as Codec>::Decoder>;

    fn encoder(&mut self) -> Self::Encoder {
        self.inner.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        KmsDecoder(self.inner.decoder())
    }
}

/// Decodes with prost; its only failure (an undecodable message) becomes [`bad_body`].
#[derive(Debug, Clone)]
pub struct KmsDecoder<D>(D);

impl<D: Decoder<Error = Status>> Decoder for KmsDecoder<D> {
    type Item = D::Item;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Self::Item>, Self::Error> {
        self.0
            .decode(buf)
            .map_err(|status| bad_body(status.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}
