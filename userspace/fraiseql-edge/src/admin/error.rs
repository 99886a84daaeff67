//! Refusals of the admin API's `/v1/blocks` calls, and the one place where
//! they become responses: `{"errors":[{"message":…,"extensions":{"code":…}}]}`
//! with a stable code and a fitting status, as on the data path. Internal
//! detail (map and syscall errors) goes to the log, never into the answer.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

/// Why an admin call was refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The body is not what the call takes.
    #[error("{0}")]
    BadRequest(String),
    /// The client address is missing or not an address.
    #[error("{0}")]
    InvalidClient(String),
    /// The TTL is not a whole number of seconds in range.
    #[error("{0}")]
    InvalidTtl(String),
    /// The body is larger than any valid call.
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    /// No such call.
    #[error("unknown admin call")]
    NotFound,
    /// The path exists, the method does not.
    #[error("method {method} is not allowed here (allowed: {allow})")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The `Allow` header.
        allow: &'static str,
    },
    /// `kernel.enabled = false`: nothing enforces blocks.
    #[error("there is no block list: the kernel layer is disabled (kernel.enabled = false)")]
    KernelDisabled,
    /// The block list holds as many clients as it can.
    #[error("the block list is full")]
    BlockListFull,
    /// A mutating call a browser could have sent cross-site without a
    /// preflight (no `Content-Type`, or a form/text one).
    #[error(
        "mutating admin calls need `Content-Type: application/json` (browser simple requests are refused)"
    )]
    CrossSiteRequest,
    /// The kernel map failed (details logged).
    #[error("the block list could not be read or written; see the daemon's log")]
    Internal,
}

impl AdminError {
    /// Status and stable code.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
            Self::InvalidClient(_) => (StatusCode::BAD_REQUEST, "INVALID_CLIENT"),
            Self::InvalidTtl(_) => (StatusCode::BAD_REQUEST, "INVALID_TTL"),
            Self::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE"),
            Self::NotFound => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED"),
            Self::KernelDisabled => (StatusCode::CONFLICT, "KERNEL_LAYER_DISABLED"),
            Self::CrossSiteRequest => (StatusCode::FORBIDDEN, "CSRF_REJECTED"),
            Self::BlockListFull => (StatusCode::SERVICE_UNAVAILABLE, "BLOCK_LIST_FULL"),
            Self::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR"),
        }
    }

    /// The response the caller gets.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "errors": [{ "message": self.to_string(), "extensions": { "code": code } }]
        });
        let mut resp = super::json(status, &body);
        if let Self::MethodNotAllowed { allow, .. } = self {
            resp.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(allow));
        }
        resp
    }
}

#[cfg(test)]
mod reference {
    use super::AdminError;

    #[test]
    fn the_reference_page_lists_every_admin_code() {
        let all = [
            AdminError::BadRequest(String::new()),
            AdminError::InvalidClient(String::new()),
            AdminError::InvalidTtl(String::new()),
            AdminError::PayloadTooLarge(0),
            AdminError::NotFound,
            AdminError::MethodNotAllowed {
                method: String::new(),
                allow: "",
            },
            AdminError::CrossSiteRequest,
            AdminError::KernelDisabled,
            AdminError::BlockListFull,
            AdminError::Internal,
        ];
        for e in &all {
            match e {
                AdminError::BadRequest(_)
                | AdminError::InvalidClient(_)
                | AdminError::InvalidTtl(_)
                | AdminError::PayloadTooLarge(_)
                | AdminError::NotFound
                | AdminError::MethodNotAllowed { .. }
                | AdminError::CrossSiteRequest
                | AdminError::KernelDisabled
                | AdminError::BlockListFull
                | AdminError::Internal => {}
            }
        }
        let doc = include_str!("../../../../docs/reference.md");
        let mut listed = crate::proxy::error::documented_codes(doc, "## Admin API");
        listed.sort();
        let mut in_code: Vec<(String, u16)> = all
            .iter()
            .map(|e| {
                let (status, code) = e.status_and_code();
                (code.to_string(), status.as_u16())
            })
            .collect();
        in_code.sort();
        assert_eq!(listed, in_code, "docs/reference.md, Admin API");
    }
}
