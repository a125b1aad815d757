"""Crash safety: a training process killed (SIGKILL) at each write of a checkpoint or of the user model
swap leaves the previous user model intact, and the training can be finished afterwards.

The child process trains a tiny model and kills itself the moment it is about to publish a given file
(the rename of its temporary copy): the bytes are written, nothing is committed. The parent then checks
what is on disk and finishes the training with ``resume=True`` (or afresh when nothing was committed).
"""

from __future__ import annotations

import json
import os
import select
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

#: One process imports the studio once and forks a training child per kill point (importing torch and
#: diffusers costs ~8 s a process here: seven fresh children spent a minute on it). A child kills itself
#: (SIGKILL) the moment it is about to publish a file named *target* for the nth time; the zygote
#: answers each "target nth" line with the child's exit code (-9: killed there).
ZYGOTE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    import torch, diffusers, peft  # noqa: F401  (imported once, before any fork)
    from easyphoto.config import ModelConfig, TrainConfig
    from easyphoto.workflows import train
    import easyphoto.store as store

    torch.set_num_threads(1)
    model_dir, dataset, home = sys.argv[1], sys.argv[2], sys.argv[4]
    cfg = TrainConfig.model_validate_json(sys.argv[3])

    def child(target, nth):
        seen = []

        def hit(name):
            if target in name:
                seen.append(name)
                if len(seen) == nth:
                    os.kill(os.getpid(), signal.SIGKILL)

        real_replace, real_swap = os.replace, store._swap_in  # atomic_dir's swap (renameat2 on Linux)

        def replace(src, dst, *a, **k):
            hit(Path(dst).name)
            return real_replace(src, dst, *a, **k)

        def swap_in(staging, dest):
            hit(Path(dest).name)
            return real_swap(staging, dest)

        os.replace, store._swap_in = replace, swap_in
        train("carol", dataset, cfg, model_config=ModelConfig(base_model=model_dir), home=Path(home))

    print("ready", flush=True)
    for line in sys.stdin:
        target, nth = line.split()
        pid = os.fork()
        if pid == 0:
            try:
                child(target, int(nth))
                print("finished without being killed", file=sys.stderr, flush=True)
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status), flush=True)
    """
)


def _answer(proc: subprocess.Popen, timeout: float, log: Path) -> str:
    """The zygote's next line, or a failure naming its stderr when it says nothing for ``timeout`` s."""
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
    assert line, f"the training child said nothing in {timeout} s: {log.read_text()[-2000:]}"
    return line.strip()


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
    script, log = tmp_path / "zygote.py", tmp_path / "zygote.log"
    script.write_text(ZYGOTE)
    args = [str(tiny_model_dir), str(dataset_dir), TINY.model_dump_json(), str(home)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    with log.open("w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=err, env=env, text=True,
        )  # fmt: skip
    try:
        assert _answer(proc, 120, log) == "ready"
        for target, nth in WRITE_POINTS:
            proc.stdin.write(f"{target} {nth}\n")  # type: ignore[union-attr]
            proc.stdin.flush()  # type: ignore[union-attr]
            assert _answer(proc, 300, log) == "-9", (target, log.read_text()[-2000:])
            _check_and_finish(target, home, dataset_dir, model, before)
            current = UserModel.load("carol", home)
            before = (current.path / "meta.json").read_bytes(), current.lora_path.read_bytes()
    finally:
        proc.kill()
        proc.wait()


def _check_and_finish(target: str, home: Path, dataset_dir: Path, model: ModelConfig, before: tuple) -> None:
    """After a kill at ``target``: never half a model, the previous one unchanged (until the swap), every
    file a committed checkpoint names complete; then the training finishes (resumed when committed)."""
    from easyphoto.workflows import train

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
