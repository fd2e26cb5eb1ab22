# The few-label vision protocol of issue #15 (recipes/configs/study_vision.yaml): pretraining by rotation
# (and by SimMIM when its rows are in methods; each within 30 min), then every fine-tuning run, two at a time with one
# thread each, and the report: results.md, results.json, accuracy_vs_labels.png, learning_speed.png,
# curves/. With recipes/configs/study_vision.yaml as it is (RotNet rows, the rate grid on seed 0), a k=10
# run costs about 400 CPU-seconds and an auxiliary-loss run about 2.8× that. Finished runs are reused (their
# records are committed): rerun to continue. Git keeps the RotNet checkpoint's config and results, not its weights:
# a new run from it is refused until it is pretrained again (move results/vision_study/pretrain_rotation away).
#   bash results/vision_study/protocol.sh                    # everything
#   REPORT_ONLY=true bash results/vision_study/protocol.sh   # tables and plots again from runs/, nothing run
#   bash results/vision_study/protocol.sh "k_per_class=[1, 5, 10]"   # extra key=value arguments go last
cd "$(dirname "$0")/../.."
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} .venv/bin/python recipes/study_vision.py \
  output_dir=results/vision_study report_only=${REPORT_ONLY:-false} "$@"
