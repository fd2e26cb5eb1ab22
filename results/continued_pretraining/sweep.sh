# Calibration of continued pretraining for MiniLM on one seed (k=32, seed 0): each setting is one continued
# MLM run on the built-in corpus, then the same fine-tuning as minilm.sh. Settings are compared on
# validation accuracy (176 rows), not test, before the 3-seed run.
#   bash results/continued_pretraining/sweep.sh lr1e-4_300 "[max_steps=300,data.block_size=64]"
cd "$(dirname "$0")/../.."
NAME=$1; CONTINUE=$2
OUT=results/continued_pretraining/sweep/$NAME
OMP_NUM_THREADS=1 .venv/bin/python recipes/study_text.py checkpoint=builtin:minilm output_dir=$OUT \
  k_per_class=[32] seeds=[0] "methods=[checkpoint_continued]" \
  "finetune_args=[max_steps=200,eval_every=20,data.max_length=64]" "continue_args=$CONTINUE" || exit $?
cp "$OUT/results.json" "results/continued_pretraining/sweep_$NAME.json"
