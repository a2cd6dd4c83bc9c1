#!/usr/bin/env bash
# torchrun recipe: run this script once on every node (same arguments, its own NODE_RANK).
#
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=node0.example MASTER_PORT=29500 GPUS=4 \
#   STAGE_CONFIG=configs/daefr/hq_codebook.yaml SHARDS=/data/ffhq512/shards \
#   bash configs/cluster/torchrun.sh
#
# torchrun starts GPUS processes per node and sets RANK / LOCAL_RANK / WORLD_SIZE; Lightning reads
# them (TorchElasticEnvironment) and only has to be told the same layout (--trainer.num_nodes and
# --trainer.devices). Extra arguments are passed on to `daefr fit`.
set -euo pipefail

SHARDS=${SHARDS:?set SHARDS to a folder written by daefr shard, a brace pattern or a URL}
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
GPUS=${GPUS:-$( (nvidia-smi -L 2>/dev/null || true) | wc -l)}
MASTER_ADDR=${MASTER_ADDR:-127.0.0.1}
MASTER_PORT=${MASTER_PORT:-29500}
STAGE_CONFIG=${STAGE_CONFIG:-configs/daefr/hq_codebook.yaml}

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-4}
export WANDB_MODE=${WANDB_MODE:-offline}

exec torchrun \
    --nnodes "$NNODES" --nproc-per-node "$GPUS" --node-rank "$NODE_RANK" \
    --master-addr "$MASTER_ADDR" --master-port "$MASTER_PORT" \
    -m daefr fit \
    --config "$STAGE_CONFIG" \
    --config configs/cluster/ddp_gpu.yaml \
    --trainer.num_nodes "$NNODES" \
    --trainer.devices "$GPUS" \
    --data.init_args.train "$SHARDS" \
    "$@"
