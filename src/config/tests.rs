//! The config's tests: the example file, parse errors with their lines, validation.

use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(text, Path::new("test.toml"))
}

#[test]
fn example_config_loads_and_matches_the_defaults_it_claims() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/ocellus.example.toml"
    ));
    let c = Config::load(path).unwrap();
    assert_eq!(c.cameras.len(), 2);
    assert_eq!(c.cameras[0].id, "street");
    assert!(!c.cameras[1].enabled);
    assert_eq!(c.detector.min_score_for("person"), 0.45);
    // Everything else in the file is the default, so the file documents them truthfully.
    let d = Config::default();
    assert_eq!(c.detector.labels_allow, d.detector.labels_allow);
    assert_eq!(c.tracker.min_hits, d.tracker.min_hits);
    assert_eq!(c.tracker.unseen_timeout_ms, d.tracker.unseen_timeout_ms);
    assert_eq!(c.tracker.min_move, d.tracker.min_move);
    assert_eq!(c.tracker.score_window, d.tracker.score_window);
    assert_eq!(c.tracker.stationary_after_ms, d.tracker.stationary_after_ms);
    assert_eq!(c.detector.keep_alive_score, d.detector.keep_alive_score);
    assert_eq!(c.motion.var_threshold, d.motion.var_threshold);
    assert_eq!(c.storage.batch_max, d.storage.batch_max);
    assert_eq!(c.detector.model, d.detector.model);
    assert_eq!(c.detector.family, d.detector.family);
    assert_eq!(
        (c.detector.input_width, c.detector.input_height),
        (d.detector.input_width, d.detector.input_height)
    );
    assert_eq!(c.detector.preprocess(), d.detector.preprocess());
    let (rec, drec) = (&c.cameras[1].record, RecordConfig::default());
    assert_eq!(
        (rec.mode, rec.pre_s, rec.post_s),
        (drec.mode, drec.pre_s, drec.post_s)
    );
    let r = &c.recordings;
    assert_eq!(
        (
            r.path.as_ref(),
            r.max_bytes,
            r.max_age_days,
            r.min_free_bytes
        ),
        (
            None,
            d.recordings.max_bytes,
            d.recordings.max_age_days,
            d.recordings.min_free_bytes
        )
    );
}

#[test]
fn model_configs_load_and_name_their_files() {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/models"));
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path().join("model.toml");
        if !path.exists() {
            continue;
        }
        let c = Config::load(&path).unwrap();
        assert_eq!(c.detector.kind, DetectorKind::Dnn, "{}", path.display());
        // Relative to the model's own directory, wherever the daemon starts.
        let here = path.parent().unwrap();
        assert_eq!(c.detector.model.parent(), Some(here), "{}", path.display());
        assert_eq!(c.detector.labels.parent(), Some(here), "{}", path.display());
        assert!(
            c.detector.labels.exists(),
            "{}",
            c.detector.labels.display()
        );
        seen += 1;
    }
    assert!(seen >= 2);
}

#[test]
fn deployed_config_loads() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/systemd/ocellus.toml"));
    let c = Config::load(path).unwrap();
    assert!(c.storage.path.is_absolute() && c.detector.model.is_absolute());
    assert_eq!(c.server.listen, "127.0.0.1:8080");
}

#[test]
fn demo_config_loads() {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.toml"));
    let c = Config::load(path).unwrap();
    // Relative to the file: the clip setup.sh puts in media/.
    assert!(c.cameras[0]
        .source
        .ends_with("config/../media/vtest-h264.mp4"));
    assert!(c.storage.path.ends_with("config/../ocellus-demo.db"));
}

#[test]
fn network_listen_without_a_token_is_refused_unless_allowed() {
    let err = parse("[server]\nlisten = \"0.0.0.0:8080\"\n").unwrap_err();
    assert!(err.to_string().contains("set server.token"), "{err}");
    assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\ntoken = \"0123456789\"\n").is_ok());
    assert!(parse("[server]\nlisten = \"0.0.0.0:8080\"\nallow_no_token = true\n").is_ok());
    assert!(parse("[server]\nlisten = \"[::1]:8080\"\n").is_ok());
}

#[test]
fn recording_a_raw_frame_source_is_refused_at_config_check_unless_it_has_a_record_source() {
    let cam = |extra: &str| {
        parse(&format!(
            "[[cameras]]\nid = \"usb\"\nsource = \"/dev/video0\"\n{extra}[cameras.record]\nmode = \"events\"\n"
        ))
    };
    let err = cam("").unwrap_err().to_string();
    assert!(
        err.contains("cameras[0].record.mode") && err.contains("record_source"),
        "{err}"
    );
    assert!(cam("record_source = \"rtsp://10.0.0.2/main\"\n").is_ok());
    // Unset (auto), a raw source simply does not record.
    assert!(parse("[[cameras]]\nid = \"usb\"\nsource = \"/dev/video0\"\n").is_ok());
    let err = parse("[[cameras]]\nid = \"c\"\nsource = \"a.mp4\"\n[cameras.record]\npre_s = -1\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("cameras[0].record.pre_s"), "{err}");
}

#[test]
fn empty_config_is_all_defaults() {
    let c = parse("").unwrap();
    assert_eq!(c.detector.kind, DetectorKind::Auto);
    assert_eq!(c.tracker.min_hits, 10);
    assert!(c.cameras.is_empty());
}

#[test]
fn unknown_key_is_refused_with_its_line() {
    let err = parse("[tracker]\nmin_hits = 2\nmin_hitz = 3\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("test.toml:3:"), "{msg}");
    assert!(msg.contains("min_hitz"), "{msg}");
}

#[test]
fn runtime_and_execution_providers_are_read_and_an_unknown_provider_names_its_line() {
    let cfg = parse(
        "[detector]\nruntime = \"onnxruntime\"\nonnxruntime_library = \"/opt/ort/libonnxruntime.so\"\nexecution_providers = [\"tensorrt\", \"cuda\", \"cpu\"]\nthreads = 2\n",
    )
    .unwrap();
    assert_eq!(cfg.detector.runtime, DetectorRuntime::Onnxruntime);
    assert_eq!(
        cfg.detector.onnxruntime_library.as_deref(),
        Some(Path::new("/opt/ort/libonnxruntime.so"))
    );
    assert_eq!(
        cfg.detector.execution_providers,
        [
            ExecutionProvider::Tensorrt,
            ExecutionProvider::Cuda,
            ExecutionProvider::Cpu
        ]
    );
    let defaults = Config::default().detector;
    assert_eq!(defaults.runtime, DetectorRuntime::Auto);
    assert_eq!(defaults.execution_providers, [ExecutionProvider::Cpu]);
    let err = parse("[detector]\n\nexecution_providers = [\"cpu\", \"npu\"]\n").unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("test.toml:3:") && msg.contains("npu"),
        "{msg}"
    );
    let err = parse("[detector]\nruntime = \"tensorflow\"\n").unwrap_err();
    assert!(err.to_string().starts_with("test.toml:2:"), "{err}");
    let err = parse("[detector]\nthreads = -1\n").unwrap_err();
    assert!(err.to_string().contains("detector.threads"), "{err}");
}

#[test]
fn zones_and_lines_are_checked_and_a_mistake_names_its_line() {
    let good = "[[cameras]]\nid = \"c\"\nsource = \"x.avi\"\n\
        [[cameras.zones]]\nname = \"drive\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\nlabels = [\"car\"]\n\
        [[cameras.lines]]\nname = \"door\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n";
    let cfg = parse(good).unwrap();
    let cam = &cfg.cameras[0];
    assert_eq!(cam.zones[0].name, "drive");
    assert_eq!((cam.zones[0].inertia, cam.zones[0].loitering_s), (3, 0.0));
    assert_eq!(cam.zones[0].labels, ["car"]);
    assert_eq!(cam.lines[0].points, [[0.5, 0.2], [0.5, 0.9]]);
    let head = "[[cameras]]\nid = \"c\"\nsource = \"x.avi\"\n";
    for (bad, line, says) in [
        (
            "[[cameras.zones]]\nname = \"z\"\npoints = [[0.1, 0.5], [0.6, 0.5]]\n",
            4,
            "at least 3",
        ),
        (
            "[[cameras.zones]]\nname = \"z\"\npoints = [[0.1, 0.5], [1.6, 0.5], [0.0, 1.0]]\n",
            4,
            "0 to 1",
        ),
        (
            "[[cameras.zones]]\nname = \"a zone\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n",
            4,
            "letters, digits",
        ),
        (
            "[[cameras.lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n",
            4,
            "exactly 2",
        ),
        (
            "[[cameras.lines]]\nname = \"l\"\npoints = [[0.1, 0.5], [0.1, 0.5]]\n",
            4,
            "the same",
        ),
    ] {
        let err = parse(&format!("{head}{bad}")).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("test.toml:{line}:")) && err.contains(says),
            "{bad}: {err}"
        );
    }
    let twice = format!(
        "{head}[[cameras.zones]]\nname = \"x\"\npoints = [[0.1, 0.5], [0.6, 0.5], [0.0, 1.0]]\n\
         [[cameras.lines]]\nname = \"x\"\npoints = [[0.5, 0.2], [0.5, 0.9]]\n"
    );
    let err = parse(&twice).unwrap_err().to_string();
    assert!(
        err.contains("cameras[0].lines") && err.contains("used twice"),
        "{err}"
    );
}

#[test]
fn mqtt_section_is_read_checked_and_its_password_never_printed() {
    assert!(parse("").unwrap().mqtt.is_none(), "no section, no MQTT");
    let cfg = parse(
        "[mqtt]\nurl = \"mqtts://broker.local\"\ndevice_id = \"garage-pi\"\nusername = \"u\"\npassword = \"hunter2\"\n",
    )
    .unwrap();
    let m = cfg.mqtt.unwrap();
    assert_eq!(
        m.endpoint().unwrap(),
        MqttEndpoint {
            tls: true,
            host: "broker.local".into(),
            port: 8883
        }
    );
    assert_eq!(
        (m.qos, m.ha_discovery, m.topic_prefix.as_str()),
        (1, true, "ocellus")
    );
    assert_eq!(m.device(), "garage-pi");
    assert!(!format!("{m:?}").contains("hunter2"));
    let m = parse("[mqtt]\nurl = \"mqtt://10.0.0.5:1884\"\n")
        .unwrap()
        .mqtt
        .unwrap();
    assert_eq!(m.endpoint().unwrap().port, 1884);
    for (bad, key) in [
        ("url = \"http://broker\"", "mqtt.url"),
        ("url = \"mqtt://broker:port\"", "mqtt.url"),
        ("qos = 2", "mqtt.qos"),
        ("topic_prefix = \"a/#\"", "mqtt.topic_prefix"),
        ("device_id = \"my box\"", "mqtt.device_id"),
    ] {
        let err = parse(&format!("[mqtt]\n{bad}\n")).unwrap_err().to_string();
        assert!(err.contains(key), "{bad}: {err}");
    }
    let err = parse("[mqtt]\nurl = \"mqtt://b\"\nretain = true\n").unwrap_err();
    assert!(err.to_string().starts_with("test.toml:3:"), "{err}");
}

#[test]
fn wrong_type_is_refused_with_its_line() {
    let err = parse("[storage]\n\n\nbatch_ms = \"fast\"\n").unwrap_err();
    let msg = err.to_string();
    assert!(msg.starts_with("test.toml:4:"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

#[test]
fn duplicate_camera_ids_are_refused() {
    let err = parse(
        "[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\n[[cameras]]\nid = \"a\"\nsource = \"y.avi\"\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("cameras[1].id"), "{err}");
}

#[test]
fn out_of_range_score_names_the_key() {
    let err = parse("[detector]\nmin_score = 1.5\n").unwrap_err();
    assert!(err.to_string().contains("detector.min_score"), "{err}");
    for tiles in [0, MAX_TILES + 1] {
        let err = parse(&format!("[detector]\ntiles = {tiles}\n")).unwrap_err();
        assert!(err.to_string().contains("detector.tiles"), "{err}");
    }
    assert_eq!(parse("[detector]\ntiles = 2\n").unwrap().detector.tiles, 2);
}

/// The detector's rate: 0-120 a second, per camera too; its old name still read; regions and
/// tiles are not both asked for.
#[test]
fn detector_rates_and_regions_are_checked() {
    for bad in ["-1", "121", "nan"] {
        let err = parse(&format!("[detector]\nfps = {bad}\n")).unwrap_err();
        assert!(err.to_string().contains("detector.fps"), "{bad}: {err}");
    }
    let c = parse("[detector]\nmax_fps = 2.5\n").unwrap();
    assert_eq!(c.detector.fps, 2.5);
    assert_eq!(parse("").unwrap().detector.fps, 5.0);
    let cams = "[[cameras]]\nid = \"a\"\nsource = \"a.avi\"\ndetector_fps = 1\n\
                [[cameras]]\nid = \"b\"\nsource = \"b.avi\"\n";
    let c = parse(&format!("[detector]\nfps = 3\n{cams}")).unwrap();
    assert_eq!((c.detector_fps("a"), c.detector_fps("b")), (1.0, 3.0));
    let err =
        parse("[[cameras]]\nid = \"a\"\nsource = \"a.avi\"\ndetector_fps = 500\n").unwrap_err();
    assert!(err.to_string().contains("cameras[0].detector_fps"), "{err}");
    let err = parse("[detector]\nregions = true\ntiles = 2\n").unwrap_err();
    assert!(err.to_string().contains("detector.regions"), "{err}");
    assert!(
        parse("[detector]\nregions = true\n")
            .unwrap()
            .detector
            .regions
    );
}

#[test]
fn masks_are_checked_and_points_fall_inside_or_outside() {
    let ok = parse(
        "[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nobject_masks = [[[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]]\n",
    )
    .unwrap();
    let mask = &ok.camera("a").unwrap().object_masks[0];
    assert!(point_in_polygon(mask, (0.3, 0.3)));
    assert!(!point_in_polygon(mask, (0.6, 0.3)));
    let err = parse("[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nmotion_masks = [[[0.1, 0.1], [1.5, 0.1], [0.5, 0.5]]]\n")
        .unwrap_err();
    assert!(err.to_string().contains("cameras[0].motion_masks"), "{err}");
    assert!(err.to_string().contains("0 to 1"), "{err}");
    let err = parse(
        "[[cameras]]\nid = \"a\"\nsource = \"x.avi\"\nobject_masks = [[[0.1, 0.1], [0.5, 0.1]]]\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("at least 3"), "{err}");
}

#[test]
fn per_label_score_overrides_the_default() {
    let c = parse("[detector]\nmin_score = 0.3\nmin_score_per_label = { person = 0.7 }\n").unwrap();
    assert_eq!(c.detector.min_score_for("person"), 0.7);
    assert_eq!(c.detector.min_score_for("car"), 0.3);
}

#[test]
fn tls_files_come_in_pairs_and_belong_to_tls_urls() {
    let err = parse("[server]\ntls_cert = \"c.pem\"\n").unwrap_err();
    assert!(err.to_string().contains("server.tls_key"), "{err}");
    let err = parse("[server]\ntls_key = \"k.pem\"\n").unwrap_err();
    assert!(err.to_string().contains("server.tls_cert"), "{err}");
    assert!(parse("[server]\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n").is_ok());
    let err = parse("[mqtt]\nurl = \"mqtt://b:1883\"\nca_file = \"ca.pem\"\n").unwrap_err();
    assert!(
        err.to_string().contains("mqtt.ca_file") && err.to_string().contains("mqtts://"),
        "{err}"
    );
    let err = parse("[mqtt]\nurl = \"mqtts://b\"\nclient_cert = \"c.pem\"\n").unwrap_err();
    assert!(err.to_string().contains("mqtt.client_key"), "{err}");
    assert!(parse("[mqtt]\nurl = \"mqtts://b\"\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n").is_ok());
}

#[test]
fn tls_files_are_relative_to_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("ocellus.toml");
    std::fs::write(
        &file,
        "[server]\ntls_cert = \"tls/cert.pem\"\ntls_key = \"/etc/ocellus/key.pem\"\n\
         [mqtt]\nurl = \"mqtts://b\"\nca_file = \"ca.pem\"\nclient_cert = \"c.pem\"\nclient_key = \"k.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&file).unwrap();
    assert_eq!(c.server.tls_cert.unwrap(), dir.path().join("tls/cert.pem"));
    assert_eq!(c.server.tls_key.unwrap(), Path::new("/etc/ocellus/key.pem"));
    let m = c.mqtt.unwrap();
    assert_eq!(m.ca_file.unwrap(), dir.path().join("ca.pem"));
    assert_eq!(m.client_key.unwrap(), dir.path().join("k.pem"));
}

#[test]
fn a_camera_url_loses_its_user_and_password_and_nothing_else() {
    for (url, shown) in [
        (
            "rtsp://admin:pa55@10.0.0.5:554/s1",
            "rtsp://***@10.0.0.5:554/s1",
        ),
        ("rtsp://admin@cam/s1", "rtsp://***@cam/s1"),
        // An '@' in the password itself: the authority ends at its last '@'.
        ("rtsp://admin:p@ss@cam/s1", "rtsp://***@cam/s1"),
        // No credentials: an '@' in the path or query is not an authority's.
        ("http://cam/snap@2x.jpg", "http://cam/snap@2x.jpg"),
        ("http://cam?u=a@b", "http://cam?u=a@b"),
        ("rtsp://cam:554/s1", "rtsp://cam:554/s1"),
        ("media/vtest.avi", "media/vtest.avi"),
    ] {
        assert_eq!(redact_url(url), shown, "{url}");
    }
}

#[test]
fn the_printed_config_comments_out_a_camera_url_that_has_a_password() {
    let c = parse(
        "[[cameras]]\nid = \"gate\"\nsource = \"rtsp://admin:pa55@10.0.0.5/s1\"\n\
         [[cameras]]\nid = \"street\"\nsource = \"rtsp://10.0.0.6/s1\"\n",
    )
    .unwrap();
    let text = c.to_toml();
    assert!(!text.contains("pa55"), "{text}");
    assert!(
        text.contains("# source = \"rtsp://***@10.0.0.5/s1\""),
        "{text}"
    );
    // A URL without credentials stays a line that runs.
    assert!(
        text.contains("\nsource = \"rtsp://10.0.0.6/s1\"\n"),
        "{text}"
    );
    // The capture still opens what the file says.
    assert_eq!(c.cameras[0].source, "rtsp://admin:pa55@10.0.0.5/s1");
}
