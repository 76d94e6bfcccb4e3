//! Built for tests only: #[cfg(test)] mod tests; the profile's parsing and checks.

use super::*;
use crate::media::codecs::Codec;

#[test]
fn shipped_test_profile_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/test.toml");
    let p = Profile::load(&path).unwrap();
    assert_eq!(p.video.unwrap().codecs[0], Codec::Vp8);
    assert_eq!(p.audio.unwrap().codecs[0], Codec::Opus);
}

#[test]
fn a_camera_that_is_not_there_is_a_clear_error() {
    let _ = gst::init();
    let f = Path::new("camera.toml");
    let text =
        "name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video-does-not-exist'\ncodecs=['h264']";
    let p = Profile::parse(text, f).unwrap();
    let err = p.check_devices(f).unwrap_err().to_string();
    assert!(
        err.starts_with("camera.toml: video.device: /dev/video-does-not-exist does not exist"),
        "{err}"
    );
    let err = Profile::parse("name='cam'\n[video]\nsource='v4l2'\ncodecs=['h264']", f)
        .unwrap_err()
        .to_string();
    assert!(err.contains("video.device"), "{err}");
    let err = Profile::parse(
        "name='cam'\n[video]\nsource='v4l2'\ndevice='/dev/video0'\nformat='H265'\ncodecs=['h264']",
        f,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("video.format"), "{err}");
}

#[test]
fn unknown_keys_and_bad_values_are_errors_naming_the_file() {
    let f = Path::new("x.toml");
    let err = Profile::parse(
        "name='a'\ncolour='red'\n[audio]\nsource='test'\ncodecs=['opus']",
        f,
    )
    .unwrap_err()
    .to_string();
    assert!(err.starts_with("x.toml: "), "{err}");
    assert!(err.contains("colour"), "{err}");
    let err = Profile::parse("name='a'\n[audio]\nsource='test'\ncodecs=['vp8']", f)
        .unwrap_err()
        .to_string();
    assert!(err.contains("audio.codecs"), "{err}");
    // One canceller takes the speaker's reference: one shared microphone.
    let audio = "[audio]\nsource='test'\ncodecs=['opus']\necho_cancel=true";
    let err = Profile::parse(&format!("name='a'\nper_viewer_encoder=true\n{audio}"), f)
        .unwrap_err()
        .to_string();
    assert!(err.contains("per_viewer_encoder"), "{err}");
    assert!(Profile::parse(&format!("name='a'\n{audio}"), f).is_ok());
}

#[test]
fn a_ladder_goes_from_the_best_rendition_down() {
    let f = Path::new("l.toml");
    let with = |rungs: &str| {
        Profile::parse(
            &format!(
                "name='l'\n[video]\nsource='test'\ncodecs=['vp8']\nwidth=1280\nheight=720\n{rungs}"
            ),
            f,
        )
    };
    let rung = |w: u32, h: u32, k: u32| {
        format!("[[video.ladder]]\nwidth={w}\nheight={h}\nbitrate_kbps={k}\n")
    };
    let good =
        with(&(rung(1280, 720, 2000) + &rung(640, 360, 600) + &rung(320, 180, 150))).unwrap();
    let rungs = good.video.unwrap().rungs();
    assert_eq!(rungs.len(), 3);
    assert_eq!(rungs[1].name(), "640x360");
    let single = with("").unwrap().video.unwrap().rungs();
    assert_eq!(
        single.len(),
        1,
        "no ladder: the profile's own size and rate"
    );
    let rising = with(&(rung(640, 360, 600) + &rung(1280, 720, 2000))).unwrap_err();
    assert!(rising.to_string().contains("video.ladder[1]"), "{rising}");
    let too_big = with(&rung(1920, 1080, 4000)).unwrap_err();
    assert!(
        too_big.to_string().contains("larger than what is captured"),
        "{too_big}"
    );
    let odd = with(&rung(641, 360, 600)).unwrap_err();
    assert!(odd.to_string().contains("even"), "{odd}");
}

fn three_cameras(extra: &str) -> String {
    let camera = |name: &str, pattern: &str| {
        format!(
            "[[camera]]\nname='{name}'\n[camera.video]\nsource='launch'\n\
             launch='videotestsrc pattern={pattern}'\ncodecs=['vp8']\n"
        )
    };
    format!(
        "name='barn'\n{extra}{}{}{}",
        camera("red", "red"),
        camera("green", "green"),
        camera("blue", "blue")
    )
}

#[test]
fn a_profile_lists_cameras_each_with_its_own_media() {
    let f = Path::new("barn.toml");
    let p = Profile::parse(&three_cameras(""), f).unwrap();
    let cameras = p.cameras();
    let names: Vec<&str> = cameras.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["red", "green", "blue"]);
    let green = p.for_camera(&cameras[1]);
    assert!(green.camera.is_empty() && green.audio.is_none());
    let launch = green.video.unwrap().launch.unwrap();
    assert!(launch.ends_with("pattern=green"), "{launch}");
    assert_eq!(green.max_sessions, p.max_sessions, "the daemon's keys stay");
    // A camera with a microphone, one without; the door's canceller hears the speaker
    // whichever camera a call watches.
    let door = "[[camera]]\nname='door'\n[camera.video]\nsource='test'\ncodecs=['vp8']\n\
                [camera.audio]\nsource='test'\ncodecs=['opus']\necho_cancel=true\n\
                [[camera]]\nname='parcel'\n[camera.video]\nsource='test'\ncodecs=['vp8']\n";
    let p = Profile::parse(&format!("name='door'\n{door}"), f).unwrap();
    let parcel = p.for_camera(&p.cameras()[1]);
    assert!(parcel.audio.is_none() && parcel.echo_cancel());
}

#[test]
fn a_camera_problem_names_the_camera_and_the_key() {
    let f = Path::new("barn.toml");
    let err = |text: &str| Profile::parse(text, f).unwrap_err().to_string();
    let bad = three_cameras("").replace(
        "launch='videotestsrc pattern=green'\ncodecs=['vp8']",
        "launch='videotestsrc pattern=green'\ncodecs=['opus']",
    );
    let e = err(&bad);
    assert!(
        e.starts_with("barn.toml: camera \"green\": video.codecs"),
        "{e}"
    );
    let e = err(&three_cameras("").replace("name='blue'", "name='red'"));
    assert!(e.contains("camera \"red\": name: two cameras"), "{e}");
    let e = err(&three_cameras("").replace("name='blue'", "name='Blue Cam'"));
    assert!(e.contains("camera name"), "{e}");
    let e = err(&three_cameras("[video]\nsource='test'\ncodecs=['vp8']\n"));
    assert!(e.contains("[[camera]]"), "{e}");
    let mic = "[camera.audio]\nsource='test'\ncodecs=['opus']\necho_cancel=true\n";
    let two_cancellers = three_cameras("")
        .replace(
            "[[camera]]\nname='green'",
            &format!("{mic}[[camera]]\nname='green'"),
        )
        .replace(
            "[[camera]]\nname='blue'",
            &format!("{mic}[[camera]]\nname='blue'"),
        );
    let e = err(&two_cancellers);
    assert!(e.contains("audio.echo_cancel: one camera"), "{e}");
    let many: String = (0..=MAX_CAMERAS)
        .map(|i| format!("[[camera]]\nname='c{i}'\n"))
        .collect();
    assert!(err(&format!("name='x'\n{many}")).contains("at most"));
}

#[test]
fn a_missing_camera_device_names_its_camera() {
    let _ = gst::init();
    let f = Path::new("barn.toml");
    let text = three_cameras("").replace(
        "source='launch'\nlaunch='videotestsrc pattern=blue'",
        "source='v4l2'\ndevice='/dev/video-not-here'",
    );
    let p = Profile::parse(&text, f).unwrap();
    let e = p.check_devices(f).unwrap_err().to_string();
    assert!(
        e.starts_with("barn.toml: camera \"blue\": video.device: /dev/video-not-here"),
        "{e}"
    );
}

#[test]
fn a_change_of_rates_alone_is_told_apart_from_a_change_of_camera() {
    let f = Path::new("r.toml");
    let view = |video: &str| {
        let p = Profile::parse(&format!("name='r'\n[video]\nsource='test'\n{video}"), f).unwrap();
        p.for_camera(&p.cameras()[0])
    };
    let base = "codecs=['vp8']\nwidth=1280\nheight=720\nbitrate_kbps=2000\n";
    let rung = |w: u32, h: u32, k: u32| {
        format!("[[video.ladder]]\nwidth={w}\nheight={h}\nbitrate_kbps={k}\n")
    };
    let before = view(base);
    let faster = view(&base.replace("2000", "1200"));
    assert!(before.rates_differ_only(&faster) && !before.encodes_like(&faster));
    assert!(before.rates_differ_only(&before) && before.encodes_like(&before));
    let wider = view(&base.replace("1280", "1920").replace("720", "1080"));
    assert!(!before.rates_differ_only(&wider));
    let ladder = view(&(base.to_string() + &rung(1280, 720, 2000) + &rung(640, 360, 600)));
    let cheaper = view(&(base.to_string() + &rung(1280, 720, 1500) + &rung(640, 360, 400)));
    let smaller = view(&(base.to_string() + &rung(1280, 720, 2000) + &rung(320, 180, 600)));
    assert!(ladder.rates_differ_only(&cheaper));
    assert!(
        !ladder.rates_differ_only(&smaller),
        "a rung's size is a new encoder"
    );
    assert!(
        !before.rates_differ_only(&ladder),
        "a ladder is new encoders"
    );
}
