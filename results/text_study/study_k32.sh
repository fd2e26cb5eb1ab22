# k=32 × 3 seeds on the built-in wiki topic task. PRETRAINED: the checkpoint folder (default: this study's own).
cd /work/main
PRETRAINED=${PRETRAINED:-results/text_study/pretrain_mlm}
METHODS=${METHODS:-[scratch,pretrained,pretrained_aux,tfidf]}
NLP_SSL_CACHE=/tmp/nlpcache OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python recipes/study_text.py \
  pretrained=$PRETRAINED output_dir=results/text_study/wiki_topic budgets=${BUDGETS:-[32]} seeds=${SEEDS:-[0,1,2]} \
  "methods=$METHODS" "finetune=[max_steps=200,eval_every=20,data.max_length=64,learning_rate=1.0e-3]"
