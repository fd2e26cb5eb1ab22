# The GLUE harness on the offline pair task (not GLUE: "do these two Wikipedia articles share a topic?"),
# for the README's default checkpoint and for the same architecture from scratch. About 15 min on the 2-core CPU.
#   1. the checkpoint: python recipes/pretrain_mlm.py output_dir=outputs/pretrain_mlm   (the README's main run)
cd "$(dirname "$0")/../.."
.venv/bin/python data_scripts/prepare_wiki_pairs.py --out outputs/wiki_pairs
for init in pretrained scratch; do
  extra=""; [ $init = scratch ] && extra="model.load_weights=false"
  .venv/bin/python recipes/glue.py model.name_or_path=outputs/pretrain_mlm glue.data_dir=outputs/wiki_pairs \
    "glue.tasks=[wikipairs]" "glue.seeds=[0,1,2]" optim.learning_rate=1.0e-3 output_dir=outputs/glue_wikipairs_$init $extra
  cp outputs/glue_wikipairs_$init/glue_results.json results/glue_wikipairs/${init}_glue_results.json
  cp outputs/glue_wikipairs_$init/glue_results.md results/glue_wikipairs/${init}_glue_results.md
done
