# One exploration run of NOTES.md ("Third session"): pretrain with PRE overrides for STEPS steps (none
# when STEPS is empty: from scratch), then fine-tune at k=100 per class with FT overrides, one thread.
#   NAME=B_mim TASK=mim STEPS=1400 PRE="train.global_batch_size=128 impl.micro_batch_size=128 image.patch_size=7 \
#     mim.mask_patch_size=7 'model.config_overrides={num_hidden_layers: 6, hidden_size: 192, num_attention_heads: 3, intermediate_size: 768}'" \
#     FT="image.patch_size=7" bash results/vision_study/explore.sh
cd "$(dirname "$0")/../.."
export NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=${THREADS:-1}
O=${ROOT:-results/vision_study/explore}/$NAME
mkdir -p "$O"
CK=""
if [ -n "$STEPS" ]; then
  [ -f "$O/pre/config.json" ] || eval .venv/bin/python recipes/pretrain_vit.py objective=$TASK output_dir=$O/pre train.max_steps=$STEPS \
    eval.every=100000 save.every=100000 save.total_limit=1 log.progress_bar=false "log.report_to=[]" $PRE > "$O.pre.log" 2>&1
  CK="model.name_or_path=$O/pre"
fi
for s in ${SEEDS:-0}; do
  rm -rf "$O/ft$s"
  eval .venv/bin/python recipes/finetune_vision.py output_dir=$O/ft$s train.max_steps=${FTSTEPS:-1000} eval.every=50 save.every=500 \
    seed=$s log.progress_bar=false "log.report_to=[]" $CK $FT > "$O.ft$s.log" 2>&1
  echo "$NAME seed $s: $(grep -o "'test_accuracy': [0-9.]*" "$O.ft$s.log" | tail -1)"
done
