#!/usr/bin/env bash
# The commands that reproduce each paper's MVTec AD table with npad's paper mode (--paper), per
# category, at each paper's sizes and with its number of runs (seeds). Needs MVTec AD, a GPU
# (CuPy; --device cuda) and the papers' backbone weights (weights/README.md, "The papers' weights").
#
#   examples/reproduce_mvtec.sh /path/to/mvtec_anomaly_detection [cflow|adtr|favae|vae_attention|all]
#   DRY_RUN=1 examples/reproduce_mvtec.sh /path/to/mvtec all     # print the commands only
#
# Each run writes results.md / results.csv, panels and the model into runs/paper/<table>/seed<k>/<category>/;
# what paper mode sets and where npad still differs from each paper: docs/DEVIATIONS.md.
#
#   CFLOW-AD  Table 3-4: WRN-50-2, 128/256/512 px by class (npad.methods.cflow.MVTEC_INPUT_SIZES), 4 runs
#   ADTR      Table 1-2: EfficientNet-B4 (lukemelas), 256 px; ADTR and ADTR+ (confetti anomalies); 1 run
#   FAVAE     Table 1: VGG-16 features and the vanilla VAE, 5 runs
#   VAE attention, the reproducibility report's Table 4: ResNet-18, ten categories, 1 run
set -euo pipefail

MVTEC=${1:?usage: $0 /path/to/mvtec_anomaly_detection [cflow|adtr|favae|vae_attention|all]}
WHAT=${2:-all}
OUT=${OUT:-runs/paper}
DEVICE=${DEVICE:-cuda}
HERE=$(cd "$(dirname "$0")" && pwd)

CATEGORIES="bottle cable capsule carpet grid hazelnut leather metal_nut pill screw tile toothbrush transistor wood zipper"
REPORT_CATEGORIES="carpet leather tile wood cable capsule hazelnut metal_nut pill transistor"   # the report's footnote 8

run() {
    echo "+ $*"
    if [ -z "${DRY_RUN:-}" ]; then "$@"; fi
}

# The papers' backbones, once (needs torch + torchvision; ADTR's B4 is converted by npad from
# efficientnet-b4-6ed6700e.pth: set NPAD_EFFICIENTNET_B4_PTH to it).
weights() {
    case "$1" in
        cflow) run python "$HERE/../weights/export_torchvision.py" wide_resnet50_2 --padding reflect ;;
        favae) run python "$HERE/../weights/export_torchvision.py" vgg16 ;;
        vae_attention) run python "$HERE/../weights/export_torchvision.py" resnet18 ;;
        adtr) if [ -z "${NPAD_EFFICIENTNET_B4_PTH:-}" ] && [ -z "${DRY_RUN:-}" ]; then
                  echo "ADTR: set NPAD_EFFICIENTNET_B4_PTH to efficientnet-b4-6ed6700e.pth" \
                       "(https://github.com/lukemelas/EfficientNet-PyTorch/releases/download/1.0/efficientnet-b4-6ed6700e.pth)" >&2
                  exit 1
              fi ;;
    esac
}

cflow() {            # Sec. 5.1: "We run each CFLOW-AD experiment four times"
    weights cflow
    for seed in 0 1 2 3; do
        for c in $CATEGORIES; do
            run python "$HERE/cflow_mvtec.py" --paper --data "$MVTEC" --category "$c" --seed "$seed" \
                --device "$DEVICE" --out "$OUT/cflow/seed$seed/$c"
        done
    done
}

adtr() {             # Sec. 4.2 (runs not stated: one); ADTR+ fine-tunes on confetti anomalies with L_px
    weights adtr
    for c in $CATEGORIES; do
        run python "$HERE/adtr_mvtec.py" --paper --data "$MVTEC" --category "$c" --device "$DEVICE" \
            --out "$OUT/adtr/seed0/$c"
        run python "$HERE/adtr_mvtec.py" --paper --plus --data "$MVTEC" --category "$c" --device "$DEVICE" \
            --out "$OUT/adtr_plus/seed0/$c"
    done
}

favae() {            # Sec. 5.1: "Experiments were run 5 times per dataset and model"
    weights favae
    for seed in 0 1 2 3 4; do
        for c in $CATEGORIES; do
            run python "$HERE/favae_mvtec.py" --paper --data "$MVTEC" --category "$c" --seed "$seed" \
                --device "$DEVICE" --out "$OUT/favae/seed$seed/$c"
            run python "$HERE/favae_mvtec.py" --paper --features none --data "$MVTEC" --category "$c" \
                --seed "$seed" --device "$DEVICE" --out "$OUT/vanilla_vae/seed$seed/$c"
        done
    done
}

vae_attention() {    # the report, Sec. 5.2: "it was not possible to run multiple seeds"
    weights vae_attention
    for c in $REPORT_CATEGORIES; do
        run python "$HERE/vae_attention.py" --task mvtec --paper --data "$MVTEC" --category "$c" \
            --device "$DEVICE" --out "$OUT/vae_attention/seed0/$c"
    done
}

case "$WHAT" in
    cflow|adtr|favae|vae_attention) "$WHAT" ;;
    all) cflow; adtr; favae; vae_attention ;;
    *) echo "unknown table $WHAT: cflow, adtr, favae, vae_attention or all" >&2; exit 2 ;;
esac
