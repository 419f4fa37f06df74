//! gRPC codecs that leave a request's bytes alone.
//!
//! - [`PreEncoded`], for clients: requests encoded ahead of time. The SDK
//!   encodes a batch once and resends the same bytes on every retry, and the
//!   benchmark keeps encoding out of its measurements. Answers decode as the
//!   message `D`.
//! - [`RawRequest`], for the gateway's server ([`crate::raw`]): SendLogs
//!   receives its request as the bytes that came in, read in place instead
//!   of decoded into messages. Answers encode as the message `E`.

use std::marker::PhantomData;

use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Path of `telemetry.v1.LogIngest/SendLogs`, for calls made with [`PreEncoded`].
pub const SEND_LOGS_PATH: &str = "/telemetry.v1.LogIngest/SendLogs";

/// Sends `Bytes` verbatim as the request message; decodes the answer as `D`
/// (use `()` to ignore it).
#[derive(Debug)]
pub struct PreEncoded<D>(PhantomData<fn() -> D>);

impl<D> Default for PreEncoded<D> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<D> Clone for PreEncoded<D> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<D> Copy for PreEncoded<D> {}

impl<D: prost::Message + Default + Send + 'static> Codec for PreEncoded<D> {
    type Encode = Bytes;
    type Decode = D;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl<D> Encoder for PreEncoded<D> {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl<D: prost::Message + Default> Decoder for PreEncoded<D> {
    type Item = D;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<D>, Status> {
        let message = D::decode(&mut *src)
            .map_err(|e| Status::internal(format!("cannot decode the answer: {e}")))?;
        src.advance(src.remaining());
        Ok(Some(message))
    }
}

/// Receives the request message as its bytes (no copy: tonic's buffer is
/// split off); encodes the answer `E` with prost.
#[derive(Debug)]
pub struct RawRequest<E>(PhantomData<fn(E)>);

impl<E> Default for RawRequest<E> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<E> Clone for RawRequest<E> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<E> Copy for RawRequest<E> {}

impl<E: Message + Send + 'static> Codec for RawRequest<E> {
    type Encode = E;
    type Decode = Bytes;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self::Encoder {
        *self
    }

    fn decoder(&mut self) -> Self::Decoder {
        *self
    }
}

impl<E: Message> Encoder for RawRequest<E> {
    type Item = E;
    type Error = Status;

    fn encode(&mut self, item: E, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst)
            .map_err(|e| Status::internal(format!("cannot encode the answer: {e}")))
    }
}

impl<E> Decoder for RawRequest<E> {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}
