SUMMARY = "FastestDet COCO object detector (ONNX) for Ocellus"
DESCRIPTION = "A 1 MB, 0.24 M parameter COCO-80 detector that OpenCV DNN runs in ~70 ms \
on one Cortex-A55 core; the default model of Ocellus."
HOMEPAGE = "https://github.com/dog-qiuqiu/FastestDet"
BUGTRACKER = "https://github.com/dog-qiuqiu/FastestDet/issues"
SECTION = "multimedia"
LICENSE = "BSD-3-Clause"
LIC_FILES_CHKSUM = "file://${UNPACKDIR}/LICENSE;md5=8102bb32ac71d7fc8fe20287a120d3eb"

FASTESTDET_REV = "50473cd155cb088aa4a99e64ff6a4b3c24fa07e1"
SRC_URI = " \
    https://raw.githubusercontent.com/dog-qiuqiu/FastestDet/${FASTESTDET_REV}/example/onnx-runtime/FastestDet.onnx;name=model;unpack=0 \
    https://raw.githubusercontent.com/dog-qiuqiu/FastestDet/${FASTESTDET_REV}/configs/coco.names;name=labels;unpack=0 \
    https://raw.githubusercontent.com/dog-qiuqiu/FastestDet/${FASTESTDET_REV}/LICENSE;name=license;unpack=0 \
"
SRC_URI[model.sha256sum] = "31cb14c017fce347cb4c846ec62fdf00d76bb3beecdf4be21e7116ac67feb880"
SRC_URI[labels.sha256sum] = "634a1132eb33f8091d60f2c346ababe8b905ae08387037aed883953b7329af84"
SRC_URI[license.sha256sum] = "1269ab6dbd957fa0499672227cf9c98ed9bfadeafcf85d391fc066d7551609ad"

S = "${UNPACKDIR}"

inherit allarch

do_configure[noexec] = "1"
do_compile[noexec] = "1"

do_install() {
    install -d ${D}${datadir}/ocellus/models/fastestdet
    install -m 0644 ${UNPACKDIR}/FastestDet.onnx ${UNPACKDIR}/coco.names ${D}${datadir}/ocellus/models/fastestdet/
}

FILES:${PN} += "${datadir}/ocellus/models"
