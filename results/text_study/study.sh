# The few-label study on the built-in wiki topic task: budgets 8/32/128 per class × seeds 0-2.
# PRETRAINED: the checkpoint folder (default: this study's own, from pretrain.sh).
cd "$(dirname "$0")/../.."
PRETRAINED=${PRETRAINED:-results/text_study/pretrain_modernbert}
METHODS=${METHODS:-[scratch,pretrained,pretrained_aux,frozen_probe,tfidf]}
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/study_text.py \
  pretrained=$PRETRAINED output_dir=${OUT:-results/text_study/wiki_topic} budgets=${BUDGETS:-[8,32,128]} seeds=${SEEDS:-[0,1,2]} \
  "methods=$METHODS" "finetune=[max_steps=300,eval_every=20,data.max_length=64,learning_rate=1.0e-3]"
