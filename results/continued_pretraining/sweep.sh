# Calibration of continued pretraining for MiniLM on one seed (k=32, seed 0): each setting is one continued
# MLM run on the task's pool texts, then the same fine-tuning as minilm.sh / kjv.sh. Settings are compared on
# validation accuracy (16 rows per class), not test, before a 3-seed run.
#   bash results/continued_pretraining/sweep.sh lr1e-4_300 "[train.max_steps=300,data.block_size=64]"              # built-in topic task
#   TASK=kjv bash results/continued_pretraining/sweep.sh lr3e-4_300 "[train.max_steps=300,data.block_size=64,optim.learning_rate=3e-4]"
cd "$(dirname "$0")/../.."
NAME=$1; CONTINUE=$2
DATA=results/continued_pretraining/kjv/data
if [ "${TASK:-wiki}" = kjv ]; then
  [ -f $DATA/test.jsonl ] || .venv/bin/python data_scripts/prepare_kjv_genre.py --out $DATA || exit $?
  TASK_ARGS="data.train_file=$DATA/pool.jsonl,data.test_file=$DATA/test.jsonl,"; PREFIX=kjv_
fi
OUT=results/continued_pretraining/sweep/$PREFIX$NAME
OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} .venv/bin/python recipes/study_text.py checkpoint=builtin:minilm output_dir=$OUT \
  k_per_class=[32] seeds=[0] "methods=[checkpoint_continued]" \
  "finetune_args=[${TASK_ARGS}train.max_steps=200,eval.every=20,data.max_length=64]" "continue_args=$CONTINUE" || exit $?
cp "$OUT/results.json" "results/continued_pretraining/sweep_$PREFIX$NAME.json"
