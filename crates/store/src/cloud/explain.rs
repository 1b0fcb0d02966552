//! Turning object_store's cloud errors into errors that say which thing is wrong.
//!
//! object_store reports HTTP statuses structurally only for some operations (`NotFound`,
//! `PermissionDenied`, `Unauthenticated` on get/put/head); list requests and multipart
//! uploads come back as `Generic` errors whose text carries the status ("Server returned
//! non-2xx status code: 404 Not Found: BODY"), because its retry error type is private. So
//! the classification below uses the structured variants and `HttpError` kinds where they
//! exist and falls back to that text. The cloud tests against Azurite and moto pin the
//! behaviour, so a change of wording in a new object_store release fails them rather than
//! silently degrading the messages.

use std::error::Error;

use object_store::client::{HttpError, HttpErrorKind};

use super::Provider;
use crate::{RefusedOperation, StoreError};

/// Where a cloud vault lives, for error messages.
#[derive(Debug, Clone)]
pub(super) struct Context {
    pub(super) provider: Provider,
    pub(super) url: String,
    pub(super) bucket: String,
    pub(super) endpoint: String,
}

/// What a failed request amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Status(u16),
    Connect,
    Timeout,
    Other,
}

/// Longest service message quoted in an error (S3 and Azure answer with XML documents).
const DETAIL_MAX: usize = 400;

impl Context {
    /// The clear error for `err`, or None when it is none of the known cases. `listing_bucket`
    /// says that `err` came from listing the vault's prefix, where a 404 can only mean a
    /// missing bucket or container.
    pub(super) fn classify(
        &self,
        err: &(dyn Error + 'static),
        listing_bucket: bool,
    ) -> Option<StoreError> {
        let text = err.to_string();
        let detail = shorten(&text);
        match failure(err, &text) {
            Failure::Status(401 | 403) => Some(self.auth_failed(detail, false)),
            Failure::Status(407) => Some(self.auth_failed(detail, true)),
            Failure::Status(404) if listing_bucket || names_missing_bucket(&text) => {
                Some(self.bucket_not_found())
            }
            Failure::Connect => Some(StoreError::Unreachable {
                url: self.url.clone(),
                endpoint: self.endpoint.clone(),
                detail,
                hint: self.provider.endpoint_hint().to_string(),
            }),
            Failure::Timeout => Some(StoreError::TimedOut {
                url: self.url.clone(),
                endpoint: self.endpoint.clone(),
                detail,
            }),
            _ => None,
        }
    }

    /// Whether `err` is the service refusing this request to credentials it accepted: a 403
    /// that is not about the credentials themselves (an unknown key, a bad signature, an
    /// expired token or SAS). S3 answers such a request `AccessDenied`, Azure
    /// `AuthorizationPermissionMismatch`.
    pub(super) fn forbidden(&self, err: &(dyn Error + 'static)) -> bool {
        let text = err.to_string();
        failure(err, &text) == Failure::Status(403) && !names_bad_credentials(&text)
    }

    /// The error for a delete or overwrite of `key` that [`Context::forbidden`] refused.
    pub(super) fn refused(
        &self,
        key: &str,
        operation: RefusedOperation,
        err: &(dyn Error + 'static),
    ) -> StoreError {
        StoreError::OperationRefused {
            url: self.url.clone(),
            path: key.to_string(),
            operation,
            detail: shorten(&err.to_string()),
        }
    }

    /// The error for a missing bucket or container.
    pub(super) fn bucket_not_found(&self) -> StoreError {
        StoreError::BucketNotFound {
            url: self.url.clone(),
            bucket: self.bucket.clone(),
            endpoint: self.endpoint.clone(),
        }
    }

    fn auth_failed(&self, detail: String, proxy: bool) -> StoreError {
        let hint = if proxy {
            "the proxy asked for credentials: check the user and password in the proxy URL \
             (http://user:pass@host:port, percent-encoded)"
        } else {
            self.provider.credentials_hint()
        };
        StoreError::AuthFailed {
            url: self.url.clone(),
            detail,
            hint: hint.to_string(),
        }
    }
}

/// Reads the status or transport failure out of `err`'s source chain, or out of `text` (its
/// message) when object_store kept the status only there.
fn failure(err: &(dyn Error + 'static), text: &str) -> Failure {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(os) = e.downcast_ref::<object_store::Error>() {
            match os {
                object_store::Error::Unauthenticated { .. } => return Failure::Status(401),
                object_store::Error::PermissionDenied { .. } => return Failure::Status(403),
                object_store::Error::NotFound { .. } => return Failure::Status(404),
                _ => {}
            }
        }
        if let Some(http) = e.downcast_ref::<HttpError>() {
            match http.kind() {
                HttpErrorKind::Connect => return Failure::Connect,
                HttpErrorKind::Timeout => return Failure::Timeout,
                _ => {}
            }
        }
        current = e.source();
    }
    status_in_text(text).map_or(Failure::Other, Failure::Status)
}

/// The status in object_store's "Server returned non-2xx status code: 404 Not Found" text, or
/// in a bulk delete's per-object result, which object_store words "... (code: 403)" for Azure
/// and "... (code: AccessDenied)" for S3.
fn status_in_text(text: &str) -> Option<u16> {
    const MARK: &str = "non-2xx status code: ";
    const DELETE_MARK: &str = "(code: ";
    if let Some(at) = text.find(MARK) {
        let at = at + MARK.len();
        return text.get(at..at + 3)?.parse().ok();
    }
    let at = text.rfind(DELETE_MARK)? + DELETE_MARK.len();
    let code = text[at..].split(')').next()?;
    match code {
        "AccessDenied" => Some(403),
        _ => code.parse().ok(),
    }
}

/// Whether a 404's body says the bucket or container (not the object) is missing: S3's
/// `NoSuchBucket`, Azure's `ContainerNotFound`, GCS's "bucket does not exist".
fn names_missing_bucket(text: &str) -> bool {
    ["NoSuchBucket", "ContainerNotFound", "bucket does not exist"]
        .iter()
        .any(|code| text.contains(code))
}

/// Whether a 403's body says the credentials themselves are wrong, not the operation: S3's
/// unknown key, bad signature and expired token, Azure's failed authentication (which covers
/// a bad or expired SAS signature).
fn names_bad_credentials(text: &str) -> bool {
    [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "AuthenticationFailed",
    ]
    .iter()
    .any(|code| text.contains(code))
}

fn shorten(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(DETAIL_MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> Context {
        Context {
            provider: Provider::S3,
            url: "s3://bkt/p".into(),
            bucket: "bkt".into(),
            endpoint: "http://127.0.0.1:9".into(),
        }
    }

    fn generic(text: &str) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source: text.to_string().into(),
        }
    }

    #[test]
    fn statuses_in_text_are_read() {
        let text = "Error performing GET http://x in 2ms - Server returned non-2xx status \
                    code: 404 Not Found: <Error><Code>NoSuchBucket</Code></Error>";
        assert_eq!(status_in_text(text), Some(404));
        assert_eq!(status_in_text("no status here"), None);
        assert_eq!(status_in_text("non-2xx status code: 4"), None);
        let s3 = "DeleteObjects request failed for key v/k: Access Denied (code: AccessDenied)";
        assert_eq!(status_in_text(s3), Some(403));
        let azure = "Bulk delete request failed for key v/k: not authorized (code: 403)";
        assert_eq!(status_in_text(azure), Some(403));
        assert_eq!(status_in_text("(code: InternalError)"), None);
        let err = generic(text);
        assert!(matches!(
            context().classify(&err, false),
            Some(StoreError::BucketNotFound { .. })
        ));
    }

    #[test]
    fn a_missing_object_is_not_a_missing_bucket() {
        let err = generic("Server returned non-2xx status code: 404 Not Found: NoSuchKey");
        assert!(context().classify(&err, false).is_none());
        // ...unless the 404 answered a listing of the vault's own prefix.
        assert!(matches!(
            context().classify(&err, true),
            Some(StoreError::BucketNotFound { .. })
        ));
    }

    #[test]
    fn structured_statuses_and_proxy_auth() {
        let denied = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "nope".into(),
        };
        match context().classify(&denied, false) {
            Some(StoreError::AuthFailed { hint, .. }) => {
                assert!(hint.contains("AWS_ACCESS_KEY_ID"), "{hint}")
            }
            other => panic!("{other:?}"),
        }
        let proxy = generic("Server returned non-2xx status code: 407 Proxy Authentication");
        match context().classify(&proxy, false) {
            Some(StoreError::AuthFailed { hint, .. }) => assert!(hint.contains("proxy URL")),
            other => panic!("{other:?}"),
        }
        assert!(context().classify(&generic("500 boom"), false).is_none());
    }

    #[test]
    fn refusals_are_told_from_bad_credentials() {
        let denied = generic(
            "Server returned non-2xx status code: 403 Forbidden: <Code>AccessDenied</Code>",
        );
        assert!(context().forbidden(&denied));
        let mismatch = object_store::Error::PermissionDenied {
            path: "k".into(),
            source: "AuthorizationPermissionMismatch".into(),
        };
        assert!(context().forbidden(&mismatch));
        match context().refused("k", RefusedOperation::Delete, &mismatch) {
            e @ StoreError::OperationRefused { .. } => {
                let msg = e.to_string();
                assert!(msg.contains("refused to delete object \"k\""), "{msg}");
                assert!(msg.contains("append-only credentials"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        for code in [
            "InvalidAccessKeyId",
            "SignatureDoesNotMatch",
            "AuthenticationFailed",
        ] {
            let bad = generic(&format!("non-2xx status code: 403 Forbidden: {code}"));
            assert!(!context().forbidden(&bad), "{code}");
        }
        assert!(!context().forbidden(&generic("non-2xx status code: 401 Unauthorized")));
        assert!(!context().forbidden(&generic("non-2xx status code: 404 Not Found")));
    }

    #[test]
    fn details_are_bounded() {
        let long = "x".repeat(5000);
        assert_eq!(shorten(&long).chars().count(), DETAIL_MAX + 3);
        assert_eq!(shorten(" short "), "short");
    }
}
