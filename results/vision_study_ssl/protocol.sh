# The few-label vision protocol with SimCLR and jigsaw pretraining (recipes/configs/study_vision_ssl.yaml):
# pretraining by SimCLR and by jigsaw puzzles (30 minutes each, time_budget), then every fine-tuning run two at a
# time with one thread each, and the report (results.md, results.json, accuracy_vs_labels.png, curves/).
# Scratch, rotation, the auxiliary rows and the pixel baselines are read from results/vision_study/runs.
# Finished runs are reused (their records are committed): rerun to continue.
#   bash results/vision_study_ssl/protocol.sh                      # everything
#   bash results/vision_study_ssl/protocol.sh "k_per_class=[10]"   # one k (extra key=value arguments go last)
#   REPORT_ONLY=true bash results/vision_study_ssl/protocol.sh     # tables and plots again from runs/, nothing run
# Git keeps the checkpoints' config and results, not their weights: a run still to come from one is refused
# until it is pretrained again (move results/vision_study_ssl/pretrain_<objective> away).
cd "$(dirname "$0")/../.."
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/study_vision.py \
  --config recipes/configs/study_vision_ssl.yaml report_only=${REPORT_ONLY:-false} "$@"
