# The study's pretrained ViTs: recipes/pretrain_vit.py defaults (ViT tiny, 28×28, patch 4, Fashion-MNIST
# 58k unlabelled images) with step counts that fit 30 minutes on this 2-core CPU with one torch thread
# each (two jobs can share the machine). TASK=mim or TASK=rotation.
cd "$(dirname "$0")/../.."
TASK=${TASK:-mim}
if [ "$TASK" = mim ]; then ARGS="train.max_steps=${STEPS:-7000} train.global_batch_size=128 impl.micro_batch_size=128"
else ARGS="train.max_steps=${STEPS:-2000} train.global_batch_size=64 impl.micro_batch_size=64"; fi
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/pretrain_vit.py objective=$TASK \
  output_dir=results/vision_study/pretrain_${TASK}_v2 $ARGS eval.every=1000 save.every=1000 save.total_limit=1 \
  log.progress_bar=false log.report_to=[]
