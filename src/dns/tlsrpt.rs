//! TLS reporting (RFC 8460) on the resolver thread: the `_smtp._tls`
//! record of a policy domain (§3) and the HTTPS POST of a report (§5.2).

use std::sync::Arc;
use std::time::Duration;

use hickory_resolver::TokioResolver;

/// The `rua` URIs of `domain`'s `_smtp._tls` TXT record; `Ok(empty)` when
/// it publishes none.
pub async fn rua(resolver: &TokioResolver, domain: &str) -> Result<Vec<String>, String> {
    let name = format!("_smtp._tls.{}.", domain.trim_end_matches('.'));
    let txt = match resolver.txt_lookup(name.clone()).await {
        Ok(txt) => txt,
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => return Ok(Vec::new()),
        Err(e) => return Err(format!("{name}: {e}")),
    };
    // §3: more than one TLSRPTv1 record: none is used.
    let found: Vec<Vec<String>> = txt
        .iter()
        .filter_map(|t| {
            let text: String = t
                .txt_data()
                .iter()
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect();
            crate::tlsrpt::record_rua(&text)
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Ok(Vec::new()),
        _ => Err(format!("{name}: more than one TLSRPTv1 record")),
    }
}

/// §5.2: POST the gzip'ed report to an `https:` URI
/// (`application/tlsrpt+gzip`); the HTTP status, or why not.
pub async fn post(
    resolver: &TokioResolver,
    url: &str,
    body: Vec<u8>,
    roots: Arc<rustls::RootCertStore>,
) -> Result<u16, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("{url}: {e}"))?;
    let host = uri
        .host()
        .ok_or_else(|| format!("{url}: no host"))?
        .to_string();
    let port = uri.port_u16().unwrap_or(443);
    let path = uri
        .path_and_query()
        .map_or("/".to_string(), |p| p.as_str().to_string());
    let send = async {
        let mut sender = super::mta_sts::https(resolver, &host, port, roots)
            .await
            .map_err(|e| e.to_string())?;
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &host)
            .header(hyper::header::USER_AGENT, "sealgate")
            .header(hyper::header::CONTENT_TYPE, "application/tlsrpt+gzip")
            .body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response.status().as_u16())
    };
    match tokio::time::timeout(Duration::from_secs(60), send).await {
        Ok(r) => r.map_err(|e: String| format!("{url}: {e}")),
        Err(_) => Err(format!("{url}: no answer within 60 s")),
    }
}
