# The few-label study at k=100 (and k=10) per class on Fashion-MNIST, 3 seeds, with the checkpoints of
# pretrain.sh and a fine-tuning budget long enough that the ViT from scratch has finished learning.
cd "$(dirname "$0")/../.."
NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1 .venv/bin/python recipes/study_vision.py \
  output_dir=${OUT:-results/vision_study/study_v2} "k_per_class=${KS:-[10, 100]}" "seeds=${SEEDS:-[0, 1, 2]}" \
  "methods=${METHODS:-[scratch, rotation, mim, pixels_logreg]}" \
  rotation_checkpoint=results/vision_study/pretrain_rotation_v2 mim_checkpoint=results/vision_study/pretrain_mim_v2 \
  "finetune_args=[train.max_steps=${FT_STEPS:-1000}, eval.every=50, save.every=500]"
