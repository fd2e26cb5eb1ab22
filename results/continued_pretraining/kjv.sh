# Continued pretraining on text unlike the checkpoint's own data: the pip MiniLM on the KJV genre task
# (data_scripts/prepare_kjv_genre.py: a verse -> one of 8 parts of the Bible; test verses from held-out chapters).
# k=32, seeds 0-2: MiniLM fine-tuned directly vs after continued MLM on the task's pool texts (task-adaptive,
# Gururangan et al. 2020), + TF-IDF. Finished runs are reused: a rerun only redraws.
#   SEEDS=[0] bash results/continued_pretraining/kjv.sh     # one seed first
# CONTINUE: continue_args of the continued pretraining run (recipes/configs/pretrain_mlm_continue.yaml + these);
# TAG names the setting's run folder and result files (kjv_TAG_results.md). The earlier 1e-4 runs:
#   TAG=lr1e-4 CONTINUE=[train.max_steps=300,data.block_size=64,eval.every=100,save.every=100,optim.learning_rate=1e-4] bash results/continued_pretraining/kjv.sh
cd "$(dirname "$0")/../.."
DATA=results/continued_pretraining/kjv/data
[ -f $DATA/test.jsonl ] || .venv/bin/python data_scripts/prepare_kjv_genre.py --out $DATA || exit $?
TAG=${TAG:-lr3e-5}
CONTINUE=${CONTINUE:-[train.max_steps=300,data.block_size=64,eval.every=100,save.every=100,optim.learning_rate=3e-5]}
OUT=results/continued_pretraining/kjv_$TAG
.venv/bin/python recipes/study_text.py checkpoint=builtin:minilm output_dir=$OUT \
  k_per_class=[32] seeds=${SEEDS:-[0,1,2]} "methods=${METHODS:-[checkpoint,checkpoint_continued,tfidf]}" \
  "finetune_args=[data.train_file=$DATA/pool.jsonl,data.test_file=$DATA/test.jsonl,train.max_steps=200,eval.every=20,data.max_length=64]" \
  "continue_args=$CONTINUE" || exit $?
for f in results.md results.json accuracy_vs_labels.png; do cp "$OUT/$f" "results/continued_pretraining/kjv_${TAG}_$f"; done
