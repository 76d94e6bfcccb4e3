//! RED split and SDP: unit tests on packets and descriptions the tests build.
//!
//! Built for tests only: `#[cfg(test)] mod tests;` in `red.rs`.

use super::*;

const RED: u8 = 63;
const OPUS: u8 = 111;

/// A RED packet (RFC 2198) carrying `redundant` (timestamp offset, data) blocks and `primary`.
fn red_packet(seq: u16, ts: u32, redundant: &[(u32, &[u8])], primary: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    for (offset, data) in redundant {
        payload.push(0x80 | OPUS);
        payload.push((offset >> 6) as u8);
        payload.push((((offset & 0x3f) << 2) as u8) | ((data.len() >> 8) as u8));
        payload.push((data.len() & 0xff) as u8);
    }
    payload.push(OPUS);
    for (_, data) in redundant {
        payload.extend_from_slice(data);
    }
    payload.extend_from_slice(primary);
    rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(RED)
        .sequence_number(seq)
        .timestamp(ts)
        .ssrc(0x1234)
        .payload(payload.as_slice())
        .write_vec()
        .expect("a packet")
}

fn payloads() -> RedPayloads {
    let payloads = RedPayloads::default();
    payloads.set(vec![(RED, OPUS)]);
    payloads
}

fn fields(packet: &[u8]) -> (u8, u16, u32, Vec<u8>) {
    let rtp = rtp_types::RtpPacket::parse(packet).expect("RTP");
    (
        rtp.payload_type(),
        rtp.sequence_number(),
        rtp.timestamp(),
        rtp.payload().to_vec(),
    )
}

#[test]
fn a_lost_packet_comes_back_from_the_next_one_before_it() {
    let red = payloads();
    // Packet 10 arrives, 11 is lost, 12 carries 11 (960 samples earlier) and itself.
    let first = red
        .split(&red_packet(10, 9600, &[(960, b"nine")], b"ten"))
        .expect("split");
    // 9 never arrived either: it comes back from 10.
    assert_eq!(first.recovered.len(), 1);
    assert_eq!(
        fields(&first.recovered[0]),
        (OPUS, 9, 8640, b"nine".to_vec())
    );
    assert_eq!(fields(&first.primary), (OPUS, 10, 9600, b"ten".to_vec()));
    let split = red
        .split(&red_packet(12, 11520, &[(960, b"eleven")], b"twelve"))
        .expect("split");
    assert_eq!(split.recovered.len(), 1);
    assert_eq!(
        fields(&split.recovered[0]),
        (OPUS, 11, 10560, b"eleven".to_vec())
    );
    assert_eq!(
        fields(&split.primary),
        (OPUS, 12, 11520, b"twelve".to_vec())
    );
}

#[test]
fn a_packet_that_arrived_is_not_given_again() {
    let red = payloads();
    red.split(&red_packet(20, 0, &[(960, b"a")], b"b"));
    let split = red
        .split(&red_packet(21, 960, &[(960, b"b")], b"c"))
        .expect("split");
    assert!(split.recovered.is_empty());
    // Two redundant blocks: 22 and 23 in 24; 22 is lost, 23 too.
    let split = red
        .split(&red_packet(24, 3840, &[(1920, b"d"), (960, b"e")], b"f"))
        .expect("split");
    let seqs: Vec<u16> = split.recovered.iter().map(|p| fields(p).1).collect();
    assert_eq!(seqs, [22, 23]);
}

#[test]
fn other_payload_types_and_unknown_streams_pass_untouched() {
    let red = RedPayloads::default();
    // No RED negotiated: nothing is touched.
    assert!(red.split(&red_packet(1, 0, &[], b"x")).is_none());
    let red = payloads();
    let opus = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(OPUS)
        .sequence_number(5)
        .payload(b"plain".as_slice())
        .write_vec()
        .expect("a packet");
    assert!(red.split(&opus).is_none());
    assert!(red.split(b"not rtp").is_none());
}

#[test]
fn malformed_or_hostile_red_is_left_alone() {
    let red = payloads();
    // A block longer than the packet.
    let mut packet = red_packet(30, 960, &[(960, b"abc")], b"d");
    let header = rtp_types::RtpPacket::parse(&packet)
        .expect("RTP")
        .payload_offset();
    packet[header + 3] = 200;
    assert!(red.split(&packet).is_none());
    // More redundant blocks than anyone sends.
    let many: Vec<(u32, &[u8])> = (1..=5).map(|i| (960 * i, b"x".as_slice())).collect();
    assert!(red.split(&red_packet(40, 96_000, &many, b"y")).is_none());
    // Headers and nothing else.
    let mut cut = red_packet(50, 960, &[(960, b"abc")], b"d");
    cut.truncate(header + 2);
    assert!(red.split(&cut).is_none());
    // A zero timestamp offset gives nothing back, but the primary goes on.
    let split = red
        .split(&red_packet(60, 200_000, &[(0, b"a")], b"b"))
        .expect("split");
    assert!(split.recovered.is_empty());
    assert_eq!(fields(&split.primary).3, b"b");
}

#[test]
fn the_window_follows_sequence_numbers_across_the_wrap() {
    let mut window = Window::default();
    assert!(!window.has(65535));
    window.mark(65534);
    window.mark(1);
    assert!(window.has(65534));
    assert!(!window.has(65535));
    assert!(!window.has(0));
    assert!(window.has(1));
    window.mark(0);
    assert!(window.has(0));
    // Far behind: counted as arrived (too late to give).
    assert!(window.has(1u16.wrapping_sub(100)));
    // Ahead of the newest: not arrived.
    assert!(!window.has(2));
    // A jump past the window forgets what it knew.
    window.mark(1000);
    assert!(window.has(1000));
    assert!(!window.has(999));
    // A late packet far behind changes nothing; a stream that starts over is followed.
    window.mark(900);
    assert!(!window.has(999));
    window.mark(50_000);
    assert!(window.has(50_000));
    assert!(!window.has(49_999));
    window.mark(49_999);
    assert!(window.has(49_999));
}

#[test]
fn opus_sent_plain_is_remembered_and_a_broken_packet_marks_nothing() {
    let red = payloads();
    let plain = rtp_types::RtpPacketBuilder::<&[u8], &[u8]>::new()
        .payload_type(OPUS)
        .sequence_number(70)
        .ssrc(0x1234)
        .payload(b"big frame".as_slice())
        .write_vec()
        .expect("a packet");
    assert!(red.split(&plain).is_none());
    // 71's copy of 70 is not given: 70 came plain.
    let split = red
        .split(&red_packet(71, 960, &[(960, b"seventy")], b"seventy-one"))
        .expect("split");
    assert!(split.recovered.is_empty());
    // A packet whose primary is not Opus gives nothing and marks nothing: 72 is still
    // rebuilt from 73 afterwards.
    let mut broken = red_packet(73, 2880, &[(960, b"seventy-two")], b"other");
    let header = rtp_types::RtpPacket::parse(&broken)
        .expect("RTP")
        .payload_offset();
    broken[header + 4] = 5;
    assert!(red.split(&broken).is_none());
    let split = red
        .split(&red_packet(
            73,
            2880,
            &[(960, b"seventy-two")],
            b"seventy-three",
        ))
        .expect("split");
    assert_eq!(split.recovered.len(), 1);
    assert_eq!(fields(&split.recovered[0]).1, 72);
}

fn parse(text: &str) -> gst_sdp::SDPMessage {
    gst::init().expect("gst");
    gst_sdp::SDPMessage::parse_buffer(text.as_bytes()).expect("SDP")
}

const HEAD: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n";

#[test]
fn an_offer_prefers_red_and_an_answer_follows_the_offer() {
    let mut ours = parse(&format!(
        "{HEAD}m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 OPUS/48000/2\r\n"
    ));
    prefer_red(&mut ours, None);
    let audio = ours.media(1).expect("audio");
    assert_eq!(audio.format(0), Some("63"));
    assert_eq!(audio.format(1), Some("111"));
    assert_eq!(pairs(&ours), [(63, 111)]);
    assert!(pairs_of(ours.media(0).expect("video")).is_empty());

    // Answering an offer that has RED at 100: the answer uses 100, first.
    let offer = parse(&format!(
        "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111 100\r\na=rtpmap:111 opus/48000/2\r\n\
a=rtpmap:100 red/48000/2\r\na=fmtp:100 111/111\r\n"
    ));
    let mut answer = parse(&format!(
        "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 OPUS/48000/2\r\n"
    ));
    prefer_red(&mut answer, Some(&offer));
    assert_eq!(answer.media(0).expect("audio").format(0), Some("100"));
    assert_eq!(pairs(&answer), [(100, 111)]);

    // An offer without RED: the answer has none.
    let plain = parse(&format!(
        "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n"
    ));
    let mut answer = parse(&format!(
        "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 OPUS/48000/2\r\n"
    ));
    prefer_red(&mut answer, Some(&plain));
    assert_eq!(answer.media(0).expect("audio").formats_len(), 1);
    assert!(pairs(&answer).is_empty());
}

#[test]
fn an_offer_takes_a_free_payload_type_for_red() {
    let mut ours = parse(&format!(
        "{HEAD}m=audio 9 UDP/TLS/RTP/SAVPF 63 111\r\na=rtpmap:63 PCMU/8000\r\n\
a=rtpmap:111 OPUS/48000/2\r\n"
    ));
    prefer_red(&mut ours, None);
    assert_eq!(pairs(&ours), [(96, 111)]);
}
