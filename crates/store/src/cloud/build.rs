//! Building object_store's cloud clients from the environment and [`StoreOptions`].
//!
//! Precedence, lowest first: object_store's defaults, the environment (`from_env`, when
//! [`StoreOptions::use_env`]), the agent's options (proxy, timeouts, retries), then
//! [`StoreOptions::cloud_config`]. The agent's options go in as configuration keys rather than
//! through `with_client_options`, which would replace the whole client configuration and so
//! silently drop client settings that came from the environment (`AWS_ALLOW_HTTP`, say).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{BackoffConfig, ClientConfigKey, ObjectStore, RetryConfig};

use super::Provider;
use super::paced::PacedConnector;
use crate::{StoreError, StoreOptions};

/// A built client and the endpoint it talks to (for messages).
pub(super) struct Built {
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) endpoint: String,
}

/// Builds the client for `bucket` of `provider`; `url` is the vault URL for messages.
pub(super) fn build(
    provider: Provider,
    bucket: &str,
    url: &str,
    options: &StoreOptions,
) -> Result<Built, StoreError> {
    let config_error = |reason: String| StoreError::Config {
        url: url.to_string(),
        reason,
    };
    let settings = settings(provider, options).map_err(config_error)?;
    match provider {
        Provider::S3 => build_s3(bucket, options, settings),
        Provider::Azure => build_azure(bucket, options, settings),
        Provider::Gcs => build_gcs(bucket, options, settings),
    }
    .map_err(config_error)
}

/// The (lower-case key, value) pairs to apply after the environment, checked against the
/// provider's key names so that a typo is refused rather than ignored.
fn settings(provider: Provider, options: &StoreOptions) -> Result<Vec<(String, String)>, String> {
    let ms = |d: Duration| format!("{}ms", d.as_millis());
    let mut pairs = vec![
        ("timeout".to_string(), ms(options.request_timeout)),
        ("connect_timeout".to_string(), ms(options.connect_timeout)),
    ];
    if let Some(proxy) = &options.proxy {
        pairs.push(("proxy_url".to_string(), proxy.clone()));
    }
    for (key, value) in &options.cloud_config {
        let key = key.to_ascii_lowercase();
        let known = match provider {
            Provider::S3 => AmazonS3ConfigKey::from_str(&key).is_ok(),
            Provider::Azure => AzureConfigKey::from_str(&key).is_ok(),
            Provider::Gcs => GoogleConfigKey::from_str(&key).is_ok(),
        };
        if !known {
            return Err(format!(
                "unknown setting {key:?} for {} vaults (expected one of object_store's \
                 configuration keys, e.g. {})",
                provider.scheme(),
                provider.example_keys()
            ));
        }
        pairs.push((key, value.clone()));
    }
    Ok(pairs)
}

fn retry(options: &StoreOptions) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: options.retries,
        retry_timeout: options.retry_timeout,
    }
}

/// Whether `endpoint` is plain HTTP: naming an `http://` endpoint is taken as permission to
/// use it (object_store would otherwise refuse it unless `allow_http` is also set).
fn is_http(endpoint: Option<&str>) -> bool {
    endpoint.is_some_and(|e| e.to_ascii_lowercase().starts_with("http://"))
}

/// Parses a key already validated by [`settings`]; the error cannot happen, but is reported
/// rather than unwrapped.
fn key<K: FromStr>(name: &str) -> Result<K, String> {
    K::from_str(name).map_err(|_| format!("unknown setting {name:?}"))
}

fn build_s3(
    bucket: &str,
    options: &StoreOptions,
    settings: Vec<(String, String)>,
) -> Result<Built, String> {
    let mut builder = if options.use_env {
        AmazonS3Builder::from_env()
    } else {
        AmazonS3Builder::new()
    };
    for (name, value) in settings {
        builder = builder.with_config(key::<AmazonS3ConfigKey>(&name)?, value);
    }
    let endpoint = builder.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if is_http(endpoint.as_deref()) {
        builder = builder.with_allow_http(true);
    }
    let region = builder
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".to_string());
    let endpoint = endpoint.unwrap_or_else(|| format!("https://s3.{region}.amazonaws.com"));
    let store = builder
        .with_bucket_name(bucket)
        .with_retry(retry(options))
        .with_http_connector(PacedConnector)
        .build()
        .map_err(|e| format!("{e}; {}", Provider::S3.credentials_hint()))?;
    Ok(Built {
        store: Arc::new(store),
        endpoint,
    })
}

fn build_azure(
    container: &str,
    options: &StoreOptions,
    settings: Vec<(String, String)>,
) -> Result<Built, String> {
    let mut builder = if options.use_env {
        MicrosoftAzureBuilder::from_env()
    } else {
        MicrosoftAzureBuilder::new()
    };
    for (name, value) in settings {
        builder = builder.with_config(key::<AzureConfigKey>(&name)?, value);
    }
    let emulator = builder
        .get_config_value(&AzureConfigKey::UseEmulator)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let account = builder.get_config_value(&AzureConfigKey::AccountName);
    let endpoint = builder.get_config_value(&AzureConfigKey::Endpoint);
    let endpoint = match (emulator, account, endpoint) {
        (true, account, _) => {
            let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".to_string());
            let account = account.unwrap_or_else(|| "devstoreaccount1".to_string());
            format!("{}/{account}", base.trim_end_matches('/'))
        }
        (false, _, Some(endpoint)) => endpoint,
        (false, Some(account), None) => format!("https://{account}.blob.core.windows.net"),
        (false, None, None) => {
            return Err(
                "no storage account: set AZURE_STORAGE_ACCOUNT_NAME (or the \
                        azure_storage_account_name setting), or an endpoint with \
                        AZURE_STORAGE_ENDPOINT"
                    .to_string(),
            );
        }
    };
    if is_http(Some(&endpoint)) {
        builder = builder.with_allow_http(true);
    }
    let store = builder
        .with_container_name(container)
        .with_retry(retry(options))
        .with_http_connector(PacedConnector)
        .build()
        .map_err(|e| format!("{e}; {}", Provider::Azure.credentials_hint()))?;
    Ok(Built {
        store: Arc::new(store),
        endpoint,
    })
}

fn build_gcs(
    bucket: &str,
    options: &StoreOptions,
    settings: Vec<(String, String)>,
) -> Result<Built, String> {
    let mut builder = if options.use_env {
        GoogleCloudStorageBuilder::from_env()
    } else {
        GoogleCloudStorageBuilder::new()
    };
    for (name, value) in settings {
        builder = builder.with_config(key::<GoogleConfigKey>(&name)?, value);
    }
    let endpoint = builder
        .get_config_value(&GoogleConfigKey::BaseUrl)
        .unwrap_or_else(|| "https://storage.googleapis.com".to_string());
    if is_http(Some(&endpoint)) {
        builder = builder.with_config(GoogleConfigKey::Client(ClientConfigKey::AllowHttp), "true");
    }
    let store = builder
        .with_bucket_name(bucket)
        .with_retry(retry(options))
        .with_http_connector(PacedConnector)
        .build()
        .map_err(|e| format!("{e}; {}", Provider::Gcs.credentials_hint()))?;
    Ok(Built {
        store: Arc::new(store),
        endpoint,
    })
}
