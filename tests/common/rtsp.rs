//! RTSP the way NVRs use it: ffprobe (and other tools) bounded in time, raw DESCRIBE
//! requests, Basic credentials.

use std::time::Duration;

/// Runs `program` with `args` (bounded by `timeout`, through coreutils' `timeout`); its exit
/// status and output.
pub async fn run_tool(program: &str, args: Vec<String>, timeout: Duration) -> (bool, String) {
    let program = program.to_string();
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("timeout")
            .arg(timeout.as_secs().to_string())
            .arg(&program)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{program}: {e} (Debian package ffmpeg)"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    })
    .await
    .expect("tool thread")
}

/// ffprobe over RTSP/TCP: the `entries` of each stream of `url`, one compact line each.
pub async fn ffprobe_streams(url: &str, entries: &str, timeout: Duration) -> (bool, String) {
    let entries = format!("stream={entries}");
    let args = [
        "-v",
        "error",
        "-rtsp_transport",
        "tcp",
        "-show_entries",
        &entries,
        "-of",
        "compact",
        url,
    ];
    run_tool(
        "ffprobe",
        args.iter().map(|s| s.to_string()).collect(),
        timeout,
    )
    .await
}

/// Raw RTSP: the status code of a DESCRIBE with `authorization` (none: without).
pub async fn describe_status(url: &str, authorization: Option<&str>) -> u16 {
    let (status, _connection) = describe_and_stay(url, authorization).await;
    status
}

/// [`describe_status`], keeping the connection open (as long as the stream is held).
pub async fn describe_and_stay(
    url: &str,
    authorization: Option<&str>,
) -> (u16, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let parsed = url::Url::parse(url).expect("url");
    let addr = format!(
        "{}:{}",
        parsed.host_str().unwrap_or_default(),
        parsed.port().unwrap_or(554)
    );
    let bare = format!("rtsp://{addr}{}", parsed.path());
    let mut request = format!("DESCRIBE {bare} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n");
    if let Some(auth) = authorization {
        request.push_str(&format!("Authorization: {auth}\r\n"));
    }
    request.push_str("\r\n");
    let mut stream = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut reply))
        .await
        .expect("an RTSP reply")
        .expect("read");
    let text = String::from_utf8_lossy(&reply[..n]).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no RTSP status in {text:?} (the connection was closed)"));
    (status, stream)
}

/// The Basic credentials for `password`.
pub fn basic(password: &str) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("webrtcd:{password}"))
    )
}
