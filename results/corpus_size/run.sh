# The corpus-size curve: recipes/study_corpus_size.py with its defaults (pretrain_mlm.py defaults, 1,200 steps, on
# 10%/30%/100% of the built-in corpus and on it + KJV + Python docs; k=32, seeds 0-2), with the MiniLM rows of
# results/continued_pretraining (its lr 1e-4 runs, which the committed curve shows) as reference lines when they
# exist. Finished runs are reused: a rerun only redraws.
cd "$(dirname "$0")/../.."
REF=results/continued_pretraining/minilm_lr1e-4_results.json
[ -f $REF ] && REFS="reference_studies=[$REF]"
OMP_NUM_THREADS=1 .venv/bin/python recipes/study_corpus_size.py output_dir=results/corpus_size $REFS "$@"
