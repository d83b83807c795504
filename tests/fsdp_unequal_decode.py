"""Launched by tests/test_fsdp.py under configs/accelerate/fsdp_cpu_2proc.yaml: the two processes
run different numbers of forward passes inside `Dist.full_weights` (as two processes decoding
different numbers of tokens do), then train one step. Without the gathered weights each forward
would all-gather every layer, and unequal counts would pair the wrong collectives or hang (with
"plain" the job hangs: measured by hand, killed after 120 s).
Prints one line per process: `rank <r> ok <local shard rows> <full rows>`.
Argument: "gathered" (the trainer's way) or "plain" (forwards through the sharded model)."""
import contextlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from igrpo_core import distributed  # noqa: E402
from igrpo_core.models import load_model, load_tokenizer  # noqa: E402
from igrpo_core.config import TINY_MODEL  # noqa: E402

torch.set_num_threads(1)
dist = distributed.setup(torch.device("cpu"))
assert dist.fsdp and dist.world == 2
tok = load_tokenizer(TINY_MODEL)
model = load_model(TINY_MODEL, tok, device=torch.device("cpu"), dtype=torch.float32)
full_rows = model.model.layers[0].mlp.up_proj.weight.shape[0]
model, opt = dist.prepare(model, torch.optim.AdamW(model.parameters(), lr=1e-3))
ids = torch.randint(5, 30, (2, 6))
gathered = dist.full_weights(model) if sys.argv[1] == "gathered" else contextlib.nullcontext()
with gathered, torch.no_grad():
    for _ in range(1 + 4 * dist.rank):                  # rank 0: 1 forward, rank 1: 5
        model(input_ids=ids)
dist.backward(model(input_ids=ids).logits.float().pow(2).mean())
opt.step()
local_rows = model.model.layers[0].mlp.up_proj.weight.to_local().shape[0]
print(f"rank {dist.rank} ok {local_rows} {full_rows}", flush=True)
dist.barrier()
