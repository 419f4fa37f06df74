//! Bearer-token authentication, checked on request headers before the body
//! is decoded, with a constant-time comparison.

use std::sync::Arc;

use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

use crate::error::GatewayError;

/// Accepts requests whose `authorization` header is `Bearer <token>` for a
/// configured token; with no tokens configured it accepts every request.
#[derive(Clone, Debug)]
pub struct BearerAuth {
    tokens: Arc<[Vec<u8>]>,
}

impl BearerAuth {
    /// Builds the check from the accepted tokens.
    pub fn new(tokens: Vec<String>) -> Self {
        Self {
            tokens: tokens.into_iter().map(String::into_bytes).collect(),
        }
    }

    /// Whether a token is required at all.
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks an `authorization` header value (gRPC metadata or an HTTP header).
    pub fn check(&self, header: Option<&[u8]>) -> Result<(), GatewayError> {
        if !self.enabled() || self.accepts(header) {
            Ok(())
        } else {
            Err(GatewayError::Unauthenticated)
        }
    }

    fn accepts(&self, header: Option<&[u8]>) -> bool {
        let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
            return false;
        };
        // Compare against every token so timing does not reveal which matched.
        self.tokens
            .iter()
            .fold(subtle::Choice::from(0), |found, token| {
                found | token.as_slice().ct_eq(presented)
            })
            .into()
    }
}

impl Interceptor for BearerAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        let header = request
            .metadata()
            .get("authorization")
            .map(|v| v.as_bytes());
        self.check(header)?;
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn request(auth: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(a) = auth {
            r.metadata_mut()
                .insert("authorization", a.parse().expect("ascii"));
        }
        r
    }

    #[test]
    fn tokens() {
        let mut auth = BearerAuth::new(vec!["s3cret".into(), "other".into()]);
        assert!(auth.call(request(Some("Bearer s3cret"))).is_ok());
        assert!(auth.call(request(Some("Bearer other"))).is_ok());
        for bad in [
            None,
            Some("Bearer s3cre"),
            Some("Bearer s3cret2"),
            Some("s3cret"),
            Some("Basic s3cret"),
        ] {
            let status = auth.call(request(bad)).expect_err("rejected");
            assert_eq!(status.code(), Code::Unauthenticated, "{bad:?}");
        }
    }

    #[test]
    fn disabled_accepts_everything() {
        let mut auth = BearerAuth::new(Vec::new());
        assert!(auth.call(request(None)).is_ok());
    }
}
