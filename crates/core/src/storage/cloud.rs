//! Cloud repository backends: `s3://bucket/prefix`, `gs://bucket/prefix`, `az://container/prefix`
//! on object_store's Amazon S3, Google Cloud Storage and Azure Blob clients.
//!
//! Credentials come from `[repository]` when given, else from each SDK's usual environment
//! (object_store's `from_env` builders: `AWS_*` variables, profile files and instance roles;
//! `GOOGLE_SERVICE_ACCOUNT*` / application default credentials; `AZURE_STORAGE_*`). Every request
//! has a timeout (`request_timeout`, `connect_timeout`) and failed requests are retried with
//! exponential backoff and jitter (`retry_max`, `retry_timeout`).

use std::sync::Arc;
use std::time::Duration;

use object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, RetryConfig};

use super::tls::{client_config, read_ca_file, CaFileConnector};
use crate::config::RepositoryConfig;

/// Which cloud a URL names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloudKind {
    S3,
    Gcs,
    Azure,
}

impl CloudKind {
    pub fn scheme(self) -> &'static str {
        match self {
            CloudKind::S3 => "s3",
            CloudKind::Gcs => "gs",
            CloudKind::Azure => "az",
        }
    }

    /// What the bucket is called on this cloud, for messages.
    pub fn bucket_word(self) -> &'static str {
        match self {
            CloudKind::Azure => "container",
            _ => "bucket",
        }
    }
}

/// A parsed cloud repository URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloudUrl {
    pub kind: CloudKind,
    pub bucket: String,
    /// Key prefix inside the bucket, without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl CloudUrl {
    /// Parses `s3://bucket/prefix`, `gs://bucket/prefix` or `az://container/prefix`.
    pub fn parse(url: &str) -> Result<CloudUrl, String> {
        let (scheme, rest) = url.split_once("://").ok_or_else(|| {
            "not a URL: expected s3://bucket/prefix, gs://bucket/prefix or az://container/prefix".to_string()
        })?;
        let kind = match scheme {
            "s3" => CloudKind::S3,
            "gs" => CloudKind::Gcs,
            "az" => CloudKind::Azure,
            other => {
                return Err(format!(
                    "unknown scheme '{other}://': use file:///path, s3://, gs:// or az://"
                ))
            }
        };
        let word = kind.bucket_word();
        if rest.contains(['?', '#']) {
            return Err(format!("query strings and fragments are not allowed; put settings in [repository] (e.g. {scheme}://{word}/prefix)"));
        }
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("no {word} name: expected {scheme}://{word}/prefix"));
        }
        if bucket.contains('@') || bucket.contains(':') {
            return Err(format!(
                "'{bucket}' is not a {word} name (no user, host or port here: set [repository] endpoint for a non-default server)"
            ));
        }
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | '_');
        if !bucket.chars().all(valid) || bucket.len() < 3 || bucket.len() > 222 {
            return Err(format!(
                "'{bucket}' is not a valid {word} name (3 to 63 lower-case letters, digits, '-', '.' or '_')"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(format!(
                "prefix '{prefix}' must not contain empty, '.' or '..' segments"
            ));
        }
        Ok(CloudUrl {
            kind,
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
        })
    }

    /// `s3://bucket/prefix`, for messages.
    pub fn display(&self) -> String {
        if self.prefix.is_empty() {
            format!("{}://{}", self.kind.scheme(), self.bucket)
        } else {
            format!("{}://{}/{}", self.kind.scheme(), self.bucket, self.prefix)
        }
    }
}

fn retry_config(cfg: &RepositoryConfig) -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: cfg.retry_max,
        retry_timeout: Duration::from_secs(cfg.retry_timeout),
    }
}

fn client_options(cfg: &RepositoryConfig) -> ClientOptions {
    ClientOptions::new()
        .with_timeout(Duration::from_secs(cfg.request_timeout))
        .with_connect_timeout(Duration::from_secs(cfg.connect_timeout))
        .with_allow_http(cfg.allow_http)
}

fn connector(cfg: &RepositoryConfig) -> Result<Option<CaFileConnector>, String> {
    let Some(path) = &cfg.ca_file else {
        return Ok(None);
    };
    let certs = read_ca_file(path)?;
    let tls = client_config(certs, path)?;
    Ok(Some(CaFileConnector {
        tls,
        timeout: Duration::from_secs(cfg.request_timeout),
        connect_timeout: Duration::from_secs(cfg.connect_timeout),
        allow_http: cfg.allow_http,
    }))
}

fn check_endpoint(cfg: &RepositoryConfig) -> Result<(), String> {
    if let Some(ep) = &cfg.endpoint {
        let u = url::Url::parse(ep).map_err(|e| format!("endpoint '{ep}' is not a URL: {e}"))?;
        match u.scheme() {
            "https" => {}
            "http" if cfg.allow_http => {}
            "http" => {
                return Err(format!(
                    "endpoint '{ep}' is plain http: set [repository] allow_http = true to send backups unencrypted on the wire on purpose, or use https"
                ))
            }
            s => return Err(format!("endpoint '{ep}': scheme '{s}' is not http or https")),
        }
    }
    Ok(())
}

/// Builds the object store for a cloud URL.
pub fn build(cfg: &RepositoryConfig, url: &CloudUrl) -> Result<Arc<dyn ObjectStore>, String> {
    check_endpoint(cfg)?;
    let conn = connector(cfg)?;
    let opts = client_options(cfg);
    let retry = retry_config(cfg);
    let store: Arc<dyn ObjectStore> = match url.kind {
        CloudKind::S3 => {
            let mut b = AmazonS3Builder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(opts)
                .with_retry(retry)
                .with_conditional_put(S3ConditionalPut::ETagMatch)
                .with_allow_http(cfg.allow_http)
                .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
                // Over HTTPS the body is protected by TLS and every object by its own AEAD, so
                // signing a SHA-256 of each payload (a full extra pass over the data) buys
                // nothing; over plain HTTP the payload stays signed.
                .with_unsigned_payload(!cfg.endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
            if let Some(ep) = &cfg.endpoint {
                b = b.with_endpoint(ep.trim_end_matches('/'));
            }
            if let Some(r) = &cfg.region {
                b = b.with_region(r);
            } else if cfg.endpoint.is_some()
                && std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none()
            {
                // S3-compatible servers mostly ignore the region, but requests must be signed for one.
                b = b.with_region("us-east-1");
            }
            if let Some(k) = &cfg.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &cfg.secret_access_key {
                b = b.with_secret_access_key(s);
            }
            if let Some(t) = &cfg.session_token {
                b = b.with_token(t);
            }
            if let Some(c) = conn {
                b = b.with_http_connector(c);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        CloudKind::Gcs => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_bucket_name(&url.bucket)
                .with_client_options(opts)
                .with_retry(retry);
            if let Some(p) = &cfg.service_account_file {
                if !p.is_file() {
                    return Err(format!("service_account_file {} does not exist", p.display()));
                }
                b = b.with_service_account_path(p.display().to_string());
            }
            if cfg.endpoint.is_some() {
                return Err("endpoint is not used for gs:// (an emulator's address goes into the service-account file as gcs_base_url)".into());
            }
            if let Some(c) = conn {
                b = b.with_http_connector(c);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
        CloudKind::Azure => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_container_name(&url.bucket)
                .with_client_options(opts)
                .with_retry(retry)
                .with_allow_http(cfg.allow_http);
            if let Some(a) = &cfg.account {
                b = b.with_account(a);
            }
            if let Some(k) = &cfg.access_key {
                b = b.with_access_key(k);
            }
            if let Some(ep) = &cfg.endpoint {
                // e.g. https://account.blob.core.windows.net, or http://127.0.0.1:10000/devstoreaccount1
                b = b.with_endpoint(ep.trim_end_matches('/').to_string());
            }
            if let Some(c) = conn {
                b = b.with_http_connector(c);
            }
            Arc::new(b.build().map_err(|e| e.to_string())?)
        }
    };
    Ok(store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bucket_and_prefix() {
        let u = CloudUrl::parse("s3://pgvault/bench").unwrap();
        assert_eq!(
            (u.kind, u.bucket.as_str(), u.prefix.as_str()),
            (CloudKind::S3, "pgvault", "bench")
        );
        let u = CloudUrl::parse("gs://my-bucket/a/b/c/").unwrap();
        assert_eq!(
            (u.kind, u.bucket.as_str(), u.prefix.as_str()),
            (CloudKind::Gcs, "my-bucket", "a/b/c")
        );
        assert_eq!(u.display(), "gs://my-bucket/a/b/c");
        let u = CloudUrl::parse("az://backups").unwrap();
        assert_eq!(
            (u.kind, u.bucket.as_str(), u.prefix.as_str()),
            (CloudKind::Azure, "backups", "")
        );
        assert_eq!(u.display(), "az://backups");
        let u = CloudUrl::parse("s3://b.example-1/").unwrap();
        assert_eq!(u.prefix, "");
    }

    #[test]
    fn bad_urls_are_explained() {
        for (url, needle) in [
            ("s3://", "no bucket name"),
            ("s3:///prefix", "no bucket name"),
            ("az:///x", "no container name"),
            ("ftp://host/x", "unknown scheme"),
            ("s3://Bucket/x", "not a valid bucket name"),
            ("s3://user@host:9000/b", "endpoint"),
            ("s3://bucket/a/../b", "'..'"),
            ("s3://bucket/a//b", "empty"),
            ("gs://bucket/p?x=1", "query strings"),
            ("bucket/prefix", "not a URL"),
        ] {
            let err = CloudUrl::parse(url).unwrap_err();
            assert!(err.contains(needle), "{url}: {err}");
        }
    }

    #[test]
    fn plain_http_endpoint_needs_opt_in() {
        let mut cfg = RepositoryConfig::for_url("s3://bucket/p");
        cfg.endpoint = Some("http://127.0.0.1:9000".into());
        let err = check_endpoint(&cfg).unwrap_err();
        assert!(err.contains("allow_http"), "{err}");
        cfg.allow_http = true;
        check_endpoint(&cfg).unwrap();
        cfg.endpoint = Some("not a url".into());
        assert!(check_endpoint(&cfg).unwrap_err().contains("not a URL"));
    }

    #[test]
    fn missing_ca_file_is_explained() {
        let mut cfg = RepositoryConfig::for_url("s3://bucket/p");
        cfg.endpoint = Some("https://127.0.0.1:9000".into());
        cfg.ca_file = Some("/nonexistent/ca.pem".into());
        let url = CloudUrl::parse(&cfg.url).unwrap();
        let err = build(&cfg, &url).err().unwrap();
        assert!(err.contains("ca_file /nonexistent/ca.pem"), "{err}");
    }
}
