#!/usr/bin/env bash
# `dgpipe train --channel mpi` under mpirun (client + server process, 3 stages client-server) must give the same
# result as the same run with every stage in one process: loss, accuracy and boundary traffic in summary.json;
# in fp32 and in --precision mixed (loss scaling: the stages agree on skipping a step across the processes).
# usage: mpi_train_matches_local.sh DGPIPE MPIEXEC   (run from the repository root, ../shared/data beside it)
set -euo pipefail
dgpipe=$1; mpiexec=$2
if [ ! -f ../shared/data/glue/RTE/train.tsv ] || [ ! -f ../shared/data/roberta-base/vocab.json ]; then
  echo "SKIP: ../shared/data/glue or the roberta-base tokenizer is absent"; exit 0
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/config.json" <<'JSON'
{"model_type": "roberta", "vocab_size": 50265, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
 "intermediate_size": 64, "max_position_embeddings": 66, "type_vocab_size": 1, "pad_token_id": 1,
 "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "layer_norm_eps": 1e-5, "hidden_act": "gelu"}
JSON
args=(train --model roberta --model-config "$tmp/config.json" --dataset rte --data-dir ../shared/data/glue
      --tokenizer-dir ../shared/data/roberta-base --max-len 32 --train-subset 64 --eval-subset 32 --batch 16
      --micro-batches 2 --stages 3 --placement client-server --epochs 1 --optimizer adamw --lr 1e-3 --lr-schedule linear
      --compress fwd=sortquant:6+2,bwd=uniform:8 --clip 0.5 --workers 1 --log-every 0)
for precision in fp32 mixed; do
  "$dgpipe" "${args[@]}" --precision $precision --log-dir "$tmp/local-$precision" > "$tmp/local.log" 2>&1 ||
    { cat "$tmp/local.log"; exit 1; }
  "$mpiexec" --allow-run-as-root --oversubscribe --bind-to none -np 2 "$dgpipe" "${args[@]}" --precision $precision \
    --channel mpi --log-dir "$tmp/mpi-$precision" > "$tmp/mpi.log" 2>&1 || { cat "$tmp/mpi.log"; exit 1; }
  python3 - "$tmp/local-$precision/summary.json" "$tmp/mpi-$precision/summary.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
for key in ("final_eval_acc", "wire_bytes", "raw_bytes", "steps", "skipped_steps"):
    if a[key] != b[key]:
        sys.exit(f"FAIL: {a['precision']}: {key} differs: local {a[key]} vs mpi {b[key]}")
print(f"{a['precision']}: the same (eval acc {a['final_eval_acc']:.4f}, {a['wire_bytes']} wire bytes, {a['steps']} steps, "
      f"{a['skipped_steps']} skipped)")
PY
done
echo "OK: local and mpi agree in fp32 and mixed"  # ctest passes on this line only: every comparison above held
