# MiniLM (pip all-MiniLM-L6-v2) on the built-in topic task at k=32: fine-tuned directly vs after continued
# MLM pretraining on the built-in corpus (the task's own pool texts), + TF-IDF; seeds 0-2.
#   SEEDS=[0] bash results/continued_pretraining/minilm.sh     # one seed first
# CONTINUE: continue_args of the continued pretraining run (recipes/configs/pretrain_mlm_continue.yaml + these);
# TAG names the setting's run folder and result files (minilm_TAG_results.md). The earlier 1e-4 runs:
#   TAG=lr1e-4 CONTINUE=[train.max_steps=300,data.block_size=64,eval.every=100,save.every=100,optim.learning_rate=1e-4] bash results/continued_pretraining/minilm.sh
cd "$(dirname "$0")/../.."
TAG=${TAG:-lr3e-5}
CONTINUE=${CONTINUE:-[train.max_steps=300,data.block_size=64,eval.every=100,save.every=100,optim.learning_rate=3e-5]}
OUT=results/continued_pretraining/minilm_$TAG
OMP_NUM_THREADS=1 .venv/bin/python recipes/study_text.py checkpoint=builtin:minilm output_dir=$OUT \
  k_per_class=[32] seeds=${SEEDS:-[0,1,2]} "methods=${METHODS:-[checkpoint,checkpoint_continued,tfidf]}" \
  "finetune_args=[train.max_steps=200,eval.every=20,data.max_length=64]" "continue_args=$CONTINUE" || exit $?
for f in results.md results.json accuracy_vs_labels.png; do cp "$OUT/$f" "results/continued_pretraining/minilm_${TAG}_$f"; done
