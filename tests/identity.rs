//! The DTLS identity: ECDSA P-256, kept across restarts, and the fingerprint in every SDP is
//! the one of the certificate really used in the handshake.

mod common;

use std::process::Command;

use common::*;
use serde_json::Value;

fn openssl(args: &[&str]) -> String {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `sha-256 AB:CD:…` of the certificate in a daemon's state directory, computed by OpenSSL.
fn fingerprint_on_disk(id: &str) -> String {
    let file = state_dir(id).join("dtls-identity.pem");
    let out = openssl(&[
        "x509",
        "-in",
        file.to_str().expect("path"),
        "-noout",
        "-fingerprint",
        "-sha256",
    ]);
    let hex = out
        .trim()
        .rsplit('=')
        .next()
        .expect("fingerprint")
        .to_string();
    format!("sha-256 {hex}")
}

fn sdp_fingerprints(sdp: &str) -> Vec<String> {
    sdp.lines()
        .filter_map(|l| l.trim().strip_prefix("a=fingerprint:"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ecdsa_identity_is_stable_and_the_sdp_fingerprint_is_the_one_in_use() {
    let _serial = serial().await;
    for id in ["id-door", "id-alice"] {
        let _ = std::fs::remove_dir_all(state_dir(id));
    }
    let profile = light_profile("identity", "");
    let door = Proc::daemon("id-door", &profile, &[]);
    let tap = Proxy::start(door.ws_url(), pass).await;
    let mut alice = Proc::daemon("id-alice", &profile, &["--relay", &tap.url]);

    // ECDSA on the P-256 curve.
    let cert = state_dir("id-alice").join("dtls-identity.pem");
    let text = openssl(&[
        "x509",
        "-in",
        cert.to_str().expect("path"),
        "-noout",
        "-text",
    ]);
    assert!(text.contains("id-ecPublicKey"), "{text}");
    assert!(
        text.contains("prime256v1") || text.contains("P-256"),
        "{text}"
    );
    let on_disk = fingerprint_on_disk("id-alice");
    assert!(
        alice.log_text().contains(&on_disk),
        "the fingerprint is logged at start"
    );

    wait_peer(&alice, "id-door").await;
    let session = place_call(&alice, "id-door").await;
    let seen_by_door = wait_call(&door, &session, "peer certificate", |c| {
        c["remote_fingerprint"].is_string()
    })
    .await;
    let seen_by_alice = wait_call(&alice, &session, "peer certificate", |c| {
        c["remote_fingerprint"].is_string()
    })
    .await;

    // What alice wrote in her offer, what door saw in the handshake, what is on alice's disk.
    let offer = &tap.messages(Direction::ToRelay, "offer")[0];
    let offered = sdp_fingerprints(offer["sdp"].as_str().expect("sdp"));
    assert!(!offered.is_empty());
    for fp in &offered {
        assert!(
            fp.eq_ignore_ascii_case(&on_disk),
            "offer says {fp}, disk has {on_disk}"
        );
    }
    assert_eq!(
        seen_by_door["remote_fingerprint"]
            .as_str()
            .map(str::to_uppercase),
        Some(on_disk.to_uppercase())
    );
    // And the other way: door's answer matches the certificate door used.
    let answer = &tap.messages(Direction::FromRelay, "answer")[0];
    let door_disk = fingerprint_on_disk("id-door");
    for fp in sdp_fingerprints(answer["sdp"].as_str().expect("sdp")) {
        assert!(
            fp.eq_ignore_ascii_case(&door_disk),
            "answer says {fp}, disk has {door_disk}"
        );
    }
    assert_eq!(
        seen_by_alice["remote_fingerprint"]
            .as_str()
            .map(str::to_uppercase),
        Some(door_disk.to_uppercase())
    );

    // A restart keeps the identity.
    alice.kill();
    let alice = Proc::daemon("id-alice", &profile, &["--relay", &door.ws_url()]);
    assert_eq!(fingerprint_on_disk("id-alice"), on_disk);
    assert!(
        alice.log_text().contains(&on_disk),
        "same fingerprint after restart"
    );
    wait_peer(&alice, "id-door").await;
    let again = place_call(&alice, "id-door").await;
    let seen: Value = wait_call(&door, &again, "peer certificate", |c| {
        c["remote_fingerprint"].is_string()
    })
    .await;
    assert_eq!(
        seen["remote_fingerprint"].as_str().map(str::to_uppercase),
        Some(on_disk.to_uppercase())
    );
}
