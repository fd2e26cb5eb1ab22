# The few-label study on the built-in wiki topic task: k = 8/32/128 labels per class × seeds 0-2.
# PRETRAINED: the checkpoint folder (default: this study's own, from pretrain.sh).
cd "$(dirname "$0")/../.."
PRETRAINED=${PRETRAINED:-results/text_study/pretrain_modernbert}
METHODS=${METHODS:-[scratch,pretrained,pretrained_aux,frozen_probe,tfidf]}
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/study_text.py \
  pretrained=$PRETRAINED output_dir=${OUT:-results/text_study/wiki_topic} k_per_class=${KS:-[8,32,128]} seeds=${SEEDS:-[0,1,2]} \
  "methods=$METHODS" "finetune_args=[train.max_steps=300,eval.every=20,data.max_length=64,optim.learning_rate=1.0e-3]"
