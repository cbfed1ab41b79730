SUMMARY = "Ocellus edge computer-vision telemetry daemon"
DESCRIPTION = "Watches cameras (V4L2, RTSP/HTTP, GStreamer), detects motion and objects with \
OpenCV DNN, tracks them, stores events in SQLite and serves a live dashboard, a REST API and \
a WebSocket feed on one port."
HOMEPAGE = "https://github.com/ocellus-dev/ocellus"
BUGTRACKER = "https://github.com/ocellus-dev/ocellus/issues"
SECTION = "multimedia"
# The daemon, and uPlot (embedded in the binary for the dashboard's charts), both MIT.
LICENSE = "MIT"
LIC_FILES_CHKSUM = " \
    file://LICENSE;md5=7412e8647632130c473e2397809c3ae7 \
    file://web/vendor/uplot/LICENSE;md5=e6317ce4dbbe5c9f1c6946e3aba62296 \
"

# GStreamer reads the cameras' compressed streams for recording (one session per stream).
DEPENDS += "clang-native opencv gstreamer1.0 gstreamer1.0-plugins-base"

PV = "0.1.0+git"
SRC_URI = "git://github.com/ocellus-dev/ocellus.git;protocol=https;branch=main"
# Pin a release commit for reproducible images; AUTOREV follows main.
SRCREV = "${AUTOREV}"

S = "${UNPACKDIR}/git"

inherit cargo cargo-update-recipe-crates pkgconfig systemd

# The crate list, generated from Cargo.lock by scripts/yocto-crates.py
# (or: bitbake -c update_crates ocellus).
require ${BPN}-crates.inc

# The opencv crate generates its bindings with libclang and finds OpenCV with pkg-config.
export LIBCLANG_PATH = "${STAGING_LIBDIR_NATIVE}"
export OPENCV_PACKAGE_NAME = "opencv4"

SYSTEMD_SERVICE:${PN} = "ocellus.service"
SYSTEMD_AUTO_ENABLE:${PN} = "enable"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    sed -e 's,/usr/bin/ocellus,${bindir}/ocellus,g' ${S}/systemd/ocellus.service \
        > ${D}${systemd_system_unitdir}/ocellus.service
    chmod 0644 ${D}${systemd_system_unitdir}/ocellus.service
    install -d ${D}${sysconfdir}/ocellus
    # Readable by the service's DynamicUser (ConfigurationDirectory= does not chown it).
    install -m 0644 ${S}/systemd/ocellus.toml ${D}${sysconfdir}/ocellus/ocellus.toml
}

FILES:${PN} += "${systemd_system_unitdir}/ocellus.service"
CONFFILES:${PN} = "${sysconfdir}/ocellus/ocellus.toml"

# The default model (NanoDet-g) and the smallest (FastestDet, the fallback when the default is
# missing); without either Ocellus falls back to OpenCV's HOG people detector.
# ONNX Runtime is loaded at run time (dlopen of libonnxruntime.so / .so.1), never linked: it is
# a recommendation, not a build dependency. With a layer that provides it (e.g. meta-onnxruntime,
# or a vendor BSP's), the detector runs about 3.5x faster than on OpenCV's DNN module; without it
# Ocellus says so in the journal and uses OpenCV. The `onnxruntime` name below is the usual
# recipe's; a BAD_RECOMMENDATIONS entry, or a layer without it, leaves it out.
# The GStreamer elements of the packet path (src/capture/packets.rs): parsebin, tee, queue,
# appsink, decodebin and videoconvert; rtspsrc and its RTP depayloaders; the MP4 and Matroska
# demuxers for file cameras; h264parse/h265parse; a software H.264/H.265 decoder where the
# board has no hardware one.
RDEPENDS:${PN} += "\
    gstreamer1.0-plugins-base-playback gstreamer1.0-plugins-base-app \
    gstreamer1.0-plugins-base-videoconvertscale gstreamer1.0-plugins-base-typefindfunctions \
    gstreamer1.0-plugins-good-rtsp gstreamer1.0-plugins-good-rtp \
    gstreamer1.0-plugins-good-rtpmanager gstreamer1.0-plugins-good-udp \
    gstreamer1.0-plugins-good-isomp4 gstreamer1.0-plugins-good-matroska \
    gstreamer1.0-plugins-bad-videoparsersbad gstreamer1.0-libav \
"
RRECOMMENDS:${PN} = "ocellus-model-nanodet-g ocellus-model-fastestdet onnxruntime"
