//! Installing and configuring: `check-config`, the systemd unit's hardening, the .deb.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::artifacts_dir;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs `webrtcd check-config --config FILE`: exit code and stdout.
fn check_config(binary: &Path, file: &Path) -> (i32, String) {
    let out = Command::new(binary)
        .args(["check-config", "--config"])
        .arg(file)
        .env_remove("WEBRTCD_CONFIG")
        .env_remove("WEBRTCD_TOKENS")
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .expect("run check-config");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn write(name: &str, text: &str) -> PathBuf {
    let dir = artifacts_dir().join("check-config");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

/// A config file using the test profile from the source tree.
fn config(name: &str, extra: &str) -> PathBuf {
    let profile = repo().join("pipelines/test.toml");
    write(
        name,
        &format!("profile = {:?}\n{extra}", profile.display().to_string()),
    )
}

fn expect_problem(file: &Path, problem_file: &Path, starts: &str) {
    let (code, out) = check_config(Path::new(env!("CARGO_BIN_EXE_webrtcd")), file);
    assert_eq!(code, 2, "{}: {out}", file.display());
    let wanted = format!("{}: {starts}", problem_file.display());
    assert!(
        out.lines().any(|l| l.starts_with(&wanted)),
        "expected a line starting {wanted:?}, got:\n{out}"
    );
}

#[test]
fn check_config_accepts_a_good_file_and_names_every_kind_of_problem() {
    let binary = Path::new(env!("CARGO_BIN_EXE_webrtcd"));
    let good = config(
        "good.toml",
        "listen = \"0.0.0.0:8080\"\ntokens = [\"a-long-token\"]\n[ice]\naddresses = [\"127.0.0.1\"]\n",
    );
    let (code, out) = check_config(binary, &good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok; profile test"), "{out}");

    let syntax = config("syntax.toml", "[ice\n");
    expect_problem(&syntax, &syntax, "line 2: ");
    let no_value = config("no-value.toml", "listen = \n");
    expect_problem(&no_value, &no_value, "listen: invalid string; expected");
    let unknown = config("unknown.toml", "[ice]\nstun = \"stun://x:3478\"\n");
    expect_problem(&unknown, &unknown, "ice.stun: unknown field");
    let bad_type = config("bad-type.toml", "listen = \"everywhere\"\n");
    expect_problem(&bad_type, &bad_type, "listen: ");
    let bad_value = config("bad-value.toml", "keepalive_secs = 0\n");
    expect_problem(
        &bad_value,
        &bad_value,
        "keepalive_secs: 0 is not between 1 and 3600",
    );
    let missing = write("missing.toml", "profile = \"no-such-profile.toml\"\n");
    expect_problem(
        &missing,
        &missing.with_file_name("no-such-profile.toml"),
        "cannot read",
    );

    let camera = write(
        "camera-missing.toml",
        "name = \"cam\"\n[video]\nsource = \"v4l2\"\ndevice = \"/dev/video-webrtcd-missing\"\ncodecs = [\"vp8\"]\n",
    );
    let uses_camera = write("uses-camera.toml", "profile = \"camera-missing.toml\"\n");
    expect_problem(
        &uses_camera,
        &camera,
        "video.device: /dev/video-webrtcd-missing does not exist",
    );
    let typo = write(
        "profile-typo.toml",
        "name = \"cam\"\n[video]\nsource = \"test\"\nwidht = 640\n",
    );
    let uses_typo = write("uses-typo.toml", "profile = \"profile-typo.toml\"\n");
    expect_problem(&uses_typo, &typo, "video.widht: unknown field");

    // Several cameras: a problem names the camera, and the key within it.
    let cameras = "name = \"barn\"\n\
        [[camera]]\nname = \"door\"\n[camera.video]\nsource = \"test\"\ncodecs = [\"vp8\"]\n\
        [[camera]]\nname = \"parcel\"\n[camera.video]\nsource = \"v4l2\"\n\
        device = \"/dev/video-webrtcd-missing\"\ncodecs = [\"vp8\"]\n";
    let barn = write("barn.toml", cameras);
    let uses_barn = write("uses-barn.toml", "profile = \"barn.toml\"\n");
    expect_problem(
        &uses_barn,
        &barn,
        "camera \"parcel\": video.device: /dev/video-webrtcd-missing does not exist",
    );
    let typo = write(
        "barn-typo.toml",
        &cameras.replace("source = \"v4l2\"", "source = \"test\"\nwidht = 640"),
    );
    let uses_typo = write("uses-barn-typo.toml", "profile = \"barn-typo.toml\"\n");
    expect_problem(
        &uses_typo,
        &typo,
        "camera \"parcel\": video.widht: unknown field",
    );
    write(
        "barn-good.toml",
        &cameras.replace("source = \"v4l2\"", "source = \"test\""),
    );
    let uses_good = write("uses-barn-good.toml", "profile = \"barn-good.toml\"\n");
    let (code, out) = check_config(binary, &uses_good);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("cameras: door, parcel"), "{out}");
}

#[test]
fn the_systemd_unit_is_hardened_to_an_exposure_of_2_or_less() {
    let unit = repo().join("systemd/webrtcd.service");
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(&unit)
        .output()
        .expect("systemd-analyze (Debian package systemd)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {line:?}"));
    assert!(score <= 2.0, "{line}");
    let unit_text = std::fs::read_to_string(&unit).expect("unit");
    for directive in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "DynamicUser=yes",
        "StateDirectory=webrtcd",
        "DevicePolicy=closed",
        "DeviceAllow=char-video4linux rw",
        "DeviceAllow=char-alsa rw",
        "DeviceAllow=char-drm rw",
        "SupplementaryGroups=video audio render",
    ] {
        assert!(
            unit_text.lines().any(|l| l.starts_with(directive)),
            "{directive} missing"
        );
    }
}

#[test]
fn the_deb_installs_binary_unit_config_profiles_and_web_client() {
    let out_dir = artifacts_dir().join("deb");
    let _ = std::fs::remove_dir_all(&out_dir);
    // The binary this test run built (dev profile), packaged as the release one would be.
    let status = Command::new(env!("CARGO"))
        .args([
            "deb",
            "--profile",
            "dev",
            "--no-build",
            "--offline",
            "--output",
        ])
        .arg(&out_dir)
        .current_dir(repo())
        .status()
        .expect("cargo deb (cargo install cargo-deb)");
    assert!(status.success(), "cargo deb failed");
    let deb = std::fs::read_dir(&out_dir)
        .expect("deb dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("a .deb");

    let root = tempfile::tempdir().expect("tempdir");
    let status = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path())
        .status()
        .expect("dpkg-deb");
    assert!(status.success());
    for file in [
        "usr/bin/webrtcd",
        "lib/systemd/system/webrtcd.service",
        "etc/webrtcd/webrtcd.toml",
        "etc/webrtcd/pipelines/test.toml",
        "etc/webrtcd/pipelines/camera.toml",
        "etc/webrtcd/pipelines/intercom.toml",
        "usr/share/webrtcd/web/index.html",
        "usr/share/webrtcd/web/app.js",
        "usr/share/webrtcd/web/style.css",
    ] {
        assert!(
            root.path().join(file).is_file(),
            "{file} is not in the .deb"
        );
    }
    let control = Command::new("dpkg-deb")
        .args(["-f"])
        .arg(&deb)
        .output()
        .expect("dpkg-deb -f");
    let control = String::from_utf8_lossy(&control.stdout);
    assert!(control.contains("gstreamer1.0-nice"), "{control}");
    let conffiles = Command::new("dpkg-deb")
        .args(["--info"])
        .arg(&deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb --info");
    let conffiles = String::from_utf8_lossy(&conffiles.stdout);
    assert!(
        conffiles.contains("/etc/webrtcd/webrtcd.toml"),
        "{conffiles}"
    );

    // The installed binary accepts the installed default config (and its profile).
    let (code, out) = check_config(
        &root.path().join("usr/bin/webrtcd"),
        &root.path().join("etc/webrtcd/webrtcd.toml"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok; profile test"), "{out}");
}
