# The study's pretrained checkpoint: recipes/pretrain_mlm.py with a tiny ModernBERT (pre-LN, rotary,
# mean pooling) for under 30 minutes on this 2-core CPU; tokenizer shared with outputs/pretrain_mlm.
# One torch thread, so that another job can use the second core.
cd "$(dirname "$0")/../.."
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/pretrain_mlm.py \
  output_dir=results/text_study/pretrain_modernbert tokenizer.name_or_path=outputs/pretrain_mlm \
  model.arch=modernbert model.size=tiny mlm.mlm_probability=0.3 \
  max_steps=${STEPS:-7000} learning_rate=2.0e-3 warmup_ratio=0.03 eval_every=1000 save_every=1000 progress_bar=false report_to=[]
