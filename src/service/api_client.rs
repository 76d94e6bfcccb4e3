//! The daemon's own API as a client sees it (`webrtcd call`, the benchmarks, the tests): one
//! plain HTTP request through [`super::http_client`].

use anyhow::Context;

/// The daemon's own replies (a status with many calls, the metrics) are read whole up to this.
const MAX_REPLY: usize = 64 * 1024 * 1024;

/// Sends one request; returns the status code and the body as text.
pub async fn request(
    method: &str,
    url: &str,
    body: Option<String>,
    token: Option<&str>,
) -> anyhow::Result<(u16, String)> {
    let parsed = url::Url::parse(url).with_context(|| format!("bad URL {url}"))?;
    let mut headers = Vec::new();
    if let Some(token) = token {
        headers.push(("authorization", format!("Bearer {token}")));
    }
    if body.is_some() {
        headers.push(("content-type", "application/json".to_string()));
    }
    let reply = super::http_client::send(
        method,
        &parsed,
        &headers,
        body.unwrap_or_default().into_bytes(),
        None,
        MAX_REPLY,
    )
    .await
    .with_context(|| format!("{method} {url}"))?;
    Ok((
        reply.status,
        String::from_utf8_lossy(&reply.body).into_owned(),
    ))
}
