# The study's pretrained checkpoint: recipes/pretrain_mlm.py defaults (BERT tiny, built-in wiki en_train,
# block 128, batch 32) with more steps; tokenizer shared with outputs/pretrain_mlm. One thread: faster on a shared CPU.
cd /work/main
NLP_SSL_CACHE=/tmp/nlpcache OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python recipes/pretrain_mlm.py \
  output_dir=results/text_study/pretrain_mlm tokenizer.name_or_path=outputs/pretrain_mlm \
  max_steps=2400 learning_rate=1.0e-3 warmup_ratio=0.03 eval_every=400 save_every=400 progress_bar=false report_to=[]
