# The README's main command before and after issue #16, one after the other on an otherwise idle machine:
# BASE is a worktree of the commit before (git worktree add /tmp/base 37526b6), run with this checkout's .venv.
#   bash results/bench_trainer/main_command_timing.sh [/tmp/base]
# 2026-12-02, 2-core CPU: before 811.7 s (6,352 tokens/s), after 419.8 s (12,458 tokens/s); masked accuracy 26.81% / 26.82%.
cd "$(dirname "$0")/../.."
HERE=$PWD; BASE=${1:-/tmp/base}; OUT=${OUT:-/tmp/timing}
export HF_HUB_OFFLINE=1
mkdir -p $OUT
for which in before after; do
  if [ $which = before ]; then dir=$BASE; pp=$BASE; else dir=$HERE; pp=; fi
  rm -rf $OUT/$which
  start=$(date +%s.%N)
  (cd $dir && PYTHONPATH=$pp $HERE/.venv/bin/accelerate launch recipes/pretrain_mlm.py output_dir=$OUT/$which log.progress_bar=false \
     > $OUT/$which.log 2>&1)
  echo "$which exit=$? wall=$(echo "$(date +%s.%N) - $start" | bc) s load=$(cut -d' ' -f1-3 /proc/loadavg)"
done
