//! The wire format: field names, checks on ids, sizes, reasons, each direction.
//!
//! Built for tests only: `#[cfg(test)] mod tests;` in this folder's `mod.rs`.

use super::*;

fn routed(text: &str) -> Result<Signal, DecodeError> {
    match ToRelay::decode(text)? {
        ToRelay::Signal(signal) => Ok(signal),
        other => panic!("not a signal: {other:?}"),
    }
}

#[test]
fn routed_fields_are_checked_when_decoding() {
    let bad_session = r#"{"type":"call","to":"door","session":"s\n<3>forged"}"#;
    let err = ToRelay::decode(bad_session).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadMessage);
    assert!(err.to_string().contains("session id"), "{err}");
    let bad_to = r#"{"type":"call","to":"door\u202e","session":"s1"}"#;
    let err = ToRelay::decode(bad_to).unwrap_err();
    assert!(err.to_string().contains("an id may not"), "{err}");
    let bad_from = r#"{"type":"call","to":"door","from":"","session":"s1"}"#;
    assert!(ToRelay::decode(bad_from).is_err());
    let bad_register = r#"{"type":"register","id":"do or"}"#;
    assert!(ToRelay::decode(bad_register).is_err());
    assert!(routed(r#"{"type":"call","to":"door","session":"s1"}"#).is_ok());
    // The relay's messages are checked the same way.
    assert!(FromRelay::decode(r#"{"type":"peer-joined","id":"a\u200bb"}"#).is_err());
}

#[test]
fn ids_that_look_alike_are_refused() {
    for good in [
        "door",
        "Tür-1",
        "門",
        "a".repeat(64).as_str(),
        "é".repeat(64).as_str(),
    ] {
        assert_eq!(check_id(good), Ok(()), "{good}");
        assert!(PeerId::parse(good).is_ok());
    }
    for bad in [
        "",
        "door\u{200B}",
        "\u{202E}rood",
        "do or",
        "door\u{00A0}",
        "door\n",
        "door\u{2028}",
        "door\u{FEFF}",
        "a".repeat(65).as_str(),
        "é".repeat(65).as_str(),
    ] {
        assert!(check_id(bad).is_err(), "{bad:?}");
        assert!(PeerId::parse(bad).is_err(), "{bad:?}");
    }
    // Logged, invisible characters show as escapes.
    assert_eq!(escape_for_log("a\u{202E}b\nc"), "a\\u{202e}b\\nc");
}

#[test]
fn candidate_uses_browser_field_names() {
    let msg = Signal::Candidate {
        route: Route::new("door", "s1"),
        candidate: "candidate:1 1 UDP 1 127.0.0.1 5000 typ host".into(),
        sdp_mid: Some("0".into()),
        sdp_mline_index: Some(0),
    };
    let json: serde_json::Value = serde_json::from_str(&msg.encode()).unwrap();
    assert_eq!(json["type"], "candidate");
    assert_eq!(json["sdpMid"], "0");
    assert_eq!(json["sdpMLineIndex"], 0);
    assert_eq!(json["to"], "door");
    assert_eq!(json["session"], "s1");
    assert!(json.get("from").is_none());
}

#[test]
fn decodes_browser_end_of_candidates_with_null_mid() {
    let text = r#"{"type":"candidate","to":"a","session":"s","candidate":"","sdpMid":null,"sdpMLineIndex":null}"#;
    match routed(text).unwrap() {
        Signal::Candidate {
            candidate, sdp_mid, ..
        } => {
            assert!(candidate.is_empty());
            assert!(sdp_mid.is_none());
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn register_without_id_and_round_trip() {
    assert_eq!(
        ToRelay::decode(r#"{"type":"register"}"#).unwrap(),
        ToRelay::Register { id: None }
    );
    let register = ToRelay::Register {
        id: Some(PeerId::local("door")),
    };
    assert_eq!(register.encode(), r#"{"type":"register","id":"door"}"#);
    let offer = Signal::Offer {
        route: Route::new("b", "s"),
        sdp: "v=0".into(),
    };
    assert_eq!(routed(&offer.encode()).unwrap(), offer);
    // The same signal, as the relay passes it on.
    let passed = FromRelay::Signal(offer.clone());
    assert_eq!(passed.encode(), offer.encode());
    assert_eq!(FromRelay::decode(&passed.encode()).unwrap(), passed);
}

#[test]
fn the_relays_messages_round_trip_and_a_client_may_not_send_them() {
    let registered = FromRelay::Registered {
        id: PeerId::local("door"),
        peers: vec![PeerId::local("alice")],
    };
    let text = registered.encode();
    assert_eq!(
        text,
        r#"{"type":"registered","id":"door","peers":["alice"]}"#
    );
    assert_eq!(FromRelay::decode(&text).unwrap(), registered);
    let err = ToRelay::decode(&text).unwrap_err();
    assert_eq!(err.code(), ErrorCode::BadMessage);
    assert!(
        err.to_string().contains("peers may not send this type"),
        "{err}"
    );
    let left = FromRelay::PeerLeft {
        id: PeerId::local("alice"),
        reason: Some(RELAY_GONE.into()),
    };
    assert_eq!(FromRelay::decode(&left.encode()).unwrap(), left);
}

#[test]
fn a_bad_signal_says_what_is_wrong() {
    let err = ToRelay::decode(r#"{"type":"offer","to":"b","session":"s"}"#).unwrap_err();
    assert!(err.to_string().contains("sdp"), "{err}");
}

#[test]
fn ringing_is_routed_like_call() {
    let ringing =
        routed(r#"{"type":"ringing","to":"caller","session":"s1"}"#).expect("ringing decodes");
    assert_eq!(
        ringing,
        Signal::Ringing {
            route: Route::new("caller", "s1"),
            sdp: None,
        }
    );
    assert_eq!(ringing.kind(), "ringing");
    assert_eq!(ringing.route().to.as_str(), "caller");
    assert_eq!(routed(&ringing.encode()).unwrap(), ringing);
}

#[test]
fn a_call_may_name_a_camera_and_the_name_is_checked() {
    let call = routed(r#"{"type":"call","to":"door","session":"s1","camera":"parcel-2"}"#)
        .expect("call decodes");
    assert!(
        matches!(&call, Signal::Call { camera: Some(c), .. } if c == "parcel-2"),
        "{call:?}"
    );
    assert_eq!(routed(&call.encode()).unwrap(), call);
    let plain = routed(r#"{"type":"call","to":"door","session":"s1"}"#).expect("call decodes");
    assert!(matches!(plain, Signal::Call { camera: None, .. }));
    assert!(!plain.encode().contains("camera"), "{}", plain.encode());
    for bad in ["", "Door", "a b", "../x", "x/y", &"a".repeat(33), "caméra"] {
        let text = format!(
            r#"{{"type":"call","to":"door","session":"s1","camera":{}}}"#,
            serde_json::to_string(bad).unwrap()
        );
        assert!(routed(&text).is_err(), "{bad:?} must be refused");
    }
    assert!(check_camera(&"a".repeat(32)).is_ok());
}

#[test]
fn the_early_answer_travels_in_ringing_and_is_asked_for_in_call() {
    let call =
        routed(r#"{"type":"call","to":"door","session":"s1","early":true}"#).expect("call decodes");
    assert!(matches!(call, Signal::Call { early: true, .. }), "{call:?}");
    assert_eq!(routed(&call.encode()).unwrap(), call);
    // A 1.1 caller's `call` has no `early`, and one that does not ask does not say so.
    let plain = routed(r#"{"type":"call","to":"door","session":"s1"}"#).expect("call decodes");
    assert!(matches!(plain, Signal::Call { early: false, .. }));
    assert!(!plain.encode().contains("early"), "{}", plain.encode());
    let ringing = routed(r#"{"type":"ringing","to":"caller","session":"s1","sdp":"v=0"}"#)
        .expect("ringing decodes");
    assert!(
        matches!(&ringing, Signal::Ringing { sdp: Some(sdp), .. } if sdp == "v=0"),
        "{ringing:?}"
    );
    assert_eq!(routed(&ringing.encode()).unwrap(), ringing);
}

#[test]
fn rejects_unknown_type_and_oversize() {
    assert_eq!(
        ToRelay::decode(r#"{"type":"teleport"}"#)
            .unwrap_err()
            .code(),
        ErrorCode::BadMessage
    );
    assert_eq!(
        ToRelay::decode("nonsense").unwrap_err().code(),
        ErrorCode::BadMessage
    );
    assert_eq!(
        ToRelay::decode(r#"{"to":"b"}"#).unwrap_err().code(),
        ErrorCode::BadMessage
    );
    let big = format!(
        r#"{{"type":"offer","to":"b","session":"s","sdp":"{}"}}"#,
        "x".repeat(MAX_MESSAGE_BYTES)
    );
    assert_eq!(
        ToRelay::decode(&big).unwrap_err().code(),
        ErrorCode::TooLarge
    );
}

#[test]
fn end_reasons_round_trip_and_peer_text_is_closed() {
    for reason in EndReason::ALL {
        assert_eq!(EndReason::from_wire(reason.as_str()), reason);
        let hangup = Signal::hangup("a", "s", reason);
        assert_eq!(routed(&hangup.encode()).unwrap(), hangup);
    }
    assert_eq!(EndReason::from_wire(""), EndReason::RemoteHangup);
    assert_eq!(EndReason::from_wire("x\n<3>forged"), EndReason::Other);
    let forged = routed(r#"{"type":"hangup","to":"a","session":"s","reason":"x\n<3>forged"}"#)
        .expect("a hangup");
    assert_eq!(forged.end_reason(), Some(EndReason::Other));
    // The relay passes the peer's own text on as it came.
    assert!(forged.encode().contains(r#""reason":"x\n<3>forged""#));
    let silent = routed(r#"{"type":"hangup","to":"a","session":"s"}"#).expect("a hangup");
    assert_eq!(silent.end_reason(), Some(EndReason::RemoteHangup));
    // EndReason itself reads and writes its wire names.
    assert_eq!(
        serde_json::to_string(&EndReason::IceFailed).unwrap(),
        r#""ice-failed""#
    );
    let read: EndReason = serde_json::from_str(r#""no-answer""#).unwrap();
    assert_eq!(read, EndReason::NoAnswer);
}

#[test]
fn log_escaping_keeps_one_line() {
    assert_eq!(escape_for_log("a\n<3>b"), "a\\n<3>b");
    assert_eq!(escape_for_log(&"x".repeat(500)).chars().count(), 201);
}

#[test]
fn error_codes_are_kebab_case() {
    let msg = FromRelay::error(ErrorCode::IdTaken, "taken", None);
    assert!(msg.encode().contains(r#""code":"id-taken""#));
}
