# The study's pretrained checkpoint: recipes/pretrain_mlm.py defaults (tiny ModernBERT, 30% masking,
# lr 2e-3, batch 32 × 128 tokens) for 9,000 steps, alone on this 2-core CPU: under 30 minutes.
# The tokenizer is shared with outputs/pretrain_mlm (the default run's).
cd "$(dirname "$0")/../.."
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} .venv/bin/python recipes/pretrain_mlm.py \
  output_dir=results/text_study/pretrain_modernbert tokenizer.name_or_path=outputs/pretrain_mlm \
  train.max_steps=${STEPS:-9000} eval.every=1000 save.every=1000 log.progress_bar=false log.report_to=[]
