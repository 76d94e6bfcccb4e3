//! One HTTP/1.1 request to any server, over TLS (rustls, the system's roots) for `https://`:
//! what a WHIP publisher needs. Bounded in time by its caller.

use std::sync::Arc;

use anyhow::{Context, anyhow};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;

/// A remote endpoint's replies larger than this are refused (an SDP answer is a few kB).
pub const MAX_REPLY: usize = 256 * 1024;

pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Vec<u8>,
}

/// Sends `method` to `url` with `headers` and `body`.
pub async fn send(
    method: &str,
    url: &url::Url,
    headers: &[(&str, String)],
    body: Vec<u8>,
    tls: Option<&Arc<rustls::ClientConfig>>,
    max_reply: usize,
) -> anyhow::Result<Reply> {
    let (host, port) = crate::net::host_and_port(url)?;
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach {host} port {port}"))?;
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    let mut request = hyper::Request::builder().method(method).uri(path).header(
        hyper::header::HOST,
        url[url::Position::BeforeHost..url::Position::AfterPort].to_string(),
    );
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let request = request.body(Full::new(Bytes::from(body)))?;
    let response = if url.scheme() == "https" {
        let tls = tls.ok_or_else(|| anyhow!("https without a TLS client configuration"))?;
        let name = rustls_pki_types::ServerName::try_from(host.clone())
            .map_err(|_| anyhow!("{host} is not a TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(Arc::clone(tls))
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host}"))?;
        exchange(TokioIo::new(stream), request, max_reply).await?
    } else {
        exchange(TokioIo::new(tcp), request, max_reply).await?
    };
    Ok(response)
}

async fn exchange<T>(
    io: T,
    request: hyper::Request<Full<Bytes>>,
    max_reply: usize,
) -> anyhow::Result<Reply>
where
    T: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // The connection is driven here, beside the exchange, not on a task of its own: it ends
    // once the exchange has its reply and lets go of `sender`.
    let exchange = async move {
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = Limited::new(response.into_body(), max_reply)
            .collect()
            .await
            .map_err(|e| anyhow!("reading the reply: {e}"))?
            .to_bytes()
            .to_vec();
        anyhow::Ok(Reply {
            status,
            headers,
            body,
        })
    };
    let (reply, _closed) = tokio::join!(exchange, conn);
    reply
}
