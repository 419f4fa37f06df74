//! A request's events, as the rest of the pipeline takes them: read in place
//! ([`scan`]) and forwarded as they came, or decoded into messages (OTLP, and
//! the SendLogs requests the scan leaves to prost) and encoded again. Either
//! way the same rules ([`validate`]) and the same record shape ([`chunk`]).

use std::borrow::Cow;

use prost::Message as _;
use tlake_proto::v1::{LogEvent, Resource, SendLogsRequest, Source};

use crate::chunk::{self, Chunk};
use crate::config::Limits;
use crate::error::GatewayError;
use crate::{scan, validate};

/// The events of one request.
#[derive(Debug)]
pub enum Events<'a> {
    /// Read in place from the request's bytes.
    Scanned(scan::Request<'a>),
    /// Decoded, in groups by resource (SendLogs brings one group, OTLP one
    /// per resource).
    Decoded(Vec<(Option<Resource>, Vec<LogEvent>)>),
}

/// A SendLogs request's stream and events: read in place when the scan can,
/// decoded by prost (the authority on malformed bytes) when it cannot.
pub fn send_logs(bytes: &[u8]) -> Result<(Cow<'_, str>, Events<'_>), GatewayError> {
    match scan::request(bytes) {
        Ok(request) => Ok((Cow::Borrowed(request.stream), Events::Scanned(request))),
        Err(unusual) => {
            tracing::debug!(reason = unusual.0, "SendLogs request left to prost");
            let SendLogsRequest {
                stream,
                resource,
                events,
            } = SendLogsRequest::decode(bytes).map_err(|e| {
                GatewayError::InvalidArgument(format!("not a SendLogsRequest: {e}"))
            })?;
            Ok((
                Cow::Owned(stream),
                Events::Decoded(vec![(resource, events)]),
            ))
        }
    }
}

impl Events<'_> {
    /// (events, their total encoded size), or the rule they break.
    pub fn check(&self, limits: &Limits) -> Result<(usize, usize), GatewayError> {
        match self {
            Self::Scanned(request) => validate::scanned(request, limits),
            Self::Decoded(groups) => validate::request(groups, limits),
        }
    }

    /// The Kafka records of the events (see [`chunk`]).
    pub fn chunks(
        self,
        stream: &str,
        source: Source,
        received: u64,
        chunk_bytes: usize,
    ) -> Vec<Chunk> {
        match self {
            Self::Scanned(request) => {
                chunk::forwarded(stream, &request, source, received, chunk_bytes)
            }
            Self::Decoded(groups) => groups
                .into_iter()
                .flat_map(|(resource, events)| {
                    chunk::chunks(
                        stream,
                        resource.as_ref(),
                        events,
                        source,
                        received,
                        chunk_bytes,
                    )
                })
                .collect(),
        }
    }
}
