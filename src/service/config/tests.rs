//! Parsing, defaults, relative paths, secrets and the problems a config can have.
//!
//! Built for tests only: `#[cfg(test)] mod tests;` in this folder's `mod.rs`.

use super::*;

#[test]
fn problems_name_their_key() {
    let c: Config = toml::from_str(
        "relay = 'http://x'\ntokens = ['short']\nkeepalive_secs = 0\ntls = 'self-signed'\ntls_cert = '/nonexistent'\nallowed_origins = ['evil.example']\n[ice]\nstun_server = 'stun:'\nturn_servers = ['turn:relay.example:3478']",
    )
    .unwrap();
    let problems = c.problems();
    for key in [
        "relay:",
        "tokens:",
        "keepalive_secs:",
        "tls:",
        "tls_cert:",
        "allowed_origins:",
        "ice.stun_server:",
        "ice.turn_servers:",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(key)),
            "{key} in {problems:?}"
        );
    }
    let good: Config = toml::from_str(
        "relay = 'wss://relay.example/signaling'\ntokens = ['0123456789']\n[ice]\nstun_server = 'stun://stun.example:3478'\nturn_servers = ['turn://u:p@relay.example:3478']",
    )
    .unwrap();
    assert_eq!(good.problems(), Vec::<String>::new());
}

/// One relay, or a list to fail over along, in that order.
#[test]
fn relay_is_one_url_or_a_list() {
    let urls = |text: &str| -> Vec<String> {
        let c: Config = toml::from_str(text).unwrap();
        c.relay.iter().map(|u| u.expose().to_string()).collect()
    };
    assert_eq!(urls("relay = 'wss://a/signaling'"), ["wss://a/signaling"]);
    assert_eq!(
        urls("relay = ['wss://a/signaling', 'ws://b:8080/signaling']"),
        ["wss://a/signaling", "ws://b:8080/signaling"]
    );
    assert!(urls("").is_empty());
}

#[test]
fn a_relative_profile_is_relative_to_the_file() {
    let dir = std::env::temp_dir().join(format!("webrtcd-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("webrtcd.toml");
    std::fs::write(&file, "profile = 'pipelines/camera.toml'\n").unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.profile, dir.join("pipelines/camera.toml"));
    std::fs::write(&file, "id = 'door'\n").unwrap();
    assert_eq!(
        Config::load(&file).unwrap().profile,
        PathBuf::from("pipelines/test.toml")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The shipped config documents every key, with values that parse.
#[test]
fn the_shipped_config_documents_every_key() {
    let text = include_str!("../../../config/webrtcd.toml");
    let uncommented: String = text
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            // A commented key, or a commented table (`[bridge]`, `[[publish]]`).
            Some(rest) if rest.split_once(" = ").is_some() || rest.starts_with('[') => rest,
            _ => l,
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let c: Config = toml::from_str(&uncommented).unwrap();
    let problems = c.problems();
    assert!(
        problems
            .iter()
            .all(|p| p.starts_with("web_dir:") || p.starts_with("relay_ca:")),
        "only files may be missing here: {problems:?}"
    );
    for key in [
        "listen",
        "profile",
        "id",
        "relay",
        "tokens",
        "relay_token",
        "relay_ca",
        "tls",
        "tls_cert",
        "tls_key",
        "tls_names",
        "tls_listen",
        "rtsp_listen",
        "rtsp_max_clients",
        "rtsp_max_clients_per_address",
        "whep_max_per_address",
        "connect_timeout_secs",
        "[[publish]]",
        "[bridge]",
        "socket",
        "mode",
        "[recording]",
        "segment_secs",
        "keep_days",
        "min_free_mb",
        "pre_secs",
        "post_secs",
        "[[hooks]]",
        "on",
        "exec",
        "args",
        "timeout_secs",
        "allowed_origins",
        "allowed_hosts",
        "keepalive_secs",
        "ice_recovery_secs",
        "ice_transport_policy",
        "turn_secret",
        "turn_credential_ttl_secs",
        "max_connections",
        "max_connections_per_address",
        "client_timeout_secs",
        "relay_messages_per_second",
        "relay_message_burst",
        "state_dir",
        "web_dir",
        "[ice]",
        "stun_server",
        "turn_servers",
        "addresses",
    ] {
        assert!(text.contains(key), "{key} is not documented");
    }
}

#[test]
fn secrets_are_added() {
    let mut c = Config::default();
    c.add_secrets(&Secrets {
        tokens: vec!["from-credentials".into()],
        turn_servers: vec!["turn://u:p@h:3478".into()],
        relay_token: Some("relay-secret".into()),
        turn_secret: None,
    });
    assert_eq!(c.tokens.len(), 1);
    assert_eq!(c.tokens[0].secret(), "from-credentials");
    assert_eq!(c.tokens[0].scope, Scope::Admin);
    assert_eq!(c.ice.turn_servers.len(), 1);
    assert!(c.relay_token.is_some());
    // Nothing secret in the config's Debug.
    c.relay = vec![SecretUrl::new("wss://r.example/signaling?token=in-the-url")];
    let shown = format!("{c:?}");
    for secret in [
        "from-credentials",
        "turn://u:p@",
        "relay-secret",
        "in-the-url",
    ] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
}

#[test]
fn tokens_old_and_scoped_forms() {
    let c: Config =
        toml::from_str("tokens = ['admin-token-1', { secret = 'view-token-1', scope = 'view' }]")
            .unwrap();
    assert_eq!(c.tokens[0].scope, Scope::Admin);
    assert_eq!(c.tokens[1].scope, Scope::View);
    let c: Config =
        toml::from_str("[[tokens]]\nsecret = 'view-token-1'\nscope = 'view'\n").unwrap();
    assert_eq!(c.tokens[0].secret(), "view-token-1");
    assert!(toml::from_str::<Config>("tokens = [{ secret = 'x', scope = 'root' }]").is_err());
}

#[test]
fn empty_is_defaults_and_unknown_keys_fail() {
    let c: Config = toml::from_str("").unwrap();
    assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
    assert!(toml::from_str::<Config>("lisen = '1.2.3.4:1'").is_err());
    let c: Config =
        toml::from_str("id='door'\n[ice]\naddresses=['127.0.0.1']\nstun_server='stun://x:3478'")
            .unwrap();
    assert_eq!(c.ice.addresses.len(), 1);
}
