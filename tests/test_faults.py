"""Crash safety: a training process killed (SIGKILL) at each write of a checkpoint or of the user model
swap leaves the previous user model intact, and the training can be finished afterwards.

The child process trains a tiny model and kills itself the moment it is about to publish a given file
(the rename of its temporary copy): the bytes are written, nothing is committed. The parent then checks
what is on disk and finishes the training with ``resume=True`` (or afresh when nothing was committed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import helpers
import pytest

from easyphoto.config import ModelConfig, TrainConfig
from easyphoto.users import UserModel, work_dir

TINY = TrainConfig(
    resolution=64,
    max_steps=4,
    grad_accum=1,
    rank=4,
    alpha=2.0,
    validate_every=2,
    validation_size=64,
    validation_steps=2,
    validation_seeds=(1,),
    learning_rate=1e-3,
)

CHILD = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from easyphoto.config import ModelConfig, TrainConfig
    from easyphoto.workflows import train

    target, nth = sys.argv[4], int(sys.argv[5])  # kill at the nth publication of a file named *target*
    seen = []
    real_replace = os.replace

    def replace(src, dst, *a, **k):
        name = Path(dst).name
        if target in name:
            seen.append(name)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst, *a, **k)

    os.replace = replace

    import easyphoto.store as store

    real_swap = getattr(store, "_swap_in", None)  # atomic_dir's swap (one renameat2 exchange on Linux)

    def swap_in(staging, dest):
        name = Path(dest).name
        if target in name:
            seen.append(name)
            if len(seen) == nth:
                os.kill(os.getpid(), signal.SIGKILL)
        return real_swap(staging, dest)

    if real_swap is not None:
        store._swap_in = swap_in
    cfg = TrainConfig.model_validate_json(sys.argv[3])
    train("carol", sys.argv[2], cfg, model_config=ModelConfig(base_model=sys.argv[1]), home=Path(sys.argv[6]))
    print("finished without being killed")
    """
)

#: (what is being written, which occurrence) — the checkpoint at step 2, then at step 4, then the user model.
WRITE_POINTS = [
    ("step-00002.safetensors", 1),  # checkpoint weights (first checkpoint: nothing committed yet)
    ("resume-step-00002", 1),  # adapters for resuming
    ("optimizer-step-00002", 1),  # optimizer state
    ("state.json", 1),  # the commit point of the first checkpoint
    ("resume-step-00004", 1),  # second checkpoint, the first one committed
    ("state.json", 2),  # the commit point of the second checkpoint
    ("carol", 1),  # the user model swap (users/carol replaced)
]


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory: pytest.TempPathFactory, astronaut, analyzer) -> Path:
    return helpers.make_dataset(tmp_path_factory.mktemp("dataset"), astronaut, analyzer)


@pytest.mark.slow
def test_kill_at_each_write_keeps_the_previous_model_and_training_finishes(
    tiny_model_dir: Path, dataset_dir: Path, tmp_path: Path
) -> None:
    from easyphoto.workflows import train

    home = tmp_path / "home"
    model = ModelConfig(base_model=str(tiny_model_dir))
    first = train("carol", dataset_dir, TINY, model_config=model, home=home)  # the model that must survive
    before = (first.path / "meta.json").read_bytes(), (first.path / "lora.safetensors").read_bytes()
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    for target, nth in WRITE_POINTS:
        args = [str(tiny_model_dir), str(dataset_dir), TINY.model_dump_json(), target, str(nth), str(home)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
        res = subprocess.run([sys.executable, str(script), *args], env=env, capture_output=True, timeout=300)
        assert res.returncode == -9, (target, res.returncode, res.stderr[-2000:])
        current = UserModel.load("carol", home)  # never half a model
        meta, lora = (current.path / "meta.json").read_bytes(), current.lora_path.read_bytes()
        if target != "carol":
            assert (meta, lora) == before, f"killed at {target}: the previous model changed"
        state_file = work_dir("carol", home) / "state.json"
        committed = state_file.is_file()
        if committed:  # every file the state names is there and complete
            state = json.loads(state_file.read_text())
            assert (work_dir("carol", home) / state["resume_file"]).is_file(), target
            assert (work_dir("carol", home) / state["optimizer_file"]).is_file(), target
        result = train("carol", dataset_dir, TINY, model_config=model, home=home, resume=committed)
        assert result.steps == 4 and UserModel.load("carol", home).meta.steps == 4, target
        assert not work_dir("carol", home).exists(), target
        before = (result.path / "meta.json").read_bytes(), result.lora_path.read_bytes()
