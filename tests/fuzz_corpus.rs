//! Every file of the fuzzers' corpora (`fuzz/corpus/<target>/`) through the same entry
//! points the fuzz targets use, on stable: what the fuzzer once found stays fixed.

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("corpus entry").path();
        let data = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| run(&data));
        assert!(outcome.is_ok(), "{} fails {target}", path.display());
        files += 1;
    }
    assert!(files > 0, "no corpus for {target} in {}", dir.display());
    eprintln!("{target}: {files} corpus files");
}

#[test]
fn protocol_corpus() {
    replay("protocol", webrtcd::fuzzing::protocol);
}

#[test]
fn relay_corpus() {
    replay("relay", webrtcd::fuzzing::relay);
}

#[test]
fn sdp_corpus() {
    replay("sdp", webrtcd::fuzzing::sdp);
}
